//! `cargo xtask fuzz`: every cargo-fuzz target for a fixed time. Debian's
//! rustc builds them (RUSTC_BOOTSTRAP for -Z flags; no ASAN runtime there,
//! so the sanitizer is off: panics are what we look for in Rust).

use std::process::Command;

use crate::prereq::{self, run, step};

pub const TARGETS: &[&str] = &["pdu_decode", "text_pairs", "login_sequence", "scsi_command"];

pub fn fuzz(seconds: u32) -> anyhow::Result<()> {
    prereq::for_build()?;
    let have = Command::new(prereq::cargo())
        .args(["fuzz", "--version"])
        .output();
    if !have.is_ok_and(|o| o.status.success()) {
        step("installing cargo-fuzz");
        run(Command::new(prereq::cargo()).args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let dir = crate::root().join("fuzz");
    for target in TARGETS {
        step(&format!("fuzzing {target} for {seconds} s"));
        run(Command::new(prereq::cargo())
            .current_dir(&dir)
            .env("RUSTC", "/usr/bin/rustc")
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "-O", "-s", "none", target, "--"])
            .arg(format!("-max_total_time={seconds}")))?;
    }
    Ok(())
}
