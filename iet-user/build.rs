//! Builds the eBPF programs (iet-ebpf) for bpfel-unknown-none with Debian's
//! rustc and bpf-linker, and leaves the object in OUT_DIR for the daemon to
//! embed. Without that toolchain the host build still succeeds: the object
//! is empty and ietd reports eBPF as unavailable at runtime.

use std::path::{Path, PathBuf};
use std::process::Command;

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("workspace root").to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("iet-ebpf.o");
    for dir in [
        "iet-ebpf/src",
        "iet-ebpf/Cargo.toml",
        "iet-common/src",
        "iet-common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=IET_SKIP_EBPF");
    // The toolchain too: a build made before `cargo xtask` installed it must
    // not leave ietd without eBPF (cargo reruns for a path that is missing).
    let home_linker = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin/bpf-linker"));
    for tool in [DEBIAN_RUSTC.into(), DEBIAN_CARGO.into()]
        .into_iter()
        .chain(find_in_path("bpf-linker").or(home_linker))
    {
        let tool: PathBuf = tool;
        println!("cargo:rerun-if-changed={}", tool.display());
    }
    match build(&root) {
        Ok(object) => {
            std::fs::copy(&object, &out).expect("copy the eBPF object");
        }
        Err(why) => {
            println!("cargo:warning=eBPF programs not built ({why}); ietd will run without eBPF");
            std::fs::write(&out, []).expect("write an empty eBPF object");
        }
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let home_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin"));
    std::env::split_paths(&path)
        .chain(home_bin)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn build(root: &Path) -> Result<PathBuf, String> {
    if std::env::var_os("IET_SKIP_EBPF").is_some() {
        return Err("IET_SKIP_EBPF is set".into());
    }
    if !Path::new(DEBIAN_RUSTC).exists() || !Path::new(DEBIAN_CARGO).exists() {
        return Err("Debian's rustc-web/cargo-web are not installed".into());
    }
    let linker = find_in_path("bpf-linker").ok_or("bpf-linker is not installed")?;
    let target_dir = root.join("target").join("ebpf");
    let mut cmd = Command::new(DEBIAN_CARGO);
    // The nested build must not inherit the host build's settings.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if (k.starts_with("CARGO") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTDOC")
            || k == "RUSTFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Some(d) = linker.parent() {
        dirs.insert(0, d.to_path_buf());
    }
    cmd.current_dir(root.join("iet-ebpf"))
        .env(
            "PATH",
            std::env::join_paths(dirs).map_err(|e| e.to_string())?,
        )
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(&target_dir);
    let output = cmd
        .output()
        .map_err(|e| format!("running {DEBIAN_CARGO}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A broken eBPF program is a bug, not a missing toolchain: fail loudly.
        panic!("building iet-ebpf failed:\n{stderr}");
    }
    Ok(target_dir.join("bpfel-unknown-none/release/iet-ebpf"))
}
