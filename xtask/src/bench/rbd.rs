//! `cargo xtask bench --rbd`: ietd on an RBD image against tgt's `bs_rbd` (Debian `tgt-rbd`) on
//! the same one-node cluster and image size, with `rbd bench` at the same queue depth as the ceiling.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::{
    Daemon, IET_PORT, IQN, Sample, TGT_CONTROL_PORT, TGT_IQN, TGT_PORT, iet_load, wait_port,
};
use crate::ceph::cluster::{self, Cluster, POOL};
use crate::prereq::{self, run, step};

/// (name, iet-load pattern, `rbd bench --io-type`, I/O size, queue depth)
const CASES: &[(&str, &str, &str, u32, usize)] = &[
    ("4K random write QD32", "randwrite", "write", 4096, 32),
    ("4K random read QD32", "randread", "read", 4096, 32),
    ("4K random write QD1", "randwrite", "write", 4096, 1),
];
/// Each of the three images: iet-load's default span, and all three fit the OSD's 2 GiB
/// memstore once prefilled (at 75%, below its near-full ratio).
const IMAGE_MIB: u64 = 512;

fn start_ietd(root: &Path, c: &Cluster, dir: &Path) -> anyhow::Result<Daemon> {
    let log = std::fs::File::create(dir.join("ietd-rbd.log"))?;
    let child = Command::new(root.join("target/release/ietd"))
        .args([
            "--portal",
            &format!("127.0.0.1:{IET_PORT}"),
            "--target",
            IQN,
        ])
        .args([
            "--lun",
            &c.lun_spec("bench-iet"),
            "--ebpf",
            "off",
            "--control",
        ])
        .arg(dir.join("ietd-rbd.sock"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting ietd")?;
    let d = Daemon(child);
    wait_port(IET_PORT)?;
    Ok(d)
}

fn start_tgt(c: &Cluster) -> anyhow::Result<Daemon> {
    let child = Command::new("tgtd")
        .args(["-f", "-C", TGT_CONTROL_PORT, "--iscsi"])
        .arg(format!("portal=127.0.0.1:{TGT_PORT}"))
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
    // bs_rbd: `--bsopts conf=PATH;id=NAME` (tgt's usr/bs_rbd.c).
    let bsopts = format!("conf={}", c.conf.display());
    adm(&[
        "--mode",
        "logicalunit",
        "--op",
        "new",
        "--tid",
        "1",
        "--lun",
        "1",
        "--bstype",
        "rbd",
        "-b",
        &format!("{POOL}/bench-tgt"),
        "--bsopts",
        &bsopts,
    ])?;
    adm(&[
        "--mode", "target", "--op", "bind", "--tid", "1", "-I", "ALL",
    ])?;
    Ok(d)
}

/// `rbd bench` on its own image; returns ops/s from its closing `elapsed: .. ops/sec: ..` line.
fn rbd_bench(c: &Cluster, io_type: &str, size: u32, qd: usize, total: u64) -> anyhow::Result<f64> {
    let out = c.rbd(&[
        "bench",
        "--io-type",
        io_type,
        "--io-size",
        &size.to_string(),
        "--io-threads",
        &qd.to_string(),
        "--io-pattern",
        "rand",
        "--io-total",
        &total.to_string(),
        &format!("{POOL}/bench-raw"),
    ])?;
    out.lines()
        .rev()
        .find_map(|l| l.split("ops/sec:").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no ops/sec in rbd bench output: {out}"))
}

pub(super) fn bench(root: &Path, seconds: u32, smoke: bool) -> anyhow::Result<()> {
    step("Ceph and tgt's RBD backing store");
    prereq::apt(cluster::PACKAGES)?;
    prereq::apt(&["tgt-rbd"])?;
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    step("one-node Ceph cluster");
    let c = Cluster::start(&out_dir.join("ceph"), cluster::free_port()?)?;
    println!("cluster up in {:.1?}", c.startup);
    for image in ["bench-iet", "bench-tgt", "bench-raw"] {
        let name = format!("{POOL}/{image}");
        c.rbd(&["create", "--size", &IMAGE_MIB.to_string(), &name])?;
        // Every object exists before reads, for all three alike.
        c.rbd(&[
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "4M",
            "--io-threads",
            "16",
            "--io-pattern",
            "seq",
            "--io-total",
            &format!("{IMAGE_MIB}M"),
            &name,
        ])?;
    }
    let ietd = start_ietd(root, &c, &out_dir)?;
    let tgt = start_tgt(&c)?;
    let mut md = String::from(
        "# iet on RBD vs tgt bs_rbd vs rbd bench\n\n| workload | ietd IOPS | tgt bs_rbd IOPS | rbd bench IOPS | ietd/tgt | ietd/rbd bench |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for &(name, pattern, io_type, size, qd) in CASES {
        let iet: Sample = iet_load(
            root,
            (IET_PORT, IQN, 0),
            (pattern, size),
            (qd, 1),
            f64::from(seconds),
        )?;
        let tgt_s: Sample = iet_load(
            root,
            (TGT_PORT, TGT_IQN, 1),
            (pattern, size),
            (qd, 1),
            f64::from(seconds),
        )?;
        // About as many operations as ietd did in its run, at least 1000.
        #[allow(clippy::cast_sign_loss, reason = "at least 1000.0, so positive")]
        let ops = (iet.iops * f64::from(seconds)).max(1000.0) as u64;
        let raw = rbd_bench(&c, io_type, size, qd, ops * u64::from(size))?;
        let line = format!(
            "| {name} | {:.0} | {:.0} | {raw:.0} | {:.2} | {:.2} |",
            iet.iops,
            tgt_s.iops,
            iet.iops / tgt_s.iops.max(1.0),
            iet.iops / raw.max(1.0)
        );
        println!("{line}");
        let _ = writeln!(md, "{line}");
    }
    drop(tgt);
    drop(ietd);
    c.stop()?;
    if !smoke {
        std::fs::write(out_dir.join("rbd.md"), &md)?;
        println!("wrote {}", out_dir.join("rbd.md").display());
    }
    if md.lines().count() < 2 + CASES.len() {
        bail!("some RBD cases did not run");
    }
    Ok(())
}
