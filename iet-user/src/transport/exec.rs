//! Running SCSI commands for one connection: inline when the page cache
//! allows, else on the blocking pool or the LU's write lane; and the one
//! completion path that frees a command's slot and sends its answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use tracing::debug;

use super::buffers;
use super::lane::{LaneJob, WriteLanes};
use super::writer::{ConnTx, OutPdu};
use crate::backend::nowait;
use crate::proto::ffp::admission::Grant;
use crate::proto::ffp::response::{self, Answering, DataInLimits, Status};
use crate::proto::ffp::writes::EarlyVerdict;
use crate::proto::pdu::ScsiCommand;
use crate::scsi::{
    CommandClass, CommandOutcome, Completion, ItNexus, LogicalUnits, ScsiRequest, ScsiStatus,
    SenseReason, TaskAttr, classify,
};
use crate::target::session::{Answer, EnableWait, Session, TaskSlot};
use crate::target::stats::CommandKind;

/// Largest write we buffer for one command. Block limits VPD advertises less.
pub const MAX_WRITE_BUFFER: u32 = 32 << 20;

/// What a command needs after its PDU is gone.
#[derive(Debug, Clone)]
pub struct CommandInfo {
    pub itt: u32,
    /// The LUN field as received.
    pub lun_field: u64,
    /// Flat LUN number.
    pub lun: u64,
    pub cdb: Vec<u8>,
    /// The opcode table's view of the CDB, looked up once.
    pub class: CommandClass,
    pub attr: TaskAttr,
    pub read: bool,
    pub write: bool,
    pub expected_len: u32,
    /// Data-Out length the CDB implies (SPDTL), for write residuals.
    pub data_out_len: Option<u64>,
    pub started: Instant,
}

impl CommandInfo {
    pub fn from_pdu(cmd: &ScsiCommand, lun: u64, started: Instant) -> CommandInfo {
        CommandInfo {
            itt: cmd.itt,
            lun_field: cmd.lun,
            lun,
            cdb: cmd.cdb().to_vec(),
            class: classify(cmd.cdb()),
            attr: match cmd.attr {
                0 => TaskAttr::Untagged,
                2 => TaskAttr::Ordered,
                3 => TaskAttr::HeadOfQueue,
                4 => TaskAttr::Aca,
                _ => TaskAttr::Simple,
            },
            read: cmd.read,
            write: cmd.write,
            expected_len: cmd.expected_data_transfer_length,
            data_out_len: None,
            started,
        }
    }

    fn answering(&self) -> Answering {
        Answering {
            itt: self.itt,
            lun: self.lun_field,
            read: self.read,
            write: self.write,
            expected_len: self.expected_len,
            data_out_len: self.data_out_len,
        }
    }
}

/// One command from acceptance to answer: what it asked, and the slot
/// (window, task table, task set) its drop frees.
#[derive(Debug)]
pub struct Cmd {
    pub info: CommandInfo,
    pub slot: TaskSlot,
    /// Set while its task set has not enabled it yet (SAM-5 §8.6).
    pub wait: EnableWait,
}

/// Write data on its way to the store, with the budget it holds.
#[derive(Debug)]
pub struct WriteBuf {
    pub buf: Vec<u8>,
    pub grant: Option<Grant>,
}

impl WriteBuf {
    /// The data was written: the buffer goes back to the pool and its
    /// bytes to the budget.
    pub fn release(self) {
        buffers::give(self.buf);
    }
}

/// A buffered write for its LU's lane.
pub struct LaneWrite {
    exec: Arc<ExecContext>,
    cmd: Cmd,
    data: WriteBuf,
    exp_data_sn: u32,
}

impl LaneJob for LaneWrite {
    type Guard = Option<Answer>;

    fn lun(&self) -> u64 {
        self.cmd.info.lun
    }

    fn run(self) -> (ConnTx, Vec<OutPdu>, Option<Answer>) {
        let (outcome, data_in) = self.exec.run_blocking(&self.cmd.info, &self.data.buf);
        self.data.release();
        let (pdus, answer) = self
            .exec
            .complete(self.cmd, &outcome, data_in, self.exp_data_sn);
        (self.exec.tx.clone(), pdus, answer)
    }

    fn run_elsewhere(self) {
        tokio::spawn(
            self.exec
                .clone()
                .execute(self.cmd, Some(self.data), self.exp_data_sn),
        );
    }
}

/// A Data-In buffer: from the pool, sized for a read's expected length
/// (bounded: that length comes from the network).
fn data_in_buffer(info: &CommandInfo) -> Vec<u8> {
    if info.class.plain_read {
        buffers::take((info.expected_len as usize).min(1 << 20))
    } else {
        Vec::new()
    }
}

/// Everything a running command needs to answer; one per connection,
/// shared by its commands.
pub struct ExecContext {
    pub session: Arc<Session>,
    pub luns: Arc<LogicalUnits>,
    pub lanes: Arc<WriteLanes<LaneWrite>>,
    pub nexus: Arc<ItNexus>,
    pub tx: ConnTx,
    /// For aborts a command causes in other sessions (PREEMPT AND ABORT).
    pub registry: Arc<crate::target::Registry>,
    /// The initiator's MaxRecvDataSegmentLength on this connection.
    pub max_send_segment: AtomicU32,
}

/// A command's outcome and Data-In.
pub type Executed = (Completion, Vec<u8>);

impl ExecContext {
    fn request<'a>(&'a self, info: &'a CommandInfo) -> ScsiRequest<'a> {
        ScsiRequest {
            nexus: &self.nexus,
            lun: info.lun,
            cdb: &info.cdb,
            attr: info.attr,
            expected_data_in_len: info.expected_len,
        }
    }

    /// HARDWARE ERROR, INTERNAL TARGET FAILURE: what a panic or a lost
    /// blocking task answers, in the LU's sense format.
    fn internal_failure(&self, lun: u64) -> Completion {
        Completion::from(CommandOutcome {
            status: ScsiStatus::CheckCondition,
            sense: Some(self.luns.sense_for(lun, SenseReason::InternalTargetFailure)),
        })
    }

    /// Runs a command on the calling thread, which may block; a panic in
    /// the SCSI layer becomes HARDWARE ERROR, INTERNAL TARGET FAILURE.
    pub fn run_blocking(&self, info: &CommandInfo, data_out: &[u8]) -> Executed {
        let run = || {
            let mut data_in = data_in_buffer(info);
            let done = self
                .luns
                .execute_command(&self.request(info), data_out, &mut data_in);
            (done, data_in)
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| {
            tracing::error!(itt = info.itt, "command panicked");
            (self.internal_failure(info.lun), Vec::new())
        })
    }

    /// A command that may run now: a cached read answers on this task,
    /// anything else goes to the blocking pool.
    pub async fn run(self: &Arc<Self>, cmd: Cmd) {
        if let Some((outcome, data_in)) = self.try_read_now(&cmd.info) {
            self.finish(cmd, &outcome, data_in, 0).await;
        } else {
            tokio::spawn(self.clone().execute(cmd, None, 0));
        }
    }

    /// A write whose data is all in and which may run now.
    pub async fn start_write(self: &Arc<Self>, cmd: Cmd, data: WriteBuf, exp_data_sn: u32) {
        // The whole buffer goes down: commands that need an exact length
        // (COMPARE AND WRITE) judge the mismatch themselves.
        if let Some(outcome) = self.try_write_now(&cmd.info, &data.buf) {
            data.release();
            self.finish(cmd, &outcome, Vec::new(), exp_data_sn).await;
            return;
        }
        if self.is_buffered_write(&cmd.info) {
            self.lanes.clone().submit(LaneWrite {
                exec: self.clone(),
                cmd,
                data,
                exp_data_sn,
            });
        } else {
            tokio::spawn(self.clone().execute(cmd, Some(data), exp_data_sn));
        }
    }

    /// Runs the command on the blocking pool and sends Data-In and status.
    /// (Answering straight from the pool thread measured slower: the
    /// writer then wakes once per command instead of batching.)
    pub async fn execute(self: Arc<Self>, cmd: Cmd, data_out: Option<WriteBuf>, exp_data_sn: u32) {
        let (ctx, job) = (self.clone(), cmd.info.clone());
        let result = tokio::task::spawn_blocking(move || {
            let empty = WriteBuf {
                buf: Vec::new(),
                grant: None,
            };
            let data = data_out.unwrap_or(empty);
            let done = ctx.run_blocking(&job, &data.buf);
            data.release();
            done
        })
        .await;
        let (outcome, data_in) =
            result.unwrap_or_else(|_| (self.internal_failure(cmd.info.lun), Vec::new()));
        self.finish(cmd, &outcome, data_in, exp_data_sn).await;
    }

    /// A read whose data is in the page cache completes right here, on the
    /// caller's thread; `None` when it would wait for the disk.
    pub fn try_read_now(&self, info: &CommandInfo) -> Option<Executed> {
        if !info.class.plain_read {
            return None;
        }
        let mut data_in = data_in_buffer(info);
        let req = self.request(info);
        let Some(outcome) = nowait::attempt(|| self.luns.execute_command(&req, &[], &mut data_in))
        else {
            buffers::give(data_in);
            return None;
        };
        Some((outcome, data_in))
    }

    /// A plain WRITE (no FUA) whose data the page cache takes without
    /// waiting completes right here; `None` sends it elsewhere, where
    /// writing the same bytes again is harmless.
    pub fn try_write_now(&self, info: &CommandInfo, data_out: &[u8]) -> Option<Completion> {
        if !info.class.plain_write_no_fua || !self.luns.nowait_writes(info.lun) {
            return None;
        }
        let req = self.request(info);
        let mut data_in = Vec::new();
        nowait::attempt(|| self.luns.execute_command(&req, data_out, &mut data_in))
    }

    /// Whether a write only needs the page cache (no FUA, write cache on)
    /// of a store that takes writes best one at a time: such writes queue
    /// on the LU's write lane; others (RBD) run concurrently.
    pub fn is_buffered_write(&self, info: &CommandInfo) -> bool {
        info.class.plain_write_no_fua
            && self.luns.write_cache_enabled(info.lun)
            && self.luns.serial_writes(info.lun)
    }

    fn record(&self, info: &CommandInfo, outcome: &CommandOutcome, in_len: u64) {
        let kind = match (info.read, info.write) {
            (true, _) => CommandKind::Read,
            (false, true) => CommandKind::Write,
            _ => CommandKind::Other,
        };
        let bytes = if info.write {
            info.data_out_len.unwrap_or(u64::from(info.expected_len))
        } else {
            in_len
        };
        let ok = outcome.status == ScsiStatus::Good;
        let took = info.started.elapsed();
        self.session.stats.record(kind, bytes, ok, took);
        if let Some(t) = self.session.target() {
            t.stats.record_lun(info.lun, kind, bytes, ok, took);
        }
    }

    /// The one completion path: records the command, frees its slot and
    /// returns the PDUs that answer it, with the right to answer to drop
    /// once they are queued; nothing when it was aborted.
    pub fn complete(
        &self,
        cmd: Cmd,
        done: &Completion,
        data_in: Vec<u8>,
        exp_data_sn: u32,
    ) -> (Vec<OutPdu>, Option<Answer>) {
        let outcome = &done.outcome;
        self.record(&cmd.info, outcome, data_in.len() as u64);
        if !done.preempted.is_empty() {
            // SPC-5 §5.13.11.2.6: the preempted nexuses' tasks end now.
            crate::target::tmf::abort_preempted(
                &self.registry,
                &self.session,
                cmd.info.lun,
                &done.preempted,
            );
        }
        let info = cmd.info;
        let Some(answer) = cmd.slot.finish() else {
            debug!(itt = info.itt, "aborted: no response");
            buffers::give(data_in);
            return (Vec::new(), None);
        };
        let mut out = Vec::with_capacity(2);
        let limits = DataInLimits {
            max_segment: self.max_send_segment.load(Ordering::Acquire),
            max_burst: self.session.params.max_burst_length,
        };
        let st = Status {
            status: outcome.status as u8,
            sense: outcome.sense.as_deref(),
        };
        response::answer(
            &info.answering(),
            st,
            &buffers::shared(data_in),
            exp_data_sn,
            limits,
            &mut out,
        );
        (out, Some(answer))
    }

    /// Completes a command and sends its answer.
    pub async fn finish(&self, cmd: Cmd, outcome: &Completion, data_in: Vec<u8>, exp_data_sn: u32) {
        let (pdus, answer) = self.complete(cmd, outcome, data_in, exp_data_sn);
        for pdu in pdus {
            if !self.tx.send_pdu(pdu).await {
                break;
            }
        }
        drop(answer);
    }

    /// Answers a command that was not run (residual mismatch, oversize,
    /// broken Data-Out sequence) with CHECK CONDITION.
    pub async fn fail(&self, mut cmd: Cmd, verdict: EarlyVerdict, exp_data_sn: u32) {
        let outcome = Completion::from(CommandOutcome {
            status: ScsiStatus::CheckCondition,
            sense: Some(self.luns.sense_for(cmd.info.lun, verdict.reason)),
        });
        // The residual is the verdict's, not the CDB's.
        cmd.info.read = false;
        cmd.info.data_out_len = match verdict.residual {
            crate::proto::pdu::Residual::None => None,
            _ => Some(0),
        };
        self.finish(cmd, &outcome, Vec::new(), exp_data_sn).await;
    }
}
