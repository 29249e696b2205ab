//! Asymmetric logical unit access (SPC-5 §5.16): the target port groups of a logical unit as
//! something outside SCSI reports them, which commands each access state serves, the unit
//! attention on a state change, and REPORT TARGET PORT GROUPS (SPC-5 §6.36).
//!
//! Sans-io: the states come in through a [`SharedAlua`] that the LU's backing store hands out
//! (`BlockBackend::alua`); whoever decides them (for RBD, a lease held in the cluster, see
//! `backend/rbd/lease.rs`) publishes a new [`AluaView`] there. This module only reads it.
//! Each gateway is one target port group with one target port, whose relative target port
//! identifier is the group's id, so identifiers are unique across the gateways of an image.

use std::sync::{Arc, PoisonError, RwLock};

use super::cdb::Cdb;
use super::exec::{Ctx, Exec, put};
use super::lun::{Lu, LuState};
use super::sense::SenseReason;

/// Asymmetric access states (SPC-5 §6.36.2, table 201), as the 4-bit wire value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AccessState {
    ActiveOptimized = 0x0,
    ActiveNonOptimized = 0x1,
    Standby = 0x2,
    Unavailable = 0x3,
    Transitioning = 0xf,
}

/// One target port group (here: one gateway) and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPortGroup {
    /// TARGET PORT GROUP (nonzero; 0 is reserved by SPC-5 §7.7.6.7).
    pub id: u16,
    pub state: AccessState,
    /// STATUS CODE 02h: the state was last changed by implicit behaviour (a takeover).
    pub implicit_change: bool,
}

/// What every gateway of the LU reports, as last decided outside SCSI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AluaView {
    /// This gateway's group.
    pub local: u16,
    /// Every group known, ascending by id; the local one is always among them.
    pub groups: Vec<TargetPortGroup>,
    /// IMPLICIT TRANSITION TIME (SPC-5 §6.36.2): seconds a takeover may take, 0 = unspecified.
    pub implicit_transition_secs: u8,
}

impl AluaView {
    /// A view before anything was decided: the local group alone, transitioning.
    pub fn starting(local: u16) -> Self {
        Self {
            local,
            groups: vec![TargetPortGroup {
                id: local,
                state: AccessState::Transitioning,
                implicit_change: false,
            }],
            implicit_transition_secs: 0,
        }
    }

    /// The state of this gateway's target port.
    pub fn local_state(&self) -> AccessState {
        self.groups
            .iter()
            .find(|g| g.id == self.local)
            .map_or(AccessState::Unavailable, |g| g.state)
    }
}

/// The view shared between its publisher and the logical unit; cheap to read per command.
#[derive(Debug)]
pub struct SharedAlua {
    view: RwLock<Arc<AluaView>>,
}

impl SharedAlua {
    pub fn new(view: AluaView) -> Self {
        Self {
            view: RwLock::new(Arc::new(view)),
        }
    }

    pub fn publish(&self, view: AluaView) {
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(view);
    }

    pub fn view(&self) -> Arc<AluaView> {
        Arc::clone(&self.view.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The local state the LU last acted on (per LU, inside `LuState`).
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    seen: Option<AccessState>,
}

impl Tracker {
    /// Records `now`; true when it differs from a state seen before.
    fn changed(&mut self, now: AccessState) -> bool {
        self.seen.replace(now).is_some_and(|before| before != now)
    }
}

/// Before a command's unit attention check: when this gateway's access state changed since
/// the last command, every nexus gets ASYMMETRIC ACCESS STATE CHANGED (SPC-5 §5.16.2.2: an
/// implicit transition establishes it for every I_T nexus). Returns the state to check the
/// command against, `None` for an LU without ALUA.
pub(crate) fn observe(lu: &Lu, st: &mut LuState) -> Option<AccessState> {
    let now = lu.alua.as_ref()?.view().local_state();
    if st.alua.changed(now) {
        st.ua
            .establish_others(None, SenseReason::AsymmetricAccessStateChanged);
    }
    Some(now)
}

/// Whether `state` serves `cdb` (SPC-5 §5.16.2.4): both active states serve everything;
/// standby serves the configuration and reporting commands of §5.16.2.4.4, unavailable and
/// transitioning only those of §5.16.2.4.5/6. The rest get NOT READY with the state's ASCQ.
pub(crate) fn check_access(state: AccessState, cdb: &Cdb) -> Result<(), SenseReason> {
    let reporting = matches!(
        cdb,
        Cdb::Inquiry { .. }
            | Cdb::ReportLuns { .. }
            | Cdb::ReportTargetPortGroups { .. }
            | Cdb::RequestSense { .. }
            | Cdb::ReportSupportedOpcodes { .. }
            | Cdb::ReportSupportedTmf { .. }
    );
    let standby_too = matches!(
        cdb,
        Cdb::ModeSense { .. } | Cdb::ModeSelect { .. } | Cdb::PrIn { .. } | Cdb::PrOut { .. }
    );
    match state {
        AccessState::ActiveOptimized | AccessState::ActiveNonOptimized => Ok(()),
        AccessState::Standby if reporting || standby_too => Ok(()),
        AccessState::Standby => Err(SenseReason::NotReadyTargetPortInStandbyState),
        AccessState::Unavailable | AccessState::Transitioning if reporting => Ok(()),
        AccessState::Unavailable => Err(SenseReason::NotReadyTargetPortInUnavailableState),
        AccessState::Transitioning => Err(SenseReason::NotReadyAsymmetricAccessStateTransition),
    }
}

/// Supported states of every group: T_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP (table 202).
const SUPPORTED_STATES: u8 = 0x80 | 0x08 | 0x04 | 0x02 | 0x01;

/// REPORT TARGET PORT GROUPS parameter data (SPC-5 §6.36.2): the length-only header
/// (format 000b) or the extended header (001b), then one descriptor per group with its one
/// target port (relative target port identifier = group id).
pub(crate) fn encode_groups(view: &AluaView, extended: bool) -> Vec<u8> {
    let mut d = vec![0u8; 4];
    if extended {
        d.extend_from_slice(&[0x10, view.implicit_transition_secs, 0, 0]);
    }
    for g in &view.groups {
        let status = if g.implicit_change { 0x02 } else { 0x00 };
        // PREF stays 0: no group is preferred over the cluster's choice.
        d.extend_from_slice(&[g.state as u8, SUPPORTED_STATES]);
        d.extend_from_slice(&g.id.to_be_bytes());
        d.extend_from_slice(&[0, status, 0, 1]);
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&g.id.to_be_bytes());
    }
    let len = u32::try_from(d.len() - 4).unwrap_or(u32::MAX);
    d[..4].copy_from_slice(&len.to_be_bytes());
    d
}

/// REPORT TARGET PORT GROUPS (MAINTENANCE IN, service action 0Ah; SPC-5 §6.36).
pub(crate) fn report_target_port_groups(ctx: &mut Ctx<'_>, extended: bool, alloc_len: u32) -> Exec {
    let Some(alua) = &ctx.lu.alua else {
        // TPGS is 00b for this LU: the command is not supported here (SPC-5 §6.36), and, as
        // for any unknown service action of a known opcode, that is a bad CDB field.
        return Err(SenseReason::InvalidFieldInCdb.into());
    };
    put(
        ctx.data_in,
        &encode_groups(&alua.view(), extended),
        alloc_len,
    );
    Ok(())
}

/// The TPGS field of standard INQUIRY data (SPC-5 §6.7.2): 01b, implicit ALUA only.
pub(crate) fn tpgs(lu: &Lu) -> u8 {
    if lu.alua.is_some() { 0x10 } else { 0x00 }
}

/// VPD 83h designators of the target port when ALUA is on: (relative target port, group).
pub(crate) fn port_ids(lu: &Lu) -> Option<(u16, u16)> {
    let local = lu.alua.as_ref()?.view().local;
    Some((local, local))
}

#[cfg(test)]
#[path = "alua_tests.rs"]
mod tests;
