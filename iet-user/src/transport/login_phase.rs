//! The login phase on a socket: feeds Login Requests to the sans-io login
//! machine, writes its responses, and creates or joins the session.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::full_feature::{ReadError, TextHandler, read_pdu};
use crate::proto::auth::{AuthConfig, ChapAccount as AuthAccount};
use crate::proto::discovery::{DiscoveredPortal, DiscoveredTarget, DiscoveryEnv, TextContext};
use crate::proto::login::{
    DiscoveryLogin, Login, LoginContext, LoginEnv, LoginFailure, LoginOutcome, LoginResult,
    SessionBindRequest, SessionBinding, SessionKind as LoginKind, TargetLogin,
};
use crate::proto::params::{ConnectionParams, Digest, SessionParams, TargetParams};
use crate::proto::pdu::{
    CodecError, DigestSettings, Pdu, PduDecoder, RejectReason, TextRequest, encode_pdu,
};
use crate::proto::task::WriteParams;
use crate::proto::text_exchange::TextExchange;
use crate::target::limits::ChapGate;
use crate::target::session::{
    CmdWindow, FfpParams, Session, SessionId, SessionKind, TaskTable, nexus_for,
};
use crate::target::{ChapAccount, Registry, TargetSettings};

/// A login must make progress within this time or the connection is closed.
const LOGIN_STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// A connection that completed login.
pub struct LoggedIn {
    pub session: Arc<Session>,
    pub cid: u16,
    /// Framing with the negotiated digests and our MaxRecvDataSegmentLength.
    pub decoder: PduDecoder,
    /// The next StatSN to send.
    pub stat_sn: u32,
    pub max_send_segment: u32,
    pub text: Box<dyn TextHandler>,
    pub settings: TargetSettings,
    /// PDUs sent so far (login responses included).
    pub counters: Arc<super::writer::TxCounters>,
}

pub async fn run(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    peer: SocketAddr,
    local: SocketAddr,
    registry: &Arc<Registry>,
    counters: &Arc<super::writer::TxCounters>,
) -> Option<LoggedIn> {
    let mut login = Login::new(LoginContext { peer: peer.ip() });
    let mut decoder = PduDecoder::default();
    let env = Env {
        registry: registry.clone(),
        peer,
        local,
        bound: Mutex::new(None),
    };
    let limits = &registry.limits;
    // Slowloris: every connection has a login deadline, and a bounded
    // number may be in a login at once (from their first Login Request:
    // silent connections hold no place, the deadline closes them).
    let mut permit = None;
    let deadline = tokio::time::Instant::now() + limits.login_timeout();
    let mut initiator: Option<String> = None;
    let mut out = BytesMut::with_capacity(8192);
    loop {
        let step_deadline = deadline.min(tokio::time::Instant::now() + LOGIN_STEP_TIMEOUT);
        let pdu = match tokio::time::timeout_at(step_deadline, read_pdu(stream, rbuf, &mut decoder))
            .await
        {
            Err(_) => {
                limits
                    .counters
                    .logins_timed_out
                    .fetch_add(1, Ordering::Relaxed);
                info!(%peer, "login timed out: closing");
                env.unbind();
                return None;
            }
            Ok(Ok(Some(pdu))) => pdu,
            Ok(Ok(None)) => return None,
            Ok(Err(ReadError::Codec(CodecError::DataSegmentTooLong { bhs, len, max }))) => {
                // RFC 7143 §11.12.6: a login data segment over 8192 bytes.
                warn!(%peer, len, max, "login: oversized data segment: refusing");
                let step = login.refuse(&bhs, LoginFailure::InitiatorError);
                send_step(stream, &mut out, &step, counters).await;
                env.unbind();
                return None;
            }
            Ok(Err(ReadError::Codec(e))) => {
                warn!("login: {e}: closing");
                return None;
            }
            Ok(Err(ReadError::Io(e))) => {
                debug!("login: {e}");
                return None;
            }
        };
        if permit.is_none() {
            permit = limits.try_login();
        }
        if permit.is_none() {
            warn!(%peer, "too many logins in progress: refusing");
            let step = login.refuse(&pdu.bhs, LoginFailure::ServiceUnavailable);
            send_step(stream, &mut out, &step, counters).await;
            return None;
        }
        if initiator.is_none() {
            initiator = initiator_name_in(&pdu.data);
        }
        // CHAP failure lockout, per initiator name and source address.
        if let Some(name) = &initiator
            && let ChapGate::Locked { .. } =
                limits.chap_gate(name, peer.ip(), std::time::Instant::now())
        {
            info!(%peer, initiator = %name, "locked out after CHAP failures: refusing");
            let step = login.refuse(&pdu.bhs, LoginFailure::AuthenticationFailure);
            send_step(stream, &mut out, &step, counters).await;
            return None;
        }
        // RFC 7143 §6.1: only Login Requests before Full Feature Phase; the
        // state machine answers anything else with Login status 0x020b.
        let step = login.on_request(&pdu, &env);
        if let (LoginOutcome::Failed(LoginFailure::AuthenticationFailure), Some(name)) =
            (&step.outcome, &initiator)
        {
            // Each failure is answered later than the one before.
            let delay = limits.chap_failed(name, peer.ip(), std::time::Instant::now());
            tokio::time::sleep(delay).await;
        }
        if !send_step(stream, &mut out, &step, counters).await {
            env.unbind();
            return None;
        }
        match step.outcome {
            LoginOutcome::Continue => {}
            LoginOutcome::Failed(failure) => {
                info!(?failure, "login refused");
                return None;
            }
            LoginOutcome::FullFeature(result) => {
                let Some(session) = env.bound.lock().expect("bind lock").take() else {
                    warn!("login finished without a session");
                    return None;
                };
                if result.chap_user.is_some() {
                    limits.chap_succeeded(&result.initiator_name, peer.ip());
                }
                let mut li = logged_in(&result, session, registry, peer, local);
                li.counters = counters.clone();
                return Some(li);
            }
        }
    }
}

/// Writes one login response; false when the socket failed.
async fn send_step(
    stream: &mut TcpStream,
    out: &mut BytesMut,
    step: &crate::proto::login::LoginStep,
    counters: &super::writer::TxCounters,
) -> bool {
    out.clear();
    encode_pdu(
        &step.response,
        &[],
        &step.data,
        DigestSettings::default(),
        out,
    );
    counters.count(step.response.opcode_raw(), out.len());
    if let Err(e) = stream.write_all(out).await {
        debug!("login write: {e}");
        return false;
    }
    let _ = stream.flush().await;
    true
}

/// The InitiatorName key of a login request's text, if it is there whole.
fn initiator_name_in(data: &[u8]) -> Option<String> {
    crate::proto::text::parse_pairs(data)
        .ok()?
        .into_iter()
        .find(|kv| kv.key == "InitiatorName")
        .map(|kv| kv.value)
}

fn logged_in(
    result: &LoginResult,
    session: Arc<Session>,
    registry: &Arc<Registry>,
    peer: SocketAddr,
    local: SocketAddr,
) -> LoggedIn {
    {
        // The leading connection's keys complete the management view.
        let mut keys = session.negotiated.lock().expect("negotiated lock");
        if !keys.iter().any(|(k, _)| k == "HeaderDigest") {
            *keys = negotiated_keys(&result.session, Some(&result.connection));
        }
    }
    let settings = session.target().map_or_else(
        || TargetSettings {
            params: discovery_params(),
            ..TargetSettings::default()
        },
        |t| t.settings(),
    );
    info!(
        initiator = %result.initiator_name,
        tsih = result.tsih,
        cid = result.cid,
        kind = ?result.kind,
        "login complete"
    );
    LoggedIn {
        cid: result.cid,
        decoder: PduDecoder {
            max_data_segment_len: result.connection.max_recv_data_segment_length as usize,
            digests: result.connection.digests(),
        },
        stat_sn: result.stat_sn.wrapping_add(1),
        max_send_segment: result.connection.max_send_data_segment_length,
        text: Box::new(Text {
            exchange: TextExchange::new(),
            registry: registry.clone(),
            kind: result.kind.clone(),
            initiator_name: result.initiator_name.clone(),
            peer,
            local,
            max_send: result.connection.max_send_data_segment_length,
        }),
        settings,
        session,
        counters: Arc::default(),
    }
}

fn discovery_params() -> TargetParams {
    TargetParams::default()
}

/// The negotiated keys, as management views show them.
/// Connection keys come from the leading connection once it is up.
fn negotiated_keys(s: &SessionParams, c: Option<&ConnectionParams>) -> Vec<(String, String)> {
    let yn = |b: bool| if b { "Yes" } else { "No" }.to_owned();
    let digest = |d: Digest| d.wire_name().to_owned();
    let mut keys: Vec<(String, String)> = Vec::with_capacity(13);
    if let Some(c) = c {
        keys.extend([
            ("HeaderDigest".into(), digest(c.header_digest)),
            ("DataDigest".into(), digest(c.data_digest)),
            (
                "MaxRecvDataSegmentLength".into(),
                c.max_recv_data_segment_length.to_string(),
            ),
            (
                "InitiatorMaxRecvDataSegmentLength".into(),
                c.max_send_data_segment_length.to_string(),
            ),
        ]);
    }
    keys.extend(vec![
        ("MaxConnections".into(), s.max_connections.to_string()),
        ("InitialR2T".into(), yn(s.initial_r2t)),
        ("ImmediateData".into(), yn(s.immediate_data)),
        ("MaxBurstLength".into(), s.max_burst_length.to_string()),
        ("FirstBurstLength".into(), s.first_burst_length.to_string()),
        (
            "MaxOutstandingR2T".into(),
            s.max_outstanding_r2t.to_string(),
        ),
        ("DefaultTime2Wait".into(), s.default_time2wait.to_string()),
        (
            "DefaultTime2Retain".into(),
            s.default_time2retain.to_string(),
        ),
        (
            "ErrorRecoveryLevel".into(),
            s.error_recovery_level.to_string(),
        ),
    ]);
    keys
}

fn auth_config(incoming: &[ChapAccount], outgoing: Option<&ChapAccount>) -> AuthConfig {
    let conv = |a: &ChapAccount| AuthAccount::new(a.user.clone(), a.secret.clone().into_bytes());
    AuthConfig {
        incoming: incoming.iter().map(conv).collect(),
        outgoing: outgoing.map(conv),
    }
}

/// The registry, as one connection's login sees it.
struct Env {
    registry: Arc<Registry>,
    peer: SocketAddr,
    local: SocketAddr,
    /// The session `bind_session` created or joined.
    bound: Mutex<Option<Arc<Session>>>,
}

impl Env {
    /// A login that failed after binding leaves no half-made session.
    fn unbind(&self) {
        if let Some(s) = self.bound.lock().expect("bind lock").take()
            && s.connections.lock().expect("conn lock").is_empty()
        {
            self.registry.end_session(&s);
        }
    }
}

/// Whether the target and this initiator may have one more session
/// (`MaxSessions`, `[limits] max_sessions_per_initiator`); a session
/// this login reinstates does not count.
fn session_room(
    registry: &Registry,
    target: &Arc<crate::target::Target>,
    req: &SessionBindRequest<'_>,
) -> Result<(), LoginFailure> {
    let max = target.settings().params.max_sessions;
    let per_initiator = registry.limits.settings().max_sessions_per_initiator;
    if max == 0 && per_initiator == 0 {
        return Ok(());
    }
    let (mut all, mut mine) = (0u32, 0u32);
    for s in registry.sessions() {
        if !s.target().is_some_and(|t| Arc::ptr_eq(t, target)) {
            continue;
        }
        if s.id.initiator_name == req.initiator_name && s.id.isid == req.isid {
            continue;
        }
        all += 1;
        if s.id.initiator_name == req.initiator_name {
            mine += 1;
        }
    }
    if (max > 0 && all >= max) || (per_initiator > 0 && mine >= per_initiator) {
        registry
            .limits
            .counters
            .sessions_refused
            .fetch_add(1, Ordering::Relaxed);
        warn!(
            target = %target.name,
            initiator = req.initiator_name,
            sessions = all,
            "session limit reached: refusing"
        );
        return Err(LoginFailure::OutOfResources);
    }
    Ok(())
}

impl LoginEnv for Env {
    fn target(&self, name: &str) -> Option<TargetLogin> {
        let t = self.registry.target(name)?;
        let st = t.settings();
        Some(TargetLogin {
            name: t.name.clone(),
            alias: st.alias.clone(),
            portal_group_tag: self.registry.portal_group(self.local),
            params: st.params.clone(),
            auth: auth_config(&st.incoming, st.outgoing.as_ref()),
        })
    }

    fn initiator_allowed(&self, target: &str, initiator_name: &str, peer: IpAddr) -> bool {
        self.registry
            .target(target)
            .is_some_and(|t| t.settings().acl.permits(initiator_name, peer))
            && self
                .registry
                .isns_access
                .get()
                .is_none_or(|a| a.permits(target, initiator_name))
    }

    fn discovery(&self) -> DiscoveryLogin {
        let incoming = self
            .registry
            .discovery_incoming
            .read()
            .expect("lock")
            .clone();
        let outgoing = self
            .registry
            .discovery_outgoing
            .read()
            .expect("lock")
            .clone();
        DiscoveryLogin {
            params: discovery_params(),
            auth: auth_config(&incoming, outgoing.as_ref()),
        }
    }

    fn bind_session(&self, req: &SessionBindRequest<'_>) -> Result<SessionBinding, LoginFailure> {
        if req.tsih != 0 {
            // Joining an existing session (MC/S, RFC 7143 §6.3.3).
            let s = self
                .registry
                .session(req.tsih)
                .ok_or(LoginFailure::SessionDoesNotExist)?;
            let same_target = match (req.kind, s.target()) {
                (LoginKind::Normal { target_name }, Some(t)) => *target_name == t.name,
                (LoginKind::Discovery, None) => true,
                _ => false,
            };
            if s.id.initiator_name != req.initiator_name || s.id.isid != req.isid || !same_target {
                return Err(LoginFailure::SessionDoesNotExist);
            }
            let conns = s.connections.lock().expect("conn lock");
            if !conns.contains_key(&req.cid) && conns.len() >= usize::from(s.max_connections) {
                return Err(LoginFailure::TooManyConnections);
            }
            drop(conns);
            let binding = SessionBinding {
                tsih: s.id.tsih,
                exp_cmd_sn: s.window.exp_cmd_sn(),
                max_cmd_sn: s.window.max_cmd_sn(),
            };
            *self.bound.lock().expect("bind lock") = Some(s);
            return Ok(binding);
        }
        let kind = match req.kind {
            LoginKind::Normal { target_name } => {
                let target = self
                    .registry
                    .target(target_name)
                    .ok_or(LoginFailure::TargetRemoved)?;
                session_room(&self.registry, &target, req)?;
                let nexus = nexus_for(
                    self.registry.next_nexus_id(),
                    req.initiator_name,
                    &req.isid,
                    &target.name,
                    self.registry.portal_group(self.local),
                );
                SessionKind::Normal {
                    target,
                    nexus: Arc::new(nexus),
                }
            }
            LoginKind::Discovery => SessionKind::Discovery,
        };
        let queued = match &kind {
            SessionKind::Normal { target, .. } => target.settings().params.queued_commands,
            SessionKind::Discovery => 8,
        };
        let p = req.session;
        let params = FfpParams {
            write: WriteParams {
                initial_r2t: p.initial_r2t,
                immediate_data: p.immediate_data,
                first_burst_length: p.first_burst_length,
                max_burst_length: p.max_burst_length,
                max_outstanding_r2t: u32::from(p.max_outstanding_r2t),
            },
            max_send_segment: 0,
            max_burst_length: p.max_burst_length,
            queued_commands: queued,
        };
        let window = Arc::new(CmdWindow::new(req.exp_cmd_sn, queued));
        let (session, old) = self.registry.insert_session(|tsih| {
            Arc::new(Session {
                id: SessionId {
                    initiator_name: req.initiator_name.to_owned(),
                    isid: req.isid,
                    tsih,
                },
                kind,
                params,
                negotiated: Mutex::new(negotiated_keys(p, None)),
                budgets: self.registry.admission.for_session(),
                max_connections: p.max_connections,
                window: window.clone(),
                tasks: TaskTable::default(),
                stats: crate::target::stats::CommandStats::default(),
                connections: Mutex::new(std::collections::HashMap::new()),
                closed: tokio_util::sync::CancellationToken::new(),
            })
        });
        if let Some(old) = old {
            // Session reinstatement (RFC 7143 §6.3.5): the old one goes.
            info!(
                tsih = old.id.tsih,
                "session reinstatement: closing the old session"
            );
            self.registry.end_session(&old);
        }
        debug!(peer = %self.peer, local = %self.local, tsih = session.id.tsih, "session created");
        let binding = SessionBinding {
            tsih: session.id.tsih,
            exp_cmd_sn: window.exp_cmd_sn(),
            max_cmd_sn: window.max_cmd_sn(),
        };
        *self.bound.lock().expect("bind lock") = Some(session);
        Ok(binding)
    }
}

impl DiscoveryEnv for Registry {
    fn visible_targets(&self, initiator_name: &str, peer: IpAddr) -> Vec<DiscoveredTarget> {
        let portals = self.portals();
        self.targets()
            .iter()
            .filter(|t| t.settings().acl.permits(initiator_name, peer))
            .filter(|t| {
                self.isns_access
                    .get()
                    .is_none_or(|a| a.sees(&t.name, initiator_name))
            })
            .map(|t| DiscoveredTarget {
                name: t.name.clone(),
                portals: portals
                    .iter()
                    .map(|p| DiscoveredPortal {
                        bound: p.listen,
                        advertised: p.advertise,
                        portal_group_tag: p.tpgt,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Text Requests in Full Feature Phase (SendTargets, renegotiation).
struct Text {
    exchange: TextExchange,
    registry: Arc<Registry>,
    kind: LoginKind,
    initiator_name: String,
    peer: SocketAddr,
    local: SocketAddr,
    max_send: u32,
}

impl TextHandler for Text {
    fn on_text(
        &mut self,
        pdu: &Pdu,
    ) -> Result<(crate::proto::pdu::Bhs, Bytes, Option<u32>), RejectReason> {
        let req = TextRequest::load(&pdu.bhs).ok_or(RejectReason::InvalidPduField)?;
        let ctx = TextContext {
            kind: &self.kind,
            initiator_name: &self.initiator_name,
            peer: self.peer.ip(),
            local: self.local,
            max_send_data_segment_length: self.max_send,
        };
        let reply = self
            .exchange
            .on_request(&req, &pdu.data, &ctx, self.registry.as_ref())
            .map_err(|e| {
                debug!("text request refused: {e}");
                RejectReason::ProtocolError
            })?;
        if let Some(m) = reply.max_send_data_segment_length {
            self.max_send = m;
        }
        Ok((
            reply.response.encode(),
            Bytes::from(reply.data),
            reply.max_send_data_segment_length,
        ))
    }
}
