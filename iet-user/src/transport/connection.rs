//! One TCP connection: login phase, then the full-feature phase, then
//! leaving the session cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::exec::ExecContext;
use super::full_feature::{ConnEnd, FullFeature};
use super::login_phase::{self, LoggedIn};
use super::writer::{TxCounters, Writer};
use crate::target::Registry;
use crate::target::session::{ConnHandle, Inbox, SessionKind};

/// Queued outbound PDUs per connection before command tasks wait.
const TX_QUEUE: usize = 1024;

pub async fn run(
    mut stream: TcpStream,
    peer: SocketAddr,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(e) => {
            debug!(%peer, "no local address: {e}");
            return;
        }
    };
    // IET set TCP_NODELAY on every connection; without eBPF we do it here.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, "TCP_NODELAY: {e}");
    }
    let span = info_span!("conn", %peer);
    async move {
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        let counters = Arc::new(TxCounters::default());
        let logged_in = tokio::select! {
            () = shutdown.cancelled() => return,
            r = login_phase::run(&mut stream, &mut rbuf, peer, local, &registry, &counters) => r,
        };
        let Some(logged_in) = logged_in else {
            return;
        };
        full_feature(stream, rbuf, peer, local, registry, shutdown, logged_in).await;
    }
    .instrument(span)
    .await;
}

async fn full_feature(
    stream: TcpStream,
    rbuf: BytesMut,
    peer: SocketAddr,
    local: SocketAddr,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    li: LoggedIn,
) {
    let LoggedIn {
        session,
        cid,
        decoder,
        stat_sn,
        max_send_segment,
        text,
        settings,
        counters,
    } = li;
    let span = info_span!(
        "session",
        tsih = session.id.tsih,
        initiator = %session.id.initiator_name,
        isid = %crate::target::session::isid_hex(&session.id.isid),
        cid,
    );
    async move {
        if let Some(dp) = registry.dataplane.get()
            && let Err(e) =
                dp.set_connection_digests(local, peer, decoder.digests.header, decoder.digests.data)
        {
            debug!("eBPF digest settings: {e:#}");
        }
        let conn = ConnHandle {
            cid,
            local,
            peer,
            cancel: CancellationToken::new(),
            logout_request: Arc::new(tokio::sync::Notify::new()),
            tx_counters: counters.clone(),
            inbox: Arc::new(Inbox::default()),
        };
        // Connection reinstatement (RFC 7143 §6.3.4): same CID replaces the old one.
        let old = session
            .connections
            .lock()
            .expect("conn lock")
            .insert(cid, conn.clone());
        if let Some(old) = old {
            info!("connection reinstatement: closing the old connection");
            old.cancel.cancel();
        }
        let (reader, writer_half) = stream.into_split();
        let (tx, rx) = Writer::channel(TX_QUEUE);
        // The socket closes when the last sender goes: this one is dropped
        // only after the session has been left, so an initiator that sees
        // the close (after a logout, say) never finds the session still up.
        let keep_open = tx.clone();
        let writer = Writer {
            digests: decoder.digests,
            stat_sn: Arc::new(AtomicU32::new(stat_sn)),
            window: session.window.clone(),
            counters,
        };
        let writer_task = tokio::spawn(async move {
            if let Err(e) = writer.run(writer_half, rx).await {
                debug!("writer: {e}");
            }
        });
        let exec = match &session.kind {
            SessionKind::Normal { target, nexus } => Some(Arc::new(ExecContext {
                session: session.clone(),
                luns: target.luns.clone(),
                lanes: target.lanes.clone(),
                nexus: nexus.clone(),
                tx: tx.clone(),
                registry: registry.clone(),
                max_send_segment: AtomicU32::new(max_send_segment),
            })),
            SessionKind::Discovery => None,
        };
        // Daemon shutdown: ask the initiator to log out, then close.
        let watcher = {
            let shutdown = shutdown.clone();
            let conn = conn.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                conn.logout_request.notify_one();
            })
        };
        info!(
            kind = if exec.is_some() {
                "normal"
            } else {
                "discovery"
            },
            "full feature phase"
        );
        let ffp = FullFeature::new(
            reader,
            rbuf,
            decoder,
            tx,
            session.clone(),
            registry.clone(),
            conn.clone(),
            exec,
            text,
            &settings,
        );
        let end = ffp.run().await;
        watcher.abort();
        match &end {
            ConnEnd::Eof | ConnEnd::Logout | ConnEnd::Cancelled => info!(?end, "connection closed"),
            _ => warn!(?end, "connection closed"),
        }
        // The writer ends when every ConnTx is gone; running commands keep
        // theirs until they finish, so do not wait for it.
        drop(writer_task);
        registry.leave_session(&session, cid, &conn);
        drop(keep_open);
    }
    .instrument(span)
    .await;
}
