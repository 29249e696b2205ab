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

use super::writes::{PendingWrite, WriteData};
use super::{CloseReason, OutPdu, StatSnMode};
use crate::proto::pdu::{
    AsyncEvent, AsyncMessage, Bhs, CodecError, LogoutRequest, NopIn, NopOut, Opcode, Pdu,
    RESERVED_TAG, Reject, RejectReason, ScsiCommand, TaskMgmtRequest,
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
    pub(super) cfg: Config,
    pub(super) last_rx: Instant,
    pub(super) ping: Option<(u32, Instant)>,
    pub(super) logout_deadline: Option<Instant>,
    pub(super) next_ttt: u32,
    pub(super) writes: HashMap<u32, PendingWrite<T>>,
    /// Writes waiting for budget, oldest first.
    pub(super) waiting: VecDeque<u32>,
    pub(super) events: VecDeque<Event<T>>,
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
    pub(super) fn alloc_ttt(next: &mut u32) -> u32 {
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
}
