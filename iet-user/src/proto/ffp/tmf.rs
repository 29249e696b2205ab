//! Task management as a plan (RFC 7143 §11.5.1, SAM-5 §7): which tasks a
//! function aborts, on which nexuses, which unit attentions and resets
//! follow, and the response code. Pure: the caller passes a snapshot of
//! the target's tasks and carries the plan out.

use crate::proto::pdu::{TaskMgmtRequest, TmfFunction, TmfResponse};
use crate::proto::seq;

/// A task of any session of the target, as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskView {
    /// The I_T nexus (session) the task belongs to.
    pub nexus: u64,
    pub itt: u32,
    /// Flat LUN number.
    pub lun: u64,
    pub cmd_sn: u32,
}

/// What the TMF is asked in.
#[derive(Debug, Clone, Copy)]
pub struct TmfContext<'a> {
    pub caller: u64,
    /// Flat LUN number of the request's LUN field.
    pub lun: u64,
    pub lun_exists: bool,
    /// The session's window before the TMF's own CmdSN.
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// Every task of the target.
    pub tasks: &'a [TaskView],
    /// A unit attention is pending for the caller on the LUN.
    pub ua_pending: bool,
}

/// A reset the SCSI layer performs after the aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    None,
    LogicalUnit,
    Target { cold: bool },
    ItNexus,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmfPlan {
    pub response: TmfResponse,
    /// Tasks to abort: (nexus, ITT).
    pub abort: Vec<(u64, u32)>,
    /// Nexuses that get COMMANDS CLEARED BY ANOTHER INITIATOR (SAM-5
    /// §7.4, TAS=0: every other nexus that lost a task).
    pub cleared_by_another: Vec<u64>,
    pub reset: Reset,
}

impl TmfPlan {
    fn answer(response: TmfResponse) -> TmfPlan {
        TmfPlan {
            response,
            abort: Vec::new(),
            cleared_by_another: Vec::new(),
            reset: Reset::None,
        }
    }
}

fn aborting(ctx: &TmfContext<'_>, pred: impl Fn(&TaskView) -> bool) -> Vec<(u64, u32)> {
    ctx.tasks
        .iter()
        .filter(|t| pred(t))
        .map(|t| (t.nexus, t.itt))
        .collect()
}

/// Plans one Task Management Function Request.
pub fn plan(req: &TaskMgmtRequest, ctx: &TmfContext<'_>) -> TmfPlan {
    use TmfFunction as F;
    let mine = |t: &TaskView| t.nexus == ctx.caller;
    let on_lun = |t: &TaskView| t.lun == ctx.lun;
    let needs_lun = matches!(
        req.function,
        F::AbortTaskSet
            | F::ClearTaskSet
            | F::ClearAca
            | F::LogicalUnitReset
            | F::QueryTaskSet
            | F::QueryAsyncEvent
    );
    if needs_lun && !ctx.lun_exists {
        return TmfPlan::answer(TmfResponse::LunDoesNotExist);
    }
    match req.function {
        F::AbortTask => {
            let rtt = req.referenced_task_tag;
            let abort = aborting(ctx, |t| mine(t) && t.itt == rtt);
            if !abort.is_empty() {
                return TmfPlan {
                    abort,
                    ..TmfPlan::answer(TmfResponse::Complete)
                };
            }
            // RFC 7143 §11.5.1 b): a task not received yet, with RefCmdSN
            // inside the window and before the TMF, counts as received and
            // so as aborted; c): otherwise it completed or never existed.
            let not_yet = seq::in_window(req.ref_cmd_sn, ctx.exp_cmd_sn, ctx.max_cmd_sn)
                && seq::lt(req.ref_cmd_sn, req.cmd_sn);
            TmfPlan::answer(if not_yet {
                TmfResponse::Complete
            } else {
                TmfResponse::TaskDoesNotExist
            })
        }
        // SAM-5 §7.2: the caller's own tasks on the LU.
        F::AbortTaskSet => TmfPlan {
            abort: aborting(ctx, |t| mine(t) && on_lun(t)),
            ..TmfPlan::answer(TmfResponse::Complete)
        },
        // SAM-5 §7.4: with TST=000 the task set is every nexus's.
        F::ClearTaskSet => {
            let abort = aborting(ctx, on_lun);
            let mut cleared: Vec<u64> = abort
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| *n != ctx.caller)
                .collect();
            cleared.sort_unstable();
            cleared.dedup();
            TmfPlan {
                abort,
                cleared_by_another: cleared,
                ..TmfPlan::answer(TmfResponse::Complete)
            }
        }
        // SAM-5 §7.3: NormACA=0, so no ACA condition is ever established:
        // there is nothing to clear.
        F::ClearAca => TmfPlan::answer(TmfResponse::Complete),
        F::LogicalUnitReset => TmfPlan {
            abort: aborting(ctx, on_lun),
            reset: Reset::LogicalUnit,
            ..TmfPlan::answer(TmfResponse::Complete)
        },
        F::TargetWarmReset | F::TargetColdReset => TmfPlan {
            abort: aborting(ctx, |_| true),
            reset: Reset::Target {
                cold: req.function == F::TargetColdReset,
            },
            ..TmfPlan::answer(TmfResponse::Complete)
        },
        // SAM-5 §7.6: every task of the nexus on every LU, then the
        // effects of an I_T nexus loss.
        F::ItNexusReset => TmfPlan {
            abort: aborting(ctx, mine),
            reset: Reset::ItNexus,
            ..TmfPlan::answer(TmfResponse::Complete)
        },
        // SAM-5 §7.8-7.10: FUNCTION SUCCEEDED when there is something to
        // report, FUNCTION COMPLETE when not.
        F::QueryTask => {
            let rtt = req.referenced_task_tag;
            let found = ctx.tasks.iter().any(|t| mine(t) && t.itt == rtt);
            TmfPlan::answer(succeeded_if(found))
        }
        F::QueryTaskSet => {
            let found = ctx.tasks.iter().any(|t| mine(t) && on_lun(t));
            TmfPlan::answer(succeeded_if(found))
        }
        F::QueryAsyncEvent => TmfPlan::answer(succeeded_if(ctx.ua_pending)),
        // ErrorRecoveryLevel 0: no allegiance reassignment.
        F::TaskReassign => TmfPlan::answer(TmfResponse::ReassignmentNotSupported),
        F::Unknown(_) => TmfPlan::answer(TmfResponse::NotSupported),
    }
}

fn succeeded_if(found: bool) -> TmfResponse {
    if found {
        TmfResponse::Succeeded
    } else {
        TmfResponse::Complete
    }
}
