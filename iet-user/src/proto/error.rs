//! Protocol errors, classified by what the caller must do next.

use super::pdu::RejectReason;

/// A PDU that decoded but cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("invalid PDU field: {0}")]
    InvalidField(&'static str),
}

impl PduError {
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            PduError::InvalidField(_) => RejectReason::InvalidPduField,
        }
    }
}
