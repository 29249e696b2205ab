//! What the login state machine asks of its environment (targets, ACLs,
//! accounts, sessions) and what it hands back when login succeeds.

use std::net::IpAddr;

use super::LoginFailure;
use crate::proto::auth::AuthConfig;
use crate::proto::params::{ConnectionParams, SessionParams, TargetParams};

/// SessionType (RFC 7143 §13.21) with the target a Normal session is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKind {
    Normal { target_name: String },
    Discovery,
}

/// What the environment knows about one target, for login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLogin {
    /// The target's canonical name (what the initiator sent, normalised).
    pub name: String,
    pub alias: Option<String>,
    /// The tag of the portal group the connection arrived on.
    pub portal_group_tag: u16,
    pub params: TargetParams,
    pub auth: AuthConfig,
}

/// Settings for discovery sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveryLogin {
    pub params: TargetParams,
    /// Optional CHAP for discovery (required when it has incoming accounts).
    pub auth: AuthConfig,
}

/// What the final request asks the environment to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionBindRequest<'a> {
    pub kind: &'a SessionKind,
    pub initiator_name: &'a str,
    pub isid: [u8; 6],
    /// 0: create a new session (reinstating one with the same ISID is the
    /// caller's job, RFC 7143 §6.3.5); otherwise join this session.
    pub tsih: u16,
    pub cid: u16,
    pub session: &'a SessionParams,
    /// CmdSN of the login and the window we would open for a new session.
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// The environment's answer to `bind_session`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionBinding {
    /// The TSIH to put in the final response.
    pub tsih: u16,
    /// The session's command window (for a joined session, its own values).
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// Targets, ACLs, accounts and sessions, as the transport sees them.
pub trait LoginEnv {
    fn target(&self, name: &str) -> Option<TargetLogin>;
    fn initiator_allowed(&self, target: &str, initiator_name: &str, peer: IpAddr) -> bool;
    fn discovery(&self) -> DiscoveryLogin;
    /// Called once, when the final (T=1, NSG=FullFeaturePhase) request is
    /// accepted: create a session or join one. Expected failures:
    /// `SessionDoesNotExist` (unknown TSIH), `TooManyConnections`
    /// (MaxConnections reached), `CantIncludeInSession`, `OutOfResources`.
    fn bind_session(&self, req: &SessionBindRequest<'_>) -> Result<SessionBinding, LoginFailure>;
}

/// Per-connection facts the transport knows before the first PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginContext {
    pub peer: IpAddr,
}

/// Everything Full Feature Phase needs from the login.
///
/// After sending the final response (which goes out without digests), the
/// transport switches the connection to `connection.digests()` and
/// `connection.max_recv_data_segment_length`, and sends at most
/// `connection.max_send_data_segment_length` bytes per data segment. For a
/// connection joining a session (`tsih` was non-zero in the request) the
/// leading-only keys were answered Irrelevant, so `session` holds defaults:
/// the session's own values stay in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginResult {
    pub kind: SessionKind,
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    /// The CHAP user that authenticated, if CHAP was used.
    pub chap_user: Option<String>,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub cid: u16,
    pub portal_group_tag: Option<u16>,
    pub session: SessionParams,
    pub connection: ConnectionParams,
    /// The target's configuration (NOP timers, queue depth, ...).
    pub target_params: TargetParams,
    /// The first non-immediate command carries this CmdSN (RFC 7143 §11.12.8).
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// StatSN of the final Login Response; the next response carries + 1.
    pub stat_sn: u32,
}
