//! The full-feature phase of one connection, as socket work: reads PDUs
//! (with busy polling), feeds them and `now` to the sans-io state machine
//! (`proto::ffp::conn`), and carries out the events it returns.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{info, warn};

use super::exec::{Cmd, ExecContext};
use super::spin::{self, PollPolicy, SpinSlot};
use super::writer::ConnTx;
use crate::proto::ffp::conn::{Config, Connection, Event};
use crate::proto::ffp::writes::EarlyVerdict;
use crate::proto::ffp::{CloseReason, OutPdu};
use crate::proto::pdu::{Bhs, CodecError, Pdu, PduDecoder, RejectReason, Residual};
use crate::target::session::{ConnHandle, ConnNews, Delivered, Session};
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
    /// The state machine closed it.
    Closed(CloseReason),
    Io(std::io::Error),
}

/// Hooks into the full-feature phase for text requests, which the login
/// layer owns (SendTargets and FFP negotiation).
pub trait TextHandler: Send + Sync {
    /// Answers one Text Request PDU with the Text Response PDU to send,
    /// and the initiator's new MaxRecvDataSegmentLength if it declared one.
    fn on_text(&mut self, pdu: &Pdu) -> Result<(Bhs, Bytes, Option<u32>), RejectReason>;
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

/// How often a connection whose writes wait for budget looks again.
const BUDGET_RECHECK: Duration = Duration::from_millis(20);

/// How long an initiator asked to log out has (Async Message parameter).
const LOGOUT_GRACE: Duration = Duration::from_secs(3);

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
    pub core: Connection<Cmd>,
    /// Commands without data held until CmdSN order reaches them.
    pub held: HashMap<u32, Cmd>,
    /// The window throttles MaxCmdSN (write budget spent).
    pub throttled: bool,
    pub(super) delivered: Vec<Delivered>,
    pub(super) news: Vec<ConnNews>,
}

enum Wake {
    Pdu(Result<Option<Pdu>, ReadError>),
    Cancelled,
    Logout,
    News,
    Budget,
    Timer,
}

impl<R: AsyncRead + TryRead + Unpin> FullFeature<R> {
    #[allow(clippy::too_many_arguments, reason = "the connection's parts, once")]
    pub fn new(
        reader: R,
        rbuf: BytesMut,
        decoder: PduDecoder,
        tx: ConnTx,
        session: Arc<Session>,
        registry: Arc<Registry>,
        conn: ConnHandle,
        exec: Option<Arc<ExecContext>>,
        text: Box<dyn TextHandler>,
        settings: &TargetSettings,
    ) -> Self {
        let cfg = Config {
            nop_interval: settings.nop_interval(),
            nop_timeout: settings.nop_timeout(),
            logout_grace: LOGOUT_GRACE,
            write: session.params.write,
            discovery: exec.is_none(),
        };
        FullFeature {
            reader,
            rbuf,
            decoder,
            tx,
            session,
            registry,
            conn,
            exec,
            text,
            core: Connection::new(cfg, Instant::now()),
            held: HashMap::new(),
            throttled: false,
            delivered: Vec::new(),
            news: Vec::new(),
        }
    }

    /// Polls the socket for the initiator's next PDU for up to `budget`,
    /// letting other tasks and threads run in between; true when bytes (or
    /// an end) arrived. An idle vCPU here wakes in tens of microseconds, so
    /// a pipeline-starved initiator is answered much sooner this way.
    async fn poll_input(&mut self, budget: Duration) -> bool {
        let Some(_slot) = SpinSlot::try_acquire() else {
            return false;
        };
        let until = Instant::now() + budget;
        loop {
            // Our answers' writer (and other connections) run first.
            tokio::task::yield_now().await;
            make_room(&mut self.rbuf);
            match self.reader.try_read_buf(&mut self.rbuf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // Data, an end or an error: the read path takes it from here.
                _ => return true,
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::yield_now();
        }
    }

    pub async fn run(mut self) -> ConnEnd {
        let end = self.serve().await;
        // Whatever this connection still holds for its commands goes now.
        drop(self.core.drain_writes());
        self.held.clear();
        end
    }

    async fn serve(&mut self) -> ConnEnd {
        let mut policy = PollPolicy::new(spin::connection_budget());
        let mut polling = policy.enabled();
        // One timer for the connection, moved only to an earlier deadline:
        // re-arming it per PDU cost more than the commands' own work.
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let freed = self.registry.admission.freed.clone();
        let inbox = self.conn.inbox.clone();
        loop {
            match self.core.poll_timeout() {
                Some(at) if armed.is_none_or(|a| at < a) => {
                    timer.as_mut().reset(at.into());
                    armed = Some(at);
                }
                Some(_) => {}
                None => armed = None,
            }
            if polling {
                polling = self.poll_input(policy.budget()).await;
            }
            let waited = Instant::now();
            let wants_budget = self.throttled || self.core.waiting_for_budget() > 0;
            let wake = {
                let read = read_pdu(&mut self.reader, &mut self.rbuf, &mut self.decoder);
                tokio::select! {
                    biased;
                    () = self.conn.cancel.cancelled() => Wake::Cancelled,
                    () = self.conn.logout_request.notified() => Wake::Logout,
                    () = inbox.notify.notified() => Wake::News,
                    () = freed.notified(), if wants_budget => Wake::Budget,
                    // notify_waiters wakes only those already waiting: look
                    // again now and then rather than miss a release.
                    () = tokio::time::sleep(BUDGET_RECHECK), if wants_budget => Wake::Budget,
                    res = read => Wake::Pdu(res),
                    () = &mut timer, if armed.is_some() => Wake::Timer,
                }
            };
            match wake {
                Wake::Cancelled => return ConnEnd::Cancelled,
                Wake::Logout => self.core.request_logout(Instant::now()),
                Wake::News => self.on_news().await,
                Wake::Budget => self.on_budget(),
                Wake::Timer => {
                    // It may fire early (activity since); the core checks.
                    armed = None;
                    self.core.handle_timeout(Instant::now());
                }
                Wake::Pdu(Ok(Some(pdu))) => {
                    let waited = waited.elapsed();
                    let pdus = match self.on_pdus(pdu).await {
                        Ok(n) => n,
                        Err(end) => return end,
                    };
                    polling = policy.after_wake(waited, pdus, self.session.tasks.is_empty());
                }
                Wake::Pdu(Ok(None)) => return ConnEnd::Eof,
                Wake::Pdu(Err(ReadError::Codec(e))) => self.core.handle_codec_error(&e),
                Wake::Pdu(Err(ReadError::Io(e))) => return ConnEnd::Io(e),
            }
            if let Some(end) = self.drive().await {
                return end;
            }
        }
    }

    /// Handles a PDU, then every whole PDU already buffered behind it;
    /// says how many it handled.
    async fn on_pdus(&mut self, first: Pdu) -> Result<u32, ConnEnd> {
        let mut pdu = first;
        let mut handled = 0;
        loop {
            handled += 1;
            tracing::trace!(opcode = pdu.bhs.opcode_raw(), itt = pdu.bhs.itt(), "rx");
            self.core
                .handle_pdu(Instant::now(), pdu, self.session.window.as_ref());
            if let Some(end) = self.drive().await {
                return Err(end);
            }
            if self.conn.cancel.is_cancelled() {
                return Err(ConnEnd::Cancelled);
            }
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(next)) => pdu = next,
                Ok(None) => return Ok(handled),
                Err(e) => {
                    self.core.handle_codec_error(&e);
                    return Ok(handled);
                }
            }
        }
    }

    /// Carries out the state machine's events; `Some` when it closed.
    async fn drive(&mut self) -> Option<ConnEnd> {
        while let Some(ev) = self.core.poll_event() {
            match ev {
                Event::Send(pdu) => {
                    self.tx.send_pdu(pdu).await;
                }
                Event::Flush => self.tx.flush().await,
                Event::Close(reason) => {
                    warn!(?reason, "closing the connection");
                    return Some(ConnEnd::Closed(reason));
                }
                Event::Command {
                    bhs,
                    cmd,
                    immediate,
                } => self.admit(&bhs, &cmd, &immediate).await,
                Event::WriteReady {
                    payload,
                    data,
                    exp_data_sn,
                } => self.write_ready(payload, data, exp_data_sn).await,
                Event::WriteFailed {
                    payload,
                    reason,
                    exp_data_sn,
                } => {
                    warn!(
                        itt = payload.info.itt,
                        ?reason,
                        "Data-Out refused: ending the command"
                    );
                    if let Some(exec) = &self.exec {
                        let verdict = EarlyVerdict {
                            reason,
                            residual: Residual::None,
                        };
                        exec.fail(payload, verdict, exp_data_sn).await;
                    }
                }
                Event::Text(pdu) => self.on_text(&pdu).await,
                Event::Logout(req) => {
                    if super::session_ops::logout(&self.session, &self.conn, &self.tx, &req).await {
                        return Some(ConnEnd::Logout);
                    }
                }
                Event::Tmf { req, exp_cmd_sn } => {
                    super::session_ops::task_management(
                        &self.registry,
                        &self.session,
                        &self.tx,
                        &req,
                        exp_cmd_sn,
                    )
                    .await;
                }
            }
        }
        None
    }

    async fn on_text(&mut self, pdu: &Pdu) {
        match self.text.on_text(pdu) {
            Ok((bhs, data, new_max)) => {
                self.tx
                    .send_pdu(OutPdu {
                        bhs,
                        data,
                        stat_sn: crate::proto::ffp::StatSnMode::Advance,
                    })
                    .await;
                if let (Some(max), Some(exec)) = (new_max, &self.exec) {
                    exec.max_send_segment.store(max, Ordering::Release);
                }
            }
            Err(reason) => {
                super::session_ops::reject(&self.tx, &pdu.bhs, reason).await;
            }
        }
    }

    pub(super) async fn core_protocol_error(&mut self, bhs: &Bhs, why: String) {
        super::session_ops::reject(&self.tx, bhs, RejectReason::ProtocolError).await;
        self.tx.flush().await;
        self.conn.cancel.cancel();
        info!("protocol error: {why}");
    }
}

#[derive(Debug)]
pub enum ReadError {
    Codec(CodecError),
    Io(std::io::Error),
}

/// Keeps room in the read buffer for the next socket read.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(64 * 1024);
    }
}

/// Reads until one whole PDU is buffered; `Ok(None)` at end of stream.
/// Cancel-safe: bytes read stay in `buf`.
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
