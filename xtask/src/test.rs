//! `cargo xtask test`: prerequisites and test tools, formatting, clippy,
//! then every test in the workspace (end-to-end tests need the binaries).

use std::process::Command;

use crate::prereq::{self, run, step};

pub fn test(args: &[String]) -> anyhow::Result<()> {
    prereq::for_test()?;
    let root = crate::root();
    let cargo = || {
        let mut c = Command::new(prereq::cargo());
        c.current_dir(&root);
        c
    };
    step("cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("cargo clippy");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("building binaries");
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    step("cargo test");
    run(cargo().args(["test", "--workspace"]).args(args))?;
    Ok(())
}
