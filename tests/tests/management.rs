//! Managing a running ietd with ietadm: targets, LUNs, CHAP accounts,
//! sessions, live changes seen by a logged-in initiator, save and restart;
//! IET's ietd.conf; and a control socket that refuses strangers and junk.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use iet::control::client::Client;
use iet::control::protocol::{SessionView, TargetView, VolumeView};
use iet_tests::initiator::{Conn, LoginOptions};
use iet_tests::inprocess::free_port;
use iet_tests::libiscsi::run;
use iet_tests::process::{Ietd, TempDir, binary};

const IQN: &str = "iqn.2026-11.io.iet:managed";

fn portal() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn json<T: serde::de::DeserializeOwned>(ietd: &Ietd, what: &str) -> T {
    let out = ietd.adm_ok(&["--json", "show", what]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ietadm --json show {what}: {e}\n{out}"))
}

fn report_luns(c: &mut Conn) -> Vec<u64> {
    let mut cdb = [0u8; 12];
    cdb[0] = 0xa0;
    cdb[9] = 0xff;
    let r = c.scsi(0, &cdb, &[], 255).expect("REPORT LUNS");
    assert_eq!(r.status, 0, "REPORT LUNS sense {:02x?}", r.sense);
    let n = u32::from_be_bytes([r.data[0], r.data[1], r.data[2], r.data[3]]) as usize / 8;
    (0..n)
        .map(|i| u64::from(u16::from_be_bytes([r.data[8 + i * 8], r.data[9 + i * 8]]) & 0x3fff))
        .collect()
}

fn read_capacity_bytes(c: &mut Conn, lun: u64) -> (u64, Vec<(u8, u8)>) {
    let ua = c.clear_unit_attention(lun).expect("TEST UNIT READY");
    let mut cdb = [0u8; 16];
    cdb[0] = 0x9e;
    cdb[1] = 0x10;
    cdb[13] = 32;
    let r = c.scsi(lun, &cdb, &[], 32).expect("READ CAPACITY(16)");
    assert_eq!(r.status, 0);
    let last = u64::from_be_bytes(r.data[0..8].try_into().unwrap());
    let bs = u64::from(u32::from_be_bytes(r.data[8..12].try_into().unwrap()));
    ((last + 1) * bs, ua)
}

#[test]
fn ietadm_drives_a_running_ietd() {
    let dir = TempDir::new("mgmt");
    let p = portal();
    let ebpf = if iet_tests::process::require_root("ietadm_drives_a_running_ietd (eBPF part)") {
        "on"
    } else {
        "off"
    };
    let pin = format!("/sys/fs/bpf/iet-mgmt-{}", std::process::id());
    let state = dir.path("state");
    let mut ietd = Ietd::start(
        &dir,
        p,
        &[
            "--portal",
            &p.to_string(),
            "--ebpf",
            ebpf,
            "--pin-dir",
            &pin,
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    let image = dir.path("lun1.img");
    ietd.adm_ok(&["target", "new", IQN, "--alias", "managed"]);
    ietd.adm_ok(&["lun", "new", "--target", IQN, "--path", "mem:32M"]);
    ietd.adm_ok(&[
        "lun",
        "new",
        "--target",
        IQN,
        "--path",
        image.to_str().unwrap(),
        "--size",
        "16M",
    ]);
    ietd.adm_ok(&["account", "add", "--target", IQN, "alice", "alice-secret-1"]);

    // libiscsi logs in with CHAP and sees LUN 1's size.
    let url = format!("iscsi://alice%alice-secret-1@{p}/{IQN}/1");
    let cap = run("iscsi-readcapacity16", &[&url], Duration::from_secs(20));
    assert!(cap.success, "libiscsi with CHAP: {cap:?}\n{}", ietd.log());
    assert!(
        cap.stdout.contains(&(16u64 << 20).to_string()),
        "{}",
        cap.stdout
    );

    // A long-lived session of our own.
    let mut c = Conn::connect(p).unwrap();
    let mut opts = LoginOptions::normal(IQN);
    opts.chap = Some(("alice".into(), "alice-secret-1".into()));
    c.login(&opts).unwrap_or_else(|e| panic!("login: {e:?}"));
    c.clear_unit_attention(0).unwrap();
    let me = c.sock.local_addr().unwrap();
    let sessions: Vec<SessionView> = json(&ietd, "sessions");
    let s = sessions
        .iter()
        .find(|s| s.connections.iter().any(|x| x.peer == me))
        .unwrap_or_else(|| panic!("our session in {sessions:?}"));
    assert_eq!(s.target.as_deref(), Some(IQN));
    assert!(
        s.negotiated.iter().any(|(k, _)| k == "MaxBurstLength"),
        "negotiated keys shown"
    );
    if ebpf == "on" {
        assert!(
            s.connections[0].kernel.is_some(),
            "the eBPF record is joined in: {s:?}"
        );
    }
    let text = ietd.adm_ok(&["show", "sessions", "--proc"]);
    assert!(
        text.contains(&format!("initiator:{}", iet_tests::initiator::INITIATOR)),
        "{text}"
    );
    assert!(
        text.contains("cid:0 ip:127.0.0.1 state:active hd:none dd:none"),
        "{text}"
    );

    // A third LUN appears in REPORT LUNS of the same session.
    assert_eq!(report_luns(&mut c), vec![0, 1]);
    ietd.adm_ok(&["lun", "new", "--target", IQN, "--path", "mem:8M"]);
    let ua = c.clear_unit_attention(0).unwrap();
    assert!(
        ua.contains(&(0x3f, 0x0e)),
        "REPORTED LUNS DATA HAS CHANGED: {ua:?}"
    );
    assert_eq!(report_luns(&mut c), vec![0, 1, 2]);

    // Online resize: a unit attention, then the new capacity.
    let (before, _) = read_capacity_bytes(&mut c, 1);
    assert_eq!(before, 16 << 20);
    ietd.adm_ok(&[
        "lun", "resize", "--target", IQN, "--lun", "1", "--size", "32M",
    ]);
    let (bytes, ua) = read_capacity_bytes(&mut c, 1);
    assert!(
        ua.contains(&(0x2a, 0x09)),
        "CAPACITY DATA HAS CHANGED: {ua:?}"
    );
    assert_eq!(bytes, 32 << 20);
    let vols = ietd.adm_ok(&["show", "volumes", "--proc"]);
    assert!(
        vols.contains("lun:1 state:0 iotype:fileio iomode:wb blocks:65536 blocksize:512"),
        "{vols}"
    );

    // Deleting the session logs the initiator out.
    let tsih = s.tsih.to_string();
    ietd.adm_ok(&["session", "delete", &tsih]);
    let msg = c.recv().expect("an Async Message");
    assert_eq!(msg.bhs.0[36], 1, "AsyncEvent: logout requested");
    assert_eq!(c.logout().unwrap(), 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while json::<Vec<SessionView>>(&ietd, "sessions")
        .iter()
        .any(|s| s.tsih.to_string() == tsih)
    {
        assert!(
            Instant::now() < deadline,
            "the session is gone after logout"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Save, restart from the saved file, same state.
    let saved = dir.path("saved.toml");
    ietd.adm_ok(&["save", saved.to_str().unwrap()]);
    let targets: Vec<TargetView> = json(&ietd, "targets");
    let volumes: Vec<VolumeView> = json(&ietd, "volumes");
    let accounts = ietd.adm_ok(&["--json", "show", "accounts"]);
    assert!(ietd.stop(), "clean stop:\n{}", ietd.log());
    let dir2 = TempDir::new("mgmt-restart");
    let mut again = Ietd::start(
        &dir2,
        p,
        &["--config", saved.to_str().unwrap(), "--ebpf", "off"],
    );
    assert_eq!(json::<Vec<TargetView>>(&again, "targets"), targets);
    assert_eq!(json::<Vec<VolumeView>>(&again, "volumes"), volumes);
    assert_eq!(again.adm_ok(&["--json", "show", "accounts"]), accounts);
    assert!(again.stop());
}

#[test]
fn ietd_conf_imports_and_invalid_files_are_refused_with_the_line() {
    let dir = TempDir::new("ietdconf");
    let p = portal();
    let conf = dir.path("ietd.conf");
    std::fs::write(
        &conf,
        "IncomingUser disco disco-secret\n\
         Target iqn.2026-11.io.iet:one\n\
         \tIncomingUser joe joe-secret-12\n\
         \tLun 0 Type=nullio,Blocks=65536\n\
         \tMaxBurstLength 131072\n\
         Target iqn.2026-11.io.iet:two\n\
         \tLun 0 Type=nullio,Blocks=2048,BlockSize=4096\n",
    )
    .unwrap();
    std::fs::write(
        dir.path("initiators.allow"),
        "iqn.2026-11.io.iet:two 127.0.0.0/8\n",
    )
    .unwrap();
    std::fs::write(dir.path("initiators.deny"), "iqn.2026-11.io.iet:two ALL\n").unwrap();
    let mut ietd = Ietd::start(
        &dir,
        p,
        &[
            "--config",
            conf.to_str().unwrap(),
            "--portal",
            &p.to_string(),
            "--ebpf",
            "off",
        ],
    );
    let targets: Vec<TargetView> = json(&ietd, "targets");
    assert_eq!(targets.len(), 2);
    // CHAP from the file applies; the ACL lets loopback in.
    let ok = run(
        "iscsi-inq",
        &[&format!(
            "iscsi://joe%joe-secret-12@{p}/iqn.2026-11.io.iet:one/0"
        )],
        Duration::from_secs(20),
    );
    assert!(ok.success, "{ok:?}");
    let two = run(
        "iscsi-readcapacity16",
        &[&format!("iscsi://{p}/iqn.2026-11.io.iet:two/0")],
        Duration::from_secs(20),
    );
    assert!(two.success && two.stdout.contains("4096"), "{two:?}");
    assert!(ietd.stop());

    std::fs::write(
        &conf,
        "Target iqn.2026-11.io.iet:one\n\tLun 0 Path=/x,Type=fileio\n\tMaxBurstLength lots\n",
    )
    .unwrap();
    let out = std::process::Command::new(binary("ietd"))
        .args([
            "--config",
            conf.to_str().unwrap(),
            "--ebpf",
            "off",
            "--dump-config",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}:3: MaxBurstLength: \"lots\" is not a number",
            conf.display()
        )),
        "file, line and reason: {stderr}"
    );
}

#[test]
fn the_control_socket_refuses_strangers_and_junk() {
    let dir = TempDir::new("ctlsock");
    let p = portal();
    let ietd = Ietd::start(
        &dir,
        p,
        &[
            "--portal",
            &p.to_string(),
            "--target",
            IQN,
            "--lun",
            "mem:8M",
            "--ebpf",
            "off",
        ],
    );
    let mut c = Client::connect(&ietd.control).unwrap();
    for junk in [
        "not json\n",
        "{\"version\":1,\"op\":\"launch_missiles\"}\n",
        "{\"version\":99,\"op\":\"show_targets\"}\n",
        "{}\n",
    ] {
        let r = c.raw(junk).unwrap();
        assert!(!r.ok && r.error.is_some(), "{junk:?} refused: {r:?}");
    }
    let huge = format!("{}\n", "x".repeat(200_000));
    let r = c.raw(&huge).unwrap();
    assert!(!r.ok, "an oversized request is refused");
    assert!(
        ietd.adm_ok(&["show", "targets"]).contains(IQN),
        "the daemon still answers"
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid",
                "nobody",
                "--regid",
                "nogroup",
                "--clear-groups",
                "--",
            ])
            .arg(binary("ietadm"))
            .arg("--control")
            .arg(&ietd.control)
            .args(["show", "targets"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "a non-root peer is refused");
        assert!(
            ietd.adm_ok(&["show", "targets"]).contains(IQN),
            "and nothing changed"
        );
    }
}

#[test]
fn portals_change_live_and_reload_applies_an_edited_file() {
    let dir = TempDir::new("reload");
    let p = portal();
    let conf = dir.path("iet.toml");
    let write_conf = |targets: &[&str]| {
        let mut text = format!(
            "control = \"{}\"\n\n[[portal]]\nlisten = \"{p}\"\n\n[ebpf]\nmode = \"off\"\n",
            dir.path("ietd.sock").display()
        );
        for t in targets {
            let _ = std::fmt::Write::write_fmt(
                &mut text,
                format_args!(
                    "\n[[target]]\nname = \"{t}\"\n\n[[target.lun]]\nnumber = 0\npath = \"mem:8M\"\n"
                ),
            );
        }
        std::fs::write(&conf, text).unwrap();
    };
    write_conf(&["iqn.2026-11.io.iet:first"]);
    let mut ietd = Ietd::start(
        &dir,
        p,
        &[
            "--config",
            conf.to_str().unwrap(),
            "--control",
            dir.path("ietd.sock").to_str().unwrap(),
        ],
    );

    // A second portal, live.
    let p2 = portal();
    ietd.adm_ok(&["portal", "add", &p2.to_string()]);
    let inq = run(
        "iscsi-inq",
        &[&format!("iscsi://{p2}/iqn.2026-11.io.iet:first/0")],
        Duration::from_secs(20),
    );
    assert!(inq.success, "served on the new portal: {inq:?}");
    assert!(ietd.adm_ok(&["show", "portals"]).contains(&p2.to_string()));
    ietd.adm_ok(&["portal", "remove", &p2.to_string()]);
    assert!(
        std::net::TcpStream::connect(p2).is_err(),
        "the removed portal no longer accepts"
    );

    // SIGHUP applies an edited file: a target appears.
    write_conf(&["iqn.2026-11.io.iet:first", "iqn.2026-11.io.iet:second"]);
    // SAFETY: kill with the child's pid and a valid signal.
    unsafe {
        libc::kill(ietd.child.id().cast_signed(), libc::SIGHUP);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ietd
        .adm_ok(&["show", "targets"])
        .contains("iqn.2026-11.io.iet:second")
    {
        assert!(Instant::now() < deadline, "SIGHUP reload:\n{}", ietd.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let inq = run(
        "iscsi-inq",
        &[&format!("iscsi://{p}/iqn.2026-11.io.iet:second/0")],
        Duration::from_secs(20),
    );
    assert!(inq.success, "the reloaded target serves: {inq:?}");

    // ietadm reload applies removal.
    write_conf(&["iqn.2026-11.io.iet:second"]);
    ietd.adm_ok(&["reload"]);
    let targets = ietd.adm_ok(&["show", "targets"]);
    assert!(
        !targets.contains("iqn.2026-11.io.iet:first")
            && targets.contains("iqn.2026-11.io.iet:second"),
        "{targets}"
    );
    assert!(ietd.stop());
}

#[test]
fn the_busy_poll_budget_is_a_setting() {
    let dump = |extra: &[&str]| {
        let out = std::process::Command::new(binary("ietd"))
            .args(["--target", IQN, "--lun", "mem:1M", "--dump-config"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(dump(&[]).contains("busy_poll_us = 100"), "the default");
    assert!(dump(&["--busy-poll-us", "0"]).contains("busy_poll_us = 0"));
}
