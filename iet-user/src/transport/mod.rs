//! Sockets live here and nowhere else: the listener, the per-connection
//! task (login, then full-feature phase) and the writer.

pub mod buffers;
pub mod connection;
pub mod exec;
pub mod full_feature;
mod intake;
pub mod lane;
pub mod login_phase;
pub mod session_ops;
pub mod spin;
pub mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::target::Registry;

/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 4096;

/// The accept loops of every portal, which can be added and removed at
/// runtime, and the connection tasks they started.
pub struct Server {
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    limit: Arc<Semaphore>,
    portals: Mutex<HashMap<SocketAddr, CancellationToken>>,
}

impl Server {
    pub fn new(registry: Arc<Registry>, shutdown: CancellationToken) -> Arc<Server> {
        Arc::new(Server {
            registry,
            shutdown,
            tracker: TaskTracker::new(),
            limit: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            portals: Mutex::new(HashMap::new()),
        })
    }

    /// Binds and serves a portal; returns the bound address (port 0 resolved).
    pub fn add_portal(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = bind(addr)?;
        let bound = listener.local_addr()?;
        let stop = self.shutdown.child_token();
        self.portals
            .lock()
            .expect("portals lock")
            .insert(bound, stop.clone());
        self.tracker.spawn(accept_loop(
            listener,
            self.registry.clone(),
            self.shutdown.clone(),
            stop,
            self.limit.clone(),
            self.tracker.clone(),
        ));
        Ok(bound)
    }

    /// Stops accepting on a portal; its connections stay up.
    pub fn remove_portal(&self, addr: SocketAddr) -> bool {
        match self.portals.lock().expect("portals lock").remove(&addr) {
            Some(stop) => {
                stop.cancel();
                true
            }
            None => false,
        }
    }

    pub fn portals(&self) -> Vec<SocketAddr> {
        self.portals
            .lock()
            .expect("portals lock")
            .keys()
            .copied()
            .collect()
    }

    /// Waits until every accept loop and connection has finished (after
    /// the shutdown token is cancelled).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    stop: CancellationToken,
    limit: Arc<Semaphore>,
    conns: TaskTracker,
) {
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = limit.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
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
}
