//! ietadm: manage a running ietd over its control socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use iet::backend::Engine;
use iet::control::client::Client;
use iet::control::procfs;
use iet::control::protocol::{
    AccountScope, Direction, Request, SessionView, TargetView, VolumeView,
};

#[derive(Debug, Parser)]
#[command(name = "ietadm", version, about = "Manage a running ietd")]
struct Cli {
    /// ietd's control socket.
    #[arg(long, global = true, default_value = "/run/iet/ietd.sock")]
    control: PathBuf,
    /// Print the daemon's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show targets, volumes (LUNs), sessions, portals or accounts.
    Show {
        what: ShowWhat,
        /// IET's /proc/net/iet text format (sessions, volumes).
        #[arg(long)]
        proc: bool,
    },
    /// Counters of the daemon and the eBPF data plane.
    Stats,
    /// Memory admission for write data: what writes may hold before R2Ts
    /// wait and MaxCmdSN stops advancing (`ietadm stats` shows the use).
    #[command(subcommand)]
    Memory(MemoryCmd),
    /// Login abuse limits: logins at once, login timeout, sessions per
    /// initiator, CHAP lockout (`ietadm stats` shows refusals).
    #[command(subcommand)]
    Limits(LimitsCmd),
    #[command(subcommand)]
    Target(TargetCmd),
    #[command(subcommand)]
    Lun(LunCmd),
    #[command(subcommand)]
    Portal(PortalCmd),
    #[command(subcommand)]
    Account(AccountCmd),
    #[command(subcommand)]
    Acl(AclCmd),
    #[command(subcommand)]
    Session(SessionCmd),
    #[command(subcommand)]
    Connection(ConnectionCmd),
    /// Write the running configuration to FILE (TOML, atomically).
    Save { file: PathBuf },
    /// Apply the configuration file again (like SIGHUP).
    Reload,
}

#[derive(Debug, Subcommand)]
enum LimitsCmd {
    /// Change the limits given; the others stay.
    Set {
        #[arg(long)]
        max_logins_in_progress: Option<u32>,
        #[arg(long)]
        login_timeout_secs: Option<u32>,
        #[arg(long)]
        max_sessions_per_initiator: Option<u32>,
        #[arg(long)]
        chap_failures_before_lockout: Option<u32>,
        #[arg(long)]
        chap_lockout_secs: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
enum MemoryCmd {
    /// Set the budgets in MiB (the per-session one applies to new sessions).
    Set {
        #[arg(long)]
        write_budget_mib: Option<u32>,
        #[arg(long)]
        session_write_budget_mib: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ShowWhat {
    Targets,
    Volumes,
    Sessions,
    Portals,
    Accounts,
}

#[derive(Debug, Subcommand)]
enum TargetCmd {
    New {
        name: String,
        #[arg(long)]
        alias: Option<String>,
    },
    Delete {
        name: String,
        /// Close the target's sessions.
        #[arg(long)]
        force: bool,
    },
    /// Set negotiation parameters by their ietd.conf names, e.g.
    /// `MaxBurstLength=65536 CHAP_A=SHA3-256,SHA-256` (for new logins).
    Set {
        name: String,
        #[arg(required = true, value_parser = parse_pair)]
        params: Vec<(String, String)>,
    },
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

#[derive(Debug, Subcommand)]
enum LunCmd {
    New {
        #[arg(long)]
        target: String,
        #[arg(long)]
        lun: Option<u64>,
        /// File, block device or mem:SIZE.
        #[arg(long)]
        path: String,
        /// Create the file with this size (e.g. 1G) if it does not exist.
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        #[arg(long)]
        block_size: Option<u32>,
        #[arg(long)]
        read_only: bool,
        /// I/O engine for a file or block device: auto, file or uring.
        #[arg(long, default_value_t = Engine::Auto)]
        engine: Engine,
        /// O_DIRECT (io_uring engine): bypass the page cache.
        #[arg(long)]
        direct: bool,
    },
    Delete {
        #[arg(long)]
        target: String,
        #[arg(long)]
        lun: u64,
        #[arg(long)]
        force: bool,
    },
    /// Grow or shrink a LUN online (initiators see CAPACITY DATA HAS CHANGED).
    Resize {
        #[arg(long)]
        target: String,
        #[arg(long)]
        lun: u64,
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
    Set {
        #[arg(long)]
        target: String,
        #[arg(long)]
        lun: u64,
        #[arg(long, action = clap::ArgAction::Set)]
        read_only: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PortalCmd {
    Add {
        listen: SocketAddr,
        #[arg(long)]
        advertise: Option<SocketAddr>,
    },
    Remove {
        listen: SocketAddr,
    },
    /// eBPF switches: PDU accounting and same-host redirect (sk_msg).
    Set {
        listen: SocketAddr,
        #[arg(long, action = clap::ArgAction::Set, default_value_t = false)]
        accounting: bool,
        #[arg(long, action = clap::ArgAction::Set, default_value_t = false)]
        redirect: bool,
        /// SO_SNDBUF for new connections (bytes; 0: kernel autotuning).
        #[arg(long, default_value_t = 0)]
        sndbuf: u32,
        /// SO_RCVBUF for new connections (bytes; 0: kernel autotuning).
        #[arg(long, default_value_t = 0)]
        rcvbuf: u32,
        /// TCP_NOTSENT_LOWAT for new connections (bytes; 0: unset).
        #[arg(long, default_value_t = 0)]
        notsent_lowat: u32,
        /// TCP congestion control for new connections (e.g. bbr, cubic).
        #[arg(long, default_value = "")]
        congestion: String,
    },
}

#[derive(Debug, Args)]
struct AccountTarget {
    /// The target the account belongs to (default: discovery).
    #[arg(long)]
    target: Option<String>,
    /// The account the target answers mutual CHAP with.
    #[arg(long)]
    outgoing: bool,
}

impl AccountTarget {
    fn scope(&self) -> AccountScope {
        self.target
            .clone()
            .map_or(AccountScope::Discovery, AccountScope::Target)
    }

    fn direction(&self) -> Direction {
        if self.outgoing {
            Direction::Outgoing
        } else {
            Direction::Incoming
        }
    }
}

#[derive(Debug, Subcommand)]
enum AccountCmd {
    Add {
        #[command(flatten)]
        who: AccountTarget,
        user: String,
        secret: String,
    },
    Delete {
        #[command(flatten)]
        who: AccountTarget,
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum AclCmd {
    /// Replace a target's allow and deny lists (names, CIDRs or ALL).
    Set {
        #[arg(long)]
        target: String,
        #[arg(long)]
        allow: Vec<String>,
        #[arg(long)]
        deny: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SessionCmd {
    /// Log a session out (Async Message), then close it.
    Delete { tsih: u16 },
}

#[derive(Debug, Subcommand)]
enum ConnectionCmd {
    Delete { tsih: u16, cid: u16 },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s}")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map_err(|e| format!("{s}: {e}"))?
        .checked_mul(mult)
        .ok_or_else(|| format!("{s}: too large"))
}

fn request(cmd: &Command) -> Request {
    match cmd {
        Command::Show { what, .. } => match what {
            ShowWhat::Targets => Request::ShowTargets,
            ShowWhat::Volumes => Request::ShowVolumes,
            ShowWhat::Sessions => Request::ShowSessions,
            ShowWhat::Portals => Request::ShowPortals,
            ShowWhat::Accounts => Request::ShowAccounts,
        },
        Command::Stats => Request::Stats,
        Command::Limits(LimitsCmd::Set {
            max_logins_in_progress,
            login_timeout_secs,
            max_sessions_per_initiator,
            chap_failures_before_lockout,
            chap_lockout_secs,
        }) => Request::LimitsSet {
            max_logins_in_progress: *max_logins_in_progress,
            login_timeout_secs: *login_timeout_secs,
            max_sessions_per_initiator: *max_sessions_per_initiator,
            chap_failures_before_lockout: *chap_failures_before_lockout,
            chap_lockout_secs: *chap_lockout_secs,
        },
        Command::Memory(MemoryCmd::Set {
            write_budget_mib,
            session_write_budget_mib,
        }) => Request::MemorySet {
            write_budget_mib: *write_budget_mib,
            session_write_budget_mib: *session_write_budget_mib,
        },
        Command::Target(TargetCmd::New { name, alias }) => Request::TargetNew {
            name: name.clone(),
            alias: alias.clone(),
        },
        Command::Target(TargetCmd::Delete { name, force }) => Request::TargetDelete {
            name: name.clone(),
            force: *force,
        },
        Command::Target(TargetCmd::Set { name, params }) => Request::TargetSet {
            name: name.clone(),
            params: params.clone(),
        },
        Command::Lun(LunCmd::New {
            target,
            lun,
            path,
            size,
            block_size,
            read_only,
            engine,
            direct,
        }) => Request::LunNew {
            target: target.clone(),
            lun: *lun,
            path: path.clone(),
            block_size: *block_size,
            read_only: *read_only,
            size: *size,
            engine: *engine,
            direct: *direct,
        },
        Command::Lun(LunCmd::Delete { target, lun, force }) => Request::LunDelete {
            target: target.clone(),
            lun: *lun,
            force: *force,
        },
        Command::Lun(LunCmd::Resize { target, lun, size }) => Request::LunResize {
            target: target.clone(),
            lun: *lun,
            size: *size,
        },
        Command::Lun(LunCmd::Set {
            target,
            lun,
            read_only,
        }) => Request::LunSet {
            target: target.clone(),
            lun: *lun,
            read_only: *read_only,
        },
        Command::Portal(PortalCmd::Add { listen, advertise }) => Request::PortalAdd {
            listen: *listen,
            advertise: *advertise,
        },
        Command::Portal(PortalCmd::Remove { listen }) => Request::PortalRemove { listen: *listen },
        Command::Portal(PortalCmd::Set {
            listen,
            accounting,
            redirect,
            sndbuf,
            rcvbuf,
            notsent_lowat,
            congestion,
        }) => Request::PortalSet {
            listen: *listen,
            accounting: *accounting,
            redirect: *redirect,
            sndbuf: *sndbuf,
            rcvbuf: *rcvbuf,
            notsent_lowat: *notsent_lowat,
            congestion: congestion.clone(),
        },
        Command::Account(AccountCmd::Add { who, user, secret }) => Request::AccountAdd {
            scope: who.scope(),
            direction: who.direction(),
            user: user.clone(),
            secret: secret.clone(),
        },
        Command::Account(AccountCmd::Delete { who, user }) => Request::AccountDelete {
            scope: who.scope(),
            direction: who.direction(),
            user: user.clone(),
        },
        Command::Acl(AclCmd::Set {
            target,
            allow,
            deny,
        }) => Request::AclSet {
            target: target.clone(),
            allow: allow.clone(),
            deny: deny.clone(),
        },
        Command::Session(SessionCmd::Delete { tsih }) => Request::SessionDelete { tsih: *tsih },
        Command::Connection(ConnectionCmd::Delete { tsih, cid }) => Request::ConnectionDelete {
            tsih: *tsih,
            cid: *cid,
        },
        Command::Save { file } => Request::Save {
            path: std::path::absolute(file)
                .unwrap_or_else(|_| file.clone())
                .display()
                .to_string(),
        },
        Command::Reload => Request::Reload,
    }
}

fn print_text(cmd: &Command, data: &serde_json::Value, client: &mut Client) -> anyhow::Result<()> {
    match cmd {
        Command::Show {
            what: ShowWhat::Sessions,
            proc,
        } => {
            let sessions: Vec<SessionView> = serde_json::from_value(data.clone())?;
            if *proc {
                let targets = fetch::<Vec<TargetView>>(client, Request::ShowTargets)?;
                print!("{}", procfs::session(&targets, &sessions));
            } else {
                for s in &sessions {
                    println!(
                        "tsih:{} target:{} initiator:{} isid:{} cmdsn:{}..{} tasks:{}",
                        s.tsih,
                        s.target.as_deref().unwrap_or("(discovery)"),
                        s.initiator,
                        s.isid,
                        s.exp_cmd_sn,
                        s.max_cmd_sn,
                        s.tasks
                    );
                    let keys: Vec<String> = s
                        .negotiated
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    println!("\t{}", keys.join(" "));
                    for c in &s.connections {
                        let kernel = c.kernel.as_ref().map_or_else(String::new, |k| {
                            format!(
                                " rtt:{}us retrans:{} state:{}",
                                k.srtt_us, k.retransmits, k.state
                            )
                        });
                        println!(
                            "\tcid:{} {} -> {} hd:{} dd:{} tx_bytes:{}{kernel}",
                            c.cid, c.peer, c.local, c.header_digest, c.data_digest, c.tx_bytes
                        );
                    }
                }
            }
        }
        Command::Show {
            what: ShowWhat::Volumes,
            proc,
        } => {
            let volumes: Vec<VolumeView> = serde_json::from_value(data.clone())?;
            if *proc {
                let targets = fetch::<Vec<TargetView>>(client, Request::ShowTargets)?;
                print!("{}", procfs::volume(&targets, &volumes));
            } else {
                for v in &volumes {
                    println!(
                        "{} lun:{} size:{} blocksize:{} ro:{} engine:{} path:{}",
                        v.target, v.lun, v.size_bytes, v.block_size, v.read_only, v.engine, v.path
                    );
                }
            }
        }
        Command::Show {
            what: ShowWhat::Targets,
            ..
        } => {
            let targets: Vec<TargetView> = serde_json::from_value(data.clone())?;
            for t in &targets {
                println!(
                    "tid:{} name:{} luns:{:?} sessions:{}",
                    t.tid, t.name, t.luns, t.sessions
                );
            }
        }
        Command::Reload => {
            let report: iet::daemon::state::ReloadReport = serde_json::from_value(data.clone())?;
            for a in &report.applied {
                println!("applied: {a}");
            }
            for r in &report.restart_needed {
                println!("needs a restart: {r}");
            }
        }
        _ => println!("{}", serde_json::to_string_pretty(data)?),
    }
    Ok(())
}

fn fetch<T: serde::de::DeserializeOwned>(client: &mut Client, req: Request) -> anyhow::Result<T> {
    let resp = client.call(req)?;
    if !resp.ok {
        anyhow::bail!("{}", resp.error.unwrap_or_default());
    }
    Ok(serde_json::from_value(resp.data.unwrap_or_default())?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || -> anyhow::Result<()> {
        let mut client = Client::connect(&cli.control)?;
        let resp = client.call(request(&cli.command))?;
        if !resp.ok {
            anyhow::bail!("{}", resp.error.unwrap_or_else(|| "failed".into()));
        }
        match resp.data {
            Some(data) if cli.json => println!("{}", serde_json::to_string_pretty(&data)?),
            Some(data) => print_text(&cli.command, &data, &mut client)?,
            None => {}
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ietadm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("1X").is_err());
    }
}
