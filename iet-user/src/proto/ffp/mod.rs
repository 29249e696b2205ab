//! The full-feature phase, sans-io (RFC 7143 §4.2): the connection state
//! machine, the session's CmdSN ordering queue, write admission and the
//! task management plan. Transport carries out what these decide.

pub mod admission;
pub mod conn;
mod intake;
pub mod ordering;
pub mod response;
pub mod tmf;
pub mod writes;

#[cfg(test)]
mod tests;

use bytes::Bytes;

use super::pdu::Bhs;

/// How a PDU's StatSN field is filled (RFC 7143 §4.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatSnMode {
    /// A status-carrying PDU: takes the next StatSN.
    Advance,
    /// Carries the next StatSN without consuming it (R2T, unsolicited NOP-In).
    Current,
    /// The field is reserved (Data-In without status).
    Reserved,
}

/// A PDU ready for the connection's writer, which stamps StatSN, ExpCmdSN
/// and MaxCmdSN.
#[derive(Debug)]
pub struct OutPdu {
    pub bhs: Bhs,
    pub data: Bytes,
    pub stat_sn: StatSnMode,
}

/// Why the state machine closes its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// A protocol error (ErrorRecoveryLevel 0 closes the connection).
    ProtocolError(String),
    /// No answer to our NOP-In in time.
    NopTimeout,
    /// Asked to log out, the initiator did not within the grace period.
    LogoutTimeout,
}
