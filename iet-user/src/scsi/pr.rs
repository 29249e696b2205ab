//! Persistent reservations (SPC-5 §5.13, §6.16 PERSISTENT RESERVE IN, §6.17 OUT): the
//! state and its conflict rules; `pr/` holds the PR IN reports, PR OUT and TransportIDs.
//! Registrations are per I_T nexus identity (initiator port, target port; a format 00b
//! TransportID: any port of that initiator), so they survive session reinstatement;
//! ALL_TG_PT makes one on every target port. APTPL state goes through a `PrStore`; the state
//! of an LU that several gateways serve lives in a `SharedPrStore` (`pr/shared.rs`).

use std::io;

use serde::{Deserialize, Serialize};

mod out;
mod report;
pub(crate) mod shared;
mod transport_id;

pub use shared::{PrUpdate, SharedPrStore, Versioned};

#[cfg(test)]
pub(crate) use transport_id::encode as encode_transport_id;

use super::ItNexus;
use super::cdb::Cdb;
use super::exec::{Ctx, Exec};
use super::opcodes::Access;
use super::sense::SenseReason;

/// Persistence hook for APTPL (SPC-5 §5.13.5). `save(None)` forgets the saved state.
/// `backend::FilePrStore` is the file implementation.
pub trait PrStore: Send + Sync + std::fmt::Debug {
    fn load(&self) -> io::Result<Option<Vec<u8>>>;
    fn save(&self, data: Option<&[u8]>) -> io::Result<()>;
}

/// Reservation types (SPC-5 table 231).
mod pr_type {
    pub(super) const WRITE_EXCLUSIVE: u8 = 0x1;
    pub(super) const EXCLUSIVE_ACCESS: u8 = 0x3;
    pub(super) const WRITE_EXCLUSIVE_RO: u8 = 0x5;
    pub(super) const WRITE_EXCLUSIVE_AR: u8 = 0x7;
    pub(super) const EXCLUSIVE_ACCESS_AR: u8 = 0x8;
}

fn valid_type(t: u8) -> bool {
    matches!(t, 0x1 | 0x3 | 0x5..=0x8)
}

fn all_registrants(t: u8) -> bool {
    matches!(
        t,
        pr_type::WRITE_EXCLUSIVE_AR | pr_type::EXCLUSIVE_ACCESS_AR
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Registration {
    key: u64,
    /// An initiator port (`<name>,i,0x<ISID>`), or a bare initiator name registered by a
    /// SPEC_I_PT TransportID of format 00b: then every port of that initiator.
    initiator_port: String,
    target_port: String,
    relative_target_port: u16,
}

impl Registration {
    fn matches_initiator(&self, initiator_port: &str) -> bool {
        self.initiator_port == initiator_port
            || (!self.initiator_port.contains(",i,")
                && initiator_port.split(",i,").next() == Some(self.initiator_port.as_str()))
    }

    fn is(&self, n: &ItNexus) -> bool {
        self.matches_initiator(&n.initiator_port) && self.target_port == n.target_port
    }

    /// Some I_T nexus would match both registrations.
    fn overlaps(&self, other: &Self) -> bool {
        (self.matches_initiator(&other.initiator_port)
            || other.matches_initiator(&self.initiator_port))
            && self.target_port == other.target_port
    }

    /// The same registration through another target port.
    fn on_port(&self, port: &super::TargetPort) -> Self {
        Self {
            target_port: port.name.clone(),
            relative_target_port: port.relative_id,
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reservation {
    pr_type: u8,
    /// Index-free holder identity; `None` for all-registrants types, where every registrant holds it.
    holder: Option<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PrState {
    generation: u32,
    registrations: Vec<Registration>,
    reservation: Option<Reservation>,
    aptpl: bool,
}

/// Upper bound on registrations, so one initiator cannot grow state without limit.
const MAX_REGISTRATIONS: usize = 1024;

impl PrState {
    pub(crate) fn load(store: &dyn PrStore) -> io::Result<Self> {
        match store.load()? {
            Some(data) => serde_json::from_slice(&data)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            None => Ok(Self::default()),
        }
    }

    fn registration(&self, n: &ItNexus) -> Option<&Registration> {
        self.registrations.iter().find(|r| r.is(n))
    }

    /// The holder is named by its registration's identity, so every nexus that registration
    /// covers (a bare initiator name: any of its ports) holds the reservation.
    fn is_holder(&self, n: &ItNexus) -> bool {
        match &self.reservation {
            None => false,
            Some(Reservation { holder: None, .. }) => self.registration(n).is_some(),
            Some(Reservation {
                holder: Some((i, t)),
                ..
            }) => self
                .registrations
                .iter()
                .find(|r| r.initiator_port == *i && r.target_port == *t)
                .map_or(*i == n.initiator_port && *t == n.target_port, |r| r.is(n)),
        }
    }

    /// The (initiator port, target port) identity a reservation by `n` is held under.
    fn holder_identity(&self, n: &ItNexus) -> (String, String) {
        self.registration(n).map_or_else(
            || (n.initiator_port.clone(), n.target_port.clone()),
            |r| (r.initiator_port.clone(), r.target_port.clone()),
        )
    }

    /// Registrations or a reservation exist (RESERVE(6/10) then conflicts).
    pub(crate) fn is_active(&self) -> bool {
        !self.registrations.is_empty() || self.reservation.is_some()
    }

    pub(crate) fn is_registered(&self, n: &ItNexus) -> bool {
        self.registration(n).is_some()
    }

    pub(crate) fn has_reservation(&self) -> bool {
        self.reservation.is_some()
    }

    /// SPC-5 §5.13.1 table 77: does this command from `n` conflict?
    pub(crate) fn conflicts(&self, n: &ItNexus, access: Access) -> bool {
        let Some(res) = &self.reservation else {
            return false;
        };
        if self.is_holder(n) {
            return false;
        }
        let registered = self.registration(n).is_some();
        match (access, res.pr_type) {
            (Access::Always | Access::PrIn | Access::PrOut, _)
            | (
                Access::Read,
                pr_type::WRITE_EXCLUSIVE
                | pr_type::WRITE_EXCLUSIVE_RO
                | pr_type::WRITE_EXCLUSIVE_AR,
            ) => false,
            (
                Access::Read | Access::Write,
                pr_type::EXCLUSIVE_ACCESS | pr_type::WRITE_EXCLUSIVE,
            ) => true,
            (Access::Read | Access::Write, _) => !registered,
        }
    }

    /// Release the reservation; types other than WE/EA tell the other registrants (SPC-5 §5.13.11.2.2).
    fn release(&mut self, by: &ItNexus, ua: &mut super::ua::UnitAttentions) {
        if let Some(res) = self.reservation.take()
            && !matches!(
                res.pr_type,
                pr_type::WRITE_EXCLUSIVE | pr_type::EXCLUSIVE_ACCESS
            )
        {
            for r in self.registrations.iter().filter(|r| !r.is(by)) {
                ua.establish_port(
                    &r.initiator_port,
                    &r.target_port,
                    SenseReason::ReservationsReleased,
                );
            }
        }
    }

    /// Remove `n`'s registration; a holder's reservation goes with it (SPC-5 §5.13.11.2.3).
    fn unregister(&mut self, n: &ItNexus, ua: &mut super::ua::UnitAttentions) {
        let holder_leaves = match &self.reservation {
            Some(Reservation {
                holder: Some(_), ..
            }) => self.is_holder(n),
            Some(Reservation { holder: None, .. }) => self.registrations.iter().all(|r| r.is(n)),
            None => false,
        };
        if holder_leaves {
            self.release(n, ua);
        }
        self.registrations.retain(|r| !r.is(n));
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// PERSISTENT RESERVE IN/OUT entry point.
pub(crate) fn execute(ctx: &mut Ctx<'_>, cdb: Cdb) -> Exec {
    match cdb {
        Cdb::PrIn {
            service_action,
            alloc_len,
        } => report::pr_in(ctx, service_action, alloc_len),
        Cdb::PrOut {
            service_action,
            scope,
            pr_type,
            param_len,
        } => out::pr_out(ctx, service_action, scope, pr_type, param_len),
        _ => Err(SenseReason::InvalidCommandOperationCode.into()),
    }
}
