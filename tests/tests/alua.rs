//! ALUA across two gateways of one RBD image on a real one-node Ceph cluster that the test
//! starts and stops by PID: TPGS and VPD 83h designators, REPORT TARGET PORT GROUPS alike
//! through both gateways, data written through one read back through the other, and after
//! `kill -9` of the active/optimized gateway the other takes over within the lease bound
//! (measured and printed) with ASYMMETRIC ACCESS STATE CHANGED. Without Ceph it skips,
//! except in CI.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use iet_tests::ceph::{self, IMAGE};
use iet_tests::initiator::{Conn, LoginOptions, ScsiResult};
use iet_tests::inprocess::free_port;
use iet_tests::process::{Ietd, TempDir};

const IQN: &str = "iqn.2026-11.io.iet:alua";
const BS: u32 = 512;
/// `alua_lease=` of both gateways: the owner's lease, renewed every `LEASE / 6`.
const LEASE: Duration = Duration::from_secs(4);
const AO: u8 = 0x0;
const AN: u8 = 0x1;

fn gateway(dir: &TempDir, spec: &str, group: u16) -> Ietd {
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let lun = format!("{spec}&alua_group={group}&alua_lease={}", LEASE.as_secs());
    Ietd::start(
        dir,
        portal,
        &[
            "--portal",
            &portal.to_string(),
            "--target",
            IQN,
            "--lun",
            &lun,
            "--ebpf",
            "off",
        ],
    )
}

fn session(ietd: &Ietd, isid_tail: u8) -> Conn {
    let mut c = Conn::connect(ietd.portal).expect("connect");
    let mut opts = LoginOptions::normal(IQN);
    opts.isid[5] = isid_tail;
    c.login(&opts)
        .unwrap_or_else(|e| panic!("login: {e:?}\n{}", ietd.log()));
    c.clear_unit_attention(0).expect("TEST UNIT READY");
    c
}

/// REPORT TARGET PORT GROUPS (MAINTENANCE IN, SA 0Ah), raw.
fn rtpg_raw(c: &mut Conn) -> ScsiResult {
    let cdb = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0];
    c.scsi(0, &cdb, &[], 1024)
        .expect("REPORT TARGET PORT GROUPS")
}

/// The groups of REPORT TARGET PORT GROUPS parameter data: (group id, state, relative ports).
fn parse_groups(d: &[u8]) -> Vec<(u16, u8, Vec<u16>)> {
    let len = u32::from_be_bytes(d[..4].try_into().unwrap()) as usize;
    assert_eq!(len + 4, d.len(), "RETURN DATA LENGTH");
    let mut at = 4;
    let mut groups = Vec::new();
    while at < d.len() {
        let count = usize::from(d[at + 7]);
        let ports = (0..count)
            .map(|i| u16::from_be_bytes([d[at + 10 + 4 * i], d[at + 11 + 4 * i]]))
            .collect();
        groups.push((
            u16::from_be_bytes([d[at + 2], d[at + 3]]),
            d[at] & 0x0f,
            ports,
        ));
        at += 8 + 4 * count;
    }
    groups
}

/// (target port group, asymmetric access state) as REPORT TARGET PORT GROUPS lists them.
type Groups = Vec<(u16, u8)>;
/// (ASC, ASCQ) of unit attentions.
type Uas = Vec<(u8, u8)>;

/// The groups, with pending unit attentions consumed (and returned).
fn groups(c: &mut Conn) -> (Groups, Uas) {
    let mut uas = Vec::new();
    loop {
        let r = rtpg_raw(c);
        if r.status == 0 {
            let g = parse_groups(&r.data);
            return (g.into_iter().map(|(id, s, _)| (id, s)).collect(), uas);
        }
        assert_eq!(r.sense_key(), Some(0x06), "RTPG: {r:?}");
        uas.extend(r.asc_ascq());
        assert!(uas.len() < 8, "unit attentions never cleared: {uas:02x?}");
    }
}

/// Polls both gateways until they report `want`.
fn wait_for(conns: &mut [&mut Conn], want: &[(u16, u8)], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let seen: Vec<_> = conns.iter_mut().map(|c| groups(c).0).collect();
        if seen.iter().all(|g| g == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gateways report {seen:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Standard INQUIRY TPGS and the VPD 83h (relative target port, target port group).
fn identity(c: &mut Conn) -> (u8, Option<u16>, Option<u16>) {
    let r = c
        .scsi(0, &[0x12, 0, 0, 0, 96, 0], &[], 96)
        .expect("INQUIRY");
    let tpgs = (r.data[5] >> 4) & 0x03;
    let r = c
        .scsi(0, &[0x12, 1, 0x83, 0x01, 0, 0], &[], 256)
        .expect("VPD 83h");
    let (mut rtp, mut tpg) = (None, None);
    let body = &r.data[4..];
    let mut at = 0;
    while at + 4 <= body.len() {
        let len = usize::from(body[at + 3]);
        let value = u16::from_be_bytes([body[at + 6], body[at + 7]]);
        match body[at + 1] & 0x3f {
            0x14 => rtp = Some(value),
            0x15 => tpg = Some(value),
            _ => {}
        }
        at += 4 + len;
    }
    (tpgs, rtp, tpg)
}

fn pattern(seed: u32, blocks: u32) -> Vec<u8> {
    (0..blocks * BS)
        .map(|i| (seed.wrapping_mul(131).wrapping_add(i * 7) % 251) as u8)
        .collect()
}

/// WRITE(10) with FUA: acknowledged once in the cluster.
fn write_fua(c: &mut Conn, lba: u32, data: &[u8]) {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[1] = 0x08;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&((data.len() as u32 / BS) as u16).to_be_bytes());
    let r = c.scsi(0, &cdb, data, 0).expect("WRITE(10)");
    assert_eq!(r.status, 0, "write at {lba}: {r:?}");
}

fn read_back(c: &mut Conn, lba: u32, want: &[u8], what: &str) {
    let r = c
        .read10(0, lba, (want.len() / BS as usize) as u16, BS)
        .expect("READ(10)");
    assert!(r.status == 0 && r.data == want, "{what}: {r:?}");
}

#[test]
fn alua_across_two_gateways() {
    let t0 = Instant::now();
    let Some(cluster) = ceph::start_for_test("alua") else {
        return;
    };
    let spec = cluster.lun_spec(IMAGE);
    let (dir_a, dir_b) = (TempDir::new("alua-a"), TempDir::new("alua-b"));
    // A opens the image first and so takes the owner lease.
    let mut a = gateway(&dir_a, &spec, 1);
    let mut b = gateway(&dir_b, &spec, 2);
    let mut ca = session(&a, 1);
    let mut cb = session(&b, 2);

    assert_eq!(
        identity(&mut ca),
        (0b01, Some(1), Some(1)),
        "A: TPGS, RTPI, TPG"
    );
    assert_eq!(
        identity(&mut cb),
        (0b01, Some(2), Some(2)),
        "B: TPGS, RTPI, TPG"
    );
    // Both report the same two groups once A's next renewal has seen B join.
    wait_for(&mut [&mut ca, &mut cb], &[(1, AO), (2, AN)], LEASE);
    let r = rtpg_raw(&mut cb);
    assert_eq!(
        parse_groups(&r.data),
        vec![(1, AO, vec![1]), (2, AN, vec![2])],
        "each group has its gateway's one target port"
    );

    // Data through either gateway reads back through the other; B (non-optimized) writes last.
    let (one, two) = (pattern(1, 16), pattern(2, 8));
    write_fua(&mut ca, 64, &one);
    read_back(&mut cb, 64, &one, "B reads what A wrote");
    write_fua(&mut cb, 512, &two);
    read_back(&mut ca, 512, &two, "A reads what B wrote");
    // A writes again, so A holds librbd's image lock when it dies.
    let three = pattern(3, 8);
    write_fua(&mut ca, 1024, &three);

    // kill -9 of the owner: B takes over once A's lease runs out.
    a.child.kill().expect("kill -9 gateway A");
    a.child.wait().expect("reap gateway A");
    let killed = Instant::now();
    let bound = LEASE + LEASE / 6 + Duration::from_secs(2);
    let mut uas = Vec::new();
    let takeover = loop {
        let (g, seen) = groups(&mut cb);
        uas.extend(seen);
        if g.contains(&(2, AO)) {
            assert!(!g.contains(&(1, AO)), "one owner at a time: {g:?}");
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < bound,
            "B did not take over within {bound:?}: {g:?}\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("ALUA takeover after kill -9 of the owner: {takeover:.2?} (lease {LEASE:?})");
    assert!(
        uas.contains(&(0x2a, 0x06)),
        "B raised ASYMMETRIC ACCESS STATE CHANGED: {uas:02x?}"
    );
    // Once A's membership lease is gone too, B alone is left.
    wait_for(
        &mut [&mut cb],
        &[(2, AO)],
        LEASE + LEASE / 6 + Duration::from_secs(1),
    );

    // Everything acknowledged reads back through B, and B writes at once (A is fenced).
    read_back(&mut cb, 64, &one, "after takeover, A's first write");
    read_back(&mut cb, 512, &two, "after takeover, B's write");
    read_back(&mut cb, 1024, &three, "after takeover, A's last write");
    let w0 = Instant::now();
    let four = pattern(4, 8);
    write_fua(&mut cb, 2048, &four);
    let first_write = w0.elapsed();
    read_back(&mut cb, 2048, &four, "B's write after the takeover");
    println!("first write through B after the takeover: {first_write:.2?}");
    assert!(
        first_write < Duration::from_secs(10),
        "B wrote after the takeover in {first_write:?}"
    );

    for line in b
        .log()
        .lines()
        .filter(|l| l.contains("ALUA") || l.contains("image lock"))
    {
        println!("  gateway B: {line}");
    }
    cb.logout().expect("logout B");
    assert!(b.stop(), "gateway B exits cleanly:\n{}", b.log());
    drop(cluster);
    println!("alua test: whole test {:.1?}", t0.elapsed());
}
