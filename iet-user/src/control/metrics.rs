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
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

fn series(out: &mut String, name: &str, labels: &str, s: &StatsSnapshot) {
    let _ = writeln!(
        out,
        "{name}_commands_total{{{labels},kind=\"read\"}} {}",
        s.reads
    );
    let _ = writeln!(
        out,
        "{name}_commands_total{{{labels},kind=\"write\"}} {}",
        s.writes
    );
    let _ = writeln!(
        out,
        "{name}_commands_total{{{labels},kind=\"other\"}} {}",
        s.others
    );
    let _ = writeln!(
        out,
        "{name}_bytes_total{{{labels},direction=\"read\"}} {}",
        s.read_bytes
    );
    let _ = writeln!(
        out,
        "{name}_bytes_total{{{labels},direction=\"write\"}} {}",
        s.write_bytes
    );
    let _ = writeln!(out, "{name}_command_errors_total{{{labels}}} {}", s.errors);
    let mut cumulative = 0;
    for (i, count) in s.latency.iter().enumerate() {
        cumulative += count;
        let le = LATENCY_BUCKETS_US
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |us| seconds(*us));
        let _ = writeln!(
            out,
            "{name}_command_latency_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_command_latency_seconds_sum{{{labels}}} {}",
        seconds(s.latency_sum_us)
    );
    let _ = writeln!(
        out,
        "{name}_command_latency_seconds_count{{{labels}}} {cumulative}"
    );
}

pub fn render(d: &Daemon) -> String {
    let mut out = String::new();
    out.push_str("# TYPE iet_target_commands_total counter\n# TYPE iet_target_command_latency_seconds histogram\n");
    for t in d.registry.targets() {
        let labels = format!("target=\"{}\"", label(&t.name));
        series(&mut out, "iet_target", &labels, &t.stats.snapshot());
        let _ = writeln!(
            out,
            "iet_target_sessions{{{labels}}} {}",
            d.sessions_of(&t).len()
        );
        let _ = writeln!(
            out,
            "iet_target_luns{{{labels}}} {}",
            t.lun_specs.lock().expect("specs lock").len()
        );
    }
    out.push_str("# TYPE iet_session_commands_total counter\n# TYPE iet_session_command_latency_seconds histogram\n");
    for s in d.registry.sessions() {
        let Some(t) = s.target() else { continue };
        let labels = format!(
            "target=\"{}\",initiator=\"{}\",isid=\"{}\",tsih=\"{}\"",
            label(&t.name),
            label(&s.id.initiator_name),
            crate::target::session::isid_hex(&s.id.isid),
            s.id.tsih
        );
        series(&mut out, "iet_session", &labels, &s.stats.snapshot());
    }
    let dp = &d.dataplane;
    let active = dp.is_active();
    let _ = writeln!(
        out,
        "# TYPE iet_ebpf_active gauge\niet_ebpf_active {}",
        u8::from(active)
    );
    if let Some(serde_json::Value::Object(kernel)) = crate::dataplane::global_view(dp) {
        for (k, v) in kernel {
            if let Some(n) = v.as_u64() {
                let _ = writeln!(out, "iet_ebpf_{k} {n}");
            }
        }
    }
    out
}
