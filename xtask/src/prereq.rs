//! Installs what building and testing need, idempotently: Debian's Rust
//! (for the eBPF target), bpf-linker, test tools, and a bpffs mount.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// Debian packages for building the eBPF object.
pub const BUILD_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "llvm-22-dev"];
/// Debian packages the end-to-end tests and benchmarks use.
pub const TEST_PACKAGES: &[&str] = &[
    "libiscsi-bin",
    "bpftool",
    "tgt",
    "iperf3",
    "open-isns-server",
    "open-isns-utils",
];
/// Debian packages for the container image and its tests (Docker 20.10,
/// Podman 4.3).
pub const CONTAINER_PACKAGES: &[&str] = &["docker.io", "podman"];
pub const BPF_LINKER_VERSION: &str = "0.13";
const CARGO_DENY_VERSION: &str = "0.20";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn step(title: &str) {
    println!("\n==> {title}");
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs the Debian packages that are missing (root only).
pub fn apt(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        println!("Debian packages present: {}", packages.join(" "));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}; install them as root (apt-get install -y {})",
            missing.join(" ")
        );
    }
    println!("installing {}", missing.join(" "));
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    run(Command::new("apt-get").arg("update").arg("-q").envs(env)).context("apt-get update")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .envs(env))
    .context("apt-get install")
}

/// Installs bpf-linker from crates.io against Debian's LLVM 22.
pub fn bpf_linker() -> anyhow::Result<()> {
    cargo_tool(
        &["bpf-linker"],
        ("bpf-linker", BPF_LINKER_VERSION),
        &["--no-default-features", "--features", "llvm-22"],
        &[("LLVM_PREFIX", "/usr/lib/llvm-22")],
    )
}

/// Installs cargo-deny from crates.io (`cargo xtask test` checks licences,
/// bans and sources with it).
pub fn cargo_deny() -> anyhow::Result<()> {
    cargo_tool(
        &[&cargo(), "deny"],
        ("cargo-deny", CARGO_DENY_VERSION),
        &[],
        &[],
    )
}

/// A tool from crates.io: `probe --version` names `krate version` already,
/// or `cargo install --locked` with these extra arguments and environment.
fn cargo_tool(
    probe: &[&str],
    (krate, version): (&str, &str),
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<()> {
    let have = Command::new(probe[0])
        .args(&probe[1..])
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if have.contains(&format!("{krate} {version}")) {
        println!("{}", have.trim());
        return Ok(());
    }
    println!("installing {krate} {version}");
    let mut cmd = Command::new(cargo());
    cmd.args([
        "install",
        krate,
        "--locked",
        "--version",
        &format!("~{version}"),
    ])
    .args(args)
    .envs(env.iter().copied());
    run(&mut cmd).with_context(|| format!("cargo install {krate}"))
}

/// Mounts bpffs at /sys/fs/bpf when it is not mounted (root only).
pub fn bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    if !is_root() {
        println!("note: /sys/fs/bpf is not mounted and we are not root; eBPF will be unavailable");
        return Ok(());
    }
    std::fs::create_dir_all("/sys/fs/bpf").ok();
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"])).context("mounting bpffs")
}

/// Everything a build needs.
pub fn for_build() -> anyhow::Result<()> {
    step("prerequisites");
    if Path::new("/usr/bin/rustc").exists() && installed("rust-web-src") {
        println!("Debian rustc present");
    } else {
        apt(BUILD_PACKAGES)?;
    }
    // iet-user links librbd and librados for RBD LUNs.
    apt(&["librbd-dev"])?;
    bpf_linker()?;
    bpffs()
}

/// Everything the tests need.
pub fn for_test() -> anyhow::Result<()> {
    for_build()?;
    apt(TEST_PACKAGES)?;
    apt(crate::ceph::cluster::PACKAGES)?;
    apt(CONTAINER_PACKAGES)
}

/// The cargo that runs xtask.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs a command, failing with its exit status.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
