//! ietd's life cycle: build the registry from the configuration, start the
//! data plane, serve the portals, and shut everything down on a signal.

mod build;
mod reload;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::dataplane::{Dataplane, DataplaneConfig, EventKind};
use crate::target::Registry;
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
    crate::transport::spin::set_budget_us(config.busy_poll_us);
    let registry = Arc::new(build_registry(&config)?);
    config.memory.apply(&registry);
    registry.limits.set(config.limits);
    if config.isns_access_control {
        // Before any portal accepts: no login gets past access control unchecked.
        let _ = registry
            .isns_access
            .set(Arc::new(crate::isns::Access::default()));
    }
    let server = Server::new(registry.clone(), shutdown.clone());
    // The data plane first, so no accepted connection escapes sock_ops.
    let dataplane = Arc::new(
        Dataplane::start(&DataplaneConfig {
            mode: config.ebpf.mode,
            pin_dir: config.ebpf.pin_dir.clone(),
            cgroup: config.ebpf.cgroup.clone(),
            portals: config.portals.iter().map(|p| p.listen).collect(),
        })
        .context("eBPF data plane")?,
    );
    let _ = registry.dataplane.set(dataplane.clone());
    close_on_kernel_events(&dataplane, &registry);
    trim_buffers(shutdown.clone());
    if dataplane.is_active() {
        info!(pin_dir = %config.ebpf.pin_dir.display(), "eBPF data plane attached");
    }
    let daemon = Arc::new(Daemon {
        registry: registry.clone(),
        server: server.clone(),
        dataplane: dataplane.clone(),
        started_file: config_path.as_deref().and_then(|p| Config::load(p).ok()),
        config_path,
        base: config.clone(),
        portal_tuning: std::sync::Mutex::default(),
    });
    crate::control::server::start(&config.control, daemon.clone(), shutdown.clone())
        .with_context(|| format!("control socket {}", config.control.display()))?;
    reload_on_sighup(daemon.clone(), shutdown.clone())?;
    if let Some(addr) = config.metrics {
        crate::control::metrics::serve(addr, daemon.clone(), shutdown.clone())
            .await
            .with_context(|| format!("metrics endpoint {addr}"))?;
    }
    // Portals last: once they accept, everything else is ready.
    let mut portals = Vec::new();
    for portal in &config.portals {
        let bound = server
            .add_portal(portal.listen)
            .with_context(|| format!("cannot listen on {}", portal.listen))?;
        info!(portal = %bound, "listening");
        portals.push(crate::target::Portal {
            listen: bound,
            advertise: portal.advertise,
            tpgt: portal.tpgt,
        });
    }
    registry.set_portals(portals.clone());
    dataplane.set_portals(&portals.iter().map(|p| p.listen).collect::<Vec<_>>())?;
    for (portal, bound) in config.portals.iter().zip(&portals) {
        if portal.tuning != crate::config::PortalTuning::default() && !dataplane.is_active() {
            warn!(portal = %bound.listen, "portal tuning needs the eBPF data plane; not applied");
        }
        daemon.apply_portal_tuning(bound.listen, &portal.tuning)?;
        daemon
            .portal_tuning
            .lock()
            .expect("tuning lock")
            .insert(bound.listen, portal.tuning.clone());
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
    let isns = config.isns_server.clone().map(|server| {
        let access = registry.isns_access.get().cloned();
        crate::isns::start(server, registry.clone(), access, shutdown.clone())
    });
    shutdown.cancelled().await;
    info!("shutting down");
    if let Some(isns) = isns {
        // The task deregisters on cancel; let the DevDereg go out.
        let _ = tokio::time::timeout(Duration::from_secs(6), isns).await;
    }
    if tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .is_err()
    {
        warn!("connections did not close within 10 s");
    }
    daemon.dataplane.shutdown();
    info!("stopped");
    Ok(())
}

/// Ends a connection as soon as the kernel reports it closing (the eBPF
/// counterpart of IET's sk_state_change callback).
fn close_on_kernel_events(dataplane: &Dataplane, registry: &Arc<Registry>) {
    let Some(mut events) = dataplane.take_events() else {
        return;
    };
    let registry = registry.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev.kind {
                EventKind::Closed if ev.role == iet_common::ROLE_TARGET => {
                    let conn = registry.connection(ev.local, ev.peer);
                    info!(
                        local = %ev.local,
                        peer = %ev.peer,
                        tcp_state = ev.tcp_state,
                        live = conn.is_some(),
                        "kernel event: connection closing"
                    );
                    if let Some(conn) = conn {
                        conn.cancel.cancel();
                    }
                }
                EventKind::Retransmit | EventKind::Rto => {
                    tracing::debug!(peer = %ev.peer, retransmits = ev.retransmits, kind = ?ev.kind, "kernel event");
                }
                EventKind::Closed => {}
            }
        }
    });
}

/// Frees I/O buffers the pool kept but nothing used for a while, and
/// hands the memory back to the kernel.
fn trim_buffers(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = every.tick() => {
                    if crate::transport::buffers::POOL.trim() > 0 {
                        // SAFETY: malloc_trim only releases free heap memory.
                        unsafe { libc::malloc_trim(0) };
                    }
                }
            }
        }
    });
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
                        Ok(Ok(_)) => {}
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
