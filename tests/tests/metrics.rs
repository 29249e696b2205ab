//! The Prometheus endpoint, scraped over HTTP after real I/O and parsed
//! with a real exposition-format parser (prometheus-parse): every family
//! has `# HELP` and `# TYPE`, LUNs have latency histograms, and the eBPF
//! data plane's counters are there when it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use iet_tests::initiator::{Conn, LoginOptions};
use iet_tests::inprocess::free_port;
use iet_tests::process::{Ietd, TempDir, require_root};
use prometheus_parse::{LineInfo, Scrape, Value};

const IQN: &str = "iqn.2026-11.io.iet:metrics";

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

#[test]
fn the_scrape_parses_and_every_family_is_described() {
    let dir = TempDir::new("metrics");
    let p = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let m = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let ebpf = require_root("the_scrape_parses_and_every_family_is_described (eBPF counters)");
    let pin = format!("/sys/fs/bpf/iet-metrics-{}", std::process::id());
    let mut ietd = Ietd::start(
        &dir,
        p,
        &[
            "--portal",
            &p.to_string(),
            "--target",
            IQN,
            "--lun",
            "mem:4M",
            "--lun",
            "mem:4M",
            "--metrics",
            &m.to_string(),
            "--ebpf",
            if ebpf { "on" } else { "off" },
            "--pin-dir",
            &pin,
        ],
    );
    let mut c = Conn::connect(p).unwrap();
    c.login(&LoginOptions::normal(IQN)).expect("login");
    for lun in [0, 1] {
        c.clear_unit_attention(lun).unwrap();
        for i in 0..4u32 {
            let w = c.write10(lun, i * 8, &[lun as u8 + 1; 4096], 512).unwrap();
            assert_eq!(w.status, 0);
        }
        let r = c.read10(lun, 0, 8, 512).unwrap();
        assert_eq!(r.status, 0);
    }

    let body = scrape(m);
    // Every line is a HELP, a TYPE or a sample the parser understands.
    for line in body.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored),
            "not exposition format: {line:?}"
        );
    }
    let mut helps = BTreeSet::new();
    let mut types = BTreeMap::new();
    for line in body.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["#", "HELP", name, ..] => assert!(helps.insert(*name), "HELP {name} twice"),
            ["#", "TYPE", name, kind] => {
                assert!(helps.contains(name), "HELP before TYPE for {name}");
                assert!(types.insert(*name, *kind).is_none(), "TYPE {name} twice");
            }
            _ => {}
        }
    }
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert!(!scrape.samples.is_empty());
    for s in &scrape.samples {
        let family = match &s.value {
            Value::Untyped(_) => s
                .metric
                .strip_suffix("_sum")
                .or_else(|| s.metric.strip_suffix("_count"))
                .filter(|f| types.get(f) == Some(&"histogram"))
                .unwrap_or_else(|| panic!("{} has no TYPE", s.metric)),
            _ => s.metric.as_str(),
        };
        assert!(helps.contains(family), "{} has no HELP", s.metric);
        assert!(scrape.docs.contains_key(family), "{family} documented");
    }

    // Latency histograms per LUN, with the I/O just done in them.
    for lun in ["0", "1"] {
        let h = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "iet_lun_command_latency_seconds"
                    && s.labels.get("target") == Some(IQN)
                    && s.labels.get("lun") == Some(lun)
            })
            .unwrap_or_else(|| panic!("LUN {lun} histogram in\n{body}"));
        let Value::Histogram(buckets) = &h.value else {
            panic!("{h:?}")
        };
        assert_eq!(buckets.len(), 13, "12 bounds and +Inf");
        assert!(
            buckets.windows(2).all(|w| w[0].count <= w[1].count),
            "cumulative"
        );
        let total = buckets.last().unwrap();
        assert!(total.less_than.is_infinite());
        assert!(
            total.count >= 5.0,
            "4 writes and a read on LUN {lun}: {buckets:?}"
        );
        let writes = scrape.samples.iter().find(|s| {
            s.metric == "iet_lun_commands_total"
                && s.labels.get("lun") == Some(lun)
                && s.labels.get("kind") == Some("write")
        });
        assert_eq!(
            writes.map(|s| s.value.clone()),
            Some(Value::Counter(4.0)),
            "LUN {lun} writes"
        );
    }
    assert_eq!(
        types.get("iet_target_command_latency_seconds"),
        Some(&"histogram")
    );
    assert_eq!(types.get("iet_session_commands_total"), Some(&"counter"));
    let gauge = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| s.value.clone())
    };
    assert_eq!(gauge("iet_target_sessions"), Some(Value::Gauge(1.0)));
    assert_eq!(gauge("iet_target_luns"), Some(Value::Gauge(2.0)));
    if ebpf {
        assert_eq!(gauge("iet_ebpf_active"), Some(Value::Gauge(1.0)), "{body}");
        match gauge("iet_ebpf_accepted_total") {
            Some(Value::Counter(n)) => assert!(n >= 1.0, "our connection was seen"),
            other => panic!("eBPF accepted counter: {other:?}\n{body}"),
        }
        for name in [
            "iet_ebpf_closed_total",
            "iet_ebpf_retransmits_total",
            "iet_ebpf_events_dropped_total",
        ] {
            assert!(
                matches!(gauge(name), Some(Value::Counter(_))),
                "{name}\n{body}"
            );
        }
    }
    let _ = c.logout();
    assert!(ietd.stop(), "{}", ietd.log());
}
