//! `cargo xtask run`: build, install the client tools it tells the user
//! to run, then start ietd. Without arguments it serves a sparse 1 GiB
//! file LUN on 127.0.0.1:3260 under a default IQN.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Context;

pub const DEFAULT_IQN: &str = "iqn.2026-11.io.iet:default";
pub const DEFAULT_PORTAL: &str = "127.0.0.1:3260";
const DEFAULT_SIZE: u64 = 1 << 30;
/// The Debian package of the client tools the output names (iscsi-inq, iscsi-ls).
pub const CLIENT_PACKAGES: &[&str] = &["libiscsi-bin"];

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Installs libiscsi-bin when it is missing (as root, idempotently, like
/// `prereq`), or says how; a failed install does not stop ietd.
fn client_tools() {
    if on_path("iscsi-inq") {
        return;
    }
    if crate::prereq::is_root() {
        crate::prereq::step("Installing the iSCSI client tools (libiscsi-bin)");
        match crate::prereq::apt(CLIENT_PACKAGES) {
            Ok(()) if on_path("iscsi-inq") => return,
            Ok(()) => {}
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }
    println!(
        "\niscsi-inq and iscsi-ls come with Debian's libiscsi-bin, which is not installed:\n  \
         sudo apt-get install -y {}",
        CLIENT_PACKAGES.join(" ")
    );
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    crate::build::build()?;
    client_tools();
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
        println!("              iscsi-ls -s iscsi://{DEFAULT_PORTAL}");
        println!("Manage with:  target/release/ietadm --control {control} show sessions\n");
        cmd.args(["--portal", DEFAULT_PORTAL, "--target", DEFAULT_IQN, "--lun"])
            .arg(&image)
            .args(["--ebpf", "auto", "--control", &control]);
    } else {
        cmd.args(args);
    }
    Err(cmd.exec()).with_context(|| format!("starting {}", ietd.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_the_path() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-iet-program"));
    }
}
