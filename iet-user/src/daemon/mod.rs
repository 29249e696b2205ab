//! ietd's life cycle: build the registry from the configuration, start the
//! data plane, serve the portals, and shut everything down on a signal.

mod build;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::dataplane::{Dataplane, DataplaneConfig};
use crate::transport;

pub use build::{build_registry, lun_config};

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let registry = Arc::new(build_registry(&config)?);
    let mut listeners = Vec::new();
    for portal in &config.portals {
        let listener =
            bind(portal.listen).with_context(|| format!("cannot listen on {}", portal.listen))?;
        info!(portal = %listener.local_addr()?, "listening");
        listeners.push(listener);
    }
    let dataplane = Dataplane::start(DataplaneConfig {
        mode: config.ebpf.mode,
        pin_dir: config.ebpf.pin_dir.clone(),
        cgroup: config.ebpf.cgroup.clone(),
        portals: config.portals.iter().map(|p| p.listen).collect(),
    })
    .context("eBPF data plane")?;
    if dataplane.is_active() {
        info!(pin_dir = %config.ebpf.pin_dir.display(), "eBPF data plane attached");
    }
    for t in registry.targets() {
        for p in &config.portals {
            info!(
                "serving iscsi://{}/{}/",
                p.advertise.unwrap_or(p.listen),
                t.name
            );
        }
    }
    let server = tokio::spawn(transport::serve(
        listeners,
        registry.clone(),
        shutdown.clone(),
    ));
    shutdown.cancelled().await;
    info!("shutting down");
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("server task failed: {e}"),
        Err(_) => warn!("connections did not close within 10 s"),
    }
    dataplane.shutdown();
    info!("stopped");
    Ok(())
}

fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM"),
            _ = int.recv() => info!("SIGINT"),
        }
        token.cancel();
    });
    Ok(())
}
