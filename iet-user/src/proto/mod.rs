//! The iSCSI protocol core (RFC 7143), sans-io: bytes and state in, bytes,
//! state and events out. No tokio, sockets or files here; time is passed in.

pub mod auth;
pub mod datain;
pub mod digest;
pub mod discovery;
pub mod error;
pub mod ffp;
pub mod login;
pub mod names;
pub mod params;
pub mod pdu;
pub mod seq;
pub mod task;
pub mod text;
pub mod text_exchange;
