//! Task management carried out across the target's sessions: a snapshot of
//! every task goes to the sans-io plan (`proto::ffp::tmf`), and its aborts,
//! unit attentions and resets are applied here.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::Registry;
use super::session::{Abort, Session};
use crate::proto::ffp::tmf::{self, Reset, TmfContext};
use crate::proto::pdu::{TaskMgmtRequest, TmfResponse};
use crate::scsi::SenseReason;

/// Tasks of a TMF's scope that were answering already when it ran: their
/// answers must be queued before the TMF's own (RFC 7143 §11.6.2).
#[derive(Debug, Default)]
pub struct InFlight(Vec<(Arc<Session>, u32, Arc<AtomicBool>)>);

impl InFlight {
    /// Waits until every one of them has answered, for up to `limit`;
    /// returns how many had not by then.
    pub async fn settle(self, limit: std::time::Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        let mut late = 0;
        for (s, itt, task) in &self.0 {
            if !s.tasks.answered(*itt, task, deadline).await {
                late += 1;
            }
        }
        late
    }
}

/// Runs one TMF for `caller`; `exp_cmd_sn`/`max_cmd_sn` are its session's
/// window before the TMF. A TARGET COLD RESET's session closes are left to
/// the caller (after the response is on the wire), and so is waiting for
/// the tasks still answering.
pub fn execute(
    registry: &Registry,
    caller: &Arc<Session>,
    req: &TaskMgmtRequest,
    lun: u64,
    exp_cmd_sn: u32,
) -> (TmfResponse, InFlight) {
    let mut in_flight = InFlight::default();
    let (Some(target), Some(nexus)) = (caller.target(), caller.nexus()) else {
        return (TmfResponse::NotSupported, in_flight);
    };
    let peers: Vec<Arc<Session>> = registry
        .sessions()
        .into_iter()
        .filter(|s| s.target().is_some_and(|t| Arc::ptr_eq(t, target)))
        .collect();
    let mut tasks = Vec::new();
    for s in &peers {
        if let Some(n) = s.nexus() {
            s.tasks.views(n.id, &mut tasks);
        }
    }
    let ctx = TmfContext {
        caller: nexus.id,
        lun,
        lun_exists: target.luns.has_lun(lun),
        exp_cmd_sn,
        max_cmd_sn: caller.window.max_cmd_sn(),
        tasks: &tasks,
        ua_pending: target.luns.pending_ua(lun, nexus).is_some(),
    };
    let plan = tmf::plan(req, &ctx);
    let session_of = |id: u64| peers.iter().find(|s| s.nexus().is_some_and(|n| n.id == id));
    for (n, itt) in &plan.abort {
        if let Some(s) = session_of(*n)
            && let Abort::Answering(task) = s.abort_task(*itt)
        {
            in_flight.0.push((s.clone(), *itt, task));
        }
    }
    for n in &plan.cleared_by_another {
        target
            .luns
            .establish_ua(lun, *n, SenseReason::CommandsClearedByAnotherInitiator);
    }
    match plan.reset {
        Reset::None => {}
        Reset::LogicalUnit => target.luns.lun_reset(lun, nexus),
        Reset::Target { .. } => target.luns.target_reset(nexus),
        Reset::ItNexus => target.luns.i_t_nexus_reset(nexus),
    }
    (plan.response, in_flight)
}

/// Aborts the tasks of every session of `caller`'s target whose nexus is
/// is in `preempted` on `lun` (PREEMPT AND ABORT, SPC-5
/// §5.13.11.2.4), except the preempting command itself.
pub fn abort_preempted(registry: &Registry, caller: &Arc<Session>, lun: u64, preempted: &[u64]) {
    let Some(target) = caller.target() else {
        return;
    };
    for s in registry.sessions() {
        let same = s.target().is_some_and(|t| Arc::ptr_eq(t, target));
        let Some(n) = s.nexus() else { continue };
        if !same || !preempted.contains(&n.id) {
            continue;
        }
        let mut views = Vec::new();
        s.tasks.views(n.id, &mut views);
        for v in views.iter().filter(|v| v.lun == lun) {
            s.abort_task(v.itt);
        }
    }
}
