//! Text-key negotiation (RFC 7143 §5.2, §6, §13): the one key table, the
//! target's configured limits and the negotiated session and connection values.

mod negotiate;
mod table;
mod target;

pub use negotiate::{
    FullFeatureAnswer, IRRELEVANT, NOT_UNDERSTOOD, Negotiation, NegotiationError, REJECT,
    full_feature_answer,
};
pub use table::{KEYS, Key, KeyDef, Kind, Range, Scope, Sender, Usage, bool_str, parse_bool};
pub use target::{Ours, ParamValue, TargetParams};
pub(crate) use target::{param_name, target_params};

use crate::proto::pdu::DigestSettings;

/// A digest a connection may use (RFC 7143 §13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    None,
    Crc32c,
}

impl Digest {
    pub fn wire_name(self) -> &'static str {
        match self {
            Digest::None => "None",
            Digest::Crc32c => "CRC32C",
        }
    }

    pub fn from_wire(name: &str) -> Option<Digest> {
        match name {
            "None" => Some(Digest::None),
            "CRC32C" => Some(Digest::Crc32c),
            _ => None,
        }
    }
}

/// Session-wide results of negotiation. `Default` gives the RFC defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub max_burst_length: u32,
    /// Already clamped to max_burst_length; meaningless when
    /// `initial_r2t && !immediate_data` (RFC 7143 §13.14).
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
    /// RFC 7143 §13.23; we only do "RFC3720".
    pub task_reporting: &'static str,
    pub iscsi_protocol_level: u8,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            task_reporting: "RFC3720",
            iscsi_protocol_level: 1,
        }
    }
}

/// Per-connection results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionParams {
    pub header_digest: Digest,
    pub data_digest: Digest,
    /// The initiator's MaxRecvDataSegmentLength (capped by our
    /// max_xmit_data_segment_length): the most we put in one PDU we send.
    pub max_send_data_segment_length: u32,
    /// Ours, as declared: what the PDU decoder must enforce after login.
    pub max_recv_data_segment_length: u32,
}

impl Default for ConnectionParams {
    fn default() -> Self {
        ConnectionParams {
            header_digest: Digest::None,
            data_digest: Digest::None,
            max_send_data_segment_length: 8192,
            max_recv_data_segment_length: 8192,
        }
    }
}

impl ConnectionParams {
    /// What the PDU codec needs once Full Feature Phase starts.
    pub fn digests(&self) -> DigestSettings {
        DigestSettings {
            header: self.header_digest == Digest::Crc32c,
            data: self.data_digest == Digest::Crc32c,
        }
    }
}
