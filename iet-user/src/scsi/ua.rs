//! Unit attention conditions per I_T nexus (SAM-5 §5.14, SPC-5 §5.14).
//! A nexus first seen by a logical unit starts with POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.

use std::collections::{HashMap, VecDeque};

use super::ItNexus;
use super::sense::SenseReason;

/// Enough to hold every distinct condition we establish; older ones are dropped first.
const MAX_PENDING: usize = 8;

#[derive(Debug)]
struct NexusUa {
    initiator_port: String,
    target_port: String,
    pending: VecDeque<SenseReason>,
}

#[derive(Debug, Default)]
pub(crate) struct UnitAttentions {
    nexuses: HashMap<u64, NexusUa>,
    /// While recording: the port-addressed conditions established, for other gateways of a
    /// logical unit whose persistent reservations are shared (`pr/shared.rs`).
    recorded: Option<Vec<(String, String, SenseReason)>>,
}

fn is_reset(r: SenseReason) -> bool {
    r.code().1 == 0x29
}

impl UnitAttentions {
    /// Note the nexus; on first contact it gets the power-on condition.
    pub(crate) fn touch(&mut self, nexus: &ItNexus) {
        self.nexuses.entry(nexus.id).or_insert_with(|| NexusUa {
            initiator_port: nexus.initiator_port.clone(),
            target_port: nexus.target_port.clone(),
            pending: VecDeque::from([SenseReason::PowerOnResetOccurred]),
        });
    }

    /// Report-and-clear the highest-priority pending condition.
    pub(crate) fn take(&mut self, nexus: u64) -> Option<SenseReason> {
        self.nexuses.get_mut(&nexus)?.pending.pop_front()
    }

    /// The condition `take` would report, left pending (QUERY ASYNCHRONOUS EVENT, SAM-5 §7.13).
    pub(crate) fn peek(&self, nexus: u64) -> Option<SenseReason> {
        self.nexuses.get(&nexus)?.pending.front().copied()
    }

    /// Establish `r` for one nexus (if this LU knows it).
    pub(crate) fn establish(&mut self, nexus: u64, r: SenseReason) {
        if let Some(entry) = self.nexuses.get_mut(&nexus) {
            Self::push(entry, r);
        }
    }

    /// Drop one pending condition (REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED).
    pub(crate) fn clear(&mut self, nexus: u64, r: SenseReason) {
        if let Some(entry) = self.nexuses.get_mut(&nexus) {
            entry.pending.retain(|&p| p != r);
        }
    }

    pub(crate) fn forget(&mut self, nexus: u64) {
        self.nexuses.remove(&nexus);
    }

    fn push(entry: &mut NexusUa, r: SenseReason) {
        if is_reset(r) {
            // A reset supersedes everything reported before it (SAM-5 §5.14).
            entry.pending.clear();
            entry.pending.push_back(r);
            return;
        }
        if entry.pending.iter().any(|&p| p == r || is_reset(p)) {
            return;
        }
        if entry.pending.len() >= MAX_PENDING {
            entry.pending.pop_front();
        }
        entry.pending.push_back(r);
    }

    /// Establish `r` for every known nexus except `except`.
    pub(crate) fn establish_others(&mut self, except: Option<u64>, r: SenseReason) {
        for (id, entry) in &mut self.nexuses {
            if Some(*id) != except {
                Self::push(entry, r);
            }
        }
    }

    /// Establish `r` for every nexus whose (initiator port, target port) matches.
    pub(crate) fn establish_port(
        &mut self,
        initiator_port: &str,
        target_port: &str,
        r: SenseReason,
    ) {
        if let Some(rec) = &mut self.recorded {
            rec.push((initiator_port.to_owned(), target_port.to_owned(), r));
        }
        for entry in self.nexuses.values_mut() {
            if entry.initiator_port == initiator_port && entry.target_port == target_port {
                Self::push(entry, r);
            }
        }
    }

    /// Starts recording what [`UnitAttentions::establish_port`] establishes (anew).
    pub(crate) fn record_ports(&mut self) {
        self.recorded = Some(Vec::new());
    }

    /// Stops recording; returns what was recorded.
    pub(crate) fn recorded_ports(&mut self) -> Vec<(String, String, SenseReason)> {
        self.recorded.take().unwrap_or_default()
    }

    /// Ids of the nexuses with this (initiator port, target port) identity.
    pub(crate) fn nexus_ids(&self, initiator_port: &str, target_port: &str) -> Vec<u64> {
        self.nexuses
            .iter()
            .filter(|(_, e)| e.initiator_port == initiator_port && e.target_port == target_port)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Connected nexuses, for REGISTER AND MOVE TransportID lookups.
    pub(crate) fn ports(&self) -> impl Iterator<Item = (&str, &str)> {
        self.nexuses
            .values()
            .map(|e| (e.initiator_port.as_str(), e.target_port.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nexus(id: u64) -> ItNexus {
        ItNexus {
            id,
            initiator_port: format!("iqn.i{id},i,0x000000000001"),
            target_port: "iqn.t,t,0x0001".into(),
            relative_target_port: 1,
        }
    }

    #[test]
    fn lifecycle() {
        let mut ua = UnitAttentions::default();
        let a = nexus(1);
        let b = nexus(2);
        ua.touch(&a);
        assert_eq!(ua.take(1), Some(SenseReason::PowerOnResetOccurred));
        assert_eq!(ua.take(1), None);
        ua.touch(&b);
        ua.establish_others(Some(2), SenseReason::CapacityDataChanged);
        ua.establish_others(Some(2), SenseReason::CapacityDataChanged);
        assert_eq!(ua.take(1), Some(SenseReason::CapacityDataChanged));
        assert_eq!(ua.take(1), None);
        assert_eq!(ua.take(2), Some(SenseReason::PowerOnResetOccurred));
        ua.establish_others(None, SenseReason::ModeParametersChanged);
        ua.establish_others(None, SenseReason::BusDeviceResetOccurred);
        assert_eq!(ua.take(2), Some(SenseReason::BusDeviceResetOccurred));
        assert_eq!(ua.take(2), None);
        ua.establish(2, SenseReason::CommandsClearedByAnotherInitiator);
        ua.establish(9, SenseReason::CommandsClearedByAnotherInitiator);
        assert_eq!(
            ua.peek(2),
            Some(SenseReason::CommandsClearedByAnotherInitiator)
        );
        assert_eq!(ua.peek(1), Some(SenseReason::BusDeviceResetOccurred));
        assert_eq!(
            ua.take(2),
            Some(SenseReason::CommandsClearedByAnotherInitiator)
        );
        ua.forget(1);
        ua.touch(&a);
        assert_eq!(ua.take(1), Some(SenseReason::PowerOnResetOccurred));
    }
}
