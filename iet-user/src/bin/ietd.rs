//! ietd: the iSCSI target daemon.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    #[arg(
        long = "portal",
        value_name = "ADDR:PORT",
        env = "IET_PORTAL",
        value_delimiter = ','
    )]
    portals: Vec<SocketAddr>,
    /// Address SendTargets announces for the portal at the same position
    /// (NAT, published container ports); repeatable.
    #[arg(
        long = "advertise",
        value_name = "ADDR:PORT",
        env = "IET_ADVERTISE",
        value_delimiter = ','
    )]
    advertise: Vec<SocketAddr>,
    /// Portal group tag of the portal at the same position (default 1):
    /// portals in different groups are different target ports; repeatable.
    #[arg(
        long = "portal-group",
        value_name = "TPGT",
        env = "IET_PORTAL_GROUP",
        value_delimiter = ','
    )]
    portal_groups: Vec<u16>,
    /// Target IQN served with the --lun flags.
    #[arg(
        long,
        value_name = "IQN",
        conflicts_with = "config",
        env = "IET_TARGET"
    )]
    target: Option<String>,
    /// Backing store for the next LUN: a file or block device path, or mem:SIZE;
    /// a path may end in `?engine=auto|file|uring&direct=true&block_size=4096`.
    #[arg(
        long = "lun",
        value_name = "SPEC",
        requires = "target",
        env = "IET_LUN",
        value_delimiter = ','
    )]
    luns: Vec<String>,
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE", env = "IET_CONFIG")]
    config: Option<PathBuf>,
    /// eBPF data plane: auto (fall back to plain sockets), on (required) or off.
    #[arg(long, value_enum, env = "IET_EBPF")]
    ebpf: Option<EbpfMode>,
    /// Where the eBPF maps are pinned.
    #[arg(long, value_name = "DIR", env = "IET_PIN_DIR")]
    pin_dir: Option<PathBuf>,
    /// Instance name: maps are pinned in /sys/fs/bpf/iet/NAME (in a
    /// container the default is its hostname, so two never collide).
    #[arg(
        long,
        value_name = "NAME",
        env = "IET_INSTANCE",
        conflicts_with = "pin_dir"
    )]
    instance: Option<String>,
    /// cgroup v2 directory the sock_ops program attaches to.
    #[arg(long, value_name = "PATH", env = "IET_CGROUP")]
    cgroup: Option<PathBuf>,
    /// Unix control socket for ietadm.
    #[arg(long, value_name = "PATH", env = "IET_CONTROL")]
    control: Option<PathBuf>,
    /// Directory for state that survives restarts (APTPL reservations).
    #[arg(long, value_name = "DIR", env = "IET_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this address.
    #[arg(long, value_name = "ADDR:PORT", env = "IET_METRICS")]
    metrics: Option<SocketAddr>,
    /// Busy-poll budget in µs for initiators that send one command at a
    /// time (0: never poll).
    #[arg(long, value_name = "US", env = "IET_BUSY_POLL_US")]
    busy_poll_us: Option<u32>,
    /// MiB of write data all sessions may hold before R2Ts wait.
    #[arg(long, value_name = "MIB", env = "IET_WRITE_BUDGET_MIB")]
    write_budget_mib: Option<u32>,
    /// MiB of write data one session may hold.
    #[arg(long, value_name = "MIB", env = "IET_SESSION_WRITE_BUDGET_MIB")]
    session_write_budget_mib: Option<u32>,
    /// Where the log goes (containers: stdout).
    #[arg(long, value_enum, default_value = "stderr", env = "IET_LOG_TO")]
    log_to: LogTo,
    /// Print the effective configuration as TOML and exit (converts an
    /// IET ietd.conf).
    #[arg(long)]
    dump_config: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogTo {
    Stdout,
    Stderr,
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
                .map(|(n, spec)| LunSpec::from_flag(n as u64, spec))
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)?;
            config.targets = vec![target];
        }
        if !self.portals.is_empty() {
            config.portals = self
                .portals
                .iter()
                .map(|&listen| PortalConfig::new(listen))
                .collect();
        }
        if self.advertise.len() > config.portals.len() {
            anyhow::bail!(
                "{} --advertise addresses for {} portals",
                self.advertise.len(),
                config.portals.len()
            );
        }
        for (portal, &adv) in config.portals.iter_mut().zip(&self.advertise) {
            portal.advertise = Some(adv);
        }
        if self.portal_groups.len() > config.portals.len() {
            anyhow::bail!(
                "{} --portal-group tags for {} portals",
                self.portal_groups.len(),
                config.portals.len()
            );
        }
        for (portal, &tpgt) in config.portals.iter_mut().zip(&self.portal_groups) {
            portal.tpgt = tpgt;
        }
        if let Some(mode) = self.ebpf {
            config.ebpf.mode = mode;
        }
        if let Some(dir) = self.pin_dir {
            config.ebpf.pin_dir = dir;
        } else if let Some(name) = self.instance {
            config.ebpf.pin_dir = iet::dataplane::instance_pin_dir(Path::new(PIN_BASE), &name)?;
        } else if config.ebpf.pin_dir == Path::new(PIN_BASE)
            && let Some(name) = container_instance()
        {
            config.ebpf.pin_dir = iet::dataplane::instance_pin_dir(Path::new(PIN_BASE), &name)?;
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

/// Where instances pin their maps (a bpffs the host sees when a container
/// bind-mounts /sys/fs/bpf).
const PIN_BASE: &str = "/sys/fs/bpf/iet";

/// In a container, its hostname (the container id unless set) names the
/// instance, so containers sharing the host's bpffs never collide.
fn container_instance() -> Option<String> {
    if !iet::dataplane::in_container() {
        return None;
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_owned()).filter(|n| !n.is_empty())
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
    let args = Args::parse();
    let to_stdout = args.log_to == LogTo::Stdout;
    let terminal = if to_stdout {
        std::io::IsTerminal::is_terminal(&std::io::stdout())
    } else {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    };
    let writer = if to_stdout {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout)
    } else {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr)
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(writer)
        .with_ansi(terminal && std::env::var_os("NO_COLOR").is_none())
        .init();
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
