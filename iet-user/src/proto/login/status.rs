//! Login failure statuses (RFC 7143 §11.13.5): one enum, one table.

use crate::proto::auth::AuthError;
use crate::proto::params::NegotiationError;
use crate::proto::text::TextError;

/// Every way a login can fail, with its Status-Class and Status-Detail
/// (RFC 7143 §11.13.5). Class 1 (redirection) is listed for completeness;
/// the transport would have to add TargetAddress to use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginFailure {
    #[error("target moved temporarily")]
    TargetMovedTemporarily,
    #[error("target moved permanently")]
    TargetMovedPermanently,
    #[error("initiator error")]
    InitiatorError,
    #[error("authentication failure")]
    AuthenticationFailure,
    #[error("authorization failure")]
    AuthorizationFailure,
    #[error("target not found")]
    NotFound,
    #[error("target removed")]
    TargetRemoved,
    #[error("unsupported version")]
    UnsupportedVersion,
    #[error("too many connections")]
    TooManyConnections,
    #[error("missing parameter")]
    MissingParameter,
    #[error("can't include in session")]
    CantIncludeInSession,
    #[error("session type not supported")]
    SessionTypeNotSupported,
    #[error("session does not exist")]
    SessionDoesNotExist,
    #[error("invalid request during login")]
    InvalidDuringLogin,
    #[error("target error")]
    TargetError,
    #[error("service unavailable")]
    ServiceUnavailable,
    #[error("out of resources")]
    OutOfResources,
}

/// RFC 7143 §11.13.5, the only place status codes are written down.
const STATUS_TABLE: &[(LoginFailure, u8, u8)] = &[
    (LoginFailure::TargetMovedTemporarily, 0x01, 0x01),
    (LoginFailure::TargetMovedPermanently, 0x01, 0x02),
    (LoginFailure::InitiatorError, 0x02, 0x00),
    (LoginFailure::AuthenticationFailure, 0x02, 0x01),
    (LoginFailure::AuthorizationFailure, 0x02, 0x02),
    (LoginFailure::NotFound, 0x02, 0x03),
    (LoginFailure::TargetRemoved, 0x02, 0x04),
    (LoginFailure::UnsupportedVersion, 0x02, 0x05),
    (LoginFailure::TooManyConnections, 0x02, 0x06),
    (LoginFailure::MissingParameter, 0x02, 0x07),
    (LoginFailure::CantIncludeInSession, 0x02, 0x08),
    (LoginFailure::SessionTypeNotSupported, 0x02, 0x09),
    (LoginFailure::SessionDoesNotExist, 0x02, 0x0a),
    (LoginFailure::InvalidDuringLogin, 0x02, 0x0b),
    (LoginFailure::TargetError, 0x03, 0x00),
    (LoginFailure::ServiceUnavailable, 0x03, 0x01),
    (LoginFailure::OutOfResources, 0x03, 0x02),
];

impl LoginFailure {
    /// (Status-Class, Status-Detail).
    pub fn status(self) -> (u8, u8) {
        STATUS_TABLE
            .iter()
            .find(|(f, _, _)| *f == self)
            .map_or((0x03, 0x00), |&(_, class, detail)| (class, detail))
    }

    /// The failure a (class, detail) pair names, for a scripted initiator.
    pub fn from_status(class: u8, detail: u8) -> Option<LoginFailure> {
        STATUS_TABLE
            .iter()
            .find(|&&(_, c, d)| c == class && d == detail)
            .map(|&(f, _, _)| f)
    }
}

// The conversions below lose the cause, so they log it.

impl From<TextError> for LoginFailure {
    fn from(e: TextError) -> Self {
        tracing::debug!(error = %e, "malformed login text");
        LoginFailure::InitiatorError
    }
}

impl From<NegotiationError> for LoginFailure {
    fn from(e: NegotiationError) -> Self {
        tracing::debug!(error = %e, "login negotiation failed");
        LoginFailure::InitiatorError
    }
}

impl From<AuthError> for LoginFailure {
    fn from(e: AuthError) -> Self {
        tracing::debug!(error = %e, "login authentication failed");
        if e.is_initiator_error() {
            LoginFailure::InitiatorError
        } else {
            LoginFailure::AuthenticationFailure
        }
    }
}
