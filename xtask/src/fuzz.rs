//! `cargo xtask fuzz [--smoke | --minutes N] [--target NAME]...`: builds every
//! cargo-fuzz target and runs each from its committed seeds (fuzz/seeds/).
//!
//! Debian's rustc builds them (RUSTC_BOOTSTRAP for the -Z flags cargo-fuzz
//! passes). It ships no ASAN runtime, so the sanitizer is off; the build has
//! debug assertions and overflow checks on (`-a`), so an arithmetic overflow,
//! an out-of-bounds index or a failed `debug_assert!` is a crash like a
//! panic. Crash inputs committed under fuzz/regressions/<target>/ are
//! replayed first on every run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::prereq::{self, run, step};

/// Every target with the longest input libFuzzer may build for it.
pub const TARGETS: &[(&str, usize)] = &[
    ("pdu_decode", 16384),
    ("text_pairs", 4096),
    ("login_sequence", 16384),
    ("scsi_dispatch", 8192),
    ("ffp_connection", 16384),
    ("cmdsn_queue", 4096),
    ("config_readers", 8192),
    ("control_request", 4096),
    ("scsi_command", 8192),
];

/// Seconds per target in the CI smoke run (8 targets: about two minutes).
pub const SMOKE_SECONDS: u32 = 15;

#[derive(Debug, Clone)]
pub struct FuzzOptions {
    /// Seconds per target.
    pub seconds: u32,
    /// Start from the seeds only, in a scratch corpus (CI); otherwise the
    /// corpus in fuzz/corpus/<target> grows from run to run.
    pub smoke: bool,
    /// Targets to run; empty: all.
    pub targets: Vec<String>,
}

/// What one target's run reported.
#[derive(Debug, Default)]
struct RunStats {
    execs: u64,
    cov: u64,
    features: u64,
    corpus: u64,
}

/// The CI pass: every target for [`SMOKE_SECONDS`] from its seeds.
pub fn smoke() -> anyhow::Result<()> {
    fuzz(&FuzzOptions {
        seconds: SMOKE_SECONDS,
        smoke: true,
        targets: Vec::new(),
    })
}

fn fuzz_dir() -> PathBuf {
    crate::root().join("fuzz")
}

/// Installs cargo-fuzz when it is missing and builds every target.
pub fn build() -> anyhow::Result<()> {
    prereq::for_build()?;
    let have = Command::new(prereq::cargo())
        .args(["fuzz", "--version"])
        .output();
    if !have.is_ok_and(|o| o.status.success()) {
        step("installing cargo-fuzz");
        run(Command::new(prereq::cargo()).args(["install", "cargo-fuzz", "--locked"]))?;
    }
    step("building the fuzz targets (release, debug assertions, overflow checks, no sanitizer)");
    run(Command::new(prereq::cargo())
        .current_dir(fuzz_dir())
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        // The targets link the library only; the eBPF object is not needed.
        .env("IET_SKIP_EBPF", "1")
        .args(["fuzz", "build", "-O", "-a", "-s", "none"])
        .args(["--codegen-units", "16"]))
}

pub fn fuzz(opts: &FuzzOptions) -> anyhow::Result<()> {
    let selected: Vec<(&str, usize)> = TARGETS
        .iter()
        .copied()
        .filter(|(name, _)| opts.targets.is_empty() || opts.targets.iter().any(|t| t == name))
        .collect();
    if selected.is_empty() {
        bail!(
            "no such target {:?}; targets: {}",
            opts.targets,
            TARGETS.iter().map(|t| t.0).collect::<Vec<_>>().join(" ")
        );
    }
    let started = Instant::now();
    build()?;
    let dir = fuzz_dir();
    let bin_dir = dir.join("target/x86_64-unknown-linux-gnu/release");
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for &(name, max_len) in &selected {
        let bin = bin_dir.join(name);
        replay_regressions(&bin, &dir.join("regressions").join(name))
            .with_context(|| format!("{name}: a committed crash input fails again"))?;
        step(&format!("fuzzing {name} for {} s", opts.seconds));
        match run_target(&dir, &bin, name, max_len, opts) {
            Ok(stats) => rows.push((name, stats)),
            Err(e) => {
                eprintln!("{name}: {e:#}");
                failures.push(name);
            }
        }
    }
    println!("\n| target | execs | exec/s | cov | ft | corpus |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, s) in &rows {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            s.execs,
            s.execs / u64::from(opts.seconds.max(1)),
            s.cov,
            s.features,
            s.corpus
        );
    }
    println!(
        "fuzzing took {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        bail!(
            "fuzz target(s) crashed: {} (inputs in fuzz/artifacts/<target>/; fix, then commit \
             each as fuzz/regressions/<target>/<name>)",
            failures.join(", ")
        );
    }
    Ok(())
}

/// Runs each committed crash input once: it must pass now.
fn replay_regressions(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut inputs: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    inputs.retain(|p| p.is_file());
    if inputs.is_empty() {
        return Ok(());
    }
    inputs.sort();
    step(&format!(
        "replaying {} regression input(s) of {}",
        inputs.len(),
        dir.display()
    ));
    run(Command::new(bin).args(&inputs))
}

fn run_target(
    dir: &Path,
    bin: &Path,
    name: &str,
    max_len: usize,
    opts: &FuzzOptions,
) -> anyhow::Result<RunStats> {
    let corpus = if opts.smoke {
        // A scratch corpus: CI starts from the seeds every time.
        let c = dir.join("target/smoke-corpus").join(name);
        let _ = std::fs::remove_dir_all(&c);
        c
    } else {
        dir.join("corpus").join(name)
    };
    let artifacts = dir.join("artifacts").join(name);
    let logs = dir.join("target/fuzz-logs");
    for d in [&corpus, &artifacts, &logs] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log_path = logs.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)?;
    // New inputs go into the first directory; the seeds are read only.
    let status = Command::new(bin)
        .arg(&corpus)
        .arg(dir.join("seeds").join(name))
        .arg(format!("-max_total_time={}", opts.seconds))
        .arg(format!("-max_len={max_len}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let stats = parse_stats(&text);
    println!(
        "{name}: {} runs, cov {}, ft {}, corpus {} (log: {})",
        stats.execs,
        stats.cov,
        stats.features,
        stats.corpus,
        log_path.display()
    );
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
        bail!("libFuzzer exited with {status}");
    }
    Ok(stats)
}

/// Reads libFuzzer's status lines (`#1234 DONE cov: 50 ft: 80 corp: 9/300b`)
/// and final stats (`stat::number_of_executed_units: 1234`).
fn parse_stats(log: &str) -> RunStats {
    let mut s = RunStats::default();
    let after = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        rest.trim()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    for line in log.lines() {
        if line.starts_with('#') {
            s.cov = after(line, "cov:").unwrap_or(s.cov);
            s.features = after(line, "ft:").unwrap_or(s.features);
            s.corpus = after(line, "corp:").unwrap_or(s.corpus);
        }
        if let Some(n) = after(line, "stat::number_of_executed_units:") {
            s.execs = n;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::parse_stats;

    #[test]
    fn reads_libfuzzer_status_and_final_stats() {
        let log = "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #9000\tDONE   cov: 321 ft: 1200 corp: 77/4096b lim: 4096 exec/s: 900 rss: 60Mb\n\
                   stat::number_of_executed_units: 9000\n";
        let s = parse_stats(log);
        assert_eq!(
            (s.execs, s.cov, s.features, s.corpus),
            (9000, 321, 1200, 77)
        );
    }
}
