//! What the transport asks of the logical units for one I_T nexus outside a command:
//! sense in the LU's format (D_SENSE), unit attentions to raise or peek, I_T NEXUS RESET.

use super::sense::{Sense, SenseReason};
use super::{ItNexus, LogicalUnits};

impl LogicalUnits {
    /// Sense data for `reason` as the LU reports it: descriptor format when its Control
    /// mode page has D_SENSE set (SPC-5 §7.5.8), fixed format otherwise or with no such LU.
    pub fn sense_for(&self, lun: u64, reason: SenseReason) -> Vec<u8> {
        let descriptor = self.get(lun).is_some_and(|lu| lu.descriptor_sense());
        Sense::from(reason).encode(descriptor)
    }

    /// Establish a unit attention for one nexus on one LU (e.g. COMMANDS CLEARED BY
    /// ANOTHER INITIATOR after CLEAR TASK SET, SAM-5 §7.3). Unknown LUs and nexuses the
    /// LU has never seen are ignored: a new nexus starts with POWER ON anyway.
    pub fn establish_ua(&self, lun: u64, for_nexus_id: u64, reason: SenseReason) {
        if let Some(lu) = self.get(lun) {
            lu.lock().ua.establish(for_nexus_id, reason);
        }
    }

    /// Establish a unit attention for every nexus the LU knows except `except_nexus_id`
    /// (CLEAR TASK SET with TST 000b clears every nexus's tasks: the others hear COMMANDS
    /// CLEARED BY ANOTHER INITIATOR, SAM-5 §7.3).
    pub fn establish_ua_for_others(&self, lun: u64, except_nexus_id: u64, reason: SenseReason) {
        if let Some(lu) = self.get(lun) {
            lu.lock().ua.establish_others(Some(except_nexus_id), reason);
        }
    }

    /// The unit attention the next command from `nexus` would report, left pending
    /// (QUERY ASYNCHRONOUS EVENT, SAM-5 §7.13): (sense key, ASC, ASCQ).
    pub fn pending_ua(&self, lun: u64, nexus: &ItNexus) -> Option<(u8, u8, u8)> {
        let lu = self.get(lun)?;
        let mut st = lu.lock();
        st.ua.touch(nexus);
        st.ua.peek(nexus.id).map(SenseReason::code)
    }

    /// I_T NEXUS RESET (SAM-5 §7.6): on every LU, the effects of I_T nexus loss for
    /// `nexus` (RESERVE reservation, PREVENT) and UA I_T NEXUS LOSS OCCURRED for it.
    /// Persistent reservations stay (SPC-5 §5.13.1). The transport aborts its tasks.
    pub fn i_t_nexus_reset(&self, nexus: &ItNexus) {
        for lun in self.lun_list() {
            if let Some(lu) = self.get(lun) {
                lu.i_t_nexus_reset(nexus);
            }
        }
    }
}
