//! `cargo xtask run`: build, then start ietd. Without arguments it serves
//! a sparse 1 GiB file LUN on 127.0.0.1:3260 under a default IQN.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Context;

pub const DEFAULT_IQN: &str = "iqn.2026-11.io.iet:default";
pub const DEFAULT_PORTAL: &str = "127.0.0.1:3260";
const DEFAULT_SIZE: u64 = 1 << 30;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    crate::build::build()?;
    let root = crate::root();
    let ietd = root.join("target/release/ietd");
    let mut cmd = Command::new(&ietd);
    if args.is_empty() {
        let image = root.join("target/iet-default.img");
        if !image.exists() {
            let f = std::fs::File::create(&image)
                .with_context(|| format!("creating {}", image.display()))?;
            f.set_len(DEFAULT_SIZE)?;
        }
        let control = if crate::prereq::is_root() {
            "/run/iet/ietd.sock".to_owned()
        } else {
            root.join("target/ietd.sock").display().to_string()
        };
        println!("\nConnect with: iscsi-inq iscsi://{DEFAULT_PORTAL}/{DEFAULT_IQN}/0");
        println!("Manage with:  target/release/ietadm --control {control} show sessions\n");
        cmd.args(["--portal", DEFAULT_PORTAL, "--target", DEFAULT_IQN, "--lun"])
            .arg(&image)
            .args(["--ebpf", "auto", "--control", &control]);
    } else {
        cmd.args(args);
    }
    Err(cmd.exec()).with_context(|| format!("starting {}", ietd.display()))
}
