//! One connection's full-feature phase as a state machine (RFC 7143 §4.2),
//! in quinn-proto's manner: decoded PDUs and `now` go in through
//! `handle_*`, events come out of `poll_event`, `poll_timeout` says when to
//! call `handle_timeout`. The socket loop in `transport/` carries the
//! events out; nothing here reads a clock or touches a socket.
//!
//! Owned here: opcode dispatch and its error classes, the NOP-In
//! keepalive and the logout grace timer, Data-Out intake (sequence checks,
//! sinks, grants) and R2T emission with one Target Transfer Tag allocator.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::admission::Budgets;
use super::writes::{EarlyVerdict, PendingWrite, WriteData};
use super::{CloseReason, OutPdu, StatSnMode};
use crate::proto::pdu::{
    AsyncEvent, AsyncMessage, Bhs, CodecError, DataOut, LogoutRequest, NopIn, NopOut, Opcode, Pdu,
    R2t, RESERVED_TAG, Reject, RejectReason, ScsiCommand, TaskMgmtRequest,
};
use crate::proto::task::{DataOutError, WriteParams};
use crate::scsi::SenseReason;

/// Fixed settings of the connection's full-feature phase.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Idle time after which we ping with a NOP-In (`None`: never).
    pub nop_interval: Option<Duration>,
    /// How long the initiator has to answer our ping.
    pub nop_timeout: Duration,
    /// How long an initiator asked to log out has before we close.
    pub logout_grace: Duration,
    pub write: WriteParams,
    /// A discovery session: SCSI commands are a protocol error.
    pub discovery: bool,
}

/// The session's CmdSN window as seen by non-SCSI PDUs.
pub trait CmdSnCheck {
    /// Whether a PDU with this CmdSN is taken (RFC 7143 §4.2.2.1: one
    /// outside the window is silently ignored).
    fn accept(&self, cmd_sn: u32, immediate: bool) -> bool;
    /// ExpCmdSN now.
    fn exp_cmd_sn(&self) -> u32;
}

/// What the connection asks its driver to do.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "each event moves once; boxing would allocate per command"
)]
pub enum Event<T> {
    Send(OutPdu),
    /// Send everything queued before going on (before a close).
    Flush,
    Close(CloseReason),
    /// A SCSI command for the session to admit (CmdSN, task table, task set).
    Command {
        bhs: Bhs,
        cmd: ScsiCommand,
        immediate: Bytes,
    },
    /// A write's data is complete.
    WriteReady {
        payload: T,
        data: WriteData,
        exp_data_sn: u32,
    },
    /// A write's data broke its sequence: the command ends with `reason`.
    WriteFailed {
        payload: T,
        reason: SenseReason,
        exp_data_sn: u32,
    },
    Text(Pdu),
    Logout(LogoutRequest),
    /// `exp_cmd_sn` is the window's ExpCmdSN before the TMF's own CmdSN.
    Tmf {
        req: TaskMgmtRequest,
        exp_cmd_sn: u32,
    },
}

/// The full-feature phase of one connection.
#[derive(Debug)]
pub struct Connection<T> {
    cfg: Config,
    last_rx: Instant,
    ping: Option<(u32, Instant)>,
    logout_deadline: Option<Instant>,
    next_ttt: u32,
    writes: HashMap<u32, PendingWrite<T>>,
    /// Writes waiting for budget, oldest first.
    waiting: VecDeque<u32>,
    events: VecDeque<Event<T>>,
}

/// Sense for a Data-Out that breaks the sequence (SPC-5 ASC 4Bh, 0Ch).
pub fn data_out_reason(e: DataOutError) -> SenseReason {
    match e {
        DataOutError::UnsolicitedNotAllowed => SenseReason::UnexpectedUnsolicitedData,
        DataOutError::UnknownTtt(_) => SenseReason::InvalidTargetPortTransferTagReceived,
        DataOutError::Overrun => SenseReason::TooMuchWriteData,
        DataOutError::BufferOffset { .. } => SenseReason::DataOffsetError,
        DataOutError::DataSn { .. } => SenseReason::DataPhaseError,
    }
}

impl<T> Connection<T> {
    pub fn new(cfg: Config, now: Instant) -> Connection<T> {
        Connection {
            cfg,
            last_rx: now,
            ping: None,
            logout_deadline: None,
            next_ttt: 0,
            writes: HashMap::new(),
            waiting: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    fn send(&mut self, bhs: Bhs, data: Bytes, stat_sn: StatSnMode) {
        self.events
            .push_back(Event::Send(OutPdu { bhs, data, stat_sn }));
    }

    /// A Reject carrying the offending header (RFC 7143 §11.17).
    fn reject(&mut self, bhs: &Bhs, reason: RejectReason) {
        let rej = Reject {
            reason,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data_sn: 0,
        };
        self.send(
            rej.encode(),
            Bytes::copy_from_slice(&bhs.0),
            StatSnMode::Advance,
        );
    }

    /// Reject, then close: a protocol error at ErrorRecoveryLevel 0.
    fn protocol_error(&mut self, bhs: &Bhs, why: String) {
        self.reject(bhs, RejectReason::ProtocolError);
        self.events.push_back(Event::Flush);
        self.events
            .push_back(Event::Close(CloseReason::ProtocolError(why)));
    }

    /// The one Target Transfer Tag allocator (never the reserved tag).
    fn alloc_ttt(next: &mut u32) -> u32 {
        *next = next.wrapping_add(1);
        if *next == RESERVED_TAG {
            *next = 1;
        }
        *next
    }

    /// When `handle_timeout` wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ping = match (self.ping, self.cfg.nop_interval) {
            (Some((_, deadline)), _) => Some(deadline),
            (None, Some(interval)) => Some(self.last_rx + interval),
            (None, None) => None,
        };
        match (ping, self.logout_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers: the logout grace period, the NOP-In answer deadline and the
    /// idle interval after which we ping (RFC 7143 §11.19).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.logout_deadline.is_some_and(|d| now >= d) {
            self.events
                .push_back(Event::Close(CloseReason::LogoutTimeout));
            return;
        }
        match self.ping {
            Some((_, deadline)) if now >= deadline => {
                self.events.push_back(Event::Close(CloseReason::NopTimeout));
            }
            Some(_) => {}
            None => {
                if self
                    .cfg
                    .nop_interval
                    .is_some_and(|i| now >= self.last_rx + i)
                {
                    let ttt = Self::alloc_ttt(&mut self.next_ttt);
                    let nop = NopIn {
                        itt: RESERVED_TAG,
                        ttt,
                        ..NopIn::default()
                    };
                    self.send(nop.encode(), Bytes::new(), StatSnMode::Current);
                    self.ping = Some((ttt, now + self.cfg.nop_timeout));
                }
            }
        }
    }

    /// Asks the initiator to log out (Async Message, RFC 7143 §11.9.1) and
    /// closes after the grace period.
    pub fn request_logout(&mut self, now: Instant) {
        let msg = AsyncMessage {
            lun: 0,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            event: AsyncEvent::LogoutRequested,
            parameter1: 0,
            parameter2: 0,
            parameter3: self.cfg.logout_grace.as_secs().max(1) as u16,
        };
        self.send(msg.encode(), Bytes::new(), StatSnMode::Advance);
        self.logout_deadline = Some(now + self.cfg.logout_grace);
    }

    /// An unsolicited NOP-In that only carries a new MaxCmdSN (RFC 7143
    /// §11.19: TTT reserved, so no answer is due).
    pub fn window_update(&mut self) {
        let nop = NopIn {
            itt: RESERVED_TAG,
            ttt: RESERVED_TAG,
            ..NopIn::default()
        };
        self.send(nop.encode(), Bytes::new(), StatSnMode::Current);
    }

    /// A PDU the decoder could not deliver whole.
    pub fn handle_codec_error(&mut self, err: &CodecError) {
        match err {
            CodecError::DataDigest { bhs } => {
                self.reject(bhs, RejectReason::DataDigestError);
                // ErrorRecoveryLevel 0 cannot ask for the data again: the
                // command ends with PROTOCOL SERVICE CRC ERROR.
                if bhs.opcode() == Some(Opcode::DataOut) {
                    self.fail_write(bhs.itt(), SenseReason::ProtocolServiceCrcError);
                }
            }
            CodecError::DataSegmentTooLong { bhs, .. } => {
                let why = err.to_string();
                self.protocol_error(bhs, why);
            }
            CodecError::HeaderDigest => {
                // The header cannot be trusted, not even its length.
                self.events
                    .push_back(Event::Close(CloseReason::ProtocolError(err.to_string())));
            }
        }
    }

    /// One decoded PDU.
    pub fn handle_pdu(&mut self, now: Instant, pdu: Pdu, window: &dyn CmdSnCheck) {
        self.last_rx = now;
        let Some(op) = pdu.bhs.opcode() else {
            self.reject(&pdu.bhs, RejectReason::CommandNotSupported);
            return;
        };
        match op {
            Opcode::ScsiCommand => self.on_scsi_command(pdu),
            Opcode::DataOut => self.on_data_out(&pdu),
            Opcode::NopOut => self.on_nop_out(pdu, window),
            Opcode::TaskMgmtRequest => {
                let req = TaskMgmtRequest::load(&pdu.bhs);
                let exp_cmd_sn = window.exp_cmd_sn();
                if window.accept(req.cmd_sn, req.immediate) {
                    self.events.push_back(Event::Tmf { req, exp_cmd_sn });
                }
            }
            Opcode::TextRequest => {
                if window.accept(pdu.bhs.u32_at(24), pdu.bhs.immediate()) {
                    self.events.push_back(Event::Text(pdu));
                }
            }
            Opcode::LogoutRequest => {
                let req = LogoutRequest::load(&pdu.bhs);
                if window.accept(req.cmd_sn, req.immediate) {
                    self.events.push_back(Event::Logout(req));
                }
            }
            // ErrorRecoveryLevel 0: no SNACK support (RFC 7143 §11.16).
            Opcode::SnackRequest => self.reject(&pdu.bhs, RejectReason::ProtocolError),
            Opcode::LoginRequest => {
                self.protocol_error(&pdu.bhs, "Login Request in full-feature phase".into());
            }
            other => {
                self.protocol_error(
                    &pdu.bhs,
                    format!("target opcode {other:?} from the initiator"),
                );
            }
        }
    }

    fn on_scsi_command(&mut self, pdu: Pdu) {
        if self.cfg.discovery {
            self.protocol_error(&pdu.bhs, "SCSI command in a discovery session".into());
            return;
        }
        let cmd = match ScsiCommand::load(&pdu) {
            Ok(c) => c,
            Err(e) => {
                self.reject(&pdu.bhs, e.reject_reason());
                return;
            }
        };
        // RFC 7143 §11.3.4: immediate data only when negotiated, and only
        // for a write.
        if !pdu.data.is_empty() && (!self.cfg.write.immediate_data || !cmd.write) {
            self.protocol_error(&pdu.bhs, "unexpected immediate data".into());
            return;
        }
        if cmd.write && self.writes.contains_key(&cmd.itt) {
            self.reject(&pdu.bhs, RejectReason::TaskInProgress);
            return;
        }
        self.events.push_back(Event::Command {
            bhs: pdu.bhs,
            cmd,
            immediate: pdu.data,
        });
    }

    fn on_nop_out(&mut self, pdu: Pdu, window: &dyn CmdSnCheck) {
        let nop = NopOut::load(&pdu.bhs);
        if nop.itt == RESERVED_TAG {
            // An answer to our ping (RFC 7143 §11.18.2), or a no-reply ping.
            if self.ping.is_some_and(|(ttt, _)| ttt == nop.ttt) {
                self.ping = None;
            }
            return;
        }
        if !window.accept(nop.cmd_sn, nop.immediate) {
            return;
        }
        let reply = NopIn {
            lun: nop.lun,
            itt: nop.itt,
            ttt: RESERVED_TAG,
            ..NopIn::default()
        };
        self.send(reply.encode(), pdu.data, StatSnMode::Advance);
    }

    /// A write admitted by the session: its data is collected here. Its
    /// R2Ts wait for `deliver_write` (CmdSN order) and for a grant.
    #[allow(clippy::too_many_arguments, reason = "one call site, all wire fields")]
    pub fn begin_write(
        &mut self,
        itt: u32,
        payload: T,
        cmd: &ScsiCommand,
        immediate: &Bytes,
        verdict: Option<EarlyVerdict>,
        solicit_limit: Option<u32>,
        budgets: &Budgets,
        take_buffer: impl FnOnce(usize) -> Vec<u8>,
    ) -> Result<(), (T, DataOutError)> {
        let edtl = cmd.expected_data_transfer_length;
        let mut w = PendingWrite::new(
            payload,
            cmd.lun,
            edtl,
            immediate,
            cmd.final_bit,
            &self.cfg.write,
            verdict,
            budgets,
            take_buffer,
        )?;
        if let Some(limit) = solicit_limit {
            // Ask only for what the CDB will use; unsolicited data beyond
            // it is still taken (and ignored).
            w.task.limit_solicitation(limit);
        }
        self.writes.insert(itt, w);
        Ok(())
    }

    /// The write reached SCSI in CmdSN order: solicit its data (or hand it
    /// over if it is all there).
    pub fn deliver_write(&mut self, itt: u32, budgets: &Budgets) {
        let Some(w) = self.writes.get_mut(&itt) else {
            return;
        };
        w.delivered = true;
        // Budget goes to waiting writes first, oldest first.
        if !self.waiting.is_empty() || !self.progress(itt, budgets) {
            self.waiting.push_back(itt);
        }
    }

    /// Grants, R2Ts and completion for one write; false when it waits for
    /// budget.
    fn progress(&mut self, itt: u32, budgets: &Budgets) -> bool {
        let Some(w) = self.writes.get_mut(&itt) else {
            return true;
        };
        if !w.delivered {
            return true;
        }
        if w.is_complete() {
            self.hand_over(itt);
            return true;
        }
        if !w.try_grant(budgets) {
            return false;
        }
        self.emit_r2ts(itt);
        true
    }

    /// Budget came back: writes waiting for it try again, oldest first.
    pub fn retry_grants(&mut self, budgets: &Budgets) {
        while let Some(&itt) = self.waiting.front() {
            if !self.progress(itt, budgets) {
                break;
            }
            self.waiting.pop_front();
        }
    }

    /// Writes waiting for budget.
    pub fn waiting_for_budget(&self) -> usize {
        self.waiting.len()
    }

    fn on_data_out(&mut self, pdu: &Pdu) {
        let hdr = DataOut::load(&pdu.bhs);
        let Some(w) = self.writes.get_mut(&hdr.itt) else {
            // The task may have been aborted: its data is dropped silently.
            return;
        };
        if let Err(e) = w.on_data_out(&hdr, &pdu.data) {
            self.fail_write(hdr.itt, data_out_reason(e));
            return;
        }
        // All data in: it goes on once delivered in CmdSN order.
        if w.is_complete() && w.delivered {
            self.hand_over(hdr.itt);
        } else if hdr.final_bit && w.delivered {
            self.emit_r2ts(hdr.itt);
        }
    }

    fn hand_over(&mut self, itt: u32) {
        if let Some(w) = self.writes.remove(&itt) {
            let (payload, data, exp_data_sn) = w.into_data();
            self.events.push_back(Event::WriteReady {
                payload,
                data,
                exp_data_sn,
            });
        }
    }

    /// The R2Ts a granted, delivered write is ready for.
    fn emit_r2ts(&mut self, itt: u32) {
        let Some(w) = self.writes.get_mut(&itt) else {
            return;
        };
        let lun = w.lun;
        let next_ttt = &mut self.next_ttt;
        let events = &mut self.events;
        w.r2ts(
            || Self::alloc_ttt(next_ttt),
            |r| {
                let pdu = R2t {
                    lun,
                    itt,
                    ttt: r.ttt,
                    r2t_sn: r.r2t_sn,
                    buffer_offset: r.buffer_offset,
                    desired_data_transfer_length: r.desired_data_transfer_length,
                    ..R2t::default()
                };
                events.push_back(Event::Send(OutPdu {
                    bhs: pdu.encode(),
                    data: Bytes::new(),
                    stat_sn: StatSnMode::Current,
                }));
            },
        );
    }

    /// Ends a write whose data went wrong (the connection stays up; the
    /// rest of its data is dropped).
    fn fail_write(&mut self, itt: u32, reason: SenseReason) {
        if let Some(w) = self.writes.remove(&itt) {
            self.waiting.retain(|i| *i != itt);
            let exp_data_sn = w.task.r2t_sn();
            self.events.push_back(Event::WriteFailed {
                payload: w.payload,
                reason,
                exp_data_sn,
            });
        }
    }

    /// A task ended elsewhere (aborted): its pending write goes at once,
    /// with its buffer and grant; the caller drops the payload.
    pub fn abort_write(&mut self, itt: u32) -> Option<T> {
        self.waiting.retain(|i| *i != itt);
        self.writes.remove(&itt).map(|w| w.payload)
    }

    /// Every pending write, for the end of the connection.
    pub fn drain_writes(&mut self) -> Vec<T> {
        self.waiting.clear();
        self.writes.drain().map(|(_, w)| w.payload).collect()
    }

    /// The caller's state of a pending write.
    pub fn payload_mut(&mut self, itt: u32) -> Option<&mut T> {
        self.writes.get_mut(&itt).map(|w| &mut w.payload)
    }

    pub fn pending_writes(&self) -> usize {
        self.writes.len()
    }
}
