//! iSCSI PDUs (RFC 7143 §11): the Basic Header Segment, the opcode table and
//! one module per PDU type with `load` (from a BHS) and `encode` (into one).

mod async_message;
mod bhs;
mod codec;
mod data;
mod login;
mod logout;
mod nop;
mod opcode;
mod r2t;
mod reject;
mod scsi_command;
mod scsi_response;
mod snack;
mod task_mgmt;
mod text;

pub use async_message::{AsyncEvent, AsyncMessage};
pub use bhs::{BHS_LEN, Bhs, Pdu};
pub use codec::{CodecError, DigestSettings, PduDecoder, encode_pdu, padded_len};
pub use data::{DataIn, DataInStatus, DataOut};
pub use login::{LoginRequest, LoginResponse, Stage};
pub use logout::{LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode};
pub use nop::{NopIn, NopOut, RESERVED_TAG};
pub use opcode::Opcode;
pub use r2t::R2t;
pub use reject::{Reject, RejectReason};
pub use scsi_command::{MAX_CDB_LEN, ScsiCommand};
pub use scsi_response::{RESPONSE_COMPLETED, RESPONSE_TARGET_FAILURE, Residual, ScsiResponse};
pub use snack::SnackRequest;
pub use task_mgmt::{TaskMgmtRequest, TaskMgmtResponse, TmfFunction, TmfResponse};
pub use text::{TTT_NONE, TextRequest, TextResponse};
