//! Command-level tests through `LogicalUnits::execute`: byte fixtures for INQUIRY,
//! VPD, mode pages and READ CAPACITY; PR with two nexuses; UA lifecycle; fuzzing.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::*;
use crate::backend::{BlockBackend, Extent, MemoryBackend};

fn nexus(id: u64) -> ItNexus {
    ItNexus {
        id,
        initiator_port: format!("iqn.2026-01.test:init{id},i,0x23d00000000{id}"),
        target_port: "iqn.2026-01.test:tgt,t,0x0001".into(),
        relative_target_port: 1,
    }
}

struct Rig {
    units: LogicalUnits,
    a: ItNexus,
    b: ItNexus,
}

fn mem_lun(size: u64) -> LunConfig {
    LunConfig::new(
        Arc::new(MemoryBackend::new(size)),
        "SN0001",
        0x0123_4567_89ab_cdef,
    )
}

impl Rig {
    fn new() -> Self {
        Self::with(mem_lun(4 << 20))
    }

    fn with(cfg: LunConfig) -> Self {
        let units = LogicalUnits::new();
        units.add_lun(0, cfg).expect("add lun 0");
        let rig = Self {
            units,
            a: nexus(1),
            b: nexus(2),
        };
        rig.clear_ua(&rig.a);
        rig.clear_ua(&rig.b);
        rig
    }

    fn cmd_lun(&self, n: &ItNexus, lun: u64, cdb: &[u8], out: &[u8]) -> (CommandOutcome, Vec<u8>) {
        let req = ScsiRequest {
            nexus: n,
            lun,
            cdb,
            attr: TaskAttr::Simple,
            expected_data_in_len: 65536,
        };
        let mut data_in = Vec::new();
        let o = self.units.execute(&req, out, &mut data_in);
        (o, data_in)
    }

    fn cmd(&self, n: &ItNexus, cdb: &[u8], out: &[u8]) -> (CommandOutcome, Vec<u8>) {
        self.cmd_lun(n, 0, cdb, out)
    }

    fn ok(&self, n: &ItNexus, cdb: &[u8], out: &[u8]) -> Vec<u8> {
        let (o, d) = self.cmd(n, cdb, out);
        assert_eq!(
            o.status,
            ScsiStatus::Good,
            "cdb {cdb:02x?}: sense {:?}",
            o.sense.as_deref().map(sense_code)
        );
        d
    }

    fn check(&self, n: &ItNexus, cdb: &[u8], out: &[u8]) -> (u8, u8, u8) {
        let (o, _) = self.cmd(n, cdb, out);
        assert_eq!(o.status, ScsiStatus::CheckCondition, "cdb {cdb:02x?}");
        sense_code(o.sense.as_deref().expect("sense with CHECK CONDITION"))
    }

    fn status(&self, n: &ItNexus, cdb: &[u8], out: &[u8]) -> ScsiStatus {
        self.cmd(n, cdb, out).0.status
    }

    fn clear_ua(&self, n: &ItNexus) {
        for _ in 0..10 {
            if self.cmd(n, &TUR, &[]).0.status == ScsiStatus::Good {
                return;
            }
        }
        panic!("unit attentions never cleared");
    }
}

const TUR: [u8; 6] = [0; 6];

fn sense_code(s: &[u8]) -> (u8, u8, u8) {
    match s.first().map(|b| b & 0x7f) {
        Some(0x70) => (s[2] & 0x0f, s[12], s[13]),
        Some(0x72) => (s[1] & 0x0f, s[2], s[3]),
        other => panic!("bad sense format {other:?}"),
    }
}

fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn write10(lba: u32, blocks: u16, fua: bool) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    c[1] = u8::from(fua) << 3;
    c
}

fn pr_out(sa: u8, t: u8, key: u64, sa_key: u64, aptpl: bool) -> ([u8; 10], Vec<u8>) {
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = u8::from(aptpl);
    ([0x5f, sa, t, 0, 0, 0, 0, 0, 24, 0], p)
}

fn pr_in(sa: u8) -> [u8; 10] {
    [0x5e, sa, 0, 0, 0, 0, 0, 0x10, 0, 0]
}

const LBA_OOR: (u8, u8, u8) = (5, 0x21, 0);
const INVALID_FIELD: (u8, u8, u8) = (5, 0x24, 0);

#[test]
fn unit_attention_lifecycle() {
    let rig = Rig::new();
    let c = nexus(3);
    // INQUIRY, REPORT LUNS do not consume the power-on UA; TEST UNIT READY reports it.
    rig.ok(&c, &[0x12, 0, 0, 0, 36, 0], &[]);
    rig.ok(&c, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0], &[]);
    assert_eq!(rig.check(&c, &TUR, &[]), (6, 0x29, 0));
    rig.ok(&c, &TUR, &[]);
    rig.units.resize_lun(0, 8 << 20).expect("resize");
    assert_eq!(rig.check(&rig.a, &TUR, &[]), (6, 0x2a, 0x09));
    // REQUEST SENSE reports and clears a pending UA.
    let d = rig.ok(&rig.b, &[0x03, 0, 0, 0, 18, 0], &[]);
    assert_eq!(sense_code(&d), (6, 0x2a, 0x09));
    rig.ok(&rig.b, &TUR, &[]);
    let d = rig.ok(&rig.b, &[0x03, 0, 0, 0, 18, 0], &[]);
    assert_eq!(sense_code(&d), (0, 0, 0));
    rig.units.add_lun(1, mem_lun(1 << 20)).expect("add lun 1");
    assert_eq!(rig.check(&rig.a, &TUR, &[]), (6, 0x3f, 0x0e));
    // REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED without reporting it.
    rig.units.remove_lun(1).expect("remove lun 1");
    rig.ok(&rig.a, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0], &[]);
    rig.ok(&rig.a, &TUR, &[]);
    assert_eq!(rig.check(&rig.b, &TUR, &[]), (6, 0x3f, 0x0e));
    // LUN reset: UA on every path, the one that asked included.
    rig.units.lun_reset(0, &rig.a);
    assert_eq!(rig.check(&rig.a, &TUR, &[]), (6, 0x29, 0x03));
    assert_eq!(rig.check(&rig.b, &TUR, &[]), (6, 0x29, 0x03));
    // Nexus loss forgets state: the next session starts with POWER ON again.
    rig.units.nexus_loss(&rig.a);
    assert_eq!(rig.check(&rig.a, &TUR, &[]), (6, 0x29, 0));
}

#[test]
fn standard_inquiry_fixture() {
    let rig = Rig::new();
    let d = rig.ok(&rig.a, &[0x12, 0, 0, 0, 0xff, 0], &[]);
    assert_eq!(d.len(), 96);
    // Byte 5: 3PC (EXTENDED COPY is served).
    assert_eq!(&d[..8], &[0x00, 0x00, 0x06, 0x12, 91, 0x08, 0, 0x02]);
    assert_eq!(&d[8..16], b"IET     ");
    assert_eq!(&d[16..32], b"VIRTUAL-DISK    ");
    assert_eq!(
        &d[58..66],
        &[0x00, 0xa0, 0x09, 0x60, 0x04, 0x60, 0x04, 0xc0]
    );
    // Allocation length truncates without error.
    assert_eq!(rig.ok(&rig.a, &[0x12, 0, 0, 0, 5, 0], &[]).len(), 5);
    // Nonexistent LUN: qualifier 011b, type 1Fh.
    let (o, d) = rig.cmd_lun(&rig.a, 7, &[0x12, 0, 0, 0, 36, 0], &[]);
    assert_eq!(o.status, ScsiStatus::Good);
    assert_eq!(d[0], 0x7f);
    let (o, _) = rig.cmd_lun(&rig.a, 7, &TUR, &[]);
    assert_eq!(sense_code(&o.sense.expect("sense")), (5, 0x25, 0));
    // Unknown opcode.
    assert_eq!(rig.check(&rig.a, &[0xc3; 16], &[]), (5, 0x20, 0));
    assert_eq!(rig.check(&rig.a, &[0x85; 16], &[]), (5, 0x20, 0));
}

#[test]
fn vpd_pages() {
    let rig = Rig::new();
    let d = rig.ok(&rig.a, &[0x12, 1, 0x00, 0, 0xff, 0], &[]);
    assert_eq!(
        d,
        [0, 0, 0, 8, 0x00, 0x80, 0x83, 0x86, 0x8f, 0xb0, 0xb1, 0xb2]
    );
    let d = rig.ok(&rig.a, &[0x12, 1, 0x80, 0, 0xff, 0], &[]);
    assert_eq!(&d[4..], b"SN0001");
    let d = rig.ok(&rig.a, &[0x12, 1, 0x83, 0, 0xff, 0], &[]);
    // First designator: T10 vendor ID "IET     SN0001".
    assert_eq!(&d[4..8], &[0x02, 0x01, 0, 14]);
    assert_eq!(&d[8..22], b"IET     SN0001");
    // Second: NAA 6h, 16 bytes.
    assert_eq!(&d[22..26], &[0x01, 0x03, 0, 16]);
    assert_eq!(d[26] >> 4, 6);
    // Same device_id, same designators: stable across restarts.
    let again = Rig::new();
    assert_eq!(again.ok(&again.a, &[0x12, 1, 0x83, 0, 0xff, 0], &[]), d);
    let d = rig.ok(&rig.a, &[0x12, 1, 0xb0, 0, 0xff, 0], &[]);
    assert_eq!(&d[..4], &[0, 0xb0, 0, 0x3c]);
    let d = rig.ok(&rig.a, &[0x12, 1, 0xb2, 0, 0xff, 0], &[]);
    assert_eq!(d, [0, 0xb2, 0, 4, 0, 0xe4, 0x02, 0]);
    assert_eq!(
        rig.check(&rig.a, &[0x12, 1, 0x99, 0, 0xff, 0], &[]),
        INVALID_FIELD
    );
}

#[test]
fn read_capacity_fixtures() {
    let rig = Rig::new();
    let d = rig.ok(&rig.a, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(d, [0, 0, 0x1f, 0xff, 0, 0, 2, 0]);
    let mut c = [0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x10;
    c[13] = 32;
    let d = rig.ok(&rig.a, &c, &[]);
    assert_eq!(
        &d[..16],
        &[0, 0, 0, 0, 0, 0, 0x1f, 0xff, 0, 0, 2, 0, 0, 0, 0xc0, 0]
    );
}

#[test]
fn read_write_and_range_checks() {
    let rig = Rig::new();
    let data = vec![0xa5u8; 1024];
    rig.ok(&rig.a, &write10(10, 2, true), &data);
    assert_eq!(rig.ok(&rig.a, &read10(10, 2), &[]), data);
    assert_eq!(rig.check(&rig.a, &read10(8191, 2), &[]), LBA_OOR);
    assert_eq!(rig.check(&rig.a, &read10(8193, 0), &[]), LBA_OOR);
    rig.ok(&rig.a, &read10(8192, 0), &[]);
    let mut rdprotect = read10(0, 1);
    rdprotect[1] = 0x20;
    assert_eq!(rig.check(&rig.a, &rdprotect, &[]), INVALID_FIELD);
    // EDTL smaller than the CDB: only what arrived is written.
    rig.ok(&rig.a, &write10(20, 1, false), &[7u8; 200]);
    let d = rig.ok(&rig.a, &read10(20, 1), &[]);
    assert!(d[..200].iter().all(|&b| b == 7) && d[200..].iter().all(|&b| b == 0));
    rig.units.set_read_only(0, true).expect("ro");
    rig.clear_ua(&rig.a);
    assert_eq!(
        rig.check(&rig.a, &write10(0, 1, false), &[0; 512]),
        (7, 0x27, 0)
    );
}

#[test]
fn compare_and_write_miscompare() {
    let rig = Rig::new();
    rig.ok(&rig.a, &write10(5, 1, false), &[1u8; 512]);
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[9] = 5;
    c[13] = 1;
    let mut out = vec![1u8; 512];
    out.extend_from_slice(&[2u8; 512]);
    rig.ok(&rig.a, &c, &out);
    assert_eq!(rig.ok(&rig.a, &read10(5, 1), &[]), vec![2u8; 512]);
    // Compare data differs at byte 100: MISCOMPARE, INFORMATION = 100, medium unchanged.
    let mut out = vec![2u8; 512];
    out[100] = 9;
    out.extend_from_slice(&[3u8; 512]);
    let (o, _) = rig.cmd(&rig.a, &c, &out);
    assert_eq!(o.status, ScsiStatus::CheckCondition);
    let s = o.sense.expect("sense");
    assert_eq!(sense_code(&s), (0x0e, 0x1d, 0));
    assert_eq!(s[0], 0xf0, "VALID set");
    assert_eq!(&s[3..7], &100u32.to_be_bytes());
    assert_eq!(rig.ok(&rig.a, &read10(5, 1), &[]), vec![2u8; 512]);
    // Data-Out must be exactly 2 * NUMBER OF LOGICAL BLOCKS.
    assert_eq!(rig.check(&rig.a, &c, &out[..600]), INVALID_FIELD);
}

#[test]
fn mode_sense_and_select() {
    let rig = Rig::new();
    let d = rig.ok(&rig.a, &[0x1a, 0, 0x3f, 0, 0xff, 0], &[]);
    assert_eq!(usize::from(d[0]) + 1, d.len());
    assert_eq!(d[2], 0x10, "DPOFUA, not write protected");
    assert_eq!(d[3], 8, "block descriptor");
    let pages: Vec<u8> = {
        let mut v = Vec::new();
        let mut p = &d[12..];
        while let [code, len, ..] = *p {
            v.push(code);
            p = &p[2 + usize::from(len)..];
        }
        v
    };
    assert_eq!(pages, [0x01, 0x08, 0x0a, 0x1c]);
    // Changeable values of the Control page: D_SENSE and SWP.
    let d = rig.ok(&rig.a, &[0x1a, 0x08, 0x4a, 0, 0xff, 0], &[]);
    assert_eq!(&d[4..8], &[0x0a, 0x0a, 0x04, 0x00]);
    assert_eq!(
        rig.check(&rig.a, &[0x1a, 0x08, 0xca, 0, 0xff, 0], &[]),
        (5, 0x39, 0)
    );
    // MODE SELECT the current Control page with D_SENSE set.
    let mut cur = rig.ok(&rig.a, &[0x1a, 0x08, 0x0a, 0, 0xff, 0], &[]);
    cur[0] = 0;
    cur[6] |= 0x04;
    let len = cur.len() as u8;
    rig.ok(&rig.a, &[0x15, 0x10, 0, 0, len, 0], &cur);
    // Descriptor-format sense from now on; the other nexus hears MODE PARAMETERS CHANGED.
    let (o, _) = rig.cmd(&rig.a, &read10(9000, 1), &[]);
    assert_eq!(o.sense.expect("sense")[0], 0x72);
    assert_eq!(rig.check(&rig.b, &TUR, &[]), (6, 0x2a, 0x01));
    // Changing a non-changeable bit is rejected.
    cur[7] = 0xff;
    assert_eq!(
        rig.check(&rig.a, &[0x15, 0x10, 0, 0, len, 0], &cur),
        (5, 0x26, 0)
    );
}

#[test]
fn reserve6_two_initiators() {
    let rig = Rig::new();
    rig.ok(&rig.a, &[0x16, 0, 0, 0, 0, 0], &[]);
    rig.ok(&rig.a, &[0x16, 0, 0, 0, 0, 0], &[]);
    assert_eq!(
        rig.status(&rig.b, &[0x16, 0, 0, 0, 0, 0], &[]),
        ScsiStatus::ReservationConflict
    );
    // RELEASE by a non-holder is a no-op.
    rig.ok(&rig.b, &[0x17, 0, 0, 0, 0, 0], &[]);
    rig.ok(&rig.a, &[0x1a, 0, 0x3f, 0, 0xff, 0], &[]);
    assert_eq!(
        rig.status(&rig.b, &[0x1a, 0, 0x3f, 0, 0xff, 0], &[]),
        ScsiStatus::ReservationConflict
    );
    rig.ok(&rig.b, &[0x12, 0, 0, 0, 36, 0], &[]);
    rig.ok(&rig.a, &[0x17, 0, 0, 0, 0, 0], &[]);
    rig.ok(&rig.b, &[0x16, 0, 0, 0, 0, 0], &[]);
    rig.units.nexus_loss(&rig.b);
    rig.ok(&rig.a, &[0x16, 0, 0, 0, 0, 0], &[]);
}

#[derive(Debug, Default)]
struct MemStore(Mutex<Option<Vec<u8>>>);

impl PrStore for MemStore {
    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.0.lock().expect("store lock").clone())
    }
    fn save(&self, data: Option<&[u8]>) -> io::Result<()> {
        *self.0.lock().expect("store lock") = data.map(<[u8]>::to_vec);
        Ok(())
    }
}

#[test]
fn persistent_reservations_two_nexuses() {
    let store = Arc::new(MemStore::default());
    let mut cfg = mem_lun(4 << 20);
    cfg.pr_store = Some(store.clone());
    let rig = Rig::with(cfg);
    let (a, b) = (&rig.a, &rig.b);
    // REGISTER with a wrong key from an unregistered nexus conflicts.
    let (cdb, params) = pr_out(0, 0, 5, 6, false);
    assert_eq!(
        rig.status(a, &cdb, &params),
        ScsiStatus::ReservationConflict
    );
    let (cdb, params) = pr_out(0, 0, 0, 0xaa, true);
    rig.ok(a, &cdb, &params);
    // APTPL applies to the whole LU: the last REGISTER decides (SPC-5 §5.13.5).
    let (cdb, params) = pr_out(6, 0, 0, 0xbb, true);
    rig.ok(b, &cdb, &params);
    let d = rig.ok(a, &pr_in(0), &[]);
    assert_eq!(&d[4..8], &16u32.to_be_bytes());
    assert_eq!(&d[8..16], &0xaau64.to_be_bytes());
    assert_eq!(&d[16..24], &0xbbu64.to_be_bytes());
    // A takes Write Exclusive: B may read but not write.
    let (cdb, params) = pr_out(1, 0x01, 0xaa, 0, false);
    rig.ok(a, &cdb, &params);
    rig.ok(b, &read10(0, 1), &[]);
    assert_eq!(
        rig.status(b, &write10(0, 1, false), &[0; 512]),
        ScsiStatus::ReservationConflict
    );
    rig.ok(a, &write10(0, 1, false), &[0; 512]);
    let d = rig.ok(b, &pr_in(1), &[]);
    assert_eq!(&d[4..8], &16u32.to_be_bytes());
    assert_eq!(&d[8..16], &0xaau64.to_be_bytes());
    assert_eq!(d[21], 0x01);
    // RESERVE(6) conflicts while PR is active.
    assert_eq!(
        rig.status(a, &[0x16, 0, 0, 0, 0, 0], &[]),
        ScsiStatus::ReservationConflict
    );
    // READ FULL STATUS: two descriptors, A holds.
    let d = rig.ok(b, &pr_in(3), &[]);
    let add_len = u32::from_be_bytes([d[4], d[5], d[6], d[7]]) as usize;
    assert_eq!(add_len, d.len() - 8);
    assert_eq!(&d[8..16], &0xaau64.to_be_bytes());
    assert_eq!((d[20], d[21]), (1, 0x01));
    assert_eq!(d[32], 0x45, "iSCSI TransportID format 01b");
    // B preempts A: A loses its registration and hears REGISTRATIONS PREEMPTED.
    let (cdb, params) = pr_out(4, 0x03, 0xbb, 0xaa, false);
    rig.ok(b, &cdb, &params);
    assert_eq!(rig.check(a, &TUR, &[]), (6, 0x2a, 0x05));
    assert_eq!(
        rig.status(a, &read10(0, 1), &[]),
        ScsiStatus::ReservationConflict
    );
    let d = rig.ok(b, &pr_in(0), &[]);
    assert_eq!(&d[4..8], &8u32.to_be_bytes());
    // APTPL was set by A's REGISTER: the state survives a restart with the same store.
    let mut cfg = mem_lun(4 << 20);
    cfg.pr_store = Some(store.clone());
    let restarted = Rig::with(cfg);
    let d = restarted.ok(&restarted.a, &pr_in(1), &[]);
    assert_eq!(&d[8..16], &0xbbu64.to_be_bytes());
    assert_eq!(d[21], 0x03);
    // Unregistering the holder releases the reservation; CLEAR wipes everything.
    let (cdb, params) = pr_out(0, 0, 0xbb, 0, true);
    rig.ok(b, &cdb, &params);
    let d = rig.ok(a, &pr_in(1), &[]);
    assert_eq!(&d[4..8], &0u32.to_be_bytes());
    // Bad service action in PR IN.
    assert_eq!(rig.check(a, &pr_in(4), &[]), INVALID_FIELD);
}

#[test]
fn all_registrants_reservation_survives_one_unregister() {
    let rig = Rig::new();
    let (a, b) = (&rig.a, &rig.b);
    for (n, key) in [(a, 1u64), (b, 2)] {
        let (cdb, params) = pr_out(6, 0, 0, key, false);
        rig.ok(n, &cdb, &params);
    }
    let (cdb, params) = pr_out(1, 0x08, 1, 0, false);
    rig.ok(a, &cdb, &params);
    let d = rig.ok(a, &pr_in(1), &[]);
    assert_eq!(&d[8..16], &[0; 8], "all-registrants reports key 0");
    let (cdb, params) = pr_out(0, 0, 1, 0, false);
    rig.ok(a, &cdb, &params);
    let d = rig.ok(b, &pr_in(1), &[]);
    assert_eq!(&d[4..8], &16u32.to_be_bytes(), "still reserved");
    let (cdb, params) = pr_out(2, 0x08, 2, 0, false);
    rig.ok(b, &cdb, &params);
    let d = rig.ok(b, &pr_in(1), &[]);
    assert_eq!(&d[4..8], &0u32.to_be_bytes());
}

#[test]
fn report_luns_and_opcodes() {
    let rig = Rig::new();
    rig.units.add_lun(300, mem_lun(1 << 20)).expect("lun 300");
    rig.clear_ua(&rig.a);
    let d = rig.ok(&rig.a, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(
        d,
        [
            0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x41, 0x2c, 0, 0, 0, 0, 0, 0
        ]
    );
    let (o, _) = rig.cmd_lun(&rig.a, 9, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(o.status, ScsiStatus::Good);
    let d = rig.ok(&rig.a, &[0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0], &[]);
    let len = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
    assert_eq!(len % 8, 0);
    assert!(d[4..4 + len].chunks(8).any(|e| e[0] == 0x89));
    // One command: READ(10) is supported (SUPPORT 011b), CDB usage starts with the opcode.
    let d = rig.ok(
        &rig.a,
        &[0xa3, 0x0c, 0x01, 0x28, 0, 0, 0, 0, 0x10, 0, 0, 0],
        &[],
    );
    assert_eq!(&d[..5], &[0, 0x03, 0, 10, 0x28]);
    // Opcode with service actions via option 1 is an invalid field.
    assert_eq!(
        rig.check(
            &rig.a,
            &[0xa3, 0x0c, 0x01, 0x9e, 0, 0, 0, 0, 0x10, 0, 0, 0],
            &[]
        ),
        INVALID_FIELD
    );
}

#[derive(Debug)]
struct Recording {
    inner: MemoryBackend,
    fua_writes: AtomicUsize,
    plain_writes: AtomicUsize,
    flushes: AtomicUsize,
}

impl BlockBackend for Recording {
    fn describe(&self) -> String {
        "recording".into()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), crate::backend::BackendError> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(
        &self,
        buf: &[u8],
        offset: u64,
        fua: bool,
    ) -> Result<(), crate::backend::BackendError> {
        if fua {
            &self.fua_writes
        } else {
            &self.plain_writes
        }
        .fetch_add(1, Ordering::SeqCst);
        self.inner.write_at(buf, offset, fua)
    }
    fn flush(&self) -> Result<(), crate::backend::BackendError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), crate::backend::BackendError> {
        self.inner.discard(offset, len)
    }
    fn supports_discard(&self) -> bool {
        true
    }
    fn extent_at(&self, offset: u64) -> Result<Extent, crate::backend::BackendError> {
        self.inner.extent_at(offset)
    }
}

#[test]
fn durability_follows_fua_and_wce() {
    let rec = Arc::new(Recording {
        inner: MemoryBackend::new(1 << 20),
        fua_writes: AtomicUsize::new(0),
        plain_writes: AtomicUsize::new(0),
        flushes: AtomicUsize::new(0),
    });
    let rig = Rig::with(LunConfig::new(rec.clone(), "S", 1));
    rig.ok(&rig.a, &write10(0, 1, false), &[1; 512]);
    assert_eq!(rec.plain_writes.load(Ordering::SeqCst), 1);
    rig.ok(&rig.a, &write10(0, 1, true), &[1; 512]);
    assert_eq!(rec.fua_writes.load(Ordering::SeqCst), 1);
    rig.ok(&rig.a, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(rec.flushes.load(Ordering::SeqCst), 1);
    // Turn WCE off via the Caching page: every write becomes durable.
    let mut page = rig.ok(&rig.a, &[0x1a, 0x08, 0x08, 0, 0xff, 0], &[]);
    page[0] = 0;
    page[6] &= !0x04;
    let len = page.len() as u8;
    rig.ok(&rig.a, &[0x15, 0x10, 0, 0, len, 0], &page);
    rig.ok(&rig.a, &write10(0, 1, false), &[1; 512]);
    assert_eq!(rec.fua_writes.load(Ordering::SeqCst), 2);
}

#[test]
fn unmap_punches_holes_in_a_file() {
    use std::os::unix::fs::MetadataExt;
    let path = std::env::temp_dir().join(format!("iet-scsi-unmap-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let backend =
        crate::backend::open_or_create_backend(path.to_str().expect("utf-8 path"), 8 << 20)
            .expect("file");
    let rig = Rig::with(LunConfig::new(backend, "F", 2));
    let data = vec![0x11u8; 2048 * 512];
    for chunk in 0..4u32 {
        let mut c = [0u8; 10];
        c[0] = 0x2a;
        c[2..6].copy_from_slice(&(chunk * 2048).to_be_bytes());
        c[7..9].copy_from_slice(&2048u16.to_be_bytes());
        rig.ok(&rig.a, &c, &data);
    }
    let before = std::fs::metadata(&path).expect("stat").blocks();
    let mut p = vec![0u8; 24];
    p[0..2].copy_from_slice(&22u16.to_be_bytes());
    p[2..4].copy_from_slice(&16u16.to_be_bytes());
    p[8..16].copy_from_slice(&0u64.to_be_bytes());
    p[16..20].copy_from_slice(&8192u32.to_be_bytes());
    rig.ok(&rig.a, &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &p);
    let after = std::fs::metadata(&path).expect("stat").blocks();
    assert!(after < before, "st_blocks {before} -> {after}");
    let d = rig.ok(&rig.a, &read10(100, 1), &[]);
    assert!(d.iter().all(|&b| b == 0));
    // GET LBA STATUS: the unmapped 8192 blocks join the never-written rest in one run.
    let mut c = [0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x12;
    c[13] = 24;
    let d = rig.ok(&rig.a, &c, &[]);
    assert_eq!(&d[8..16], &0u64.to_be_bytes());
    assert_eq!(&d[16..20], &16384u32.to_be_bytes());
    assert_eq!(d[20], 1);
    // Beyond the end.
    c[2..10].copy_from_slice(&16384u64.to_be_bytes());
    assert_eq!(rig.check(&rig.a, &c, &[]), LBA_OOR);
    // UNMAP descriptor beyond the end.
    p[8..16].copy_from_slice(&16380u64.to_be_bytes());
    p[16..20].copy_from_slice(&8u32.to_be_bytes());
    assert_eq!(
        rig.check(&rig.a, &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &p),
        LBA_OOR
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn write_same_and_verify() {
    let rig = Rig::new();
    let mut ws = [0u8; 10];
    ws[0] = 0x41;
    ws[5] = 10;
    ws[8] = 4;
    rig.ok(&rig.a, &ws, &[0x5a; 512]);
    assert_eq!(rig.ok(&rig.a, &read10(10, 4), &[]), vec![0x5a; 2048]);
    assert_eq!(rig.check(&rig.a, &ws, &[0x5a; 256]), INVALID_FIELD);
    // VERIFY(10) BYTCHK=1 with a mismatch at byte 513.
    let mut v = read10(10, 2);
    v[0] = 0x2f;
    v[1] = 0x02;
    let mut out = vec![0x5a; 1024];
    rig.ok(&rig.a, &v, &out);
    out[513] = 0;
    let (o, _) = rig.cmd(&rig.a, &v, &out);
    let s = o.sense.expect("sense");
    assert_eq!(sense_code(&s), (0x0e, 0x1d, 0));
    assert_eq!(&s[3..7], &513u32.to_be_bytes());
    // WRITE SAME with UNMAP deallocates on a thin LU.
    ws[1] = 0x08;
    rig.ok(&rig.a, &ws, &[0; 512]);
    assert_eq!(rig.ok(&rig.a, &read10(10, 4), &[]), vec![0; 2048]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn random_cdbs_never_panic(
        cdb in proptest::collection::vec(any::<u8>(), 0..17),
        out in proptest::collection::vec(any::<u8>(), 0..1100),
        lun in 0u64..3,
        nexus_id in 1u64..3,
    ) {
        let rig = Rig::new();
        let n = nexus(nexus_id);
        let _ = rig.cmd_lun(&n, lun, &cdb, &out);
        let _ = rig.units.data_out_len(lun, &cdb);
    }

    #[test]
    fn known_opcodes_with_random_fields_never_panic(
        op in proptest::sample::select(
            super::opcodes::OPCODES.iter().map(|o| o.opcode).collect::<Vec<_>>()),
        rest in proptest::collection::vec(any::<u8>(), 15),
        out in proptest::collection::vec(any::<u8>(), 0..1100),
    ) {
        let rig = Rig::new();
        let mut cdb = vec![op];
        cdb.extend_from_slice(&rest);
        let _ = rig.cmd(&rig.a, &cdb, &out);
        let _ = rig.cmd(&rig.b, &cdb, &out);
    }
}

#[test]
fn sanitize_overwrite_and_block_erase() {
    let rig = Rig::new();
    rig.ok(&rig.a, &write10(8191, 1, false), &[1; 512]);
    let mut p = vec![0x01, 0, 0, 4];
    p.extend_from_slice(b"abcd");
    rig.ok(&rig.a, &[0x48, 0x01, 0, 0, 0, 0, 0, 0, 8, 0], &p);
    let d = rig.ok(&rig.a, &read10(8191, 1), &[]);
    assert_eq!(&d[..8], b"abcdabcd");
    // Reserved CDB bits and unsupported service actions.
    assert_eq!(
        rig.check(&rig.a, &[0x48, 0x41, 0, 0, 0, 0, 0, 0, 8, 0], &p),
        INVALID_FIELD
    );
    assert_eq!(
        rig.check(&rig.a, &[0x48, 0x01, 0, 3, 0, 0, 0, 0, 8, 0], &p),
        INVALID_FIELD
    );
    assert_eq!(
        rig.check(&rig.a, &[0x48, 0x03, 0, 0, 0, 0, 0, 0, 0, 0], &[]),
        INVALID_FIELD
    );
    assert_eq!(
        rig.check(&rig.a, &[0x48, 0x1f, 0, 0, 0, 0, 0, 0, 8, 0], &[0; 8]),
        INVALID_FIELD
    );
    rig.ok(&rig.a, &[0x48, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    rig.ok(&rig.a, &[0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(rig.ok(&rig.a, &read10(8191, 1), &[]), vec![0; 512]);
}

#[test]
fn scsi_stays_sans_io() {
    // STYLE.md: scsi/ maps bytes and state to bytes and state; files and sockets live at the edges.
    let sources = [
        ("cdb.rs", include_str!("cdb.rs")),
        ("dispatch.rs", include_str!("dispatch.rs")),
        ("lun.rs", include_str!("lun.rs")),
        ("mod.rs", include_str!("mod.rs")),
        ("mode.rs", include_str!("mode.rs")),
        ("pr.rs", include_str!("pr.rs")),
        ("sbc.rs", include_str!("sbc.rs")),
        ("sense.rs", include_str!("sense.rs")),
        ("spc.rs", include_str!("spc.rs")),
        ("ua.rs", include_str!("ua.rs")),
        ("vpd.rs", include_str!("vpd.rs")),
        ("exec.rs", include_str!("exec.rs")),
        ("lun_addr.rs", include_str!("lun_addr.rs")),
        ("medium.rs", include_str!("medium.rs")),
        ("nexus.rs", include_str!("nexus.rs")),
        ("opcodes.rs", include_str!("opcodes.rs")),
        ("xcopy.rs", include_str!("xcopy.rs")),
        ("pr/out.rs", include_str!("pr/out.rs")),
        ("pr/report.rs", include_str!("pr/report.rs")),
        ("pr/transport_id.rs", include_str!("pr/transport_id.rs")),
    ];
    for (name, src) in sources {
        // Time is passed in, never read here (no clock).
        for banned in ["tokio", "std::net", "std::fs", "Instant", "SystemTime"] {
            assert!(!src.contains(banned), "{name} mentions {banned}");
        }
    }
}

#[test]
fn register_and_move_hands_over_the_reservation() {
    let rig = Rig::new();
    let (a, b) = (&rig.a, &rig.b);
    let (cdb, params) = pr_out(0, 0, 0, 0x11, false);
    rig.ok(a, &cdb, &params);
    let (cdb, params) = pr_out(1, 0x03, 0x11, 0, false);
    rig.ok(a, &cdb, &params);
    // TransportID format 01b naming B's initiator port.
    let mut name = b.initiator_port.as_bytes().to_vec();
    name.push(0);
    name.resize(name.len().next_multiple_of(4), 0);
    let mut tid = vec![0x45, 0];
    tid.extend_from_slice(&(name.len() as u16).to_be_bytes());
    tid.extend_from_slice(&name);
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&0x11u64.to_be_bytes());
    p[8..16].copy_from_slice(&0x22u64.to_be_bytes());
    p[17] = 0x02; // UNREG
    p[18..20].copy_from_slice(&1u16.to_be_bytes());
    p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend_from_slice(&tid);
    let len = p.len() as u32;
    let mut cdb = [0x5f, 0x07, 0x03, 0, 0, 0, 0, 0, 0, 0];
    cdb[5..9].copy_from_slice(&len.to_be_bytes());
    rig.ok(a, &cdb, &p);
    // B now holds Exclusive Access with key 0x22; A is gone.
    let d = rig.ok(b, &pr_in(1), &[]);
    assert_eq!(&d[8..16], &0x22u64.to_be_bytes());
    assert_eq!(d[21], 0x03);
    rig.ok(b, &read10(0, 1), &[]);
    assert_eq!(
        rig.status(a, &read10(0, 1), &[]),
        ScsiStatus::ReservationConflict
    );
    let d = rig.ok(b, &pr_in(0), &[]);
    assert_eq!(&d[4..8], &8u32.to_be_bytes());
    // Moving to oneself is an invalid field in the parameter list.
    let mut self_move = p.clone();
    self_move[0..8].copy_from_slice(&0x22u64.to_be_bytes());
    self_move[8..16].copy_from_slice(&0x33u64.to_be_bytes());
    assert_eq!(rig.check(b, &cdb, &self_move), (5, 0x26, 0));
}

mod features;
mod nexus;
mod pr_ports;
mod pr_shared;
