//! The login phase on a socket: feeds Login Requests to the sans-io login
//! machine and writes its responses, then builds or joins the session.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::full_feature::TextHandler;
use crate::proto::pdu::PduDecoder;
use crate::target::session::Session;
use crate::target::{Registry, TargetSettings};

/// A connection that completed login.
pub struct LoggedIn {
    pub session: Arc<Session>,
    pub cid: u16,
    /// Framing with the negotiated digests and our MaxRecvDataSegmentLength.
    pub decoder: PduDecoder,
    /// The next StatSN to send.
    pub stat_sn: u32,
    pub text: Box<dyn TextHandler>,
    pub settings: TargetSettings,
}

pub async fn run(
    _stream: &mut TcpStream,
    _rbuf: &mut BytesMut,
    _peer: SocketAddr,
    _local: SocketAddr,
    _registry: &Arc<Registry>,
) -> Option<LoggedIn> {
    tokio::task::yield_now().await;
    None
}
