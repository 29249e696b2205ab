//! Text-key negotiation (RFC 7143 §5.2, §6, §13): the one key table, the
//! target's configured limits and the negotiated session and connection values.

mod negotiate;
mod table;

pub use negotiate::{
    FullFeatureAnswer, IRRELEVANT, NOT_UNDERSTOOD, Negotiation, NegotiationError, REJECT,
    full_feature_answer,
};
pub use table::{KEYS, Key, KeyDef, Kind, Range, Scope, Sender, Usage, bool_str, parse_bool};

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

/// One target's configured limits: what it will accept in negotiation.
/// NOPInterval, NOPTimeout and QueuedCommands are not keys; they ride along
/// because they are configured per target like the rest.
///
/// The defaults are not IET's (8192 / 262144 / 1 connection / 1 R2T), which
/// were sized for 2004-era memory. Linux initiators offer
/// MaxRecvDataSegmentLength=262144 and MaxBurstLength=16776192, so a 256 KiB
/// segment and a 1 MiB burst let a 1 MiB write go out in four PDUs and one
/// R2T instead of 128 PDUs and four R2Ts; 8 outstanding R2Ts and 8
/// connections let multipath and MC/S initiators keep the pipe full. Memory
/// per connection stays bounded by MaxRecvDataSegmentLength.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetParams {
    /// What we can receive in one data segment (RFC 7143 §13.12), declared to the initiator.
    pub max_recv_data_segment_length: u32,
    /// Cap on the data segments we send, whatever the initiator declares.
    pub max_xmit_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub immediate_data: bool,
    /// Yes (IET's and LIO's default): unsolicited Data-Out is then only
    /// immediate data, which keeps the first transfer path simple.
    pub initial_r2t: bool,
    pub max_outstanding_r2t: u16,
    pub max_connections: u16,
    /// Highest level we implement: 0 (session recovery only).
    pub error_recovery_level: u8,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    /// Digests we accept, in no particular order (the initiator's order wins).
    pub header_digest: Vec<Digest>,
    pub data_digest: Vec<Digest>,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub nop_interval_secs: u32,
    pub nop_timeout_secs: u32,
    /// Command window per session: MaxCmdSN = ExpCmdSN + queued_commands - 1.
    pub queued_commands: u32,
}

impl Default for TargetParams {
    fn default() -> Self {
        TargetParams {
            max_recv_data_segment_length: 262_144,
            max_xmit_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 262_144,
            immediate_data: true,
            initial_r2t: true,
            max_outstanding_r2t: 8,
            max_connections: 8,
            error_recovery_level: 0,
            default_time2wait: 2,
            default_time2retain: 20,
            header_digest: vec![Digest::None, Digest::Crc32c],
            data_digest: vec![Digest::None, Digest::Crc32c],
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            nop_interval_secs: 5,
            nop_timeout_secs: 30,
            queued_commands: 128,
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
