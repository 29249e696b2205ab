//! Sockets live here and nowhere else: the listener, the per-connection
//! task (login, then full-feature phase) and the writer.

pub mod command;
pub mod connection;
pub mod full_feature;
pub mod login_phase;
pub mod writer;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::target::Registry;

/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 4096;

/// Accepts on every listener until `shutdown`, then waits for the
/// connections to finish their shutdown (Async logout request, close).
pub async fn serve(
    listeners: Vec<TcpListener>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    for listener in listeners {
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        let limit = limit.clone();
        let conns = tracker.clone();
        tracker.spawn(async move {
            loop {
                let permit = tokio::select! {
                    () = shutdown.cancelled() => break,
                    p = limit.clone().acquire_owned() => p.expect("semaphore never closed"),
                };
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => break,
                    a = listener.accept() => a,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        debug!(%peer, "accepted");
                        let registry = registry.clone();
                        let shutdown = shutdown.clone();
                        conns.spawn(async move {
                            connection::run(stream, peer, registry, shutdown).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        warn!("accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}
