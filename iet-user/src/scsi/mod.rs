//! SCSI block-device emulation (SPC-5, SBC-4). Knows nothing of iSCSI:
//! the transport hands in an I_T nexus, a LUN, a CDB and Data-Out bytes.

mod alua;
mod cdb;
mod dispatch;
mod exec;
mod lun;
mod lun_addr;
mod medium;
mod mode;
mod nexus;
mod opcodes;
mod pr;
mod sbc;
mod sense;
mod spc;
pub mod task_set;
mod ua;
mod vpd;
mod xcopy;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::backend::{BackendError, BlockBackend};

pub use alua::{AccessState, AluaView, SharedAlua, TargetPortGroup};
pub use lun_addr::decode_lun;
pub use opcodes::{CommandClass, DataDirection, classify};
pub use pr::{PrStore, PrUpdate, SharedPrStore, Versioned};
pub use sense::{FieldPointer, Sense, SenseReason};

use lun::Lu;

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

/// A SCSI target port of the target device (SAM-5 §4.6.5): for iSCSI a portal group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetPort {
    /// As in [`ItNexus::target_port`].
    pub name: String,
    pub relative_id: u16,
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

/// A command's outcome with what the transport must do about other tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub outcome: CommandOutcome,
    /// Nexus ids whose tasks on this LU PREEMPT AND ABORT aborts (SPC-5 §5.13.11.2.6);
    /// empty for every other command.
    pub preempted: Vec<u64>,
}

impl From<CommandOutcome> for Completion {
    fn from(outcome: CommandOutcome) -> Self {
        Self {
            outcome,
            preempted: Vec::new(),
        }
    }
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
    /// Where APTPL persistent reservations are kept (e.g. `backend::FilePrStore`);
    /// `None` makes PTPL_C zero and APTPL requests INVALID FIELD IN PARAMETER LIST.
    pub pr_store: Option<Arc<dyn PrStore>>,
}

impl LunConfig {
    /// Defaults for `backend`: 512-byte blocks, writable, write cache on, thin if the store can discard.
    pub fn new(backend: Arc<dyn BlockBackend>, serial: impl Into<String>, device_id: u64) -> Self {
        Self {
            thin_provisioning: backend.supports_discard(),
            backend,
            block_size: 512,
            read_only: false,
            write_cache: true,
            vendor: "IET".into(),
            product: "VIRTUAL-DISK".into(),
            serial: serial.into(),
            device_id,
            pr_store: None,
        }
    }
}

impl CommandOutcome {
    pub fn good() -> Self {
        Self {
            status: ScsiStatus::Good,
            sense: None,
        }
    }
}

/// Management view of one logical unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunInfo {
    pub size_bytes: u64,
    pub block_size: u32,
    /// The backend's spec (`mem:...` or a path).
    pub backend: String,
    /// The engine serving it (`BlockBackend::engine`).
    pub engine: &'static str,
    pub read_only: bool,
    pub write_cache: bool,
    pub thin_provisioning: bool,
    pub vendor: String,
    pub product: String,
    pub serial: String,
    pub device_id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScsiError {
    #[error("LUN {0} already exists")]
    LunExists(u64),
    #[error("LUN {0} does not exist")]
    NoSuchLun(u64),
    #[error("LUN {0} is out of the supported range (0..16384)")]
    LunOutOfRange(u64),
    #[error("unsupported block size {0} (512 or 4096)")]
    InvalidBlockSize(u32),
    #[error("size {size} is smaller than one {block_size}-byte block")]
    TooSmall { size: u64, block_size: u32 },
    #[error("backing store")]
    Backend(#[source] BackendError),
    #[error("persistent reservation store")]
    PrStore(#[source] std::io::Error),
}

/// All logical units of one target (SAM "task router"). Cheap to share as
/// `Arc<LogicalUnits>`; each LU has its own locks. LUN numbers are plain
/// numbers (0..16384); REPORT LUNS encodes them with SAM-5 peripheral/flat addressing.
#[derive(Debug, Default)]
pub struct LogicalUnits {
    luns: RwLock<BTreeMap<u64, Arc<Lu>>>,
    /// Every target port of the target device, for REGISTER with ALL_TG_PT.
    target_ports: RwLock<Vec<TargetPort>>,
}

impl LogicalUnits {
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&self, lun: u64) -> Option<Arc<Lu>> {
        self.luns
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&lun)
            .cloned()
    }

    /// Every LU, for the copy manager's CSCD lookup (EXTENDED COPY).
    pub(crate) fn lu_list_arcs(&self) -> Vec<Arc<Lu>> {
        self.luns
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The target ports the target is reachable through (its portal groups); PERSISTENT
    /// RESERVE OUT with ALL_TG_PT registers on each (SPC-5 §6.17.4).
    pub fn set_target_ports(&self, ports: Vec<TargetPort>) {
        *self
            .target_ports
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ports;
    }

    /// The target ports this target has now.
    pub(crate) fn target_ports(&self) -> Vec<TargetPort> {
        self.target_ports
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The target ports known now, always including `nexus`'s own.
    pub(crate) fn target_ports_with(&self, nexus: &ItNexus) -> Vec<TargetPort> {
        let mut ports = self
            .target_ports
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if !ports.iter().any(|p| p.name == nexus.target_port) {
            ports.push(TargetPort {
                name: nexus.target_port.clone(),
                relative_id: nexus.relative_target_port,
            });
        }
        ports
    }

    pub(crate) fn lun_list(&self) -> Vec<u64> {
        self.luns
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// SPC-5 §6.29: REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED for the nexus on every LU.
    pub(crate) fn luns_reported(&self, nexus: &ItNexus) {
        for lu in self
            .luns
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            lu.lock()
                .ua
                .clear(nexus.id, SenseReason::ReportedLunsDataChanged);
        }
    }

    /// Add a logical unit; existing nexuses get REPORTED LUNS DATA HAS CHANGED.
    pub fn add_lun(&self, lun: u64, cfg: LunConfig) -> Result<(), ScsiError> {
        if lun > lun_addr::MAX_LUN {
            return Err(ScsiError::LunOutOfRange(lun));
        }
        let lu = Arc::new(Lu::new(cfg)?);
        let mut luns = self
            .luns
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if luns.contains_key(&lun) {
            return Err(ScsiError::LunExists(lun));
        }
        for other in luns.values() {
            other
                .lock()
                .ua
                .establish_others(None, SenseReason::ReportedLunsDataChanged);
        }
        luns.insert(lun, lu);
        Ok(())
    }

    pub fn remove_lun(&self, lun: u64) -> Result<(), ScsiError> {
        let mut luns = self
            .luns
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        luns.remove(&lun).ok_or(ScsiError::NoSuchLun(lun))?;
        for other in luns.values() {
            other
                .lock()
                .ua
                .establish_others(None, SenseReason::ReportedLunsDataChanged);
        }
        Ok(())
    }

    /// Grow or shrink a LUN online; every nexus gets CAPACITY DATA HAS CHANGED.
    pub fn resize_lun(&self, lun: u64, new_size_bytes: u64) -> Result<(), ScsiError> {
        self.get(lun)
            .ok_or(ScsiError::NoSuchLun(lun))?
            .resize(new_size_bytes)
    }

    pub fn set_read_only(&self, lun: u64, ro: bool) -> Result<(), ScsiError> {
        let lu = self.get(lun).ok_or(ScsiError::NoSuchLun(lun))?;
        let mut st = lu.lock();
        if st.read_only != ro {
            st.read_only = ro;
            // The WP bit in the mode parameter header changed.
            st.ua
                .establish_others(None, SenseReason::ModeParametersChanged);
        }
        Ok(())
    }

    pub fn luns(&self) -> Vec<(u64, LunInfo)> {
        self.luns
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(&n, lu)| (n, lu.info()))
            .collect()
    }

    /// Execute one command synchronously (call from a blocking thread). Data-In is
    /// appended to `data_in`, at most the CDB's allocation length.
    pub fn execute(
        &self,
        req: &ScsiRequest<'_>,
        data_out: &[u8],
        data_in: &mut Vec<u8>,
    ) -> CommandOutcome {
        self.execute_command(req, data_out, data_in).outcome
    }

    /// `execute`, also saying which other nexuses' tasks must be aborted (PREEMPT AND ABORT).
    pub fn execute_command(
        &self,
        req: &ScsiRequest<'_>,
        data_out: &[u8],
        data_in: &mut Vec<u8>,
    ) -> Completion {
        let lu = self.get(req.lun);
        dispatch::execute(self, lu.as_deref(), req, data_out, data_in)
    }

    /// Whether the LU's store may take a plain write without blocking.
    pub fn nowait_writes(&self, lun: u64) -> bool {
        self.get(lun).is_some_and(|lu| lu.backend.nowait_writes())
    }

    /// Each LU's backing-store figures (`BlockBackend::metrics`), by LUN.
    pub fn backend_metrics(&self) -> Vec<(u64, Vec<(&'static str, u64)>)> {
        self.luns
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(&n, lu)| (n, lu.backend.metrics()))
            .filter(|(_, m)| !m.is_empty())
            .collect()
    }

    /// Whether the LU's store does best with buffered writes one at a time
    /// (a local file's inode lock) rather than in flight together (RBD).
    pub fn serial_writes(&self, lun: u64) -> bool {
        self.get(lun).is_none_or(|lu| lu.backend.serial_writes())
    }

    /// Whether the LU caches writes (WCE): plain writes then need no flush.
    pub fn write_cache_enabled(&self, lun: u64) -> bool {
        self.get(lun).is_some_and(|lu| lu.lock().mode.wce)
    }

    /// Data-Out length the CDB implies, for overflow/underflow checks.
    pub fn data_out_len(&self, lun: u64, cdb: &[u8]) -> Option<u64> {
        let block_size = self.get(lun).map_or(512, |lu| u64::from(lu.block_size));
        dispatch::data_out_len(cdb, block_size)
    }

    /// The session ended: drop its RESERVE(6/10) reservations, PREVENT state and UA state.
    pub fn nexus_loss(&self, nexus: &ItNexus) {
        for lun in self.lun_list() {
            if let Some(lu) = self.get(lun) {
                lu.nexus_loss(nexus);
            }
        }
    }

    /// LOGICAL UNIT RESET (SAM-5 §7.7): clears RESERVE reservations (not PR) and PREVENT,
    /// and establishes BUS DEVICE RESET FUNCTION OCCURRED for every nexus (`by` included).
    pub fn lun_reset(&self, lun: u64, by: &ItNexus) {
        if let Some(lu) = self.get(lun) {
            lu.reset(by, SenseReason::BusDeviceResetOccurred);
        }
    }

    /// Whether the LUN exists.
    pub fn has_lun(&self, lun: u64) -> bool {
        self.get(lun).is_some()
    }

    /// TARGET WARM/COLD RESET: a reset of every LU.
    pub fn target_reset(&self, by: &ItNexus) {
        for lun in self.lun_list() {
            if let Some(lu) = self.get(lun) {
                lu.reset(by, SenseReason::ScsiBusResetOccurred);
            }
        }
    }
}

#[cfg(test)]
mod tests;
