//! SCSI commands in the full-feature phase: Data-Out collection with R2Ts,
//! execution on the blocking pool, Data-In and the SCSI Response.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use tracing::debug;

use super::buffers;
use super::lane::WriteLanes;
use super::writer::{ConnTx, StatSnMode};
use crate::backend::nowait;
use crate::proto::datain::DataInSegments;
use crate::proto::pdu::{
    Bhs, DataIn, DataInStatus, R2t, RESPONSE_COMPLETED, Residual, ScsiCommand, ScsiResponse,
};
use crate::proto::task::{R2tRequest, WriteTask};
use crate::scsi::{CommandOutcome, ItNexus, LogicalUnits, ScsiRequest, ScsiStatus, TaskAttr};
use crate::target::session::Session;
use crate::target::stats::CommandKind;

/// Largest write we buffer for one command. Block limits VPD advertises less.
pub const MAX_WRITE_BUFFER: u32 = 32 << 20;

/// What a command needs after its PDU is gone.
#[derive(Debug, Clone)]
pub struct CommandInfo {
    pub itt: u32,
    pub lun: u64,
    pub cdb: Vec<u8>,
    pub attr: TaskAttr,
    pub read: bool,
    pub write: bool,
    pub expected_len: u32,
    /// Data-Out length the CDB implies (SPDTL), for write residuals.
    pub data_out_len: Option<u64>,
}

impl CommandInfo {
    pub fn from_pdu(cmd: &ScsiCommand) -> CommandInfo {
        CommandInfo {
            itt: cmd.itt,
            lun: cmd.lun,
            cdb: cmd.cdb().to_vec(),
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
        }
    }

    /// The 64-bit LUN field as a flat LUN number (SAM-5 §4.7.3: peripheral
    /// and flat addressing).
    pub fn lun_number(&self) -> u64 {
        decode_lun(self.lun)
    }
}

/// READ(6/10/12/16): idempotent, so it may be tried without blocking and
/// run again on the blocking pool.
fn is_read(cdb: &[u8]) -> bool {
    matches!(cdb.first(), Some(0x08 | 0x28 | 0xa8 | 0x88))
}

/// WRITE(6/10/12/16) without FUA: idempotent and needing no flush.
fn is_plain_write(cdb: &[u8]) -> bool {
    match cdb.first() {
        Some(0x0a) => true,
        Some(0x2a | 0xaa | 0x8a) => cdb.get(1).is_some_and(|b| b & 0x08 == 0),
        _ => false,
    }
}

/// A Data-In buffer: from the pool, sized for a read's expected length
/// (bounded: that length comes from the network).
fn data_in_buffer(info: &CommandInfo) -> Vec<u8> {
    if is_read(&info.cdb) {
        buffers::take((info.expected_len as usize).min(1 << 20))
    } else {
        Vec::new()
    }
}

/// Decodes the first level of a SAM LUN (peripheral or flat addressing).
pub fn decode_lun(raw: u64) -> u64 {
    let top = (raw >> 48) as u16;
    match top >> 14 {
        0 => u64::from(top & 0xff),
        1 => u64::from(top & 0x3fff),
        // Other methods name LUNs we never report: keep them distinct.
        _ => raw,
    }
}

/// A write waiting for its Data-Out.
#[derive(Debug)]
pub struct PendingWrite {
    pub info: CommandInfo,
    pub task: WriteTask,
    /// `None` when the data will be discarded (the command fails anyway).
    pub buffer: Option<Vec<u8>>,
    pub verdict: Option<EarlyVerdict>,
    pub aborted: Arc<AtomicBool>,
}

/// A command answered without running it, once its data has been taken.
#[derive(Debug, Clone)]
pub struct EarlyVerdict {
    pub sense: Vec<u8>,
    pub residual: Residual,
}

/// Fixed-format sense for errors the transport detects itself.
pub fn fixed_sense(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
    let mut s = vec![0; 18];
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}

/// Everything a running command needs to answer; one per connection,
/// shared by its commands.
pub struct ExecContext {
    pub session: Arc<Session>,
    pub luns: Arc<LogicalUnits>,
    pub lanes: Arc<WriteLanes>,
    pub nexus: Arc<ItNexus>,
    pub tx: ConnTx,
    /// The initiator's MaxRecvDataSegmentLength on this connection.
    pub max_send_segment: std::sync::atomic::AtomicU32,
}

/// A command's outcome and Data-In.
pub type Executed = (CommandOutcome, Vec<u8>);

impl ExecContext {
    fn request<'a>(&'a self, info: &'a CommandInfo) -> ScsiRequest<'a> {
        ScsiRequest {
            nexus: &self.nexus,
            lun: info.lun_number(),
            cdb: &info.cdb,
            attr: info.attr,
            expected_data_in_len: info.expected_len,
        }
    }

    /// Runs a command on the calling thread, which may block; a panic in
    /// the SCSI layer becomes HARDWARE ERROR, INTERNAL TARGET FAILURE.
    pub fn run_blocking(&self, info: &CommandInfo, data_out: &[u8]) -> Executed {
        let run = || {
            let mut data_in = data_in_buffer(info);
            let outcome = self
                .luns
                .execute(&self.request(info), data_out, &mut data_in);
            (outcome, data_in)
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| {
            tracing::error!(itt = info.itt, "command panicked");
            (
                CommandOutcome {
                    status: ScsiStatus::CheckCondition,
                    sense: Some(fixed_sense(0x04, 0x44, 0x00)),
                },
                Vec::new(),
            )
        })
    }

    /// Runs the command on the blocking pool and sends Data-In and status.
    /// (Answering straight from the pool thread measured slower: the
    /// writer then wakes once per command instead of batching.)
    pub async fn execute(
        self: Arc<Self>,
        info: CommandInfo,
        data_out: Vec<u8>,
        aborted: Arc<AtomicBool>,
        exp_data_sn: u32,
    ) {
        let started = std::time::Instant::now();
        let out_len = data_out.len() as u64;
        let (ctx, job) = (self.clone(), info.clone());
        let result = tokio::task::spawn_blocking(move || {
            let done = ctx.run_blocking(&job, &data_out);
            buffers::give(data_out);
            done
        })
        .await;
        let (outcome, data_in) = result.unwrap_or_else(|_| {
            (
                CommandOutcome {
                    status: ScsiStatus::CheckCondition,
                    // HARDWARE ERROR, INTERNAL TARGET FAILURE.
                    sense: Some(fixed_sense(0x04, 0x44, 0x00)),
                },
                Vec::new(),
            )
        });
        self.record(&info, &outcome, out_len, data_in.len() as u64, started);
        self.finish(&info, &aborted, &outcome, data_in, exp_data_sn)
            .await;
    }

    /// A read whose data is in the page cache completes right here, on the
    /// caller's thread; `None` when it would wait for the disk.
    pub fn try_read_now(&self, info: &CommandInfo) -> Option<Executed> {
        if !is_read(&info.cdb) {
            return None;
        }
        let mut data_in = data_in_buffer(info);
        let req = self.request(info);
        let Some(outcome) = nowait::attempt(|| self.luns.execute(&req, &[], &mut data_in)) else {
            buffers::give(data_in);
            return None;
        };
        Some((outcome, data_in))
    }

    /// A plain WRITE (no FUA) whose data the page cache takes without
    /// waiting completes right here; `None` sends it elsewhere, where
    /// writing the same bytes again is harmless.
    pub fn try_write_now(&self, info: &CommandInfo, data_out: &[u8]) -> Option<CommandOutcome> {
        if !is_plain_write(&info.cdb) || !self.luns.nowait_writes(info.lun_number()) {
            return None;
        }
        let req = self.request(info);
        let mut data_in = Vec::new();
        nowait::attempt(|| self.luns.execute(&req, data_out, &mut data_in))
    }

    /// Whether a write only needs the page cache (no FUA, write cache on):
    /// such writes queue on the LU's write lane.
    pub fn is_buffered_write(&self, info: &CommandInfo) -> bool {
        is_plain_write(&info.cdb) && self.luns.write_cache_enabled(info.lun_number())
    }

    /// Answers a command completed on the connection task.
    pub async fn answer_write_now(
        &self,
        info: &CommandInfo,
        aborted: &Arc<AtomicBool>,
        outcome: &CommandOutcome,
        out_len: u64,
        exp_data_sn: u32,
        started: std::time::Instant,
    ) {
        self.record(info, outcome, out_len, 0, started);
        self.finish(info, aborted, outcome, Vec::new(), exp_data_sn)
            .await;
    }

    /// Answers a read that [`ExecContext::try_read_now`] completed.
    pub async fn answer_now(
        &self,
        info: &CommandInfo,
        aborted: &Arc<AtomicBool>,
        outcome: &CommandOutcome,
        data_in: Vec<u8>,
        started: std::time::Instant,
    ) {
        self.record(info, outcome, 0, data_in.len() as u64, started);
        self.finish(info, aborted, outcome, data_in, 0).await;
    }

    pub fn record(
        &self,
        info: &CommandInfo,
        outcome: &CommandOutcome,
        out_len: u64,
        in_len: u64,
        started: std::time::Instant,
    ) {
        let kind = match (info.read, info.write) {
            (true, _) => CommandKind::Read,
            (false, true) => CommandKind::Write,
            _ => CommandKind::Other,
        };
        let bytes = if info.write { out_len } else { in_len };
        let ok = outcome.status == ScsiStatus::Good;
        let took = started.elapsed();
        self.session.stats.record(kind, bytes, ok, took);
        if let Some(t) = self.session.target() {
            t.stats.record_lun(info.lun_number(), kind, bytes, ok, took);
        }
    }

    /// Frees a finished command's slot and returns the PDUs that answer
    /// it; `None` when it was aborted (no response is sent).
    pub fn answer(
        &self,
        info: &CommandInfo,
        aborted: &Arc<AtomicBool>,
        outcome: &CommandOutcome,
        data_in: Vec<u8>,
        exp_data_sn: u32,
    ) -> Option<Vec<(Bhs, Bytes, StatSnMode)>> {
        let owned = self.session.tasks.complete(info.itt, aborted);
        self.session.window.complete();
        if !owned || aborted.load(Ordering::Acquire) {
            debug!(itt = info.itt, "aborted: no response");
            return None;
        }
        Some(result_pdus(
            info,
            outcome,
            data_in,
            exp_data_sn,
            self.max_send_segment.load(Ordering::Acquire),
            self.session.params.max_burst_length,
        ))
    }

    /// Sends a command's answer unless it was aborted, then frees its slot.
    pub async fn finish(
        &self,
        info: &CommandInfo,
        aborted: &Arc<AtomicBool>,
        outcome: &CommandOutcome,
        data_in: Vec<u8>,
        exp_data_sn: u32,
    ) {
        let Some(pdus) = self.answer(info, aborted, outcome, data_in, exp_data_sn) else {
            return;
        };
        for (bhs, data, mode) in pdus {
            if !self.tx.send(bhs, data, mode).await {
                return;
            }
        }
    }

    /// Answers a command that was not run (residual mismatch, oversize).
    pub async fn answer_early(
        &self,
        info: &CommandInfo,
        aborted: &Arc<AtomicBool>,
        verdict: EarlyVerdict,
        exp_data_sn: u32,
    ) {
        let owned = self.session.tasks.complete(info.itt, aborted);
        self.session.window.complete();
        if !owned || aborted.load(Ordering::Acquire) {
            return;
        }
        let resp = ScsiResponse {
            response: RESPONSE_COMPLETED,
            status: ScsiStatus::CheckCondition as u8,
            itt: info.itt,
            exp_data_sn,
            residual: verdict.residual,
            ..ScsiResponse::default()
        };
        self.tx
            .send(
                resp.encode(),
                sense_segment(Some(&verdict.sense)),
                StatSnMode::Advance,
            )
            .await;
    }
}

/// The SCSI Response data segment: SenseLength then the sense bytes.
pub fn sense_segment(sense: Option<&[u8]>) -> Bytes {
    match sense {
        Some(s) if !s.is_empty() => {
            let mut b = BytesMut::with_capacity(2 + s.len());
            b.put_u16(s.len() as u16);
            b.put_slice(s);
            b.freeze()
        }
        _ => Bytes::new(),
    }
}

/// The PDUs that answer a command: Data-In (status in the last one when
/// nothing else must be said), then a SCSI Response if needed.
fn result_pdus(
    info: &CommandInfo,
    outcome: &CommandOutcome,
    data_in: Vec<u8>,
    mut exp_data_sn: u32,
    max_segment: u32,
    max_burst: u32,
) -> Vec<(Bhs, Bytes, StatSnMode)> {
    let mut out = Vec::new();
    let produced = data_in.len() as u64;
    let expected = u64::from(info.expected_len);
    let (sent_len, residual) = if info.read {
        (
            produced.min(expected) as usize,
            Residual::of(expected, produced),
        )
    } else if info.write {
        // FCP-4 §9.4.2: a mismatch is reported, not refused; the SCSI layer
        // wrote what arrived up to the CDB's length.
        (
            0,
            info.data_out_len
                .map_or(Residual::None, |s| Residual::of(expected, s)),
        )
    } else {
        (
            0,
            if produced > 0 {
                Residual::Overflow(produced.min(u64::from(u32::MAX)) as u32)
            } else {
                Residual::None
            },
        )
    };
    let good = outcome.status == ScsiStatus::Good && outcome.sense.is_none();
    if sent_len > 0 {
        let data = buffers::shared(data_in);
        let mut data_sn = 0u32;
        for seg in DataInSegments::new(sent_len, max_segment as usize, max_burst as usize) {
            let status = (seg.last && good).then_some(DataInStatus {
                status: outcome.status as u8,
                stat_sn: 0,
                residual,
            });
            let pdu = DataIn {
                final_bit: seg.final_of_sequence,
                lun: info.lun,
                itt: info.itt,
                ttt: 0xffff_ffff,
                data_sn,
                buffer_offset: seg.offset as u32,
                status,
                ..DataIn::default()
            };
            let mode = if status.is_some() {
                StatSnMode::Advance
            } else {
                StatSnMode::Reserved
            };
            out.push((
                pdu.encode(),
                data.slice(seg.offset..seg.offset + seg.len),
                mode,
            ));
            data_sn = data_sn.wrapping_add(1);
        }
        exp_data_sn = data_sn;
        if good {
            return out;
        }
    } else {
        buffers::give(data_in);
    }
    let resp = ScsiResponse {
        response: RESPONSE_COMPLETED,
        status: outcome.status as u8,
        itt: info.itt,
        exp_data_sn,
        residual,
        ..ScsiResponse::default()
    };
    out.push((
        resp.encode(),
        sense_segment(outcome.sense.as_deref()),
        StatSnMode::Advance,
    ));
    out
}

/// Sends the R2Ts a write is ready for.
pub async fn send_r2ts(tx: &ConnTx, info: &CommandInfo, task: &mut WriteTask, next_ttt: &mut u32) {
    let mut reqs: Vec<R2tRequest> = Vec::new();
    task.next_r2ts(
        || {
            *next_ttt = next_ttt.wrapping_add(1);
            if *next_ttt == 0xffff_ffff {
                *next_ttt = 1;
            }
            *next_ttt
        },
        |r| reqs.push(r),
    );
    for r in reqs {
        let pdu = R2t {
            lun: info.lun,
            itt: info.itt,
            ttt: r.ttt,
            r2t_sn: r.r2t_sn,
            buffer_offset: r.buffer_offset,
            desired_data_transfer_length: r.desired_data_transfer_length,
            ..R2t::default()
        };
        tx.send(pdu.encode(), Bytes::new(), StatSnMode::Current)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_addressing() {
        assert_eq!(decode_lun(0), 0);
        assert_eq!(decode_lun(0x0003_0000_0000_0000), 3);
        assert_eq!(decode_lun(0x4123_0000_0000_0000), 0x123);
    }
}
