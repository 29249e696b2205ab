//! ietd's life cycle: build the registry from the configuration, start the
//! data plane, serve the portals, and shut everything down on a signal.

mod build;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::dataplane::{Dataplane, DataplaneConfig};
use crate::transport::Server;

pub use build::{build_registry, lun_config};

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let registry = Arc::new(build_registry(&config)?);
    let server = Server::new(registry.clone(), shutdown.clone());
    for portal in &config.portals {
        let bound = server
            .add_portal(portal.listen)
            .with_context(|| format!("cannot listen on {}", portal.listen))?;
        info!(portal = %bound, "listening");
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
    shutdown.cancelled().await;
    info!("shutting down");
    if tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .is_err()
    {
        warn!("connections did not close within 10 s");
    }
    dataplane.shutdown();
    info!("stopped");
    Ok(())
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
