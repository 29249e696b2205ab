//! SCSI commands with arbitrary CDBs and Data-Out against a RAM LU and a second LU
//! (EXTENDED COPY can reach it): no input may panic the SCSI layer.
#![no_main]

use std::sync::Arc;

use iet::backend::MemoryBackend;
use iet::scsi::{ItNexus, LogicalUnits, LunConfig, ScsiRequest, TaskAttr, classify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((cdb, data_out)) = data.split_at_checked(16) else {
        return;
    };
    let units = LogicalUnits::new();
    for (lun, id) in [(0u64, 1u64), (1, 2)] {
        let cfg = LunConfig::new(Arc::new(MemoryBackend::new(1 << 20)), "FUZZ", id);
        if units.add_lun(lun, cfg).is_err() {
            return;
        }
    }
    let nexus = ItNexus {
        id: 1,
        initiator_port: "iqn.2026-12.io.iet:fuzz,i,0x800000000001".into(),
        target_port: "iqn.2026-12.io.iet:t,t,0x0001".into(),
        relative_target_port: 1,
    };
    let _ = classify(cdb);
    let lun = u64::from(cdb[15] & 1);
    let _ = units.data_out_len(lun, cdb);
    let req = ScsiRequest {
        nexus: &nexus,
        lun,
        cdb,
        attr: TaskAttr::Simple,
        expected_data_in_len: 65536,
    };
    // Twice: the first command reports POWER ON, the second runs.
    for _ in 0..2 {
        let mut data_in = Vec::new();
        let _ = units.execute_command(&req, data_out, &mut data_in);
    }
});
