//! ietd: the iSCSI target daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use iet::config::{Config, LunSpec, PortalConfig, TargetConfig};
use iet::dataplane::EbpfMode;
use tokio_util::sync::CancellationToken;

/// iSCSI target daemon (RFC 7143) with an eBPF data plane.
#[derive(Debug, Parser)]
#[command(name = "ietd", version)]
struct Args {
    /// Address to listen on (repeatable).
    #[arg(long = "portal", value_name = "ADDR:PORT")]
    portals: Vec<SocketAddr>,
    /// Target IQN served with the --lun flags.
    #[arg(long, value_name = "IQN", conflicts_with = "config")]
    target: Option<String>,
    /// Backing store for the next LUN: a file or block device path, or mem:SIZE.
    #[arg(long = "lun", value_name = "SPEC", requires = "target")]
    luns: Vec<String>,
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// eBPF data plane: auto (fall back to plain sockets), on (required) or off.
    #[arg(long, value_enum)]
    ebpf: Option<EbpfMode>,
    /// Where the eBPF maps are pinned.
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// cgroup v2 directory the sock_ops program attaches to.
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,
    /// Unix control socket for ietadm.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Directory for state that survives restarts (APTPL reservations).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this address.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// Busy-poll budget in µs for initiators that send one command at a
    /// time (0: never poll).
    #[arg(long, value_name = "US")]
    busy_poll_us: Option<u32>,
    /// MiB of write data all sessions may hold before R2Ts wait.
    #[arg(long, value_name = "MIB")]
    write_budget_mib: Option<u32>,
    /// MiB of write data one session may hold.
    #[arg(long, value_name = "MIB")]
    session_write_budget_mib: Option<u32>,
    /// Print the effective configuration as TOML and exit (converts an
    /// IET ietd.conf).
    #[arg(long)]
    dump_config: bool,
}

impl Args {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(name) = &self.target {
            let mut target = TargetConfig::new(name);
            target.luns = self
                .luns
                .iter()
                .enumerate()
                .map(|(n, spec)| LunSpec::new(n as u64, spec))
                .collect();
            config.targets = vec![target];
        }
        if !self.portals.is_empty() {
            config.portals = self
                .portals
                .iter()
                .map(|&listen| PortalConfig::new(listen))
                .collect();
        }
        if let Some(mode) = self.ebpf {
            config.ebpf.mode = mode;
        }
        if let Some(dir) = self.pin_dir {
            config.ebpf.pin_dir = dir;
        }
        if let Some(cg) = self.cgroup {
            config.ebpf.cgroup = Some(cg);
        }
        if let Some(d) = self.state_dir {
            config.state_dir = d;
        }
        if let Some(us) = self.busy_poll_us {
            config.busy_poll_us = us;
        }
        if let Some(m) = self.metrics {
            config.metrics = Some(m);
        }
        if let Some(v) = self.write_budget_mib {
            config.memory.write_budget_mib = v;
        }
        if let Some(v) = self.session_write_budget_mib {
            config.memory.session_write_budget_mib = v;
        }
        if let Some(control) = self.control {
            config.control = control;
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One descriptor per connection: allow as many as the hard limit does.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } == 0
        && lim.rlim_cur < lim.rlim_max
    {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) };
    }
}

fn run() -> anyhow::Result<()> {
    raise_fd_limit();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let args = Args::parse();
    let config_path = args.config.clone();
    let dump = args.dump_config;
    let config = args.into_config()?;
    if dump {
        print!("{}", toml::to_string_pretty(&config)?);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ietd")
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        iet::daemon::cancel_on_signals(shutdown.clone())?;
        iet::daemon::run(config, config_path, shutdown).await
    })
}
