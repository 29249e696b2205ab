//! SCSI block-device emulation (SPC-5, SBC-4). Knows nothing of iSCSI:
//! the transport hands in an I_T nexus, a LUN, a CDB and Data-Out bytes.

use std::sync::Arc;

use crate::backend::BlockBackend;

/// SAM status codes (SAM-5 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ScsiStatus {
    Good = 0x00,
    CheckCondition = 0x02,
    ConditionMet = 0x04,
    Busy = 0x08,
    ReservationConflict = 0x18,
    TaskSetFull = 0x28,
    AcaActive = 0x30,
    TaskAborted = 0x40,
}

/// An I_T nexus: one iSCSI session seen from SCSI (SAM-5 §4.7).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItNexus {
    /// Unique within this process for the nexus's lifetime.
    pub id: u64,
    /// iSCSI initiator port name: `<InitiatorName>,i,0x<ISID as 12 hex digits>`.
    pub initiator_port: String,
    /// iSCSI target port name: `<TargetName>,t,0x<TPGT as 4 hex digits>`.
    pub target_port: String,
    pub relative_target_port: u16,
}

/// SAM task attribute from the iSCSI ATTR field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAttr {
    Untagged,
    Simple,
    Ordered,
    HeadOfQueue,
    Aca,
}

/// One SCSI command as the transport received it.
#[derive(Debug)]
pub struct ScsiRequest<'a> {
    pub nexus: &'a ItNexus,
    pub lun: u64,
    pub cdb: &'a [u8],
    pub attr: TaskAttr,
    /// ExpectedDataTransferLength for reads (the initiator's buffer size).
    pub expected_data_in_len: u32,
}

/// The result of one command; Data-In bytes were appended to the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub status: ScsiStatus,
    /// Sense data (fixed or descriptor format), present with CHECK CONDITION.
    pub sense: Option<Vec<u8>>,
}

/// Settings of one logical unit.
pub struct LunConfig {
    pub backend: Arc<dyn BlockBackend>,
    pub block_size: u32,
    pub read_only: bool,
    pub write_cache: bool,
    pub thin_provisioning: bool,
    pub vendor: String,
    pub product: String,
    pub serial: String,
    /// Stable 64-bit identifier used for the NAA designator in VPD 83h.
    pub device_id: u64,
}

/// Placeholder until the SCSI emulation lands.
#[derive(Debug, Clone)]
pub struct LunInfo {
    pub size_bytes: u64,
    pub block_size: u32,
    pub read_only: bool,
}

/// Placeholder until the SCSI emulation lands: every command fails.
#[derive(Debug, Default)]
pub struct LogicalUnits {}

impl LogicalUnits {
    pub fn new() -> Self {
        LogicalUnits {}
    }

    pub fn execute(
        &self,
        _req: &ScsiRequest<'_>,
        _data_out: &[u8],
        _data_in: &mut Vec<u8>,
    ) -> CommandOutcome {
        CommandOutcome {
            status: ScsiStatus::CheckCondition,
            sense: Some(vec![
                0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0,
            ]),
        }
    }

    pub fn data_out_len(&self, _lun: u64, _cdb: &[u8]) -> Option<u64> {
        None
    }

    pub fn add_lun(&self, _lun: u64, _cfg: LunConfig) -> Result<(), String> {
        Ok(())
    }

    pub fn remove_lun(&self, _lun: u64) -> Result<(), String> {
        Ok(())
    }

    pub fn resize_lun(&self, _lun: u64, _size: u64) -> Result<(), String> {
        Ok(())
    }

    pub fn set_read_only(&self, _lun: u64, _ro: bool) -> Result<(), String> {
        Ok(())
    }

    pub fn luns(&self) -> Vec<(u64, LunInfo)> {
        Vec::new()
    }

    pub fn nexus_loss(&self, _nexus: &ItNexus) {}

    pub fn lun_reset(&self, _lun: u64, _by: &ItNexus) {}

    pub fn target_reset(&self, _by: &ItNexus) {}
}
