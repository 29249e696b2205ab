//! CDB parsing and dispatch on RAM LUs through `LogicalUnits`' public API:
//! arbitrary CDBs and Data-Out from two nexuses, mixed with resets, nexus
//! loss and resizes. Every command gets an answer (never a panic), CHECK
//! CONDITION always carries well-formed sense, and Data-In stays bounded
//! by the LU's size (a CDB cannot make the emulation build more).
//!
//! Input: a list of records, each `op, lun, nexus, cdb_len, cdb.., dlen
//! (u16 LE), data..`; `op` >= 8 is a command, smaller values are the other
//! operations.
#![no_main]

use std::sync::{Arc, OnceLock};

use iet::backend::MemoryBackend;
use iet::scsi::{ItNexus, LogicalUnits, LunConfig, ScsiRequest, ScsiStatus, TaskAttr};
use libfuzzer_sys::fuzz_target;

/// Small enough that a whole-LU read or write stays cheap.
const LU_BYTES: u64 = 256 * 1024;

fn nexus(id: u64) -> ItNexus {
    ItNexus {
        id,
        initiator_port: format!("iqn.2026-11.io.iet:fuzz-{id},i,0x00023d000001"),
        target_port: "iqn.2026-11.io.iet:fuzz,t,0x0001".into(),
        relative_target_port: 1,
    }
}

fn luns() -> LogicalUnits {
    let luns = LogicalUnits::new();
    let mut a = LunConfig::new(Arc::new(MemoryBackend::new(LU_BYTES)), "fuzz0", 1);
    a.thin_provisioning = true;
    luns.add_lun(0, a).expect("LUN 0");
    let mut b = LunConfig::new(Arc::new(MemoryBackend::new(LU_BYTES)), "fuzz1", 2);
    b.block_size = 4096;
    b.write_cache = false;
    luns.add_lun(1, b).expect("LUN 1");
    luns
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

/// Fixed format (70h-73h) or descriptor format (72h/73h) sense as SPC-5
/// §4.4 lays it out.
fn check_sense(sense: &[u8]) {
    assert!(sense.len() >= 8, "sense too short: {sense:02x?}");
    match sense[0] & 0x7f {
        0x70 | 0x71 => {
            assert!(sense.len() >= 18, "fixed sense too short: {sense:02x?}");
            assert_eq!(
                usize::from(sense[7]) + 8,
                sense.len(),
                "ADDITIONAL SENSE LENGTH"
            );
        }
        0x72 | 0x73 => {
            assert_eq!(
                usize::from(sense[7]) + 8,
                sense.len(),
                "ADDITIONAL SENSE LENGTH"
            );
        }
        other => panic!("response code {other:#04x} in {sense:02x?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    static NEXUSES: OnceLock<[ItNexus; 2]> = OnceLock::new();
    let nexuses = NEXUSES.get_or_init(|| [nexus(1), nexus(2)]);
    // A fresh pair of LUs per input, so an input replays the same way.
    let luns = luns();
    let mut r = Reader(data);
    let mut data_in = Vec::new();
    let mut steps = 0;
    while let Some(op) = r.byte() {
        steps += 1;
        if steps > 64 {
            break;
        }
        let lun = u64::from(r.byte().unwrap_or(0) % 3);
        let nexus = &nexuses[usize::from(r.byte().unwrap_or(0) & 1)];
        match op {
            0 => luns.lun_reset(lun, nexus),
            1 => luns.target_reset(nexus),
            2 => luns.nexus_loss(nexus),
            3 => {
                let blocks = u64::from(r.byte().unwrap_or(0)) + 1;
                let _ = luns.resize_lun(lun, blocks * 4096);
            }
            4 => {
                let _ = luns.set_read_only(lun, r.byte().unwrap_or(0) & 1 != 0);
            }
            5..=7 => {
                let _ = luns.luns();
            }
            _ => {
                let cdb_len = usize::from(r.byte().unwrap_or(0) % 33);
                let cdb = r.take(cdb_len);
                let lo = r.byte().unwrap_or(0);
                let hi = r.byte().unwrap_or(0);
                let dlen = usize::from(u16::from_le_bytes([lo, hi]));
                let data_out = r.take(dlen);
                let attr = match op % 5 {
                    0 => TaskAttr::Simple,
                    1 => TaskAttr::Ordered,
                    2 => TaskAttr::HeadOfQueue,
                    3 => TaskAttr::Untagged,
                    _ => TaskAttr::Aca,
                };
                let expected = u32::from(op) << 10;
                let _ = iet::scsi::classify(cdb);
                let _ = luns.data_out_len(lun, cdb);
                let _ = luns.nowait_writes(lun);
                let req = ScsiRequest {
                    nexus,
                    lun,
                    cdb,
                    attr,
                    expected_data_in_len: expected,
                };
                data_in.clear();
                let done = luns.execute_command(&req, data_out, &mut data_in);
                match done.outcome.status {
                    ScsiStatus::CheckCondition => {
                        let sense = done
                            .outcome
                            .sense
                            .as_deref()
                            .expect("CHECK CONDITION without sense");
                        check_sense(sense);
                    }
                    _ => {}
                }
                // Resizes grow an LU to 1 MiB at most.
                assert!(
                    data_in.len() <= 2 << 20,
                    "{} bytes of Data-In for {cdb:02x?}",
                    data_in.len()
                );
            }
        }
    }
});
