//! `cargo xtask bench`: the workspace's Criterion benchmarks.

use std::process::Command;

use crate::prereq::{self, run, step};

pub fn bench(args: &[String]) -> anyhow::Result<()> {
    prereq::for_test()?;
    step("cargo bench");
    run(Command::new(prereq::cargo())
        .current_dir(crate::root())
        .args(["bench", "--workspace"])
        .args(args))
}
