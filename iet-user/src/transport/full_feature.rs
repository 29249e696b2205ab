//! The full-feature phase of one connection (RFC 7143 §4.2): dispatch by
//! opcode, CmdSN checks, task management, NOP keepalive, Text and Logout.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::buffers;
use super::command::{
    CommandInfo, EarlyVerdict, ExecContext, MAX_WRITE_BUFFER, PendingWrite, decode_lun,
    fixed_sense, send_r2ts,
};
use super::lane::LaneWrite;
use super::spin::{self, PollPolicy, SpinSlot};
use super::writer::{ConnTx, StatSnMode};
use crate::proto::pdu::{
    AsyncEvent, AsyncMessage, Bhs, CodecError, DataOut, LogoutReason, LogoutRequest,
    LogoutResponse, LogoutResponseCode, NopIn, NopOut, Opcode, Pdu, PduDecoder, RESERVED_TAG,
    Reject, RejectReason, Residual, ScsiCommand, TaskMgmtRequest, TaskMgmtResponse, TmfFunction,
    TmfResponse,
};
use crate::proto::seq;
use crate::proto::task::{DataOutError, WriteTask};
use crate::target::session::{CmdSnVerdict, ConnHandle, Session, TaskEntry};
use crate::target::{Registry, TargetSettings};

/// Why the connection ended.
#[derive(Debug)]
pub enum ConnEnd {
    /// The initiator closed the socket.
    Eof,
    /// A logout completed.
    Logout,
    /// We closed it (shutdown, reinstatement, admin).
    Cancelled,
    /// A protocol error closed it (ErrorRecoveryLevel 0).
    ProtocolError(String),
    Io(std::io::Error),
    NopTimeout,
}

/// Hooks into the full-feature phase for text requests, which the login
/// layer owns (SendTargets and FFP negotiation).
pub trait TextHandler: Send + Sync {
    /// Answers one Text Request PDU with the Text Response PDU to send,
    /// and the initiator's new MaxRecvDataSegmentLength if it declared one.
    fn on_text(&mut self, pdu: &Pdu) -> Result<(Bhs, Bytes, Option<u32>), RejectReason>;
}

pub struct FullFeature<R> {
    pub reader: R,
    pub rbuf: BytesMut,
    pub decoder: PduDecoder,
    pub tx: ConnTx,
    pub session: Arc<Session>,
    pub registry: Arc<Registry>,
    pub conn: ConnHandle,
    pub exec: Option<Arc<ExecContext>>,
    pub text: Box<dyn TextHandler>,
    pub settings: TargetSettings,
    pub writes: HashMap<u32, PendingWrite>,
    pub next_ttt: u32,
    pub ping: Option<(u32, Instant)>,
}

enum Flow {
    Continue,
    Close(ConnEnd),
}

/// A reader that can be asked for bytes without waiting.
pub trait TryRead {
    /// Reads what is there now; `WouldBlock` when nothing is.
    fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<usize>;
}

impl TryRead for tokio::net::tcp::OwnedReadHalf {
    fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<usize> {
        tokio::net::tcp::OwnedReadHalf::try_read_buf(self, buf)
    }
}

impl<R: AsyncRead + TryRead + Unpin> FullFeature<R> {
    /// Polls the socket for the initiator's next PDU for up to `budget`,
    /// letting other tasks and threads run in between; true when bytes (or
    /// an end) arrived. An idle vCPU here wakes in tens of microseconds, so
    /// a pipeline-starved initiator is answered much sooner this way.
    async fn poll_input(&mut self, budget: Duration) -> bool {
        let Some(_slot) = SpinSlot::try_acquire() else {
            return false;
        };
        let until = std::time::Instant::now() + budget;
        loop {
            // Our answers' writer (and other connections) run first.
            tokio::task::yield_now().await;
            make_room(&mut self.rbuf);
            match self.reader.try_read_buf(&mut self.rbuf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // Data, an end or an error: the read path takes it from here.
                _ => return true,
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::yield_now();
        }
    }

    pub async fn run(mut self) -> ConnEnd {
        let mut policy = PollPolicy::new(spin::connection_budget());
        let mut polling = policy.enabled();
        let mut last_rx = Instant::now();
        let mut logout_deadline: Option<Instant> = None;
        // One timer for the connection, moved only to an earlier deadline:
        // re-arming it per PDU cost more than the commands' own work.
        let timer = tokio::time::sleep_until(last_rx);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            match self.next_timer(last_rx, logout_deadline) {
                Some(at) if armed.is_none_or(|a| at < a) => {
                    timer.as_mut().reset(at);
                    armed = Some(at);
                }
                Some(_) => {}
                None => armed = None,
            }
            if polling {
                polling = self.poll_input(policy.budget()).await;
            }
            let waited = std::time::Instant::now();
            let read = read_pdu(&mut self.reader, &mut self.rbuf, &mut self.decoder);
            let flow = tokio::select! {
                biased;
                () = self.conn.cancel.cancelled() => Flow::Close(ConnEnd::Cancelled),
                () = self.conn.logout_request.notified() => {
                    self.request_logout().await;
                    logout_deadline = Some(Instant::now() + Duration::from_secs(3));
                    Flow::Continue
                }
                res = read => match res {
                    Ok(Some(pdu)) => {
                        last_rx = Instant::now();
                        let waited = waited.elapsed();
                        let (flow, pdus) = self.on_pdus(pdu).await;
                        polling = policy.after_wake(waited, pdus, self.session.tasks.is_empty());
                        flow
                    }
                    Ok(None) => Flow::Close(ConnEnd::Eof),
                    Err(ReadError::Codec(e)) => self.on_codec_error(e).await,
                    Err(ReadError::Io(e)) => Flow::Close(ConnEnd::Io(e)),
                },
                () = &mut timer, if armed.is_some() => {
                    // It may fire early (activity since); on_timer checks.
                    armed = None;
                    self.on_timer(last_rx, logout_deadline).await
                }
            };
            if let Flow::Close(end) = flow {
                return end;
            }
        }
    }

    /// Handles a PDU, then every whole PDU already buffered behind it;
    /// also says how many it handled.
    async fn on_pdus(&mut self, first: Pdu) -> (Flow, u32) {
        let mut pdu = first;
        let mut handled = 0;
        loop {
            handled += 1;
            if let Flow::Close(end) = self.on_pdu(pdu).await {
                return (Flow::Close(end), handled);
            }
            if self.conn.cancel.is_cancelled() {
                return (Flow::Close(ConnEnd::Cancelled), handled);
            }
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(next)) => pdu = next,
                Ok(None) => return (Flow::Continue, handled),
                Err(e) => return (self.on_codec_error(e).await, handled),
            }
        }
    }

    fn next_timer(&self, last_rx: Instant, logout_deadline: Option<Instant>) -> Option<Instant> {
        let ping = match (self.ping, self.settings.nop_interval()) {
            (Some((_, deadline)), _) => Some(deadline),
            (None, Some(interval)) => Some(last_rx + interval),
            (None, None) => None,
        };
        match (ping, logout_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn on_timer(&mut self, last_rx: Instant, logout_deadline: Option<Instant>) -> Flow {
        let now = Instant::now();
        if logout_deadline.is_some_and(|d| now >= d) {
            return Flow::Close(ConnEnd::Cancelled);
        }
        match self.ping {
            Some((_, deadline)) if now >= deadline => {
                warn!(
                    "no answer to NOP-In within {:?}: closing",
                    self.settings.nop_timeout()
                );
                return Flow::Close(ConnEnd::NopTimeout);
            }
            Some(_) => {}
            None => {
                if self
                    .settings
                    .nop_interval()
                    .is_some_and(|i| now >= last_rx + i)
                {
                    let ttt = self.alloc_ttt();
                    let nop = NopIn {
                        itt: RESERVED_TAG,
                        ttt,
                        ..NopIn::default()
                    };
                    self.tx
                        .send(nop.encode(), Bytes::new(), StatSnMode::Current)
                        .await;
                    self.ping = Some((ttt, now + self.settings.nop_timeout()));
                }
            }
        }
        Flow::Continue
    }

    fn alloc_ttt(&mut self) -> u32 {
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        self.next_ttt
    }

    async fn reject(&self, bhs: &Bhs, reason: RejectReason) {
        let rej = Reject {
            reason,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data_sn: 0,
        };
        self.tx
            .send(
                rej.encode(),
                Bytes::copy_from_slice(&bhs.0),
                StatSnMode::Advance,
            )
            .await;
    }

    async fn on_codec_error(&mut self, err: CodecError) -> Flow {
        match err {
            CodecError::DataDigest { bhs } => {
                warn!("data digest error: rejecting the PDU");
                self.reject(&bhs, RejectReason::DataDigestError).await;
                // ErrorRecoveryLevel 0 cannot ask for the data again: the
                // command ends with PROTOCOL SERVICE CRC ERROR.
                if bhs.opcode() == Some(Opcode::DataOut) {
                    self.fail_write(bhs.itt(), fixed_sense(0x0b, 0x47, 0x05))
                        .await;
                }
                Flow::Continue
            }
            CodecError::DataSegmentTooLong { bhs, .. } => {
                warn!("{err}: closing the connection");
                self.reject(&bhs, RejectReason::ProtocolError).await;
                self.tx.flush().await;
                Flow::Close(ConnEnd::ProtocolError(err.to_string()))
            }
            CodecError::HeaderDigest => {
                warn!("header digest error: closing the connection");
                Flow::Close(ConnEnd::ProtocolError(err.to_string()))
            }
        }
    }

    async fn protocol_error(&self, bhs: &Bhs, reason: RejectReason, why: String) -> Flow {
        warn!("protocol error: {why}");
        self.reject(bhs, reason).await;
        self.tx.flush().await;
        Flow::Close(ConnEnd::ProtocolError(why))
    }

    async fn on_pdu(&mut self, pdu: Pdu) -> Flow {
        tracing::trace!(opcode = pdu.bhs.opcode_raw(), itt = pdu.bhs.itt(), "rx");
        let Some(op) = pdu.bhs.opcode() else {
            self.reject(&pdu.bhs, RejectReason::CommandNotSupported)
                .await;
            return Flow::Continue;
        };
        match op {
            Opcode::ScsiCommand => self.on_scsi_command(&pdu).await,
            Opcode::DataOut => self.on_data_out(&pdu).await,
            Opcode::NopOut => self.on_nop_out(&pdu).await,
            Opcode::TaskMgmtRequest => self.on_tmf(&pdu).await,
            Opcode::TextRequest => self.on_text(&pdu).await,
            Opcode::LogoutRequest => self.on_logout(&pdu).await,
            Opcode::SnackRequest => {
                // ErrorRecoveryLevel 0: no SNACK support.
                self.reject(&pdu.bhs, RejectReason::ProtocolError).await;
                Flow::Continue
            }
            Opcode::LoginRequest => {
                self.protocol_error(
                    &pdu.bhs,
                    RejectReason::ProtocolError,
                    "Login Request in full-feature phase".into(),
                )
                .await
            }
            _ => {
                self.protocol_error(
                    &pdu.bhs,
                    RejectReason::ProtocolError,
                    format!("target opcode {op:?} from the initiator"),
                )
                .await
            }
        }
    }

    async fn on_scsi_command(&mut self, pdu: &Pdu) -> Flow {
        let Some(exec) = self.exec.clone() else {
            return self
                .protocol_error(
                    &pdu.bhs,
                    RejectReason::ProtocolError,
                    "SCSI command in a discovery session".into(),
                )
                .await;
        };
        let cmd = match ScsiCommand::load(pdu) {
            Ok(c) => c,
            Err(e) => {
                self.reject(&pdu.bhs, e.reject_reason()).await;
                return Flow::Continue;
            }
        };
        if self.session.window.accept(cmd.cmd_sn, cmd.immediate, true) == CmdSnVerdict::Drop {
            debug!(cmd_sn = cmd.cmd_sn, "CmdSN outside the window: ignored");
            return Flow::Continue;
        }
        let wp = self.session.params.write;
        let imm_len = pdu.data.len() as u32;
        if imm_len > 0 && (!wp.immediate_data || !cmd.write) {
            self.session.window.complete();
            return self
                .protocol_error(
                    &pdu.bhs,
                    RejectReason::ProtocolError,
                    "unexpected immediate data".into(),
                )
                .await;
        }
        let aborted = Arc::new(AtomicBool::new(false));
        let entry = TaskEntry {
            lun: cmd.lun,
            cmd_sn: cmd.cmd_sn,
            cid: self.conn.cid,
            aborted: aborted.clone(),
        };
        if !self.session.tasks.insert(cmd.itt, entry) {
            self.session.window.complete();
            self.reject(&pdu.bhs, RejectReason::TaskInProgress).await;
            return Flow::Continue;
        }
        let info = CommandInfo::from_pdu(&cmd);
        if !cmd.write {
            // Cached reads are answered without leaving this task.
            let started = std::time::Instant::now();
            if let Some((outcome, data_in)) = exec.try_read_now(&info) {
                exec.answer_now(&info, &aborted, &outcome, data_in, started)
                    .await;
            } else {
                tokio::spawn(exec.execute(info, Vec::new(), aborted, 0));
            }
            return Flow::Continue;
        }
        let edtl = cmd.expected_data_transfer_length;
        let mut task = match WriteTask::new(edtl, imm_len, cmd.final_bit, &wp) {
            Ok(t) => t,
            Err(e) => {
                self.session.tasks.remove(cmd.itt);
                self.session.window.complete();
                return self
                    .protocol_error(&pdu.bhs, RejectReason::ProtocolError, e.to_string())
                    .await;
            }
        };
        let spdtl = exec.luns.data_out_len(info.lun_number(), &info.cdb);
        let mut info = info;
        info.data_out_len = spdtl;
        let verdict = early_verdict(edtl);
        let buffer = if verdict.is_some() {
            task.limit_solicitation(0);
            None
        } else {
            // Ask only for what the CDB will use; unsolicited data beyond it
            // is still accepted (and ignored).
            if let Some(s) = spdtl {
                task.limit_solicitation(u32::try_from(s).unwrap_or(u32::MAX));
            }
            let mut buf = buffers::take(edtl as usize);
            buf.extend_from_slice(&pdu.data);
            buf.resize(edtl as usize, 0);
            Some(buf)
        };
        let mut pending = PendingWrite {
            info,
            task,
            buffer,
            verdict,
            aborted,
        };
        if pending.task.is_complete() {
            Self::start_write(exec, pending).await;
        } else {
            send_r2ts(
                &self.tx,
                &pending.info,
                &mut pending.task,
                &mut self.next_ttt,
            )
            .await;
            self.writes.insert(cmd.itt, pending);
        }
        Flow::Continue
    }

    async fn start_write(exec: Arc<ExecContext>, w: PendingWrite) {
        let exp_data_sn = w.task.r2t_sn();
        match (w.verdict, w.buffer) {
            (Some(v), _) => {
                tokio::spawn(async move {
                    exec.answer_early(&w.info, &w.aborted, v, exp_data_sn).await;
                });
            }
            (None, Some(buf)) => {
                // The whole buffer goes down: commands that need an exact
                // length (COMPARE AND WRITE) judge the mismatch themselves.
                let started = std::time::Instant::now();
                if let Some(outcome) = exec.try_write_now(&w.info, &buf) {
                    let written = buf.len() as u64;
                    buffers::give(buf);
                    exec.answer_write_now(
                        &w.info,
                        &w.aborted,
                        &outcome,
                        written,
                        exp_data_sn,
                        started,
                    )
                    .await;
                    return;
                }
                let w = LaneWrite {
                    exec,
                    info: w.info,
                    data: buf,
                    aborted: w.aborted,
                    exp_data_sn,
                    started,
                };
                if w.exec.is_buffered_write(&w.info) {
                    w.exec.lanes.clone().submit(w);
                } else {
                    tokio::spawn(w.exec.execute(w.info, w.data, w.aborted, w.exp_data_sn));
                }
            }
            (None, None) => unreachable!("a write without a verdict always has a buffer"),
        }
    }

    async fn on_data_out(&mut self, pdu: &Pdu) -> Flow {
        let hdr = DataOut::load(&pdu.bhs);
        if self
            .writes
            .get(&hdr.itt)
            .is_some_and(|w| w.aborted.load(Ordering::Acquire))
        {
            // Aborted from another connection of the session.
            self.writes.remove(&hdr.itt);
            self.session.window.complete();
        }
        let Some(w) = self.writes.get_mut(&hdr.itt) else {
            // The task may have been aborted: its data is dropped silently.
            debug!(itt = hdr.itt, "Data-Out for no pending write");
            return Flow::Continue;
        };
        let len = pdu.data.len() as u32;
        let offset = match w.task.on_data_out(&hdr, len) {
            Ok(o) => o,
            Err(e) => {
                warn!(itt = hdr.itt, "Data-Out refused: {e}; ending the command");
                self.fail_write(hdr.itt, data_out_sense(e)).await;
                return Flow::Continue;
            }
        };
        if let Some(buf) = w.buffer.as_mut() {
            let start = offset as usize;
            // on_data_out bounded offset + len by the expected length.
            buf[start..start + pdu.data.len()].copy_from_slice(&pdu.data);
        }
        if w.task.is_complete() {
            let w = self.writes.remove(&hdr.itt).expect("present above");
            if let Some(exec) = self.exec.clone() {
                Self::start_write(exec, w).await;
            }
        } else if hdr.final_bit {
            send_r2ts(&self.tx, &w.info, &mut w.task, &mut self.next_ttt).await;
        }
        Flow::Continue
    }

    /// Ends a write whose data went wrong with CHECK CONDITION, ABORTED
    /// COMMAND (the connection stays up; the rest of its data is dropped).
    async fn fail_write(&mut self, itt: u32, sense: Vec<u8>) {
        let Some(w) = self.writes.remove(&itt) else {
            return;
        };
        let Some(exec) = self.exec.clone() else {
            return;
        };
        let verdict = EarlyVerdict {
            sense,
            residual: Residual::None,
        };
        let exp_data_sn = w.task.r2t_sn();
        exec.answer_early(&w.info, &w.aborted, verdict, exp_data_sn)
            .await;
    }

    async fn on_nop_out(&mut self, pdu: &Pdu) -> Flow {
        let nop = NopOut::load(&pdu.bhs);
        if nop.itt == RESERVED_TAG {
            // An answer to our ping (RFC 7143 §11.18.2), or a no-reply ping.
            if self.ping.is_some_and(|(ttt, _)| ttt == nop.ttt) {
                self.ping = None;
            }
            return Flow::Continue;
        }
        if self.session.window.accept(nop.cmd_sn, nop.immediate, false) == CmdSnVerdict::Drop {
            return Flow::Continue;
        }
        let reply = NopIn {
            lun: nop.lun,
            itt: nop.itt,
            ttt: RESERVED_TAG,
            ..NopIn::default()
        };
        self.tx
            .send(reply.encode(), pdu.data.clone(), StatSnMode::Advance)
            .await;
        Flow::Continue
    }

    async fn on_text(&mut self, pdu: &Pdu) -> Flow {
        let cmd_sn = pdu.bhs.u32_at(24);
        if self
            .session
            .window
            .accept(cmd_sn, pdu.bhs.immediate(), false)
            == CmdSnVerdict::Drop
        {
            return Flow::Continue;
        }
        match self.text.on_text(pdu) {
            Ok((bhs, data, new_max)) => {
                self.tx.send(bhs, data, StatSnMode::Advance).await;
                if let (Some(max), Some(exec)) = (new_max, &self.exec) {
                    exec.max_send_segment.store(max, Ordering::Release);
                }
            }
            Err(reason) => self.reject(&pdu.bhs, reason).await,
        }
        Flow::Continue
    }

    async fn on_logout(&mut self, pdu: &Pdu) -> Flow {
        let req = LogoutRequest::load(&pdu.bhs);
        if self.session.window.accept(req.cmd_sn, req.immediate, false) == CmdSnVerdict::Drop {
            return Flow::Continue;
        }
        let (response, close_session, close_other) = match req.reason {
            LogoutReason::CloseSession => (LogoutResponseCode::Success, true, None),
            LogoutReason::CloseConnection if req.cid == self.conn.cid => {
                (LogoutResponseCode::Success, false, None)
            }
            LogoutReason::CloseConnection => {
                let other = self
                    .session
                    .connections
                    .lock()
                    .expect("conn lock")
                    .get(&req.cid)
                    .cloned();
                match other {
                    Some(c) => (LogoutResponseCode::Success, false, Some(c)),
                    None => (LogoutResponseCode::CidNotFound, false, None),
                }
            }
            LogoutReason::RemoveConnectionForRecovery | LogoutReason::Unknown(_) => {
                (LogoutResponseCode::RecoveryNotSupported, false, None)
            }
        };
        let resp = LogoutResponse {
            response,
            itt: req.itt,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            time2wait: 0,
            time2retain: 0,
        };
        self.tx
            .send(resp.encode(), Bytes::new(), StatSnMode::Advance)
            .await;
        self.tx.flush().await;
        if let Some(other) = close_other {
            other.cancel.cancel();
            return Flow::Continue;
        }
        if response != LogoutResponseCode::Success {
            return Flow::Continue;
        }
        info!(reason = ?req.reason, "logout");
        if close_session {
            self.session.close();
        }
        Flow::Close(ConnEnd::Logout)
    }

    async fn request_logout(&mut self) {
        let msg = AsyncMessage {
            lun: 0,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            event: AsyncEvent::LogoutRequested,
            parameter1: 0,
            parameter2: 0,
            // Seconds the initiator has to log out.
            parameter3: 2,
        };
        self.tx
            .send(msg.encode(), Bytes::new(), StatSnMode::Advance)
            .await;
    }

    async fn on_tmf(&mut self, pdu: &Pdu) -> Flow {
        let req = TaskMgmtRequest::load(&pdu.bhs);
        let exp_before = self.session.window.exp_cmd_sn();
        if self.session.window.accept(req.cmd_sn, req.immediate, false) == CmdSnVerdict::Drop {
            return Flow::Continue;
        }
        let response = self.run_tmf(&req, exp_before);
        let resp = TaskMgmtResponse {
            response,
            itt: req.itt,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
        };
        self.tx
            .send(resp.encode(), Bytes::new(), StatSnMode::Advance)
            .await;
        if req.function == TmfFunction::TargetColdReset && response == TmfResponse::Complete {
            self.tx.flush().await;
            if let Some(target) = self.session.target() {
                for s in self.registry.sessions() {
                    if s.target().is_some_and(|t| Arc::ptr_eq(t, target)) {
                        s.close();
                    }
                }
            }
        }
        Flow::Continue
    }

    fn drop_pending_writes(&mut self, pred: impl Fn(&PendingWrite) -> bool) {
        let itts: Vec<u32> = self
            .writes
            .iter()
            .filter(|(_, w)| pred(w))
            .map(|(i, _)| *i)
            .collect();
        for itt in itts {
            if let Some(w) = self.writes.remove(&itt) {
                w.aborted.store(true, Ordering::Release);
                self.session.window.complete();
            }
        }
    }

    /// RFC 7143 §11.5.1 and SAM-5 §7: the task management functions.
    fn run_tmf(&mut self, req: &TaskMgmtRequest, exp_cmd_sn: u32) -> TmfResponse {
        let Some(exec) = self.exec.clone() else {
            return TmfResponse::NotSupported;
        };
        let lun = decode_lun(req.lun);
        let luns_known = || exec.luns.luns().iter().any(|(n, _)| *n == lun);
        match req.function {
            TmfFunction::AbortTask => {
                let rtt = req.referenced_task_tag;
                if self.session.tasks.abort(rtt).is_some() {
                    // A running command frees its window slot when it
                    // finishes; one still waiting for data frees it here.
                    if self.writes.remove(&rtt).is_some() {
                        self.session.window.complete();
                    }
                    TmfResponse::Complete
                } else if seq::in_window(
                    req.ref_cmd_sn,
                    exp_cmd_sn,
                    self.session.window.max_cmd_sn(),
                ) && seq::lt(req.ref_cmd_sn, req.cmd_sn)
                {
                    // RFC 7143 §11.5.1 b): a command not received yet is
                    // considered received (and so aborted).
                    TmfResponse::Complete
                } else {
                    // c): it completed already, or never existed.
                    TmfResponse::TaskDoesNotExist
                }
            }
            TmfFunction::AbortTaskSet | TmfFunction::ClearTaskSet => {
                if !luns_known() {
                    return TmfResponse::LunDoesNotExist;
                }
                self.session.tasks.abort_where(|t| decode_lun(t.lun) == lun);
                self.drop_pending_writes(|w| w.info.lun_number() == lun);
                TmfResponse::Complete
            }
            TmfFunction::LogicalUnitReset => {
                if !luns_known() {
                    return TmfResponse::LunDoesNotExist;
                }
                for s in self.registry.sessions() {
                    s.tasks.abort_where(|t| decode_lun(t.lun) == lun);
                }
                self.drop_pending_writes(|w| w.info.lun_number() == lun);
                exec.luns.lun_reset(lun, &exec.nexus);
                TmfResponse::Complete
            }
            TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
                for s in self.registry.sessions() {
                    if s.target().is_some_and(|t| {
                        Arc::ptr_eq(t, self.session.target().expect("normal session"))
                    }) {
                        s.tasks.abort_where(|_| true);
                    }
                }
                self.drop_pending_writes(|_| true);
                exec.luns.target_reset(&exec.nexus);
                TmfResponse::Complete
            }
            TmfFunction::TaskReassign => TmfResponse::ReassignmentNotSupported,
            TmfFunction::ClearAca | TmfFunction::Unknown(_) => TmfResponse::NotSupported,
        }
    }
}

/// Sense for a Data-Out that breaks the sequence (SPC-5 ASC 4Bh, 0Ch).
fn data_out_sense(e: DataOutError) -> Vec<u8> {
    const ABORTED_COMMAND: u8 = 0x0b;
    let (asc, ascq) = match e {
        DataOutError::DataSn { .. } => (0x4b, 0x00),
        DataOutError::UnknownTtt(_) => (0x4b, 0x01),
        DataOutError::Overrun => (0x4b, 0x02),
        DataOutError::BufferOffset { .. } => (0x4b, 0x05),
        DataOutError::UnsolicitedNotAllowed => (0x0c, 0x0c),
    };
    fixed_sense(ABORTED_COMMAND, asc, ascq)
}

/// A write larger than we buffer is answered with INVALID FIELD IN CDB
/// (block limits advertise less); its data is taken and dropped.
fn early_verdict(edtl: u32) -> Option<EarlyVerdict> {
    if edtl > MAX_WRITE_BUFFER {
        return Some(EarlyVerdict {
            sense: fixed_sense(0x05, 0x24, 0x00),
            residual: Residual::Underflow(edtl),
        });
    }
    None
}

#[derive(Debug)]
pub enum ReadError {
    Codec(CodecError),
    Io(std::io::Error),
}

/// Reads until one whole PDU is buffered; `Ok(None)` at end of stream.
/// Cancel-safe: bytes read stay in `buf`.
/// Keeps room in the read buffer for the next socket read.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(64 * 1024);
    }
}

pub async fn read_pdu<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    decoder: &mut PduDecoder,
) -> Result<Option<Pdu>, ReadError> {
    loop {
        if let Some(pdu) = decoder.decode(buf).map_err(ReadError::Codec)? {
            return Ok(Some(pdu));
        }
        make_room(buf);
        if reader.read_buf(buf).await.map_err(ReadError::Io)? == 0 {
            return Ok(None);
        }
    }
}
