//! Several real ietd gateways of one RBD image for the Ceph tests: starting one on a free
//! loopback port, logging in as a named initiator, and the SCSI commands those tests share
//! (REPORT TARGET PORT GROUPS, WRITE with FUA, PERSISTENT RESERVE IN/OUT).

use std::net::SocketAddr;

use crate::initiator::{Conn, LoginOptions, ScsiResult};
use crate::inprocess::free_port;
use crate::process::{Ietd, TempDir};

pub const BS: u32 = 512;
/// SAM status RESERVATION CONFLICT.
pub const RESERVATION_CONFLICT: u8 = 0x18;
/// Asymmetric access states of REPORT TARGET PORT GROUPS.
pub const AO: u8 = 0x0;
pub const AN: u8 = 0x1;

/// Starts a gateway exporting `lun` (an `rbd:` spec) as LUN 0 of `iqn`.
pub fn start(dir: &TempDir, iqn: &str, lun: &str) -> Ietd {
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    Ietd::start(
        dir,
        portal,
        &[
            "--portal",
            &portal.to_string(),
            "--target",
            iqn,
            "--lun",
            lun,
            "--ebpf",
            "off",
        ],
    )
}

/// Logs in as `initiator` with ISID tail `isid_tail` and consumes the first unit attentions.
pub fn session(ietd: &Ietd, iqn: &str, initiator: &str, isid_tail: u8) -> Conn {
    let mut c = Conn::connect(ietd.portal).expect("connect");
    let mut opts = LoginOptions::normal(iqn);
    initiator.clone_into(&mut opts.initiator);
    opts.isid[5] = isid_tail;
    c.login(&opts)
        .unwrap_or_else(|e| panic!("login: {e:?}\n{}", ietd.log()));
    c.clear_unit_attention(0).expect("TEST UNIT READY");
    c
}

/// (target port group, asymmetric access state) of each group, or the unit attention
/// (ASC, ASCQ) reported instead.
pub type Groups = Result<Vec<(u16, u8)>, (u8, u8)>;

/// REPORT TARGET PORT GROUPS.
pub fn rtpg(c: &mut Conn) -> std::io::Result<Groups> {
    let cdb = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0];
    let r = c.scsi(0, &cdb, &[], 1024)?;
    if r.status != 0 {
        assert_eq!(r.sense_key(), Some(0x06), "RTPG: {r:?}");
        return Ok(Err(r.asc_ascq().expect("UA sense")));
    }
    let d = &r.data;
    let mut groups = Vec::new();
    let mut at = 4;
    while at + 8 <= d.len() {
        groups.push((u16::from_be_bytes([d[at + 2], d[at + 3]]), d[at] & 0x0f));
        at += 8 + 4 * usize::from(d[at + 7]);
    }
    Ok(Ok(groups))
}

/// WRITE(10) with FUA (acknowledged once in the cluster); the raw result.
pub fn write_fua(c: &mut Conn, lba: u32, data: &[u8]) -> std::io::Result<ScsiResult> {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[1] = 0x08;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&((data.len() as u32 / BS) as u16).to_be_bytes());
    c.scsi(0, &cdb, data, 0)
}

/// PERSISTENT RESERVE OUT with the 24-byte basic parameter list (SPC-5 §6.17.3);
/// `flags` is byte 20 (SPEC_I_PT 08h, ALL_TG_PT 04h, APTPL 01h).
pub fn pr_out(c: &mut Conn, sa: u8, pr_type: u8, key: u64, sa_key: u64, flags: u8) -> ScsiResult {
    let mut p = [0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = flags;
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5f;
    cdb[1] = sa;
    cdb[2] = pr_type;
    cdb[5..9].copy_from_slice(&24u32.to_be_bytes());
    c.scsi(0, &cdb, &p, 0).expect("PERSISTENT RESERVE OUT")
}

/// PERSISTENT RESERVE IN with service action `sa`; the parameter data.
pub fn pr_in(c: &mut Conn, sa: u8) -> ScsiResult {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5e;
    cdb[1] = sa;
    cdb[7..9].copy_from_slice(&1024u16.to_be_bytes());
    c.scsi(0, &cdb, &[], 1024).expect("PERSISTENT RESERVE IN")
}

/// READ KEYS: the registered keys.
pub fn read_keys(c: &mut Conn) -> Vec<u64> {
    let r = pr_in(c, 0);
    assert_eq!(r.status, 0, "READ KEYS: {r:?}");
    let len = u32::from_be_bytes(r.data[4..8].try_into().unwrap()) as usize;
    r.data[8..8 + len]
        .chunks_exact(8)
        .map(|k| u64::from_be_bytes(k.try_into().unwrap()))
        .collect()
}

/// READ RESERVATION: (holder's key, type), if a reservation exists.
pub fn read_reservation(c: &mut Conn) -> Option<(u64, u8)> {
    let r = pr_in(c, 1);
    assert_eq!(r.status, 0, "READ RESERVATION: {r:?}");
    let len = u32::from_be_bytes(r.data[4..8].try_into().unwrap());
    (len >= 16).then(|| {
        (
            u64::from_be_bytes(r.data[8..16].try_into().unwrap()),
            r.data[21] & 0x0f,
        )
    })
}
