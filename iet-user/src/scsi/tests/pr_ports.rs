//! Persistent reservations across initiator and target ports: SPEC_I_PT with both
//! TransportID formats, ALL_TG_PT, and REPORT CAPABILITIES.

use super::*;
use crate::scsi::pr::encode_transport_id;

fn port(name: &str, isid: u64, tpgt: u16, id: u64) -> ItNexus {
    ItNexus {
        id,
        initiator_port: format!("{name},i,0x{isid:012x}"),
        target_port: format!("iqn.2026-01.test:tgt,t,0x{tpgt:04x}"),
        relative_target_port: tpgt,
    }
}

/// REGISTER with SPEC_I_PT and/or ALL_TG_PT, naming `ports` by TransportID.
fn register_ports(sa_key: u64, all_tg_pt: bool, ports: &[&str]) -> ([u8; 10], Vec<u8>) {
    let tids: Vec<u8> = ports.iter().flat_map(|p| encode_transport_id(p)).collect();
    let mut p = vec![0u8; 28];
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = u8::from(!ports.is_empty()) << 3 | u8::from(all_tg_pt) << 2;
    if ports.is_empty() {
        p.truncate(24);
    } else {
        p[24..28].copy_from_slice(&(tids.len() as u32).to_be_bytes());
        p.extend_from_slice(&tids);
    }
    let mut cdb = [0x5f, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[5..9].copy_from_slice(&(p.len() as u32).to_be_bytes());
    (cdb, p)
}

fn read_keys(rig: &Rig, n: &ItNexus) -> Vec<u64> {
    let d = rig.ok(n, &pr_in(0), &[]);
    d[8..]
        .chunks(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn touch(rig: &Rig, n: &ItNexus) {
    rig.clear_ua(n);
}

#[test]
#[expect(clippy::many_single_char_names, reason = "a, b, c are the initiators")]
fn spec_i_pt_registers_named_ports_and_names() {
    let rig = Rig::new();
    let a = port("iqn.2026-01.test:a", 1, 1, 11);
    let b = port("iqn.2026-01.test:b", 2, 1, 12);
    let b2 = port("iqn.2026-01.test:b", 3, 1, 13);
    let c = port("iqn.2026-01.test:c", 4, 1, 14);
    for n in [&a, &b, &b2, &c] {
        touch(&rig, n);
    }
    // a registers itself, b's port 0x..2 (format 01b) and every port of c (format 00b).
    let (cdb, p) = register_ports(0xaa, false, &[&b.initiator_port, "iqn.2026-01.test:c"]);
    rig.ok(&a, &cdb, &p);
    assert_eq!(read_keys(&rig, &a), vec![0xaa, 0xaa, 0xaa]);
    // b's registered port may reserve with key aa; b's other port is not registered.
    let (res, rp) = pr_out(0x01, 0x01, 0xaa, 0, false);
    let (o, _) = rig.cmd(&b2, &res, &rp);
    assert_eq!(o.status, ScsiStatus::ReservationConflict);
    rig.ok(&b, &res, &rp);
    // c (named without ISID) is registered on any of its ports.
    let (rel, relp) = pr_out(0x00, 0, 0xaa, 0xcc, false);
    rig.ok(&c, &rel, &relp);
    // READ FULL STATUS: c's registration is reported with a format 00b TransportID.
    let d = rig.ok(&a, &[0x5e, 3, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
    let mut tids = Vec::new();
    let mut at = 8;
    while at + 24 <= d.len() {
        let len = u32::from_be_bytes(d[at + 20..at + 24].try_into().expect("4 bytes")) as usize;
        tids.push(d[at + 24]);
        at += 24 + len;
    }
    assert!(tids.contains(&0x05), "{tids:02x?}");
    // SPEC_I_PT from a registered nexus, or naming a registered port: refused.
    let (cdb, mut p) = register_ports(0xab, false, &[&b2.initiator_port]);
    p[..8].copy_from_slice(&0xaau64.to_be_bytes());
    assert_eq!(rig.check(&a, &cdb, &p), (5, 0x26, 0));
    let (cdb, p) = register_ports(0xdd, false, &[&b.initiator_port]);
    assert_eq!(rig.check(&b2, &cdb, &p), (5, 0x26, 0));
    // SPEC_I_PT with REGISTER AND IGNORE EXISTING KEY is refused; a bad TransportID too.
    let (mut cdb, p) = register_ports(0xdd, false, &[&b.initiator_port]);
    cdb[1] = 0x06;
    assert_eq!(rig.check(&b2, &cdb, &p), (5, 0x26, 0));
    let (cdb, mut p) = register_ports(0xdd, false, &["iqn.2026-01.test:z"]);
    p[28] = 0x01; // SCSI over Fibre Channel protocol
    assert_eq!(rig.check(&b2, &cdb, &p), (5, 0x26, 0));
    // TRANSPORTID PARAMETER DATA LENGTH that does not fill the list.
    let (mut cdb, mut p) = register_ports(0xdd, false, &["iqn.2026-01.test:z"]);
    p.push(0);
    cdb[8] += 1;
    assert_eq!(rig.check(&b2, &cdb, &p), (5, 0x1a, 0));
}

/// READ FULL STATUS descriptors: (key, byte 12 flags, relative target port identifier).
fn full_status(rig: &Rig, n: &ItNexus) -> Vec<(u64, u8, u16)> {
    let d = rig.ok(n, &[0x5e, 3, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
    let mut out = Vec::new();
    let mut at = 8;
    while at + 24 <= d.len() {
        let key = u64::from_be_bytes(d[at..at + 8].try_into().expect("8 bytes"));
        let rtp = u16::from_be_bytes([d[at + 18], d[at + 19]]);
        let len = u32::from_be_bytes(d[at + 20..at + 24].try_into().expect("4 bytes")) as usize;
        out.push((key, d[at + 12], rtp));
        at += 24 + len;
    }
    out
}

#[test]
fn all_tg_pt_registers_every_target_port() {
    let rig = Rig::new();
    rig.units.set_target_ports(
        [1, 2]
            .map(|t| TargetPort {
                name: format!("iqn.2026-01.test:tgt,t,0x{t:04x}"),
                relative_id: t,
            })
            .to_vec(),
    );
    let on1 = port("iqn.2026-01.test:a", 1, 1, 21);
    let on2 = port("iqn.2026-01.test:a", 1, 2, 22);
    let other = port("iqn.2026-01.test:b", 2, 2, 23);
    let b_on1 = port("iqn.2026-01.test:b", 2, 1, 24);
    for n in [&on1, &on2, &other, &b_on1] {
        touch(&rig, n);
    }
    let (cdb, p) = register_ports(0x77, true, &[]);
    rig.ok(&on1, &cdb, &p);
    // One registration per I_T nexus: through target port 1 and target port 2.
    assert_eq!(read_keys(&rig, &on1), vec![0x77, 0x77]);
    assert_eq!(full_status(&rig, &on2), vec![(0x77, 0, 1), (0x77, 0, 2)]);
    // The same initiator port through target port 2 reserves with that key.
    let (res, rp) = pr_out(0x01, 0x03, 0x77, 0, false);
    rig.ok(&on2, &res, &rp);
    assert_eq!(full_status(&rig, &on1), vec![(0x77, 0, 1), (0x77, 0x01, 2)]);
    // Exclusive Access: only the holding I_T nexus has access (SPC-5 table 77).
    assert_eq!(rig.status(&on2, &read10(0, 1), &[]), ScsiStatus::Good);
    for n in [&on1, &other] {
        assert_eq!(
            rig.status(n, &read10(0, 1), &[]),
            ScsiStatus::ReservationConflict
        );
    }
    // Without ALL_TG_PT, b registers through port 1 only: port 2 is not registered.
    let (cdb, p) = register_ports(0xbb, false, &[]);
    rig.ok(&b_on1, &cdb, &p);
    let (rel, relp) = pr_out(0x00, 0, 0xbb, 0xbc, false);
    let (o, _) = rig.cmd(&other, &rel, &relp);
    assert_eq!(o.status, ScsiStatus::ReservationConflict);
    // Unregistering through port 2 removes that I_T nexus's registration, and with it
    // the reservation it held; port 1's registration stays.
    let (unreg, up) = pr_out(0x00, 0, 0x77, 0, false);
    rig.ok(&on2, &unreg, &up);
    assert_eq!(full_status(&rig, &on1), vec![(0x77, 0, 1), (0xbb, 0, 1)]);
    assert_eq!(rig.status(&other, &read10(0, 1), &[]), ScsiStatus::Good);
    // ALL_TG_PT with key zero from a registered nexus unregisters every port.
    let (cdb, mut p) = register_ports(0, true, &[]);
    p[..8].copy_from_slice(&0x77u64.to_be_bytes());
    rig.ok(&on1, &cdb, &p);
    assert_eq!(read_keys(&rig, &on1), vec![0xbb]);
}

#[test]
fn spec_i_pt_with_all_tg_pt_registers_the_named_ports_on_every_target_port() {
    let rig = Rig::new();
    rig.units.set_target_ports(
        [1, 2]
            .map(|t| TargetPort {
                name: format!("iqn.2026-01.test:tgt,t,0x{t:04x}"),
                relative_id: t,
            })
            .to_vec(),
    );
    let a = port("iqn.2026-01.test:a", 1, 1, 31);
    let b_on2 = port("iqn.2026-01.test:b", 2, 2, 32);
    for n in [&a, &b_on2] {
        touch(&rig, n);
    }
    let (cdb, p) = register_ports(0x55, true, &[&b_on2.initiator_port]);
    rig.ok(&a, &cdb, &p);
    // a and b, each through target ports 1 and 2.
    let mut seen: Vec<(u64, u16)> = full_status(&rig, &a)
        .into_iter()
        .map(|(k, _, rtp)| (k, rtp))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [(0x55, 1), (0x55, 1), (0x55, 2), (0x55, 2)]);
    // b, named by a, reserves through port 2 with that key.
    let (res, rp) = pr_out(0x01, 0x01, 0x55, 0, false);
    rig.ok(&b_on2, &res, &rp);
}

#[test]
fn report_capabilities_states_what_is_supported() {
    let rig = Rig::new();
    let d = rig.ok(&rig.a, &pr_in(2), &[]);
    // CRH, SIP_C, ATP_C, no PTPL_C without a store; TMV, ALLOW COMMANDS 001b; all six types.
    assert_eq!(d, [0, 8, 0x1c, 0x90, 0xea, 0x01, 0, 0]);
}
