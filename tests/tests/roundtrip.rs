//! The configuration round-trips: a running ietd is changed through
//! `ietadm reload` and every configuring `ietadm` command, saved, restarted
//! from the saved file, and compared field by field (`show ... --json`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use iet_tests::initiator::{Conn, LoginOptions};
use iet_tests::inprocess::free_port;
use iet_tests::process::{Ietd, TempDir, require_root};
use serde_json::Value;

const A: &str = "iqn.2026-11.io.iet:rt-a";
const B: &str = "iqn.2026-11.io.iet:rt-b";
const C: &str = "iqn.2026-11.io.iet:rt-c";
const D: &str = "iqn.2026-11.io.iet:rt-d";

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn show(ietd: &Ietd, what: &str) -> Value {
    let out = ietd.adm_ok(&["--json", "show", what]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("show {what}: {e}\n{out}"))
}

/// Compares two `show` answers field by field; `skip` names fields that
/// are not configuration (IET's tid is a counter, sessions are live).
fn same(what: &str, before: &Value, after: &Value, skip: &[&str]) {
    let (Some(b), Some(a)) = (before.as_array(), after.as_array()) else {
        panic!("{what}: not lists: {before} / {after}");
    };
    assert_eq!(b.len(), a.len(), "{what}: {before}\n!=\n{after}");
    for (i, (x, y)) in b.iter().zip(a).enumerate() {
        let (Some(x), Some(y)) = (x.as_object(), y.as_object()) else {
            panic!("{what}[{i}]: not objects");
        };
        for (field, value) in x {
            if skip.contains(&field.as_str()) {
                continue;
            }
            assert_eq!(
                Some(value),
                y.get(field),
                "{what}[{i}].{field} after the restart"
            );
        }
        assert_eq!(x.len(), y.len(), "{what}[{i}]: same fields");
    }
}

fn target<'a>(targets: &'a Value, name: &str) -> &'a Value {
    targets
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {targets}"))
}

/// Access modes of every descriptor `pid` holds on `file` (O_RDONLY = 0).
fn access_modes(pid: u32, file: &Path) -> Vec<u32> {
    let mut modes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc fd") {
        let entry = entry.unwrap();
        if std::fs::read_link(entry.path()).ok().as_deref() != Some(file) {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .expect("flags in fdinfo");
        modes.push(flags & 0o3);
    }
    modes
}

fn login(p: SocketAddr, target: &str) -> Conn {
    let mut c = Conn::connect(p).unwrap();
    c.login(&LoginOptions::normal(target))
        .unwrap_or_else(|e| panic!("login to {target}: {e:?}"));
    c
}

#[test]
fn save_and_restart_give_the_running_state() {
    let dir = TempDir::new("roundtrip");
    let ebpf = require_root("save_and_restart_give_the_running_state (portal set)");
    let (p1, p2, p3) = (local(), local(), local());
    let pin = format!("/sys/fs/bpf/iet-rt-{}", std::process::id());
    let state = dir.path("state");
    let conf = dir.path("iet.toml");
    let write_conf = |extra: &str| {
        std::fs::write(
            &conf,
            format!(
                "state_dir = {state:?}\n{extra}\n[[portal]]\nlisten = \"{p1}\"\n\n\
                 [[target]]\nname = \"{A}\"\n[[target.lun]]\nnumber = 0\npath = \"mem:8M\"\n"
            ),
        )
        .unwrap();
    };
    write_conf("busy_poll_us = 50");
    let mode = if ebpf { "on" } else { "off" };
    let args = [
        "--config",
        conf.to_str().unwrap(),
        "--ebpf",
        mode,
        "--pin-dir",
        &pin,
    ];
    let mut ietd = Ietd::start(&dir, p1, &args);

    // Reload: new [target.params] for a live target and a new target,
    // a RAM LUN resized, busy polling; the metrics address needs a restart.
    let metrics = local();
    std::fs::write(
        &conf,
        format!(
            "state_dir = {state:?}\nbusy_poll_us = 25\nmetrics = \"{metrics}\"\n\
             [[portal]]\nlisten = \"{p1}\"\n\n\
             [[target]]\nname = \"{A}\"\n[target.params]\nmax_burst_length = 65536\n\
             first_burst_length = 16384\nchap_algorithms = [\"SHA-256\"]\n\
             [[target.lun]]\nnumber = 0\npath = \"mem:16M\"\n\n\
             [[target]]\nname = \"{D}\"\n[target.params]\nmax_recv_data_segment_length = 65536\n\
             queued_commands = 32\n[[target.lun]]\nnumber = 0\npath = \"mem:4M\"\n"
        ),
    )
    .unwrap();
    let report: Value = serde_json::from_str(&ietd.adm_ok(&["--json", "reload"])).unwrap();
    assert_eq!(
        report["restart_needed"],
        serde_json::json!(["metrics"]),
        "{report}"
    );
    let applied = report["applied"].to_string();
    for part in [
        "busy_poll_us 25",
        &format!("target {D} added"),
        &format!("target {A}: settings"),
        &format!("target {A} LUN 0"),
    ] {
        assert!(applied.contains(part), "{part} in {applied}");
    }
    let text = ietd.adm_ok(&["reload"]);
    assert!(text.contains("needs a restart: metrics"), "{text}");
    let targets = show(&ietd, "targets");
    assert_eq!(target(&targets, A)["params"]["max_burst_length"], 65536);
    assert_eq!(target(&targets, D)["params"]["queued_commands"], 32);
    // New logins negotiate with the reloaded parameters.
    let c = login(p1, A);
    assert_eq!(
        c.negotiated["MaxBurstLength"], "65536",
        "{:?}",
        c.negotiated
    );
    assert_eq!(c.negotiated["FirstBurstLength"], "16384");
    drop(c);
    let c = login(p1, D);
    assert_eq!(c.target_mrdsl, 65536, "D declares its configured segment");
    drop(c);
    let volumes = show(&ietd, "volumes");
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["target"] == A && v["size_bytes"] == 16u64 << 20 && v["path"] == "mem:16M"),
        "{volumes}"
    );

    // Every configuring ietadm command.
    let image = dir.path("b1.img");
    let ro_image = dir.path("ro.img");
    std::fs::write(&ro_image, vec![0u8; 2 << 20]).unwrap();
    let mut perms = std::fs::metadata(&ro_image).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&ro_image, perms).unwrap();
    for cmd in [
        vec!["target", "new", B, "--alias", "bee"],
        vec![
            "target",
            "set",
            B,
            "MaxBurstLength=131072",
            "FirstBurstLength=32768",
            "CHAP_A=SHA3-256,MD5",
            "NOPInterval=7",
            "HeaderDigest=CRC32C,None",
        ],
        vec!["lun", "new", "--target", B, "--path", "mem:8M"],
        vec![
            "lun", "resize", "--target", B, "--lun", "0", "--size", "12M",
        ],
        vec![
            "lun",
            "new",
            "--target",
            B,
            "--path",
            image.to_str().unwrap(),
            "--size",
            "4M",
        ],
        vec![
            "lun",
            "set",
            "--target",
            B,
            "--lun",
            "1",
            "--read-only",
            "true",
        ],
        vec![
            "lun",
            "new",
            "--target",
            B,
            "--lun",
            "5",
            "--path",
            ro_image.to_str().unwrap(),
            "--read-only",
            "--block-size",
            "4096",
            "--engine",
            "uring",
        ],
        vec!["lun", "new", "--target", B, "--path", "mem:1M"],
        vec!["lun", "delete", "--target", B, "--lun", "2"],
        vec!["target", "new", C],
        vec!["target", "delete", C],
        vec![
            "portal",
            "add",
            &p2.to_string(),
            "--advertise",
            "192.0.2.7:3260",
        ],
        vec!["portal", "add", &p3.to_string()],
        vec!["portal", "remove", &p3.to_string()],
        vec!["account", "add", "disco", "disco-secret-1"],
        vec!["account", "add", "--outgoing", "dout", "dout-secret-1"],
        vec!["account", "add", "--target", B, "alice", "alice-secret-1"],
        vec!["account", "add", "--target", B, "bob", "bob-secret-123"],
        vec!["account", "delete", "--target", B, "bob"],
        vec![
            "account",
            "add",
            "--target",
            B,
            "--outgoing",
            "tgt",
            "tgt-secret-12",
        ],
        vec![
            "acl",
            "set",
            "--target",
            B,
            "--allow",
            "127.0.0.0/8",
            "--allow",
            "iqn.2026-11.io.iet:host",
            "--deny",
            "ALL",
        ],
    ] {
        ietd.adm_ok(&cmd);
    }
    let p2s = p2.to_string();
    if ebpf {
        ietd.adm_ok(&[
            "portal",
            "set",
            &p2s,
            "--accounting",
            "true",
            "--redirect",
            "false",
            "--sndbuf",
            "262144",
            "--rcvbuf",
            "131072",
            "--notsent-lowat",
            "16384",
            "--congestion",
            "cubic",
        ]);
    }
    // A read-only file is servable, and its store is open read-only.
    let pid = ietd.child.id();
    let ro_image = std::fs::canonicalize(&ro_image).unwrap();
    assert_eq!(access_modes(pid, &ro_image), vec![0], "O_RDONLY");
    let image = std::fs::canonicalize(&image).unwrap();

    let saved = dir.path("saved.toml");
    ietd.adm_ok(&["save", saved.to_str().unwrap()]);
    let before: Vec<(&str, Value)> = ["targets", "volumes", "portals", "accounts"]
        .into_iter()
        .map(|w| (w, show(&ietd, w)))
        .collect();
    assert_eq!(
        before[2].1.as_array().map(Vec::len),
        Some(2),
        "{}",
        before[2].1
    );
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(
        text.contains("mem:12582912"),
        "resized RAM LUN saved: {text}"
    );
    assert!(text.contains("busy_poll_us = 25"), "{text}");
    assert!(ietd.stop(), "clean stop:\n{}", ietd.log());

    let mut again = Ietd::start(
        &dir,
        p1,
        &[
            "--config",
            saved.to_str().unwrap(),
            "--ebpf",
            mode,
            "--pin-dir",
            &pin,
        ],
    );
    for (what, b) in &before {
        let skip: &[&str] = if *what == "targets" {
            &["tid", "sessions"]
        } else {
            &["tid"]
        };
        same(what, b, &show(&again, what), skip);
    }
    let pid = again.child.id();
    assert_eq!(access_modes(pid, &ro_image), vec![0]);
    assert_eq!(
        access_modes(pid, &image),
        vec![0],
        "a LUN set read-only opens read-only after the restart"
    );
    // Saving the restarted daemon writes the same file.
    let saved2 = dir.path("saved2.toml");
    again.adm_ok(&["save", saved2.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&saved2).unwrap(), text);
    // Write protection lifted: the store is opened again read-write.
    again.adm_ok(&[
        "lun",
        "set",
        "--target",
        B,
        "--lun",
        "1",
        "--read-only",
        "false",
    ]);
    assert_eq!(access_modes(pid, &image), vec![2], "O_RDWR");
    let c = login(p1, A);
    assert_eq!(c.negotiated["MaxBurstLength"], "65536", "params survive");
    drop(c);
    assert!(again.stop(), "{}", again.log());
    let _ = std::fs::remove_dir(&pin);
    std::thread::sleep(Duration::from_millis(10));
}
