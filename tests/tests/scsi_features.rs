//! Issue 16's SCSI features end to end through the scripted initiator on loopback:
//! REGISTER with SPEC_I_PT (TransportIDs with and without ISID) and ALL_TG_PT (also across
//! two portal groups of the real ietd), and WRITE AND VERIFY / VERIFY with BYTCHK.

use std::net::SocketAddr;

use iet_tests::initiator::{Conn, LoginOptions, ScsiResult};
use iet_tests::inprocess::{InProcessTarget, TARGET, free_port, mem_config};
use iet_tests::process::{Ietd, TempDir};

const BS: u32 = 512;
const INIT_A: &str = "iqn.2026-12.io.iet:node-a";
const INIT_B: &str = "iqn.2026-12.io.iet:node-b";
const INIT_C: &str = "iqn.2026-12.io.iet:node-c";

fn login(t: &InProcessTarget, initiator: &str, isid_low: u8) -> Conn {
    login_at(t.addr, TARGET, initiator, isid_low)
}

fn login_at(portal: SocketAddr, target: &str, initiator: &str, isid_low: u8) -> Conn {
    let mut c = Conn::connect(portal).expect("connect");
    let mut opts = LoginOptions::normal(target);
    initiator.clone_into(&mut opts.initiator);
    opts.isid = [0x80, 0, 0, 0, 0, isid_low];
    c.login(&opts)
        .unwrap_or_else(|e| panic!("login of {initiator} failed: {e:?}"));
    c.clear_unit_attention(0).expect("TEST UNIT READY");
    c
}

/// An iSCSI TransportID (SPC-5 §7.6.4.6): format 01b with an ISID, 00b without.
fn transport_id(initiator: &str, isid: Option<[u8; 6]>) -> Vec<u8> {
    let (format, mut name) = match isid {
        Some(isid) => {
            let hex = isid.iter().fold(String::new(), |mut s, b| {
                use std::fmt::Write;
                let _ = write!(s, "{b:02x}");
                s
            });
            (0x40, format!("{initiator},i,0x{hex}").into_bytes())
        }
        None => (0x00, initiator.as_bytes().to_vec()),
    };
    name.push(0);
    name.resize(name.len().next_multiple_of(4).max(20), 0);
    let mut t = vec![format | 0x05, 0];
    t.extend_from_slice(&(name.len() as u16).to_be_bytes());
    t.extend_from_slice(&name);
    t
}

/// PERSISTENT RESERVE OUT with the basic parameter list, plus TransportIDs for SPEC_I_PT.
fn pr_out(
    c: &mut Conn,
    sa: u8,
    pr_type: u8,
    key: u64,
    sa_key: u64,
    flags: u8,
    tids: &[Vec<u8>],
) -> ScsiResult {
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = flags;
    if flags & 0x08 != 0 {
        let all: Vec<u8> = tids.concat();
        p.extend_from_slice(&(all.len() as u32).to_be_bytes());
        p.extend_from_slice(&all);
    }
    let mut cdb = [0x5f, sa, pr_type, 0, 0, 0, 0, 0, 0, 0];
    cdb[5..9].copy_from_slice(&(p.len() as u32).to_be_bytes());
    c.scsi(0, &cdb, &p, 0).expect("PERSISTENT RESERVE OUT")
}

fn read_keys(c: &mut Conn) -> Vec<u64> {
    let r = c
        .scsi(0, &[0x5e, 0, 0, 0, 0, 0, 0, 0x04, 0, 0], &[], 1024)
        .expect("READ KEYS");
    assert_eq!(r.status, 0, "READ KEYS: {:02x?}", r.sense);
    r.data[8..]
        .chunks(8)
        .map(|k| u64::from_be_bytes(k.try_into().expect("8-byte key")))
        .collect()
}

/// READ FULL STATUS: (key, ALL_TG_PT, R_HOLDER, TransportID byte 0, TransportID name,
/// RELATIVE TARGET PORT IDENTIFIER).
fn full_status(c: &mut Conn) -> Vec<(u64, bool, bool, u8, String, u16)> {
    let r = c
        .scsi(0, &[0x5e, 3, 0, 0, 0, 0, 0, 0x10, 0, 0], &[], 4096)
        .expect("READ FULL STATUS");
    assert_eq!(r.status, 0, "READ FULL STATUS: {:02x?}", r.sense);
    let d = &r.data;
    let mut out = Vec::new();
    let mut at = 8;
    while at + 24 <= d.len() {
        let key = u64::from_be_bytes(d[at..at + 8].try_into().expect("key"));
        let len = u32::from_be_bytes(d[at + 20..at + 24].try_into().expect("len")) as usize;
        let tid = &d[at + 24..at + 24 + len];
        let name = String::from_utf8_lossy(tid[4..].split(|&b| b == 0).next().unwrap_or_default());
        out.push((
            key,
            d[at + 12] & 0x02 != 0,
            d[at + 12] & 0x01 != 0,
            tid[0],
            name.into_owned(),
            u16::from_be_bytes([d[at + 18], d[at + 19]]),
        ));
        at += 24 + len;
    }
    out
}

#[test]
fn spec_i_pt_registers_ports_named_with_and_without_isid() {
    let target = InProcessTarget::start(mem_config(&["mem:16M"]));
    let t = &target;
    let mut a = login(t, INIT_A, 1);
    let mut b = login(t, INIT_B, 2);
    // C's first port: logged in, so C is a known initiator with a live nexus.
    let _c = login(t, INIT_C, 3);
    // REPORT CAPABILITIES: SIP_C and ATP_C are set.
    let caps = a
        .scsi(0, &[0x5e, 2, 0, 0, 0, 0, 0, 0, 8, 0], &[], 8)
        .expect("REPORT CAPABILITIES");
    assert_eq!(caps.data[2] & 0x0c, 0x0c, "{:02x?}", caps.data);
    // A registers itself, B's port by TransportID 01b and every port of C by 00b.
    let b_port = transport_id(INIT_B, Some([0x80, 0, 0, 0, 0, 2]));
    let c_node = transport_id(INIT_C, None);
    let r = pr_out(&mut a, 0x00, 0, 0, 0xabc, 0x08, &[b_port, c_node]);
    assert_eq!(r.status, 0, "SPEC_I_PT REGISTER: {:02x?}", r.sense);
    assert_eq!(read_keys(&mut a), vec![0xabc; 3]);
    let status = full_status(&mut a);
    assert!(
        status
            .iter()
            .any(|s| s.3 == 0x45 && s.4 == format!("{INIT_B},i,0x800000000002")),
        "{status:?}"
    );
    assert!(
        status.iter().any(|s| s.3 == 0x05 && s.4 == INIT_C),
        "{status:?}"
    );
    // B, registered by A, reserves with that key; C (any ISID) is registered too.
    let r = pr_out(&mut b, 0x01, 0x01, 0xabc, 0, 0, &[]);
    assert_eq!(r.status, 0, "RESERVE by B: {:02x?}", r.sense);
    let mut c2 = login(t, INIT_C, 9);
    let r = pr_out(&mut c2, 0x00, 0, 0xabc, 0xc2, 0, &[]);
    assert_eq!(
        r.status, 0,
        "C's other port changes its key: {:02x?}",
        r.sense
    );
    // An unregistered port of B is not registered: its REGISTER with key abc conflicts.
    let mut b2 = login(t, INIT_B, 7);
    let r = pr_out(&mut b2, 0x00, 0, 0xabc, 0x1, 0, &[]);
    assert_eq!(r.status, 0x18, "B's other port holds no registration");
    // SPEC_I_PT from a registered nexus is INVALID FIELD IN PARAMETER LIST.
    let again = transport_id(INIT_B, Some([0x80, 0, 0, 0, 0, 7]));
    let r = pr_out(&mut a, 0x00, 0, 0xabc, 0xabd, 0x08, &[again]);
    assert_eq!(r.status, 2);
    assert_eq!((r.sense_key(), r.asc_ascq()), (Some(5), Some((0x26, 0))));
}

#[test]
fn all_tg_pt_registration_is_reported_and_serves_the_port_again() {
    let t = InProcessTarget::start(mem_config(&["mem:16M"]));
    let mut a = login(&t, INIT_A, 1);
    let r = pr_out(&mut a, 0x00, 0, 0, 0x77, 0x04, &[]);
    assert_eq!(r.status, 0, "ALL_TG_PT REGISTER: {:02x?}", r.sense);
    // The target's one target port (portal group 1): one registration, one I_T nexus.
    let status = full_status(&mut a);
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!((status[0].1, status[0].5), (false, 1), "{status:?}");
    let r = pr_out(&mut a, 0x01, 0x03, 0x77, 0, 0, &[]);
    assert_eq!(r.status, 0, "RESERVE EXCLUSIVE ACCESS: {:02x?}", r.sense);
    // Another initiator is kept out; a new session of A (same ISID, reinstated) holds it.
    let mut b = login(&t, INIT_B, 2);
    let r = b.read10(0, 0, 1, BS).expect("READ by B");
    assert_eq!(r.status, 0x18, "reservation conflict for B");
    let _ = a.logout();
    let mut a2 = login(&t, INIT_A, 1);
    let r = a2.read10(0, 0, 1, BS).expect("READ by A again");
    assert_eq!(r.status, 0, "{:02x?}", r.sense);
    assert!(full_status(&mut a2)[0].2, "R_HOLDER");
    let r = pr_out(&mut a2, 0x00, 0, 0x77, 0, 0, &[]);
    assert_eq!(r.status, 0, "unregister: {:02x?}", r.sense);
    assert_eq!(b.read10(0, 0, 1, BS).expect("READ by B").status, 0);
}

const TWO_PORTS: &str = "iqn.2026-12.io.iet:two-ports";

/// The relative target port identifier in VPD page 83h (designator type 4h, SPC-5 §7.7.6.4).
fn relative_target_port(c: &mut Conn) -> u16 {
    let r = c
        .scsi(0, &[0x12, 0x01, 0x83, 0x01, 0x00, 0], &[], 256)
        .expect("INQUIRY VPD 83h");
    assert_eq!(r.status, 0, "VPD 83h: {:02x?}", r.sense);
    let mut at = 4;
    while at + 4 <= r.data.len() {
        let len = usize::from(r.data[at + 3]);
        if r.data[at + 1] & 0x3f == 0x14 {
            return u16::from_be_bytes([r.data[at + 6], r.data[at + 7]]);
        }
        at += 4 + len;
    }
    panic!("no relative target port designator: {:02x?}", r.data);
}

/// SPC-5 §6.17.4: REGISTER with ALL_TG_PT through one target port registers the initiator
/// port through every target port, each I_T nexus on its own; without it, only through the
/// port it came in on. The real ietd exports one target through two portals in portal
/// groups 1 and 2, so two target ports.
#[test]
fn all_tg_pt_registers_the_initiator_port_through_every_target_port() {
    let dir = TempDir::new("all-tg-pt");
    let p1 = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let p2 = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Portals are bound in order: once the second listens, both do.
    let ietd = Ietd::start(
        &dir,
        p2,
        &[
            "--portal",
            &format!("{p1},{p2}"),
            "--portal-group",
            "1,2",
            "--target",
            TWO_PORTS,
            "--lun",
            "mem:16M",
            "--ebpf",
            "off",
        ],
    );
    // A and B each log in through both ports with one ISID: two I_T nexuses each (the
    // second login is not a reinstatement of the first).
    let mut a1 = login_at(p1, TWO_PORTS, INIT_A, 1);
    let mut a2 = login_at(p2, TWO_PORTS, INIT_A, 1);
    let mut b1 = login_at(p1, TWO_PORTS, INIT_B, 2);
    let mut b2 = login_at(p2, TWO_PORTS, INIT_B, 2);
    for (c, tpgt) in [(&a1, "1"), (&a2, "2"), (&b1, "1"), (&b2, "2")] {
        assert_eq!(
            c.first_login_keys
                .get("TargetPortalGroupTag")
                .map(String::as_str),
            Some(tpgt),
            "{:?}",
            c.first_login_keys
        );
    }
    assert_eq!(relative_target_port(&mut a1), 1);
    assert_eq!(relative_target_port(&mut a2), 2);

    // B registers through port 1 without ALL_TG_PT: through port 2 it is not registered,
    // so its RESERVE there is a RESERVATION CONFLICT.
    let r = pr_out(&mut b1, 0x00, 0, 0, 0xb, 0, &[]);
    assert_eq!(
        r.status,
        0,
        "REGISTER by B: {:02x?}\n{}",
        r.sense,
        ietd.log()
    );
    let r = pr_out(&mut b2, 0x01, 0x05, 0xb, 0, 0, &[]);
    assert_eq!(r.status, 0x18, "RESERVE by B through port 2: {r:?}");

    // A registers with ALL_TG_PT through port 1; through port 2 it is registered too.
    let r = pr_out(&mut a1, 0x00, 0, 0, 0xa, 0x04, &[]);
    assert_eq!(r.status, 0, "ALL_TG_PT REGISTER: {:02x?}", r.sense);
    let mut keys = read_keys(&mut a2);
    keys.sort_unstable();
    assert_eq!(keys, [0xa, 0xa, 0xb]);
    let a_port = format!("{INIT_A},i,0x800000000001");
    let b_port = format!("{INIT_B},i,0x800000000002");
    let mut seen: Vec<(u64, String, u16)> = full_status(&mut b2)
        .into_iter()
        .map(|s| {
            assert!(!s.1 && !s.2, "one I_T nexus each, none holds: {s:?}");
            (s.0, s.4, s.5)
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            (0xa, a_port.clone(), 1),
            (0xa, a_port.clone(), 2),
            (0xb, b_port.clone(), 1)
        ]
    );

    // A reserves WRITE EXCLUSIVE – REGISTRANTS ONLY through port 2 with that key.
    let r = pr_out(&mut a2, 0x01, 0x05, 0xa, 0, 0, &[]);
    assert_eq!(r.status, 0, "RESERVE by A through port 2: {:02x?}", r.sense);
    let holders: Vec<u16> = full_status(&mut a1)
        .into_iter()
        .filter(|s| s.2)
        .map(|s| s.5)
        .collect();
    assert_eq!(holders, [2], "the I_T nexus through port 2 holds it");
    // Registrants write through their registered nexuses; B's unregistered nexus through
    // port 2 conflicts on a write and still reads.
    let data = vec![0x5a; BS as usize];
    for (c, who) in [
        (&mut a1, "A, port 1"),
        (&mut a2, "A, port 2"),
        (&mut b1, "B, port 1"),
    ] {
        let r = c.write10(0, 8, &data, BS).expect("WRITE(10)");
        assert_eq!(r.status, 0, "write by {who}: {:02x?}", r.sense);
    }
    let r = b2.write10(0, 8, &data, BS).expect("WRITE(10) by B, port 2");
    assert_eq!(r.status, 0x18, "write by B through port 2: {r:?}");
    let r = b2.read10(0, 8, 1, BS).expect("READ(10) by B, port 2");
    assert_eq!((r.status, &r.data), (0, &data));

    // A unregisters through port 2 only: that nexus's registration goes, and with it the
    // reservation it held; through port 1 A stays registered.
    let r = pr_out(&mut a2, 0x00, 0, 0xa, 0, 0, &[]);
    assert_eq!(r.status, 0, "unregister through port 2: {:02x?}", r.sense);
    let mut left: Vec<(u64, u16)> = full_status(&mut a2)
        .into_iter()
        .map(|s| (s.0, s.5))
        .collect();
    left.sort_unstable();
    assert_eq!(left, [(0xa, 1), (0xb, 1)]);
    let r = b2.write10(0, 8, &data, BS).expect("WRITE(10) by B, port 2");
    assert_eq!(r.status, 0, "no reservation any more: {:02x?}", r.sense);
}

#[test]
fn write_and_verify_and_verify_compare_with_bytchk() {
    let t = InProcessTarget::start(mem_config(&["mem:16M"]));
    let mut c = login(&t, INIT_A, 1);
    let data: Vec<u8> = (0..4 * BS).map(|i| (i % 253) as u8).collect();
    // WRITE AND VERIFY(10) with BYTCHK 01b: written, read back and compared.
    let mut wav = [0x2e, 0x02, 0, 0, 0, 16, 0, 0, 4, 0];
    let r = c.scsi(0, &wav, &data, 0).expect("WRITE AND VERIFY");
    assert_eq!(r.status, 0, "{:02x?}", r.sense);
    assert_eq!(c.read10(0, 16, 4, BS).expect("READ").data, data);
    // VERIFY(16) BYTCHK 01b with the same data matches; with one byte changed it
    // miscompares, INFORMATION naming that byte's offset.
    let mut verify = [0u8; 16];
    verify[0] = 0x8f;
    verify[1] = 0x02;
    verify[9] = 16;
    verify[13] = 4;
    assert_eq!(c.scsi(0, &verify, &data, 0).expect("VERIFY").status, 0);
    let mut other = data.clone();
    other[1500] ^= 0xff;
    let r = c.scsi(0, &verify, &other, 0).expect("VERIFY");
    assert_eq!(r.status, 2);
    assert_eq!((r.sense_key(), r.asc_ascq()), (Some(0x0e), Some((0x1d, 0))));
    assert_eq!(r.sense[0] & 0x80, 0x80, "INFORMATION is valid");
    assert_eq!(&r.sense[3..7], &1500u32.to_be_bytes());
    // WRITE AND VERIFY(16) with BYTCHK 01b over blocks holding something else: the write
    // replaces them and the compare is against the new data.
    let mut wav16 = [0u8; 16];
    wav16[0] = 0x8e;
    wav16[1] = 0x02;
    wav16[9] = 16;
    wav16[13] = 4;
    let r = c.scsi(0, &wav16, &other, 0).expect("WRITE AND VERIFY(16)");
    assert_eq!(r.status, 0, "{:02x?}", r.sense);
    // Now the medium holds `other`: VERIFY against the old data miscompares at 1500.
    let r = c.scsi(0, &verify, &data, 0).expect("VERIFY");
    assert_eq!((r.sense_key(), r.asc_ascq()), (Some(0x0e), Some((0x1d, 0))));
    assert_eq!(&r.sense[3..7], &1500u32.to_be_bytes());
    // BYTCHK 1xb is reserved in WRITE AND VERIFY.
    wav[1] = 0x04;
    let r = c.scsi(0, &wav, &data, 0).expect("WRITE AND VERIFY");
    assert_eq!((r.sense_key(), r.asc_ascq()), (Some(5), Some((0x24, 0))));
}
