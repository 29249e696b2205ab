//! `cargo xtask bench [--smoke]`: ietd against tgt on the same machine,
//! same backing-file size and page-cache state, alternating runs; the
//! loopback TCP ceiling (iperf3) in the same run; ietd's eBPF variants
//! side by side. Writes target/bench/results.{md,json} and an SVG plot.
//! `--smoke` runs every workload for about a second (CI), no thresholds.
//! `--rbd` runs only the RBD section (bench/rbd.rs) on a one-node Ceph cluster;
//! `--container` only the container-to-container redirect section (bench/container.rs);
//! `--baseline IETD` only compares this tree's ietd with another build (bench/ab.rs).

#![allow(
    clippy::cast_precision_loss,
    reason = "rates and plot coordinates for humans"
)]

use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::prereq::{self, run, step};

mod ab;
mod container;
mod rbd;

const IQN: &str = "iqn.2026-11.io.iet:bench";
const TGT_IQN: &str = "iqn.2026-11.io.tgt:bench";
const IET_PORT: u16 = 3271;
const TGT_PORT: u16 = 3272;
const TGT_CONTROL_PORT: &str = "3273";
const IPERF_PORT: &str = "3274";
const LUN_BYTES: u64 = 1 << 30;

#[derive(Clone, Copy)]
enum Tool {
    /// libiscsi's iscsi-perf: (blocks per request, random).
    IscsiPerf(u32, bool),
    /// our iet-load: (pattern, io size).
    Load(&'static str, u32),
}

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    tool: Tool,
    /// Outstanding commands, over all sessions.
    qd: usize,
    sessions: usize,
}

const CASES: &[Case] = &[
    Case {
        name: "4K random read (iscsi-perf)",
        tool: Tool::IscsiPerf(8, true),
        qd: 32,
        sessions: 1,
    },
    Case {
        name: "128K sequential read (iscsi-perf)",
        tool: Tool::IscsiPerf(256, false),
        qd: 32,
        sessions: 1,
    },
    Case {
        name: "4K random write",
        tool: Tool::Load("randwrite", 4096),
        qd: 32,
        sessions: 1,
    },
    Case {
        name: "4K random write",
        tool: Tool::Load("randwrite", 4096),
        qd: 1,
        sessions: 1,
    },
    Case {
        name: "4K 70/30 mix",
        tool: Tool::Load("mix70", 4096),
        qd: 32,
        sessions: 1,
    },
    Case {
        name: "4K 70/30 mix",
        tool: Tool::Load("mix70", 4096),
        qd: 1,
        sessions: 1,
    },
    Case {
        name: "4K 70/30 mix, 4 sessions",
        tool: Tool::Load("mix70", 4096),
        qd: 32,
        sessions: 4,
    },
    Case {
        name: "1M sequential write",
        tool: Tool::Load("seqwrite", 1 << 20),
        qd: 32,
        sessions: 1,
    },
    Case {
        name: "1M sequential write",
        tool: Tool::Load("seqwrite", 1 << 20),
        qd: 1,
        sessions: 1,
    },
    Case {
        name: "4K random read",
        tool: Tool::Load("randread", 4096),
        qd: 1,
        sessions: 1,
    },
];

const EBPF_CASES: &[Case] = &[
    Case {
        name: "4K random read",
        tool: Tool::Load("randread", 4096),
        qd: 1,
        sessions: 1,
    },
    Case {
        name: "4K random read",
        tool: Tool::Load("randread", 4096),
        qd: 32,
        sessions: 1,
    },
    Case {
        name: "128K sequential read",
        tool: Tool::Load("seqread", 128 * 1024),
        qd: 32,
        sessions: 1,
    },
];

#[derive(Clone, Copy, Default, serde::Serialize)]
struct Sample {
    iops: f64,
    mib_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
}

impl Sample {
    /// p50/p99/p99.9 in µs, or n/a for a client that reports none.
    fn latencies(&self) -> String {
        if self.p99_us == 0 {
            "n/a".to_owned()
        } else {
            format!("{}/{}/{}", self.p50_us, self.p99_us, self.p999_us)
        }
    }
}

struct Daemon(Child);

#[derive(Clone, Copy, Default, serde::Serialize)]
struct Usage {
    cpu_s_per_million_reads: f64,
    rss_idle_mib: u64,
    rss_sessions_mib: u64,
    sessions: usize,
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
        .max(1)
        .cast_unsigned();
    (ticks(11) + ticks(12)) as f64 / hz as f64
}

fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

fn resource_usage(root: &Path, ietd: &Daemon, seconds: u32) -> anyhow::Result<Usage> {
    let pid = ietd.0.id();
    let before = cpu_seconds(pid);
    let out = Command::new(root.join("target/release/iet-load"))
        .args([
            "--portal",
            &format!("127.0.0.1:{IET_PORT}"),
            "--target",
            IQN,
            "--pattern",
            "randread",
            "--qd",
            "32",
        ])
        .args(["--seconds", &seconds.to_string()])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iet-load JSON")?;
    let ops = v["ops"].as_f64().unwrap_or(1.0).max(1.0);
    let cpu = cpu_seconds(pid) - before;
    let rss_idle_mib = rss_mib(pid);
    let sessions = 1000;
    let mut holder = Command::new(root.join("target/release/iet-load"))
        .args([
            "--portal",
            &format!("127.0.0.1:{IET_PORT}"),
            "--target",
            IQN,
            "--idle-sessions",
            &sessions.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    // iet-load prints a line once every session is logged in.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().context("stdout")?),
        &mut line,
    )?;
    let rss_sessions_mib = rss_mib(pid);
    let _ = holder.kill();
    let _ = holder.wait();
    Ok(Usage {
        cpu_s_per_million_reads: cpu / ops * 1e6,
        rss_idle_mib,
        rss_sessions_mib,
        sessions,
    })
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn prefill(path: &Path) -> anyhow::Result<()> {
    // Same size and fully written for both targets, then both are read
    // once so the page cache holds them alike.
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let chunk = vec![0x42u8; 1 << 20];
    let mut w = std::io::BufWriter::new(f);
    for _ in 0..(LUN_BYTES >> 20) {
        std::io::Write::write_all(&mut w, &chunk)?;
    }
    std::io::Write::flush(&mut w)?;
    Ok(())
}

fn start_ietd(root: &Path, image: &Path, ebpf: &str, dir: &Path) -> anyhow::Result<Daemon> {
    start_ietd_binary(&root.join("target/release/ietd"), image, ebpf, dir)
}

/// `ietd` (this tree's or another build's) on the bench image and port.
fn start_ietd_binary(ietd: &Path, image: &Path, ebpf: &str, dir: &Path) -> anyhow::Result<Daemon> {
    let log = std::fs::File::create(dir.join(format!("ietd-{ebpf}.log")))?;
    let child = Command::new(ietd)
        .args([
            "--portal",
            &format!("127.0.0.1:{IET_PORT}"),
            "--target",
            IQN,
            "--lun",
        ])
        .arg(image)
        .args(["--ebpf", ebpf, "--control"])
        .arg(dir.join("ietd.sock"))
        .args(["--pin-dir", "/sys/fs/bpf/iet-bench"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting ietd")?;
    let d = Daemon(child);
    wait_port(IET_PORT)?;
    Ok(d)
}

fn start_tgt(image: &Path) -> anyhow::Result<Daemon> {
    let child = Command::new("tgtd")
        .args([
            "-f",
            "-C",
            TGT_CONTROL_PORT,
            "--iscsi",
            &format!("portal=127.0.0.1:{TGT_PORT}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting tgtd (Debian package tgt)")?;
    let d = Daemon(child);
    wait_port(TGT_PORT)?;
    let adm = |args: &[&str]| {
        run(Command::new("tgtadm")
            .args(["-C", TGT_CONTROL_PORT, "--lld", "iscsi"])
            .args(args))
    };
    adm(&[
        "--mode", "target", "--op", "new", "--tid", "1", "-T", TGT_IQN,
    ])?;
    adm(&[
        "--mode",
        "logicalunit",
        "--op",
        "new",
        "--tid",
        "1",
        "--lun",
        "1",
        "-b",
        image.to_str().unwrap_or(""),
    ])?;
    adm(&[
        "--mode", "target", "--op", "bind", "--tid", "1", "-I", "ALL",
    ])?;
    Ok(d)
}

fn iscsi_perf(
    url: &str,
    blocks: u32,
    random: bool,
    qd: usize,
    seconds: u32,
) -> anyhow::Result<Sample> {
    let mut cmd = Command::new("iscsi-perf");
    cmd.args([
        "-m",
        &qd.to_string(),
        "-b",
        &blocks.to_string(),
        "-t",
        &seconds.to_string(),
    ]);
    if random {
        cmd.arg("-r");
    }
    let out = cmd
        .arg(url)
        .output()
        .context("iscsi-perf (Debian package libiscsi-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "... iops average 56098 (219 MB/s)" is the last report.
    let avg = text
        .rsplit("iops average ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no average in iscsi-perf output: {text}"))?;
    Ok(Sample {
        iops: avg,
        mib_per_s: avg * f64::from(blocks) * 512.0 / f64::from(1u32 << 20),
        ..Sample::default()
    })
}

fn iet_load(
    root: &Path,
    (port, iqn, lun): (u16, &str, u64),
    (pattern, size): (&str, u32),
    (qd, sessions): (usize, usize),
    seconds: f64,
) -> anyhow::Result<Sample> {
    let out = Command::new(root.join("target/release/iet-load"))
        .args([
            "--portal",
            &format!("127.0.0.1:{port}"),
            "--target",
            iqn,
            "--lun",
            &lun.to_string(),
        ])
        .args([
            "--pattern",
            pattern,
            "--io-size",
            &size.to_string(),
            "--qd",
            &(qd / sessions.max(1)).to_string(),
            "--sessions",
            &sessions.to_string(),
        ])
        .args(["--seconds", &seconds.to_string()])
        .output()
        .context("running iet-load")?;
    if !out.status.success() {
        bail!("iet-load: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iet-load JSON")?;
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let u = |k: &str| v[k].as_u64().unwrap_or(0);
    Ok(Sample {
        iops: f("iops"),
        mib_per_s: f("mib_per_s"),
        p50_us: u("p50_us"),
        p99_us: u("p99_us"),
        p999_us: u("p999_us"),
    })
}

fn measure(root: &Path, case: &Case, on_tgt: bool, seconds: u32) -> anyhow::Result<Sample> {
    let (port, iqn, lun) = if on_tgt {
        (TGT_PORT, TGT_IQN, 1)
    } else {
        (IET_PORT, IQN, 0)
    };
    match case.tool {
        Tool::IscsiPerf(blocks, random) => iscsi_perf(
            &format!("iscsi://127.0.0.1:{port}/{iqn}/{lun}"),
            blocks,
            random,
            case.qd,
            seconds,
        ),
        Tool::Load(pattern, size) => iet_load(
            root,
            (port, iqn, lun),
            (pattern, size),
            (case.qd, case.sessions),
            f64::from(seconds),
        ),
    }
}

/// Each figure's median over the runs (a run's p99 is not tied to its IOPS).
fn median(v: &[Sample]) -> Sample {
    fn mid<T: Copy + Default>(
        v: &[Sample],
        f: impl Fn(&Sample) -> T,
        cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
    ) -> T {
        let mut xs: Vec<T> = v.iter().map(f).collect();
        xs.sort_by(cmp);
        xs.get(xs.len() / 2).copied().unwrap_or_default()
    }
    Sample {
        iops: mid(v, |s| s.iops, f64::total_cmp),
        mib_per_s: mid(v, |s| s.mib_per_s, f64::total_cmp),
        p50_us: mid(v, |s| s.p50_us, Ord::cmp),
        p99_us: mid(v, |s| s.p99_us, Ord::cmp),
        p999_us: mid(v, |s| s.p999_us, Ord::cmp),
    }
}

/// Loopback TCP, one iperf3 stream: with its default 128 KiB writes (the
/// ceiling the targets are stated against, one write per 128 KiB as a
/// 128 KiB Data-In) and, for scale, with 1 MiB writes (fewer syscalls per
/// byte; about 2.5 times faster on these machines).
#[derive(Clone, Copy, serde::Serialize)]
struct Loopback {
    mib_per_s: f64,
    mib_per_s_1m_writes: f64,
}

fn loopback_ceiling(seconds: u32) -> anyhow::Result<Loopback> {
    Ok(Loopback {
        mib_per_s: iperf3(seconds, "128K")?,
        mib_per_s_1m_writes: iperf3(seconds, "1M")?,
    })
}

fn iperf3(seconds: u32, write_len: &str) -> anyhow::Result<f64> {
    let server = Command::new("iperf3")
        .args(["-s", "-1", "-p", IPERF_PORT])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("iperf3 (Debian package iperf3)")?;
    let _server = Daemon(server);
    // (A probe connection would count as iperf3 -1's one client.)
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("iperf3")
        .args([
            "-c",
            "127.0.0.1",
            "-p",
            IPERF_PORT,
            "-J",
            "-l",
            write_len,
            "-t",
            &seconds.to_string(),
        ])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 result")?;
    Ok(bps / 8.0 / f64::from(1u32 << 20))
}

/// The CPU's model name, as /proc/cpuinfo gives it (benchmarks differ a lot between models).
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default()
}

fn label(c: &Case) -> String {
    format!("{} QD{}", c.name, c.qd)
}

pub fn bench(args: &[String]) -> anyhow::Result<()> {
    let smoke = args.iter().any(|a| a == "--smoke");
    let started = Instant::now();
    // The variants compare ietd with itself: shorter runs keep the whole
    // bench (fresh build included) under ten minutes.
    let (seconds, variant_seconds, rounds) = if smoke { (1, 1, 1) } else { (3, 2, 3) };
    if args.iter().any(|a| a == "--container") {
        // Builds what it needs itself: Docker and no test tools.
        return container::bench(&crate::root(), smoke);
    }
    prereq::for_test()?;
    let root = crate::root();
    step("building release binaries (ietd, iet-load)");
    run(Command::new(prereq::cargo()).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "iet-user",
        "-p",
        "iet-tests",
        "--bins",
    ]))?;
    if args.iter().any(|a| a == "--rbd") {
        return rbd::bench(&root, seconds, smoke);
    }
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let iet_img = out_dir.join("iet.img");
    let tgt_img = out_dir.join("tgt.img");
    step("preparing two 1 GiB backing files");
    prefill(&iet_img)?;
    prefill(&tgt_img)?;
    // Written back, then read once: both start fully cached and clean.
    run(&mut Command::new("sync"))?;
    for img in [&iet_img, &tgt_img] {
        std::io::copy(&mut std::fs::File::open(img)?, &mut std::io::sink())?;
    }

    if let Some(i) = args.iter().position(|a| a == "--baseline") {
        let baseline = args.get(i + 1).context("--baseline needs an ietd binary")?;
        return ab::bench(
            &root,
            Path::new(baseline),
            &iet_img,
            &out_dir,
            (seconds, rounds),
        );
    }

    step("loopback TCP ceiling (iperf3)");
    let loopback = loopback_ceiling(if smoke { 1 } else { 3 })?;
    let ceiling = loopback.mib_per_s;
    println!(
        "loopback: {ceiling:.0} MiB/s (128 KiB writes), {:.0} MiB/s (1 MiB writes)",
        loopback.mib_per_s_1m_writes
    );

    step("ietd vs tgt, alternating runs");
    let ietd = start_ietd(&root, &iet_img, "off", &out_dir)?;
    let tgt = start_tgt(&tgt_img)?;
    let mut rows = Vec::new();
    for case in CASES {
        // Earlier writes are flushed first: writeback must not tax a run.
        run(&mut Command::new("sync"))?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            a.push(measure(&root, case, false, seconds)?);
            b.push(measure(&root, case, true, seconds)?);
        }
        let (a, b) = (median(&a), median(&b));
        println!(
            "{:40} ietd {:>9.0} IOPS  tgt {:>9.0} IOPS  ratio {:.2}",
            label(case),
            a.iops,
            b.iops,
            a.iops / b.iops.max(1.0)
        );
        rows.push((label(case), a, b));
    }
    drop(tgt);
    let usage = resource_usage(&root, &ietd, seconds)?;
    println!(
        "ietd: {:.1} CPU seconds per million 4K reads; RSS {} MiB idle, {} MiB with {} idle sessions",
        usage.cpu_s_per_million_reads, usage.rss_idle_mib, usage.rss_sessions_mib, usage.sessions
    );
    drop(ietd);

    step("ietd's eBPF variants");
    let mut ebpf_rows = Vec::new();
    if prereq::is_root() {
        let variants: [Variant; 4] = [
            ("--ebpf off", "off", None),
            ("sock_ops", "on", Some(("false", "false"))),
            ("sock_ops + accounting", "on", Some(("true", "false"))),
            ("sock_ops + redirect (default)", "on", None),
        ];
        for (name, mode, flags) in variants {
            run(&mut Command::new("sync"))?;
            let d = start_ietd(&root, &iet_img, mode, &out_dir)?;
            if let Some((acct, redir)) = flags {
                run(Command::new(root.join("target/release/ietadm"))
                    .arg("--control")
                    .arg(out_dir.join("ietd.sock"))
                    .args([
                        "portal",
                        "set",
                        &format!("127.0.0.1:{IET_PORT}"),
                        "--accounting",
                        acct,
                        "--redirect",
                        redir,
                    ]))?;
            }
            for case in EBPF_CASES {
                let runs = (0..rounds)
                    .map(|_| measure(&root, case, false, variant_seconds))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let s = median(&runs);
                println!(
                    "{name:24} {:32} {:>9.0} IOPS p99 {} µs",
                    label(case),
                    s.iops,
                    s.p99_us
                );
                ebpf_rows.push((name.to_owned(), label(case), s));
            }
            drop(d);
        }
    } else {
        println!("not root: eBPF variants skipped");
    }
    write_reports(&out_dir, loopback, &rows, &ebpf_rows, usage, smoke)?;
    println!(
        "\nresults in {} ({} s)",
        out_dir.display(),
        started.elapsed().as_secs()
    );
    Ok(())
}

type Row = (String, Sample, Sample);
/// A name, the --ebpf mode, and the (accounting, redirect) switches.
type Variant = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
);

fn write_reports(
    dir: &Path,
    loopback: Loopback,
    rows: &[Row],
    ebpf: &[(String, String, Sample)],
    usage: Usage,
    smoke: bool,
) -> anyhow::Result<()> {
    let ceiling = loopback.mib_per_s;
    let mut md = String::new();
    let cpu = cpu_model();
    let _ = writeln!(
        md,
        "# iet vs tgt{}\n",
        if smoke {
            " (smoke run: not a measurement)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "Machine: {} cores ({cpu}), kernel {}. Loopback TCP ceiling (iperf3, one stream, 128 KiB writes): {ceiling:.0} MiB/s ({:.0} MiB/s with 1 MiB writes).\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        loopback.mib_per_s_1m_writes
    );
    let _ = writeln!(
        md,
        "| workload | ietd IOPS | tgt IOPS | ietd/tgt | ietd MiB/s | % of loopback | ietd p50/p99/p99.9 µs | tgt p50/p99/p99.9 µs |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |");
    for (name, a, b) in rows {
        let _ = writeln!(
            md,
            "| {name} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0}% | {} | {} |",
            a.iops,
            b.iops,
            a.iops / b.iops.max(1.0),
            a.mib_per_s,
            100.0 * a.mib_per_s / ceiling.max(1.0),
            a.latencies(),
            b.latencies(),
        );
    }
    let _ = writeln!(
        md,
        "\nietd used {:.1} CPU seconds per million 4 KiB reads (QD32); RSS {} MiB idle and {} MiB with {} idle sessions.",
        usage.cpu_s_per_million_reads, usage.rss_idle_mib, usage.rss_sessions_mib, usage.sessions
    );
    md.push_str(&targets(rows, ceiling, usage));
    if !ebpf.is_empty() {
        let _ = writeln!(
            md,
            "\n## ietd's eBPF variants\n\n| variant | workload | IOPS | MiB/s | p50/p99 µs |\n| --- | --- | ---: | ---: | --- |"
        );
        for (v, w, s) in ebpf {
            let _ = writeln!(
                md,
                "| {v} | {w} | {:.0} | {:.0} | {}/{} |",
                s.iops, s.mib_per_s, s.p50_us, s.p99_us
            );
        }
    }
    std::fs::write(dir.join("results.md"), &md)?;
    let json = serde_json::json!({
        "loopback": loopback,
        "smoke": smoke,
        "usage": usage,
        "rows": rows.iter().map(|(n, a, b)| serde_json::json!({"workload": n, "ietd": a, "tgt": b})).collect::<Vec<_>>(),
        "ebpf": ebpf.iter().map(|(v, w, s)| serde_json::json!({"variant": v, "workload": w, "result": s})).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(dir.join("results.svg"), svg(rows))?;
    print!("\n{md}");
    Ok(())
}

/// Issue 7's targets, each judged against this run.
fn targets(rows: &[Row], ceiling: f64, usage: Usage) -> String {
    let find = |label: &str| rows.iter().find(|(n, _, _)| n == label);
    let mut out =
        String::from("\n## Targets\n\n| target | this run | met |\n| --- | --- | --- |\n");
    let mut line = |what: &str, got: String, met: bool| {
        let _ = writeln!(
            out,
            "| {what} | {got} | {} |",
            if met { "yes" } else { "**no**" }
        );
    };
    for (label, what) in [
        (
            "4K random read (iscsi-perf) QD32",
            "4K random read QD32 (iscsi-perf) ≥ 1.5× tgt",
        ),
        ("4K random write QD32", "4K random write QD32 ≥ 1.5× tgt"),
        ("4K 70/30 mix QD32", "4K 70/30 mix QD32 ≥ 1.5× tgt"),
    ] {
        if let Some((_, a, b)) = find(label) {
            let ratio = a.iops / b.iops.max(1.0);
            line(what, format!("{ratio:.2}×"), ratio >= 1.5);
        }
    }
    if let Some((_, a, _)) = find("128K sequential read (iscsi-perf) QD32") {
        let share = 100.0 * a.mib_per_s / ceiling.max(1.0);
        line(
            "128K sequential read QD32 ≥ 90% of loopback",
            format!("{share:.0}%"),
            share >= 90.0,
        );
    }
    for (name, a, b) in rows.iter().filter(|(n, _, _)| n.ends_with(" QD1")) {
        line(
            &format!("{name}: p99 ≤ tgt's"),
            format!("{} vs {} µs", a.p99_us, b.p99_us),
            a.p99_us <= b.p99_us,
        );
    }
    line(
        &format!("RSS with {} idle sessions < 64 MiB", usage.sessions),
        format!("{} MiB", usage.rss_sessions_mib),
        usage.rss_sessions_mib < 64,
    );
    out
}

/// Two panels per workload, ietd (blue) over tgt (grey): IOPS on a linear
/// scale, and latency on a log scale (p99 light, p50 dark inside it).
fn svg(rows: &[Row]) -> String {
    const BAR: f64 = 14.0;
    const GAP: f64 = 12.0;
    const LABEL_W: f64 = 300.0;
    const PANEL_W: f64 = 380.0;
    const TOP: f64 = 50.0;
    let max_iops = rows
        .iter()
        .map(|(_, a, b)| a.iops.max(b.iops))
        .fold(1.0, f64::max);
    let max_us = rows
        .iter()
        .map(|(_, a, b)| a.p99_us.max(b.p99_us))
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    // log10 from 1 µs up to the largest p99.
    let lat_x = |us: u64| PANEL_W * (us.max(1) as f64).log10() / max_us.log10();
    let iops_x = |v: f64| PANEL_W * v / max_iops;
    let lat_left = LABEL_W + PANEL_W + 90.0;
    let w = lat_left + PANEL_W + 90.0;
    let h = rows.len() as f64 * (2.0 * BAR + GAP) + TOP + 10.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"18\" font-weight=\"bold\">ietd (blue) vs tgt (grey)</text>\n<text x=\"{LABEL_W}\" y=\"40\">IOPS</text>\n<text x=\"{lat_left}\" y=\"40\">latency, µs, log scale (p50 dark, p99 light; none from iscsi-perf)</text>"
    );
    for (i, (name, a, b)) in rows.iter().enumerate() {
        let y = TOP + i as f64 * (2.0 * BAR + GAP);
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{}\">{}</text>",
            y + BAR + 4.0,
            name.replace('&', "&amp;")
        );
        for (k, (sample, dark, light)) in [(a, "#2a6fdb", "#9dbcf0"), (b, "#666", "#c8c8c8")]
            .into_iter()
            .enumerate()
        {
            let y = y + k as f64 * BAR;
            let _ = writeln!(
                s,
                "<rect x=\"{LABEL_W}\" y=\"{y}\" width=\"{:.1}\" height=\"{BAR}\" fill=\"{dark}\"/>\n<text x=\"{:.1}\" y=\"{}\">{:.0}</text>",
                iops_x(sample.iops),
                LABEL_W + iops_x(sample.iops) + 4.0,
                y + BAR - 3.0,
                sample.iops
            );
            if sample.p99_us > 0 {
                let _ = writeln!(
                    s,
                    "<rect x=\"{lat_left}\" y=\"{y}\" width=\"{:.1}\" height=\"{BAR}\" fill=\"{light}\"/>\n<rect x=\"{lat_left}\" y=\"{y}\" width=\"{:.1}\" height=\"{BAR}\" fill=\"{dark}\"/>\n<text x=\"{:.1}\" y=\"{}\">{}/{}</text>",
                    lat_x(sample.p99_us),
                    lat_x(sample.p50_us),
                    lat_left + lat_x(sample.p99_us) + 4.0,
                    y + BAR - 3.0,
                    sample.p50_us,
                    sample.p99_us
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}
