//! `cargo xtask bench --baseline IETD`: this tree's release ietd against another ietd binary
//! (built from an earlier commit), same image, clients and cases, in both data-plane modes.
//!
//! Rounds alternate whole daemons (this, baseline, this, ...), one daemon at a time, so both
//! see the same page cache and machine; each figure is the median of its rounds. Writes
//! target/bench/ab.md.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::{CASES, Sample, label, measure, median, start_ietd_binary};
use crate::prereq::{run, step};

/// `--ebpf off` is what a remote initiator sees; `on` adds the same-host redirect.
const MODES: [&str; 2] = ["off", "on"];

pub fn bench(
    root: &Path,
    baseline: &Path,
    image: &Path,
    out_dir: &Path,
    (seconds, rounds): (u32, usize),
) -> anyhow::Result<()> {
    anyhow::ensure!(
        baseline.is_file(),
        "baseline ietd {} does not exist",
        baseline.display()
    );
    let current = root.join("target/release/ietd");
    let mut md = String::new();
    writeln!(
        md,
        "# ietd before/after\n\nCPU: {} ({} cores). Baseline: `{}`. Medians of {rounds} \
         alternating rounds of {seconds} s per case (this tree, baseline, this tree, ...), one \
         daemon at a time on the same 1 GiB cached file.\n",
        super::cpu_model(),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        baseline.display()
    )?;
    for mode in MODES {
        step(&format!("this ietd vs baseline, --ebpf {mode}"));
        let mut ours: Vec<Vec<Sample>> = vec![Vec::new(); CASES.len()];
        let mut theirs: Vec<Vec<Sample>> = vec![Vec::new(); CASES.len()];
        for round in 0..rounds {
            for (bin, into) in [
                (&current, &mut ours),
                (&baseline.to_path_buf(), &mut theirs),
            ] {
                run(&mut Command::new("sync"))?;
                let d = start_ietd_binary(bin, image, mode, out_dir)?;
                for (case, samples) in CASES.iter().zip(into.iter_mut()) {
                    samples.push(measure(root, case, false, seconds)?);
                }
                drop(d);
            }
            println!("round {} of {rounds} done", round + 1);
        }
        writeln!(
            md,
            "## --ebpf {mode}\n\n| case | this tree | baseline | ratio | p99 µs this / baseline |\n\
             | --- | ---: | ---: | ---: | ---: |"
        )?;
        for ((case, a), b) in CASES.iter().zip(&ours).zip(&theirs) {
            let (a, b) = (median(a), median(b));
            let (fa, fb, unit) = if a.mib_per_s > 1000.0 {
                (a.mib_per_s, b.mib_per_s, " MiB/s")
            } else {
                (a.iops, b.iops, "")
            };
            let line = format!(
                "| {} | {fa:.0}{unit} | {fb:.0}{unit} | {:.2} | {} / {} |",
                label(case),
                fa / fb.max(1.0),
                a.p99_us,
                b.p99_us
            );
            println!("{line}");
            writeln!(md, "{line}")?;
        }
        writeln!(md)?;
    }
    std::fs::write(out_dir.join("ab.md"), &md)?;
    println!("\n{md}\nwritten to {}", out_dir.join("ab.md").display());
    Ok(())
}
