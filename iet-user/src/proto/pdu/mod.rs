//! iSCSI PDUs (RFC 7143 §11): the Basic Header Segment, the opcode table and
//! one module per PDU type with `load` (from a BHS) and `encode` (into one).

mod bhs;
mod codec;
mod login;
mod opcode;
mod text;

pub use bhs::{BHS_LEN, Bhs, Pdu};
pub use codec::{CodecError, DigestSettings, PduDecoder, encode_pdu, padded_len};
pub use login::{LoginRequest, LoginResponse, Stage};
pub use opcode::Opcode;
pub use text::{TTT_NONE, TextRequest, TextResponse};
