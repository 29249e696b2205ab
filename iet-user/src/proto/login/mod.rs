//! The login phase of one connection (RFC 7143 §6.3, §11.12, §11.13), sans-io.
//!
//! ```text
//!   Start ──first request──► SecurityNegotiation ──T=1,NSG=1──► LoginOperationalNegotiation
//!     │                           │ T=1,NSG=3                         │ T=1,NSG=3
//!     └──CSG=1───────────────────►│──────────────────────────────────►┴──► FullFeaturePhase
//!   any error ──► Failed (the response carries the status; then close)
//! ```
//!
//! The transport feeds every PDU it receives during login to
//! [`Login::on_request`], sends the returned response, and then either keeps
//! reading, enters Full Feature Phase with the [`LoginResult`], or closes.
//! Targets, ACLs, accounts and sessions are reached through [`LoginEnv`].

mod env;
mod status;
#[cfg(test)]
mod tests;

pub use env::{
    DiscoveryLogin, LoginContext, LoginEnv, LoginResult, SessionBindRequest, SessionBinding,
    SessionKind, TargetLogin,
};
pub use status::LoginFailure;

use crate::proto::auth::Authenticator;
use crate::proto::params::{Key, Negotiation, Usage};
use crate::proto::pdu::{Bhs, LoginRequest, LoginResponse, Pdu, Stage};
use crate::proto::text::{KeyValue, TextReassembly, encode_pairs, parse_pairs};

/// During login both sides use the default MaxRecvDataSegmentLength
/// (RFC 7143 §13.12), so no Login Response may carry more.
pub const LOGIN_MAX_DATA_SEGMENT_LEN: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Send the response and wait for the next Login Request.
    Continue,
    /// Send the response; the connection is in Full Feature Phase.
    FullFeature(Box<LoginResult>),
    /// Send the response, then close the connection.
    Failed(LoginFailure),
}

/// One Login Response to send, and what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStep {
    pub response: Bhs,
    pub data: Vec<u8>,
    pub outcome: LoginOutcome,
}

/// Fields fixed by the first request (RFC 7143 §6.3: ISID, TSIH, CID and
/// CmdSN stay the same for every request of a login).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    isid: [u8; 6],
    tsih: u16,
    cid: u16,
    cmd_sn: u32,
}

/// Data carried from the first complete request to the last.
#[derive(Debug)]
struct Progress {
    identity: Identity,
    kind: SessionKind,
    initiator_name: String,
    initiator_alias: Option<String>,
    target: Option<TargetLogin>,
    negotiation: Negotiation,
    /// TargetPortalGroupTag/TargetAlias go in the first response with data.
    sent_first_response: bool,
}

/// RFC 7143 §6.3 stages, one variant each, holding what that stage needs.
#[derive(Debug)]
enum State {
    /// Waiting for the (possibly split) first request.
    Start,
    SecurityNegotiation(Box<Progress>, Authenticator),
    /// Carries the CHAP user that authenticated, if any.
    LoginOperationalNegotiation(Box<Progress>, Option<String>),
    FullFeaturePhase,
    Failed,
}

/// The login state machine for one connection.
#[derive(Debug)]
pub struct Login {
    ctx: LoginContext,
    state: State,
    /// Data of requests sent with C=1 (RFC 7143 §11.12.2).
    reassembly: TextReassembly,
    /// The first request's header while its data is still arriving.
    first_header: Option<LoginRequest>,
    /// StatSN of the next response. RFC 7143 §11.13.4: the first response
    /// starts from the first request's ExpStatSN; every later response,
    /// login or not, carries the next number.
    next_stat_sn: Option<u32>,
}

/// Every failure goes back to `on_request`, the one place that answers it.
type StepResult = Result<(State, LoginStep), LoginFailure>;

fn is_security_key(name: &str) -> bool {
    Key::from_name(name).is_some_and(|k| k.def().usage == Usage::Security)
}

fn find<'a>(pairs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
}

fn identity_of(req: &LoginRequest) -> Identity {
    Identity {
        isid: req.isid,
        tsih: req.tsih,
        cid: req.cid,
        cmd_sn: req.cmd_sn,
    }
}

/// RFC 7143 §6.3 / §11.12.8: every request of a login carries the same
/// ISID, TSIH, CID and CmdSN, and its CSG is the stage we are in.
fn check_consistent(
    identity: &Identity,
    req: &LoginRequest,
    csg: Stage,
    current: Stage,
) -> Result<(), LoginFailure> {
    if identity_of(req) != *identity || csg != current {
        return Err(LoginFailure::InitiatorError);
    }
    Ok(())
}

impl Progress {
    /// TargetPortalGroupTag (RFC 7143 §13.9: returned in the first Login
    /// Response of a Normal session) and TargetAlias, once.
    fn first_response_extras(&mut self, answers: &mut Vec<KeyValue>) {
        if std::mem::replace(&mut self.sent_first_response, true) {
            return;
        }
        if let Some(target) = &self.target {
            answers.push(KeyValue::new(
                "TargetPortalGroupTag",
                target.portal_group_tag.to_string(),
            ));
            if let Some(alias) = &target.alias {
                answers.push(KeyValue::new("TargetAlias", alias.clone()));
            }
        }
    }

    fn window(&self) -> (u32, u32) {
        let depth = self.negotiation.params().queued_commands.max(1);
        let exp = self.identity.cmd_sn;
        (exp, exp.wrapping_add(depth - 1))
    }
}

fn response_bhs(
    req: &LoginRequest,
    identity: &Identity,
    transit: Option<Stage>,
    stat_sn: u32,
    window: (u32, u32),
) -> Bhs {
    LoginResponse {
        transit: transit.is_some(),
        continue_bit: false,
        csg: req.csg,
        nsg: transit.map_or(0, |s| s as u8),
        isid: identity.isid,
        tsih: identity.tsih,
        itt: req.itt,
        stat_sn,
        exp_cmd_sn: window.0,
        max_cmd_sn: window.1,
        status_class: 0,
        status_detail: 0,
    }
    .encode()
}

fn encode_answers(answers: &[KeyValue]) -> Result<Vec<u8>, LoginFailure> {
    let data = encode_pairs(answers);
    // Only a flood of unknown keys can get here; refusing it keeps every
    // response within the login-time MaxRecvDataSegmentLength.
    if data.len() > LOGIN_MAX_DATA_SEGMENT_LEN {
        return Err(LoginFailure::InitiatorError);
    }
    Ok(data)
}

impl Login {
    pub fn new(ctx: LoginContext) -> Login {
        Login {
            ctx,
            state: State::Start,
            reassembly: TextReassembly::default(),
            first_header: None,
            next_stat_sn: None,
        }
    }

    /// True once the final response has been produced.
    pub fn is_full_feature(&self) -> bool {
        matches!(self.state, State::FullFeaturePhase)
    }

    /// Handles one PDU received during login and returns the response.
    pub fn on_request(&mut self, pdu: &Pdu, env: &dyn LoginEnv) -> LoginStep {
        let Some(req) = LoginRequest::load(&pdu.bhs) else {
            // RFC 7143 §11.13.5: any other PDU is "Invalid during login".
            return self.fail(&raw_request(&pdu.bhs), LoginFailure::InvalidDuringLogin);
        };
        tracing::trace!(?req, data_len = pdu.data.len(), "login request");
        let state = std::mem::replace(&mut self.state, State::Failed);
        match self.step(state, &req, &pdu.data, env) {
            Ok((state, step)) => {
                self.state = state;
                step
            }
            Err(failure) => self.fail(&req, failure),
        }
    }

    fn take_stat_sn(&mut self, req: &LoginRequest) -> u32 {
        let sn = self.next_stat_sn.unwrap_or(req.exp_stat_sn);
        self.next_stat_sn = Some(sn.wrapping_add(1));
        sn
    }

    /// RFC 7143 §11.13: a failed login answers with the status and no data;
    /// the caller closes the connection after sending it.
    /// Refuses a login before the state machine looks at it (a limit or a
    /// lockout): the Login Response to `bhs` with `failure`'s status.
    pub fn refuse(&mut self, bhs: &Bhs, failure: LoginFailure) -> LoginStep {
        let req = LoginRequest::load(bhs).unwrap_or_else(|| raw_request(bhs));
        self.fail(&req, failure)
    }

    fn fail(&mut self, req: &LoginRequest, failure: LoginFailure) -> LoginStep {
        tracing::debug!(%failure, peer = %self.ctx.peer, itt = req.itt, "login failed");
        self.state = State::Failed;
        let (status_class, status_detail) = failure.status();
        let stat_sn = self.take_stat_sn(req);
        let response = LoginResponse {
            transit: false,
            continue_bit: false,
            csg: req.csg,
            nsg: 0,
            isid: req.isid,
            tsih: req.tsih,
            itt: req.itt,
            stat_sn,
            exp_cmd_sn: req.cmd_sn,
            max_cmd_sn: req.cmd_sn,
            status_class,
            status_detail,
        }
        .encode();
        LoginStep {
            response,
            data: Vec::new(),
            outcome: LoginOutcome::Failed(failure),
        }
    }

    /// RFC 7143 §11.12.2: a request with C=1 is answered with an empty
    /// response (T=0) asking for the rest.
    fn continue_step(&mut self, req: &LoginRequest, identity: &Identity) -> LoginStep {
        let stat_sn = self.take_stat_sn(req);
        LoginStep {
            response: response_bhs(req, identity, None, stat_sn, (req.cmd_sn, req.cmd_sn)),
            data: Vec::new(),
            outcome: LoginOutcome::Continue,
        }
    }

    fn respond(
        &mut self,
        req: &LoginRequest,
        progress: &Progress,
        transit: Option<Stage>,
        answers: &[KeyValue],
    ) -> Result<LoginStep, LoginFailure> {
        let data = encode_answers(answers)?;
        let stat_sn = self.take_stat_sn(req);
        Ok(LoginStep {
            response: response_bhs(req, &progress.identity, transit, stat_sn, progress.window()),
            data,
            outcome: LoginOutcome::Continue,
        })
    }

    fn step(
        &mut self,
        state: State,
        req: &LoginRequest,
        data: &[u8],
        env: &dyn LoginEnv,
    ) -> StepResult {
        // RFC 7143 §11.12.4: "If the target does not support any version
        // in the range, it MUST reject the login with Unsupported version".
        // RFC 7143 defines only 0x00.
        if req.version_min > 0 {
            return Err(LoginFailure::UnsupportedVersion);
        }
        // RFC 7143 §11.12.2: "If the C bit is set to 1, the T bit MUST be 0".
        if req.transit && req.continue_bit {
            return Err(LoginFailure::InitiatorError);
        }
        // CSG 2 is reserved and 3 is not a login stage.
        let csg = Stage::from_bits(req.csg)
            .filter(|s| *s != Stage::FullFeaturePhase)
            .ok_or(LoginFailure::InitiatorError)?;
        // RFC 7143 §6.3: with T=1, NSG is a later stage.
        let nsg = if req.transit {
            Some(
                Stage::from_bits(req.nsg)
                    .filter(|n| *n > csg)
                    .ok_or(LoginFailure::InitiatorError)?,
            )
        } else {
            None
        };
        match state {
            State::Start => self.on_first(req, csg, nsg, data, env),
            State::SecurityNegotiation(progress, auth) => {
                check_consistent(&progress.identity, req, csg, Stage::SecurityNegotiation)?;
                if let Some(pairs) = self.collect(req, data)? {
                    self.security_keys(progress, auth, req, nsg, &pairs, env)
                } else {
                    let step = self.continue_step(req, &progress.identity);
                    Ok((State::SecurityNegotiation(progress, auth), step))
                }
            }
            State::LoginOperationalNegotiation(progress, chap_user) => {
                let stage = Stage::LoginOperationalNegotiation;
                check_consistent(&progress.identity, req, csg, stage)?;
                if let Some(pairs) = self.collect(req, data)? {
                    self.operational_keys(progress, chap_user, req, nsg, &pairs, env)
                } else {
                    let step = self.continue_step(req, &progress.identity);
                    Ok((
                        State::LoginOperationalNegotiation(progress, chap_user),
                        step,
                    ))
                }
            }
            // The transport must not feed requests after the final response.
            State::FullFeaturePhase | State::Failed => Err(LoginFailure::InvalidDuringLogin),
        }
    }

    /// Reassembles C-bit continuations; `None` while more data is coming.
    fn collect(
        &mut self,
        req: &LoginRequest,
        data: &[u8],
    ) -> Result<Option<Vec<KeyValue>>, LoginFailure> {
        match self.reassembly.push(data, req.continue_bit)? {
            Some(all) => Ok(Some(parse_pairs(&all)?)),
            None => Ok(None),
        }
    }

    fn on_first(
        &mut self,
        req: &LoginRequest,
        csg: Stage,
        nsg: Option<Stage>,
        data: &[u8],
        env: &dyn LoginEnv,
    ) -> StepResult {
        if let Some(first) = &self.first_header {
            let first_csg = Stage::from_bits(first.csg).unwrap_or(Stage::SecurityNegotiation);
            check_consistent(&identity_of(first), req, csg, first_csg)?;
        }
        let Some(pairs) = self.collect(req, data)? else {
            let first = *self.first_header.get_or_insert(*req);
            let step = self.continue_step(req, &identity_of(&first));
            return Ok((State::Start, step));
        };
        let identity = identity_of(self.first_header.as_ref().unwrap_or(req));
        self.first_header = None;
        // RFC 7143 §13.5, §13.4, §13.21: InitiatorName always, TargetName
        // for Normal sessions, in the first request; SessionType defaults
        // to Normal.
        let initiator_name = find(&pairs, "InitiatorName").ok_or(LoginFailure::MissingParameter)?;
        let kind = match find(&pairs, "SessionType").unwrap_or("Normal") {
            "Normal" => SessionKind::Normal {
                target_name: find(&pairs, "TargetName")
                    .ok_or(LoginFailure::MissingParameter)?
                    .to_owned(),
            },
            "Discovery" => SessionKind::Discovery,
            _ => return Err(LoginFailure::SessionTypeNotSupported),
        };
        let (target, params, auth) = match &kind {
            SessionKind::Normal { target_name } => {
                let target = env.target(target_name).ok_or(LoginFailure::NotFound)?;
                if !env.initiator_allowed(&target.name, initiator_name, self.ctx.peer) {
                    return Err(LoginFailure::AuthorizationFailure);
                }
                let (params, auth) = (target.params.clone(), target.auth.clone());
                (Some(target), params, auth)
            }
            SessionKind::Discovery => {
                let d = env.discovery();
                (None, d.params, d.auth)
            }
        };
        let discovery = kind == SessionKind::Discovery;
        let progress = Box::new(Progress {
            identity,
            kind,
            initiator_name: initiator_name.to_owned(),
            initiator_alias: find(&pairs, "InitiatorAlias").map(str::to_owned),
            target,
            negotiation: Negotiation::new(params, discovery, identity.tsih == 0),
            sent_first_response: false,
        });
        let mut auth = Authenticator::new(auth)
            .with_algorithms(progress.negotiation.params().chap_algorithms.clone());
        if csg == Stage::SecurityNegotiation {
            self.security_keys(progress, auth, req, nsg, &pairs, env)
        } else {
            // The initiator skipped the security stage: fine unless CHAP is
            // required (RFC 7143 §11.13.5, Authentication failure).
            auth.skip()?;
            self.operational_keys(progress, None, req, nsg, &pairs, env)
        }
    }

    /// One complete request in the SecurityNegotiation stage.
    fn security_keys(
        &mut self,
        mut progress: Box<Progress>,
        mut auth: Authenticator,
        req: &LoginRequest,
        nsg: Option<Stage>,
        pairs: &[KeyValue],
        env: &dyn LoginEnv,
    ) -> StepResult {
        let (security, other): (Vec<KeyValue>, Vec<KeyValue>) = pairs
            .iter()
            .cloned()
            .partition(|kv| is_security_key(&kv.key));
        let mut answers = auth.on_keys(&security)?;
        // Login keys (InitiatorName, TargetName, ...) ride in the first
        // request; operational keys here are tolerated and answered.
        for kv in &other {
            answers.extend(progress.negotiation.on_pair(kv)?);
        }
        progress.first_response_extras(&mut answers);
        let Some(nsg) = nsg else {
            let step = self.respond(req, &progress, None, &answers)?;
            return Ok((State::SecurityNegotiation(progress, auth), step));
        };
        if !auth.may_leave_security() {
            // A CHAP exchange in progress keeps us here with T=0 (libiscsi
            // sets T=1 on its AuthMethod offer). Asking to leave without
            // starting the required CHAP is an authentication failure.
            if security.is_empty() {
                return Err(LoginFailure::AuthenticationFailure);
            }
            let step = self.respond(req, &progress, None, &answers)?;
            return Ok((State::SecurityNegotiation(progress, auth), step));
        }
        let chap_user = auth.user().map(str::to_owned);
        if nsg == Stage::FullFeaturePhase {
            let offers = progress.negotiation.target_offers();
            if offers.is_empty() {
                answers.extend(progress.negotiation.declarations());
                return self.finish(progress, chap_user, req, &answers, env);
            }
            // Our offers need the operational stage: transit there instead
            // of to Full Feature Phase (NSG lower than requested).
            answers.extend(offers);
            answers.extend(progress.negotiation.declarations());
            let op = Some(Stage::LoginOperationalNegotiation);
            let step = self.respond(req, &progress, op, &answers)?;
            return Ok((
                State::LoginOperationalNegotiation(progress, chap_user),
                step,
            ));
        }
        let step = self.respond(req, &progress, Some(nsg), &answers)?;
        Ok((
            State::LoginOperationalNegotiation(progress, chap_user),
            step,
        ))
    }

    /// One complete request in the LoginOperationalNegotiation stage.
    fn operational_keys(
        &mut self,
        mut progress: Box<Progress>,
        chap_user: Option<String>,
        req: &LoginRequest,
        nsg: Option<Stage>,
        pairs: &[KeyValue],
        env: &dyn LoginEnv,
    ) -> StepResult {
        let mut answers = Vec::new();
        for kv in pairs {
            // RFC 7143 §6.3.1: security keys belong to the security stage.
            if is_security_key(&kv.key) {
                return Err(LoginFailure::InitiatorError);
            }
            answers.extend(progress.negotiation.on_pair(kv)?);
        }
        progress.first_response_extras(&mut answers);
        answers.extend(progress.negotiation.declarations());
        if nsg.is_some() {
            answers.extend(progress.negotiation.target_offers());
            if !progress.negotiation.awaiting_answers() {
                return self.finish(progress, chap_user, req, &answers, env);
            }
        }
        // Not transiting, or waiting for answers to our offers: T=0.
        let step = self.respond(req, &progress, None, &answers)?;
        Ok((
            State::LoginOperationalNegotiation(progress, chap_user),
            step,
        ))
    }

    /// The final request was accepted: bind the session and answer T=1,
    /// NSG=FullFeaturePhase with the TSIH.
    fn finish(
        &mut self,
        progress: Box<Progress>,
        chap_user: Option<String>,
        req: &LoginRequest,
        answers: &[KeyValue],
        env: &dyn LoginEnv,
    ) -> StepResult {
        let data = encode_answers(answers)?;
        progress.negotiation.check_policy()?;
        let (session, connection) = progress.negotiation.finish();
        let (exp_cmd_sn, max_cmd_sn) = progress.window();
        let identity = progress.identity;
        let binding = env.bind_session(&SessionBindRequest {
            kind: &progress.kind,
            initiator_name: &progress.initiator_name,
            isid: identity.isid,
            tsih: identity.tsih,
            cid: identity.cid,
            session: &session,
            exp_cmd_sn,
            max_cmd_sn,
        })?;
        let stat_sn = self.take_stat_sn(req);
        let bound = Identity {
            tsih: binding.tsih,
            ..identity
        };
        let response = response_bhs(
            req,
            &bound,
            Some(Stage::FullFeaturePhase),
            stat_sn,
            (binding.exp_cmd_sn, binding.max_cmd_sn),
        );
        let Progress {
            kind,
            initiator_name,
            initiator_alias,
            target,
            negotiation,
            ..
        } = *progress;
        let result = LoginResult {
            kind,
            initiator_name,
            initiator_alias,
            chap_user,
            isid: identity.isid,
            tsih: binding.tsih,
            cid: identity.cid,
            portal_group_tag: target.as_ref().map(|t| t.portal_group_tag),
            session,
            connection,
            target_params: negotiation.params().clone(),
            exp_cmd_sn: binding.exp_cmd_sn,
            max_cmd_sn: binding.max_cmd_sn,
            stat_sn,
        };
        let step = LoginStep {
            response,
            data,
            outcome: LoginOutcome::FullFeature(Box::new(result)),
        };
        Ok((State::FullFeaturePhase, step))
    }
}

/// Header fields of a PDU that is not a Login Request, for the failure answer.
fn raw_request(bhs: &Bhs) -> LoginRequest {
    let mut isid = [0; 6];
    isid.copy_from_slice(&bhs.0[8..14]);
    LoginRequest {
        immediate: bhs.immediate(),
        transit: false,
        continue_bit: false,
        csg: 0,
        nsg: 0,
        version_max: 0,
        version_min: 0,
        isid,
        tsih: bhs.u16_at(14),
        itt: bhs.itt(),
        cid: 0,
        cmd_sn: bhs.u32_at(24),
        exp_stat_sn: bhs.u32_at(28),
    }
}
