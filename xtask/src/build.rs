//! `cargo xtask build`: prerequisites, then the release binaries (the
//! eBPF object is built and embedded by iet-user's build script).

use std::process::Command;

use crate::prereq::{self, step};

pub fn build() -> anyhow::Result<()> {
    prereq::for_build()?;
    step("building ietd and ietadm (release)");
    prereq::run(
        Command::new(prereq::cargo())
            .current_dir(crate::root())
            .args(["build", "--release", "-p", "iet-user", "--bins"]),
    )
}
