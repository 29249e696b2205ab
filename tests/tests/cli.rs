//! ietd's command line as an admin uses it (issue: workspace and CLI):
//! plain sockets with --ebpf off, unprivileged fallback with one warning,
//! --ebpf on refusing to run without eBPF, and a clean SIGTERM.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use iet_tests::inprocess::free_port;
use iet_tests::libiscsi::run;
use iet_tests::process::{Ietd, TempDir, binary, require_root};

const IQN: &str = "iqn.2026-11.io.iet:cli";

fn portal() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A directory the unprivileged user can write its control socket into.
fn open_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

const NOBODY: &[&str] = &[
    "setpriv",
    "--reuid",
    "nobody",
    "--regid",
    "nogroup",
    "--clear-groups",
    "--",
];

#[test]
fn ebpf_off_serves_and_stops_cleanly_on_sigterm() {
    let dir = TempDir::new("cli-off");
    let p = portal();
    let mut ietd = Ietd::start(
        &dir,
        p,
        &[
            "--portal",
            &p.to_string(),
            "--target",
            IQN,
            "--lun",
            "mem:64M",
            "--ebpf",
            "off",
        ],
    );
    TcpStream::connect(p).expect("the portal accepts TCP");
    let inq = run(
        "iscsi-inq",
        &[&format!("iscsi://{p}/{IQN}/0")],
        Duration::from_secs(20),
    );
    assert!(
        inq.success,
        "iscsi-inq against ietd: {inq:?}\n{}",
        ietd.log()
    );
    assert!(
        ietd.stop(),
        "SIGTERM must exit with status 0:\n{}",
        ietd.log()
    );
    assert!(
        !ietd.log().contains("WARN"),
        "no warnings with --ebpf off:\n{}",
        ietd.log()
    );
}

#[test]
fn unprivileged_auto_falls_back_with_one_warning() {
    if !require_root("unprivileged_auto_falls_back_with_one_warning") {
        return;
    }
    let dir = open_dir("cli-nobody");
    let p = portal();
    let mut ietd = Ietd::start_with(
        &dir,
        p,
        &[
            "--portal",
            &p.to_string(),
            "--target",
            IQN,
            "--lun",
            "mem:16M",
            "--ebpf",
            "auto",
            "--pin-dir",
            "/sys/fs/bpf/iet-cli-nobody",
        ],
        Some(NOBODY),
    );
    let inq = run(
        "iscsi-inq",
        &[&format!("iscsi://{p}/{IQN}/0")],
        Duration::from_secs(20),
    );
    assert!(
        inq.success,
        "unprivileged ietd serves: {inq:?}\n{}",
        ietd.log()
    );
    assert!(ietd.stop(), "clean exit:\n{}", ietd.log());
    let log = ietd.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "exactly one warning:\n{log}");
    assert!(
        warnings[0].contains("eBPF"),
        "the warning is about eBPF: {}",
        warnings[0]
    );
}

#[test]
fn unprivileged_ebpf_on_refuses_to_start() {
    if !require_root("unprivileged_ebpf_on_refuses_to_start") {
        return;
    }
    let dir = open_dir("cli-on");
    let p = portal();
    let out = std::process::Command::new(NOBODY[0])
        .args(&NOBODY[1..])
        .arg(binary("ietd"))
        .args([
            "--portal",
            &p.to_string(),
            "--target",
            IQN,
            "--lun",
            "mem:16M",
            "--ebpf",
            "on",
        ])
        .arg("--control")
        .arg(dir.path("ietd.sock"))
        .args(["--pin-dir", "/sys/fs/bpf/iet-cli-on"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run ietd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--ebpf on without privilege must fail:\n{stderr}"
    );
    assert!(stderr.contains("eBPF"), "the error names eBPF:\n{stderr}");
}

#[test]
fn file_lun_default_setup_serves_libiscsi() {
    // What `cargo xtask run` does with no arguments, on a free port.
    let dir = TempDir::new("cli-default");
    let image = dir.path("default.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let p = portal();
    let mut ietd = Ietd::start(
        &dir,
        p,
        &[
            "--portal",
            &p.to_string(),
            "--target",
            "iqn.2026-11.io.iet:default",
            "--lun",
            image.to_str().unwrap(),
            "--ebpf",
            "off",
        ],
    );
    let cap = run(
        "iscsi-readcapacity16",
        &[&format!("iscsi://{p}/iqn.2026-11.io.iet:default/0")],
        Duration::from_secs(20),
    );
    assert!(cap.success, "{cap:?}\n{}", ietd.log());
    assert!(
        cap.stdout.contains(&(1u64 << 30).to_string()),
        "1 GiB LUN: {}",
        cap.stdout
    );
    assert!(ietd.stop());
}
