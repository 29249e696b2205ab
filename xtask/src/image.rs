//! `cargo xtask image`: builds the container image `iet:latest` with no
//! registry: a scratch base made here, then the repository's Containerfile.
//!
//! The base is a tarball holding only what the binaries need at run time
//! (the shared libraries `ldd` names, a minimal /etc/passwd, /tmp), brought
//! in with `docker import`; `docker build --build-arg BASE=iet-base:local`
//! then adds the binaries. With a registry the same Containerfile builds on
//! a normal base (`--build-arg BASE=debian:bookworm-slim`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::prereq::{self, run, step};

/// The image the target runs from.
pub const TARGET_IMAGE: &str = "iet:latest";
/// The local base the Containerfile builds on.
pub const TARGET_BASE: &str = "iet-base:local";
/// libiscsi's command-line initiator tools, for compose.yaml's initiator.
pub const INITIATOR_IMAGE: &str = "iet-initiator:latest";
/// The libiscsi tools the initiator image carries.
const INITIATOR_TOOLS: &[&str] = &[
    "/usr/bin/iscsi-inq",
    "/usr/bin/iscsi-ls",
    "/usr/bin/iscsi-readcapacity16",
    "/usr/bin/iscsi-test-cu",
];

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// Container engine (docker or podman).
    #[arg(long, default_value = "docker")]
    pub engine: String,
    /// Also build iet-initiator:latest (libiscsi's tools) for compose.yaml.
    #[arg(long)]
    pub initiator: bool,
    /// Use the dev profile's binaries (what the end-to-end tests build)
    /// instead of a release build.
    #[arg(long)]
    pub debug: bool,
    /// The target image's tag.
    #[arg(long, default_value = TARGET_IMAGE)]
    pub tag: String,
}

pub fn image(args: &ImageArgs) -> anyhow::Result<()> {
    prereq::for_build()?;
    let package = if args.engine.ends_with("podman") {
        "podman"
    } else {
        "docker.io"
    };
    prereq::apt(&[package])?;
    let (profile, flags): (&str, &[&str]) = if args.debug {
        ("debug", &[])
    } else {
        ("release", &["--release"])
    };
    step(&format!("building ietd and ietadm ({profile})"));
    let root = crate::root();
    run(Command::new(prereq::cargo())
        .current_dir(&root)
        .arg("build")
        .args(flags)
        .args(["-p", "iet-user", "--bins"]))?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let release = target.join(profile);
    let bins = [release.join("ietd"), release.join("ietadm")];
    // One work directory per engine: the container tests build both at once.
    let work = target.join("image").join(&args.engine);
    build_target(&args.engine, &bins, &work, &args.tag)?;
    if args.initiator {
        prereq::apt(&["libiscsi-bin"])?;
        let tools: Vec<PathBuf> = INITIATOR_TOOLS.iter().map(PathBuf::from).collect();
        build_initiator(&args.engine, &tools, &work.join("initiator"))?;
    }
    Ok(())
}

/// The base (libraries of `bins`) imported, then the Containerfile built on
/// it with `bins` in its context.
fn build_target(engine: &str, bins: &[PathBuf], work: &Path, tag: &str) -> anyhow::Result<()> {
    step(&format!(
        "{TARGET_BASE}: scratch rootfs with the binaries' libraries"
    ));
    let rootfs = work.join("rootfs");
    stage_rootfs(&rootfs, bins, &[])?;
    for dir in ["run/iet", "var/lib/iet", "data"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    import(engine, &rootfs, TARGET_BASE)?;
    step(&format!("{tag}: Containerfile on {TARGET_BASE}"));
    let context = work.join("context");
    reset_dir(&context)?;
    for bin in bins {
        let name = bin.file_name().context("binary name")?;
        std::fs::copy(bin, context.join(name))
            .with_context(|| format!("copying {}", bin.display()))?;
    }
    // Podman writes OCI images by default, which have no HEALTHCHECK.
    let format: &[&str] = if engine.ends_with("podman") {
        &["--format", "docker"]
    } else {
        &[]
    };
    run(Command::new(engine).arg("build").args(format).args([
        "--quiet",
        "--build-arg",
        &format!("BASE={TARGET_BASE}"),
        "-f",
        &crate::root().join("Containerfile").to_string_lossy(),
        "-t",
        tag,
        &context.to_string_lossy(),
    ]))
    .context("building the target image")?;
    println!("built {tag}");
    Ok(())
}

/// An image holding libiscsi's tools and their libraries, nothing else.
fn build_initiator(engine: &str, tools: &[PathBuf], work: &Path) -> anyhow::Result<()> {
    step(&format!("{INITIATOR_IMAGE}: libiscsi's tools"));
    let rootfs = work.join("rootfs");
    stage_rootfs(&rootfs, &[], tools)?;
    import(engine, &rootfs, INITIATOR_IMAGE)?;
    println!("built {INITIATOR_IMAGE}");
    Ok(())
}

/// A rootfs with `libs_of` contributing only their libraries and `bins`
/// copied to /usr/bin as well, a one-line /etc/passwd and /etc/group, /tmp.
pub fn stage_rootfs(rootfs: &Path, libs_of: &[PathBuf], bins: &[PathBuf]) -> anyhow::Result<()> {
    reset_dir(rootfs)?;
    let mut libs = BTreeSet::new();
    for bin in libs_of.iter().chain(bins) {
        libs.extend(shared_libraries(bin)?);
    }
    for lib in &libs {
        let dest = rootfs.join(lib.strip_prefix("/").unwrap_or(lib));
        std::fs::create_dir_all(dest.parent().context("library directory")?)?;
        // Follow symlinks: the soname the loader asks for becomes the file.
        std::fs::copy(lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }
    let usr_bin = rootfs.join("usr/bin");
    std::fs::create_dir_all(&usr_bin)?;
    for bin in bins {
        std::fs::copy(bin, usr_bin.join(bin.file_name().context("binary name")?))?;
    }
    let etc = rootfs.join("etc");
    std::fs::create_dir_all(&etc)?;
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/sbin/nologin\n")?;
    std::fs::write(etc.join("group"), "root:x:0:\n")?;
    for dir in ["tmp", "root", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    set_mode(&rootfs.join("tmp"), 0o1777)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn reset_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// `tar -C rootfs -c . | docker import - tag`.
fn import(engine: &str, rootfs: &Path, tag: &str) -> anyhow::Result<()> {
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting tar")?;
    let stdout = tar.stdout.take().context("tar stdout")?;
    let imported = Command::new(engine)
        .args(["import", "-", tag])
        .stdin(stdout)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("starting {engine} import"))?;
    let tarred = tar.wait()?;
    if !tarred.success() || !imported.success() {
        bail!("importing {tag}: tar {tarred}, {engine} import {imported}");
    }
    Ok(())
}

/// The absolute paths `ldd` resolves for a binary, the loader included.
fn shared_libraries(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .with_context(|| format!("ldd {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let libs = parse_ldd(&String::from_utf8_lossy(&out.stdout));
    if libs.is_empty() {
        bail!("ldd named no libraries for {}", bin.display());
    }
    Ok(libs)
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x..)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x..)` give their paths; the vDSO has none.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_ldd;

    #[test]
    fn reads_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        let libs: Vec<String> = parse_ldd(text)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }
}
