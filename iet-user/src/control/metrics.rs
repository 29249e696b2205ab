//! An optional Prometheus endpoint (`--metrics ADDR`): per-target and
//! per-session command counters and latency histograms, and the eBPF
//! data plane's counters, in the text exposition format.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::daemon::state::Daemon;
use crate::target::stats::{LATENCY_BUCKETS_US, StatsSnapshot};

pub async fn serve(
    addr: SocketAddr,
    daemon: Arc<Daemon>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(%bound, "metrics endpoint");
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let Ok((mut sock, _)) = accepted else {
                continue;
            };
            let daemon = daemon.clone();
            tokio::spawn(async move {
                // Read (and ignore) the request head; every path is /metrics.
                let mut head = [0u8; 2048];
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(2), sock.read(&mut head))
                        .await;
                let body = render(&daemon);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                if let Err(e) = sock.write_all(resp.as_bytes()).await {
                    debug!("metrics write: {e}");
                }
            });
        }
    });
    Ok(bound)
}

/// Microseconds as a decimal number of seconds, without float rounding.
fn seconds(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition being written: each metric family once, with its
/// `# HELP` and `# TYPE`, its samples together (text format 0.0.4).
#[derive(Default)]
struct Exposition {
    families: Vec<(&'static str, &'static str, &'static str, String)>,
}

impl Exposition {
    /// The sample lines of family `name`, declared on first use.
    fn family(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
    ) -> &mut String {
        let i = self
            .families
            .iter()
            .position(|f| f.0 == name)
            .unwrap_or_else(|| {
                self.families.push((name, kind, help, String::new()));
                self.families.len() - 1
            });
        &mut self.families[i].3
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for (name, kind, help, samples) in self.families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            out.push_str(&samples);
        }
        out
    }
}

/// Names of the command families of one level (target, LUN, session).
struct Names {
    commands: &'static str,
    bytes: &'static str,
    errors: &'static str,
    latency: &'static str,
}

const TARGET: Names = Names {
    commands: "iet_target_commands_total",
    bytes: "iet_target_bytes_total",
    errors: "iet_target_command_errors_total",
    latency: "iet_target_command_latency_seconds",
};
const LUN: Names = Names {
    commands: "iet_lun_commands_total",
    bytes: "iet_lun_bytes_total",
    errors: "iet_lun_command_errors_total",
    latency: "iet_lun_command_latency_seconds",
};
const SESSION: Names = Names {
    commands: "iet_session_commands_total",
    bytes: "iet_session_bytes_total",
    errors: "iet_session_command_errors_total",
    latency: "iet_session_command_latency_seconds",
};

fn series(x: &mut Exposition, n: &Names, labels: &str, s: &StatsSnapshot) {
    let out = x.family(n.commands, "counter", "SCSI commands completed, by kind.");
    for (kind, v) in [("read", s.reads), ("write", s.writes), ("other", s.others)] {
        let _ = writeln!(out, "{}{{{labels},kind=\"{kind}\"}} {v}", n.commands);
    }
    let out = x.family(n.bytes, "counter", "Data bytes moved by SCSI commands.");
    for (dir, v) in [("read", s.read_bytes), ("write", s.write_bytes)] {
        let _ = writeln!(out, "{}{{{labels},direction=\"{dir}\"}} {v}", n.bytes);
    }
    let out = x.family(
        n.errors,
        "counter",
        "SCSI commands that ended with a status other than GOOD.",
    );
    let _ = writeln!(out, "{}{{{labels}}} {}", n.errors, s.errors);
    let out = x.family(
        n.latency,
        "histogram",
        "Time from a command's arrival to its response, in seconds.",
    );
    let mut cumulative = 0;
    for (i, count) in s.latency.iter().enumerate() {
        cumulative += count;
        let le = LATENCY_BUCKETS_US
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |us| seconds(*us));
        let _ = writeln!(
            out,
            "{}_bucket{{{labels},le=\"{le}\"}} {cumulative}",
            n.latency
        );
    }
    let _ = writeln!(
        out,
        "{}_sum{{{labels}}} {}",
        n.latency,
        seconds(s.latency_sum_us)
    );
    let _ = writeln!(out, "{}_count{{{labels}}} {cumulative}", n.latency);
}

/// The eBPF data plane's global counters (`global_view` keys) and what
/// each counts.
const EBPF_COUNTERS: &[(&str, &str, &str)] = &[
    (
        "accepted",
        "iet_ebpf_accepted_total",
        "Target connections sock_ops saw established.",
    ),
    (
        "initiator_connections",
        "iet_ebpf_initiator_connections_total",
        "Same-host initiator connections sock_ops saw established.",
    ),
    (
        "closed",
        "iet_ebpf_closed_total",
        "Tracked connections that closed.",
    ),
    (
        "retransmits",
        "iet_ebpf_retransmits_total",
        "TCP retransmissions on tracked connections.",
    ),
    (
        "rto_events",
        "iet_ebpf_rto_events_total",
        "Retransmission timeouts on tracked connections.",
    ),
    (
        "pdus_accounted",
        "iet_ebpf_pdus_accounted_total",
        "iSCSI PDUs counted by sk_msg accounting.",
    ),
    (
        "redirected_msgs",
        "iet_ebpf_redirected_msgs_total",
        "Messages sk_msg redirected between same-host sockets.",
    ),
    (
        "events_dropped",
        "iet_ebpf_events_dropped_total",
        "Kernel events lost because the ring buffer was full.",
    ),
    (
        "table_full",
        "iet_ebpf_table_full_total",
        "Connections not tracked because the map was full.",
    ),
];

pub fn render(d: &Daemon) -> String {
    let mut x = Exposition::default();
    for t in d.registry.targets() {
        let labels = format!("target=\"{}\"", label(&t.name));
        series(&mut x, &TARGET, &labels, &t.stats.snapshot());
        for (lun, s) in t.stats.lun_snapshots() {
            series(&mut x, &LUN, &format!("{labels},lun=\"{lun}\""), &s);
        }
        let out = x.family(
            "iet_target_sessions",
            "gauge",
            "Sessions logged in to the target.",
        );
        let _ = writeln!(
            out,
            "iet_target_sessions{{{labels}}} {}",
            d.sessions_of(&t).len()
        );
        let out = x.family(
            "iet_target_luns",
            "gauge",
            "Logical units the target serves.",
        );
        let luns = t.lun_specs.lock().expect("specs lock").len();
        let _ = writeln!(out, "iet_target_luns{{{labels}}} {luns}");
        for (lun, stats) in t.luns.backend_metrics() {
            for (stat, v) in stats {
                let out = x.family(
                    "iet_backend_stat",
                    "gauge",
                    "A backing store's own figures (RBD requests, bytes, in-flight depth).",
                );
                let _ = writeln!(
                    out,
                    "iet_backend_stat{{{labels},lun=\"{lun}\",stat=\"{stat}\"}} {v}"
                );
            }
        }
    }
    {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &d.registry.limits.counters;
        let out = x.family(
            "iet_login_refusals_total",
            "counter",
            "Logins refused or cut by an abuse limit, by reason.",
        );
        for (reason, n) in [
            ("busy", c.logins_refused_busy.load(Relaxed)),
            ("timeout", c.logins_timed_out.load(Relaxed)),
            ("sessions", c.sessions_refused.load(Relaxed)),
            ("chap_locked", c.chap_refused_locked.load(Relaxed)),
        ] {
            let _ = writeln!(out, "iet_login_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        let out = x.family(
            "iet_chap_failures_total",
            "counter",
            "CHAP authentication failures.",
        );
        let _ = writeln!(
            out,
            "iet_chap_failures_total {}",
            c.chap_failures.load(Relaxed)
        );
        let out = x.family(
            "iet_chap_lockouts_total",
            "counter",
            "Initiator name and address pairs locked out after CHAP failures.",
        );
        let _ = writeln!(
            out,
            "iet_chap_lockouts_total {}",
            c.chap_lockouts.load(Relaxed)
        );
        let a = &d.registry.admission;
        let out = x.family(
            "iet_write_budget_bytes",
            "gauge",
            "The daemon-wide write-data budget: its limit and what writes hold now.",
        );
        let _ = writeln!(
            out,
            "iet_write_budget_bytes{{kind=\"limit\"}} {}",
            a.daemon.limit()
        );
        let _ = writeln!(
            out,
            "iet_write_budget_bytes{{kind=\"held\"}} {}",
            a.daemon.used()
        );
    }
    for s in d.registry.sessions() {
        let Some(t) = s.target() else { continue };
        let labels = format!(
            "target=\"{}\",initiator=\"{}\",isid=\"{}\",tsih=\"{}\"",
            label(&t.name),
            label(&s.id.initiator_name),
            crate::target::session::isid_hex(&s.id.isid),
            s.id.tsih
        );
        series(&mut x, &SESSION, &labels, &s.stats.snapshot());
    }
    let dp = &d.dataplane;
    let out = x.family(
        "iet_ebpf_active",
        "gauge",
        "1 when the eBPF data plane is attached, 0 on plain sockets.",
    );
    let _ = writeln!(out, "iet_ebpf_active {}", u8::from(dp.is_active()));
    if let Some(serde_json::Value::Object(kernel)) = crate::dataplane::global_view(dp) {
        for (key, name, help) in EBPF_COUNTERS {
            if let Some(n) = kernel.get(*key).and_then(serde_json::Value::as_u64) {
                let out = x.family(name, "counter", help);
                let _ = writeln!(out, "{name} {n}");
            }
        }
    }
    x.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_declared_once_with_help_and_type() {
        let mut x = Exposition::default();
        let s = StatsSnapshot {
            latency: vec![1; LATENCY_BUCKETS_US.len() + 1],
            ..StatsSnapshot::default()
        };
        series(&mut x, &LUN, "target=\"t\",lun=\"0\"", &s);
        series(&mut x, &LUN, "target=\"t\",lun=\"1\"", &s);
        let text = x.finish();
        assert_eq!(
            text.matches("# TYPE iet_lun_command_latency_seconds histogram")
                .count(),
            1
        );
        assert_eq!(text.matches("# HELP ").count(), 4, "{text}");
        assert!(text.contains("iet_lun_command_latency_seconds_count{target=\"t\",lun=\"1\"} 13"));
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
