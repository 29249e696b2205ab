//! ietd's life cycle: build the registry from the configuration, start the
//! data plane, serve the portals, and shut everything down on a signal.

mod build;
pub mod state;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::dataplane::{Dataplane, DataplaneConfig};
use crate::transport::Server;

pub use build::{add_lun, build_registry, lun_config, target_settings};
use state::Daemon;

/// Runs the daemon until `shutdown` is cancelled. `config_path` is the
/// file `reload` (SIGHUP, `ietadm reload`) reads again.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = Arc::new(build_registry(&config)?);
    let server = Server::new(registry.clone(), shutdown.clone());
    let mut portals = Vec::new();
    for portal in &config.portals {
        let bound = server
            .add_portal(portal.listen)
            .with_context(|| format!("cannot listen on {}", portal.listen))?;
        info!(portal = %bound, "listening");
        portals.push(crate::target::Portal {
            listen: bound,
            advertise: portal.advertise,
        });
    }
    registry.set_portals(portals.clone());
    let dataplane = Dataplane::start(DataplaneConfig {
        mode: config.ebpf.mode,
        pin_dir: config.ebpf.pin_dir.clone(),
        cgroup: config.ebpf.cgroup.clone(),
        portals: portals.iter().map(|p| p.listen).collect(),
    })
    .context("eBPF data plane")?;
    if dataplane.is_active() {
        info!(pin_dir = %config.ebpf.pin_dir.display(), "eBPF data plane attached");
    }
    let daemon = Arc::new(Daemon {
        registry: registry.clone(),
        server: server.clone(),
        dataplane: Mutex::new(Some(dataplane)),
        config_path,
        base: config.clone(),
    });
    crate::control::server::start(&config.control, daemon.clone(), shutdown.clone())
        .with_context(|| format!("control socket {}", config.control.display()))?;
    reload_on_sighup(daemon.clone(), shutdown.clone())?;
    if let Some(addr) = config.metrics {
        crate::control::metrics::serve(addr, daemon.clone(), shutdown.clone())
            .await
            .with_context(|| format!("metrics endpoint {addr}"))?;
    }
    for t in registry.targets() {
        for p in &portals {
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
    if let Some(dp) = daemon.dataplane.lock().expect("dataplane lock").take() {
        dp.shutdown();
    }
    info!("stopped");
    Ok(())
}

fn reload_on_sighup(daemon: Arc<Daemon>, shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = hup.recv() => {
                    let d = daemon.clone();
                    match tokio::task::spawn_blocking(move || d.reload()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => warn!("reload failed: {e:#}"),
                        Err(e) => warn!("reload failed: {e}"),
                    }
                }
            }
        }
    });
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
