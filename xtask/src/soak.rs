//! `cargo xtask soak [--minutes N] [--sessions N] [--qd N]`: builds ietd and
//! the soak driver (tests/src/bin/iet-soak.rs) and runs the soak: mixed
//! 4 KiB/64 KiB I/O at QD8 on many sessions with disconnects, LUN resets and
//! NOP timeouts, then ietd's fds, threads and RSS against their start.

use std::process::Command;

use crate::prereq::{self, run, step};

pub fn soak(args: &[String]) -> anyhow::Result<()> {
    prereq::for_build()?;
    let root = crate::root();
    step("building ietd and iet-soak");
    run(Command::new(prereq::cargo())
        .current_dir(&root)
        .args(["build", "-p", "iet-user", "--bins"]))?;
    run(Command::new(prereq::cargo()).current_dir(&root).args([
        "build",
        "-p",
        "iet-tests",
        "--bin",
        "iet-soak",
        "--release",
    ]))?;
    let minutes = flag(args, "--minutes").unwrap_or("1");
    step(&format!("soak for {minutes} minute(s)"));
    let mut cmd = Command::new(root.join("target/release/iet-soak"));
    cmd.current_dir(&root).args(["--minutes", minutes]);
    for name in ["--sessions", "--qd"] {
        if let Some(v) = flag(args, name) {
            cmd.args([name, v]);
        }
    }
    if args.iter().any(|a| a == "--json") {
        cmd.arg("--json");
    }
    run(&mut cmd)
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}
