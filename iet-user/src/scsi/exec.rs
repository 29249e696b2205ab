//! What every command executor shares: the per-command context `Ctx`, the failure
//! type `Fail` (CHECK CONDITION with sense, or RESERVATION CONFLICT) and `put`.

use super::lun::{Lu, LuState};
use super::sense::{Sense, SenseReason};
use super::{ItNexus, LogicalUnits};
use crate::backend::BlockBackend;

/// Why a command did not complete with GOOD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    Check(Sense),
    ReservationConflict,
}

impl From<SenseReason> for Fail {
    fn from(r: SenseReason) -> Self {
        Self::Check(r.into())
    }
}

impl From<Sense> for Fail {
    fn from(s: Sense) -> Self {
        Self::Check(s)
    }
}

pub(crate) type Exec = Result<(), Fail>;

/// The per-command view executors work with.
pub(crate) struct Ctx<'a> {
    pub(crate) units: &'a LogicalUnits,
    pub(crate) lu: &'a Lu,
    pub(crate) nexus: &'a ItNexus,
    pub(crate) data_out: &'a [u8],
    pub(crate) data_in: &'a mut Vec<u8>,
    /// Snapshot taken when the command started.
    pub(crate) capacity_blocks: u64,
    pub(crate) write_protected: bool,
    pub(crate) wce: bool,
    /// Nexuses whose registrations PREEMPT AND ABORT removed: the transport aborts their tasks.
    pub(crate) preempted: Vec<u64>,
}

impl Ctx<'_> {
    pub(crate) fn backend(&self) -> &dyn BlockBackend {
        self.lu.backend.as_ref()
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, LuState> {
        self.lu.lock()
    }
}

/// Append at most `alloc_len` bytes of `data` (SPC-5 §4.2.5.6: truncation is not an error).
pub(crate) fn put(data_in: &mut Vec<u8>, data: &[u8], alloc_len: u32) {
    let n = data.len().min(alloc_len as usize);
    data_in.extend_from_slice(&data[..n]);
}
