//! The ring buffer of connection events, read with AsyncFd and forwarded
//! to the daemon, which ends sessions whose connection the kernel saw close.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use aya::maps::{MapData, RingBuf};
use iet_common::{ConnEvent, EVENT_CLOSED, EVENT_RETRANSMIT, EVENT_RTO};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tracing::{debug, trace};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Closed,
    Retransmit,
    Rto,
}

/// One event, with the connection as the socket that raised it sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionEvent {
    pub kind: EventKind,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub tcp_state: u32,
    pub role: u32,
    pub srtt_us: u32,
    pub retransmits: u64,
    pub ts_ns: u64,
}

impl ConnectionEvent {
    pub fn from_raw(e: &ConnEvent) -> Option<ConnectionEvent> {
        let kind = match e.kind {
            EVENT_CLOSED => EventKind::Closed,
            EVENT_RETRANSMIT => EventKind::Retransmit,
            EVENT_RTO => EventKind::Rto,
            _ => return None,
        };
        // v4-mapped back to IPv4, as the listener's accepted peers read.
        let addr = |a: [u8; 16], p: u16| {
            let v6 = Ipv6Addr::from(a);
            match v6.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, p)),
                None => SocketAddr::V6(SocketAddrV6::new(v6, p, 0, 0)),
            }
        };
        Some(ConnectionEvent {
            kind,
            local: addr(e.key.local_addr, e.key.local_port),
            peer: addr(e.key.remote_addr, e.key.remote_port),
            tcp_state: e.state,
            role: e.role,
            srtt_us: e.srtt_us,
            retransmits: e.retransmits,
            ts_ns: e.ts_ns,
        })
    }
}

/// Reads the ring buffer on the tokio runtime until the receiver goes away.
pub fn spawn_reader(ring: RingBuf<MapData>) -> anyhow::Result<UnboundedReceiver<ConnectionEvent>> {
    let (tx, rx) = unbounded_channel();
    // SAFETY: the ring buffer owns its map fd, which stays open and the
    // same for as long as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the event ring buffer: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                break;
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if item.len() < size_of::<ConnEvent>() {
                    continue;
                }
                // SAFETY: ConnEvent is plain old data and the item holds at
                // least that many bytes; read_unaligned copes with alignment.
                let raw: ConnEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                if let Some(ev) = ConnectionEvent::from_raw(&raw) {
                    trace!(?ev, "kernel event");
                    if tx.send(ev).is_err() {
                        debug!("event receiver gone");
                        return;
                    }
                }
            }
            guard.clear_ready();
        }
    });
    Ok(rx)
}
