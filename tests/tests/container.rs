//! iet as a container-hosted target (root and Docker; in CI a skip is a
//! failure): the image from `cargo xtask image`, three containers on a bridge.
//!
//! - A and B run with Docker 20.10's least capabilities (SYS_ADMIN,
//!   NET_ADMIN) and the host's bpffs; A mounts cgroup2 itself, B sees the
//!   host's hierarchy bind-mounted. libiscsi's tools are served from the
//!   host, each container's pinned `connections` map shows only its own
//!   connection, sock_ops sits on each container's cgroup and not the root.
//! - C has no added capabilities: plain sockets after one warning.
//! - An ietd that finds itself in B at the host's root cgroup refuses.
//! - D, with sock_ops on a cgroup holding both ends, redirects the host's
//!   (non-loopback) traffic to it with sk_msg, data intact.
//! - SendTargets returns the advertised (published) address, `ietadm`
//!   works through the volume-mounted control socket, and `docker stop`
//!   asks the initiator to log out.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use iet::proto::pdu::Opcode;
use iet_common::{PROG_SK_MSG, PROG_SOCK_OPS};
use iet_tests::container::{
    Container, Engine, Network, RemoveOnDrop, bpftool_json, build_image, docker, docker_ok,
    local_port, login, require_program, sock_ops_on, tracked_peer_ports, wait_listening,
};
use iet_tests::libiscsi;
use iet_tests::process::{TempDir, binary, require_root};

const IMAGE: &str = "iet:test";
const SUBNET: &str = "10.212.12.0/24";
const HOST_CGROUP2: &str = "/sys/fs/cgroup/unified";

fn iqn(which: &str) -> String {
    format!("iqn.2026-12.io.iet:container-{which}")
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 212, 12, last)
}

/// Arguments for a target container at `last` on the test network.
fn target_args(net: &str, host: &str, last: u8, which: &str) -> Vec<String> {
    [
        "--network",
        net,
        "--ip",
        &ip(last).to_string(),
        "--hostname",
        host,
        "-e",
        &format!("IET_TARGET={}", iqn(which)),
        "-e",
        "IET_LUN=mem:64M",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn run_target(name: &str, args: &[String], extra: &[&str]) -> Container {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    all.push(IMAGE);
    Container::run(name, &all)
}

#[test]
fn container_hosted_target() {
    if !require_root("container_hosted_target")
        || !require_program("container_hosted_target", "dockerd")
    {
        return;
    }
    let started = Instant::now();
    let tmp = TempDir::new("container");
    let engine = Engine::up(&tmp.path("dockerd.log"));
    println!("dockerd started by this test: {}", engine.started_here());
    engine.remove_leftovers();
    build_image("docker", IMAGE);
    let ietadm = binary("ietadm");

    let id = std::process::id();
    let net = Network::create(&format!("iet-test-{id}"), SUBNET);
    let (host_a, host_b) = (format!("iet-a-{id}"), format!("iet-b-{id}"));
    let pins_a = Path::new("/sys/fs/bpf/iet").join(&host_a);
    let pins_b = Path::new("/sys/fs/bpf/iet").join(&host_b);
    let _pins = RemoveOnDrop(vec![pins_a.clone(), pins_b.clone()]);
    let run_a = tmp.path("run-a");
    let run_c = tmp.path("run-c");
    std::fs::create_dir_all(&run_a).unwrap();
    std::fs::create_dir_all(&run_c).unwrap();
    let published = iet_tests::inprocess::free_port();
    let advertised = SocketAddr::from(([127, 0, 0, 1], published));

    // A: least capabilities, the host's bpffs, the control socket on a
    // volume, the portal published on the host's loopback and advertised.
    let least = ["--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN"];
    let bpffs = "/sys/fs/bpf:/sys/fs/bpf";
    let a = run_target(
        &host_a,
        &target_args(&net.name, &host_a, 10, "a"),
        &[
            least[0],
            least[1],
            least[2],
            least[3],
            "-v",
            bpffs,
            "-v",
            &format!("{}:/run/iet", run_a.display()),
            "-p",
            &format!("{advertised}:3260"),
            "-e",
            &format!("IET_ADVERTISE={advertised}"),
            "-e",
            "IET_EBPF=on",
        ],
    );
    // B: the same capabilities, the host's cgroup2 hierarchy bind-mounted.
    let cg_bind = format!("{HOST_CGROUP2}:{HOST_CGROUP2}:ro");
    let b = run_target(
        &host_b,
        &target_args(&net.name, &host_b, 11, "b"),
        &[
            least[0],
            least[1],
            least[2],
            least[3],
            "-v",
            bpffs,
            "-v",
            &cg_bind,
            "-e",
            "IET_EBPF=on",
        ],
    );
    // C: no added capabilities, no host mounts: plain sockets.
    let host_c = format!("iet-c-{id}");
    let c = run_target(
        &host_c,
        &target_args(&net.name, &host_c, 12, "c"),
        &["-v", &format!("{}:/run/iet", run_c.display())],
    );
    let portal = |last| SocketAddr::from((ip(last), 3260));
    wait_listening(&a, portal(10));
    wait_listening(&b, portal(11));
    wait_listening(&c, portal(12));

    // libiscsi from the host to A's bridge address.
    let lun_url = format!("iscsi://{}/{}/0", ip(10), iqn("a"));
    let inq = libiscsi::run("iscsi-inq", &[&lun_url], Duration::from_secs(20));
    assert!(inq.success, "iscsi-inq: {inq:?}\n{}", a.all_logs());
    let ls = libiscsi::run(
        "iscsi-ls",
        &["-s", &format!("iscsi://{}", ip(10))],
        Duration::from_secs(20),
    );
    assert!(ls.success, "iscsi-ls: {ls:?}\n{}", a.all_logs());
    assert!(
        ls.stdout.contains(&iqn("a")) && ls.stdout.contains(&advertised.to_string()),
        "SendTargets names the target at the advertised address {advertised}:\n{}",
        ls.stdout
    );
    let (summary, out) = libiscsi::test_cu("SCSI.Read10", &[&lun_url], Duration::from_mins(1));
    assert!(
        summary.ran > 0 && summary.failed == 0,
        "iscsi-test-cu SCSI.Read10 against the container: {summary:?}\n{out}"
    );
    // The advertised address works: the published port reaches A.
    let mut nat = login(advertised, &iqn("a"), 9);
    assert_eq!(nat.nop(b"nat").unwrap(), b"nat");
    assert_eq!(nat.logout().unwrap(), 0);

    // One session to each eBPF container, held open.
    let mut sa = login(portal(10), &iqn("a"), 1);
    let sb = login(portal(11), &iqn("b"), 2);
    let (pa, pb) = (local_port(&sa), local_port(&sb));
    let progs = bpftool_json(&["prog", "show"]);
    let names: Vec<&str> = progs
        .as_array()
        .expect("prog show is an array")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.iter().filter(|n| **n == PROG_SOCK_OPS).count() >= 2
            && names.iter().filter(|n| **n == PROG_SK_MSG).count() >= 2,
        "host bpftool lists both containers' programs: {names:?}"
    );
    let (seen_a, seen_b) = (tracked_peer_ports(&pins_a), tracked_peer_ports(&pins_b));
    assert!(
        seen_a.contains(&pa) && !seen_a.contains(&pb),
        "A's pinned map holds A's connection (port {pa}) only: {seen_a:?}"
    );
    assert!(
        seen_b.contains(&pb) && !seen_b.contains(&pa),
        "B's pinned map holds B's connection (port {pb}) only: {seen_b:?}"
    );
    let root_progs = sock_ops_on(Path::new(HOST_CGROUP2));
    for ct in [&a, &b] {
        let dir = ct.host_cgroup();
        let on_ct = sock_ops_on(&dir);
        assert_eq!(
            on_ct.len(),
            1,
            "one sock_ops on {}'s cgroup {}:\n{}",
            ct.name,
            dir.display(),
            ct.all_logs()
        );
        assert!(
            !root_progs.contains(&on_ct[0]),
            "{}'s sock_ops is not on the root cgroup",
            ct.name
        );
    }

    refuses_the_host_root_from_inside(&b);

    // ietadm from the host through the volume, and inside the container.
    let sessions = Command::new(&ietadm)
        .args(["--control"])
        .arg(run_a.join("ietd.sock"))
        .args(["--json", "show", "sessions"])
        .output()
        .expect("ietadm");
    let text = String::from_utf8_lossy(&sessions.stdout);
    assert!(
        sessions.status.success() && text.contains(&pa.to_string()),
        "ietadm on the host sees A's session from port {pa}: {text}{}",
        String::from_utf8_lossy(&sessions.stderr)
    );
    docker_ok(&["exec", &a.name, "/usr/local/bin/ietadm", "stats"]);

    // C serves on plain sockets after exactly one warning.
    let inq_c = libiscsi::run(
        "iscsi-inq",
        &[&format!("iscsi://{}/{}/0", ip(12), iqn("c"))],
        Duration::from_secs(20),
    );
    assert!(inq_c.success, "iscsi-inq to C: {inq_c:?}\n{}", c.all_logs());
    let (out_c, _) = c.logs();
    let warnings: Vec<&str> = out_c.lines().filter(|l| l.contains("WARN")).collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains("plain sockets"),
        "one warning, about plain sockets:\n{}",
        c.all_logs()
    );
    assert!(!Path::new("/sys/fs/bpf/iet").join(&host_c).exists());

    // Logs go to stdout; the health check turns healthy.
    let (out_a, _) = a.logs();
    assert!(
        out_a.contains("eBPF programs attached"),
        "A logs to stdout:\n{}",
        a.all_logs()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = a.inspect("{{.State.Health.Status}}");
        if health == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A's health check: {health}\n{}",
            a.all_logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // docker stop: an Async Message asks the initiator to log out.
    let name = a.name.clone();
    let stop_started = Instant::now();
    let stopper = std::thread::spawn(move || docker(&["stop", "-t", "10", &name]));
    let msg = loop {
        let pdu = sa.recv().expect("an Async Message before the close");
        if pdu.bhs.opcode() == Some(Opcode::AsyncMessage) {
            break pdu;
        }
    };
    assert_eq!(msg.bhs.0[36], 1, "AsyncEvent 1: logout requested");
    assert_eq!(sa.logout().unwrap(), 0, "logout succeeds");
    let stopped = stopper.join().expect("docker stop thread");
    assert!(stopped.status.success(), "docker stop: {stopped:?}");
    assert!(
        stop_started.elapsed() < Duration::from_secs(10),
        "stopped within the stop timeout ({:?})",
        stop_started.elapsed()
    );
    assert_eq!(
        a.inspect("{{.State.ExitCode}}"),
        "0",
        "SIGTERM ends ietd cleanly:\n{}",
        a.all_logs()
    );
    drop(sb);
    drop((a, b, c));
    redirects_to_a_container_on_this_host(&net.name, &tmp);
    drop(net);
    drop(engine);
    println!("container test took {:?}", started.elapsed());
}

/// A second ietd entering B's namespaces (mount, PID, UTS, network) from
/// the host stays in the host's root cgroup: with the host's hierarchy
/// bind-mounted in B, it sees itself in a container at the host's root and
/// must refuse to start, even with `--ebpf auto`, attaching nothing there.
fn refuses_the_host_root_from_inside(b: &Container) {
    let before = sock_ops_on(Path::new(HOST_CGROUP2));
    let pid = b.pid().to_string();
    let out = Command::new("timeout")
        .args(["20", "nsenter", "-t", &pid, "-m", "-p", "-u", "-n", "--"])
        .args(["/usr/local/bin/ietd", "--portal", "0.0.0.0:3261"])
        .args(["--target", &iqn("refused"), "--lun", "mem:1M"])
        .args(["--control", "/run/iet/refused.sock", "--ebpf", "auto"])
        .output()
        .expect("nsenter runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "ietd in a container at the host's root cgroup exits with an error:\n{log}"
    );
    assert!(
        log.contains("refusing to attach sock_ops") && log.contains("--cgroup"),
        "the error says why and what to do:\n{log}"
    );
    assert_eq!(
        sock_ops_on(Path::new(HOST_CGROUP2)),
        before,
        "nothing was attached to the root"
    );
}

/// D attaches sock_ops to a cgroup holding both ends (`IET_CGROUP`, here
/// the host's root, where this test runs): the host's initiator socket and
/// the container's target socket meet in D's sockhash although the peer is
/// no loopback address, and sk_msg hands the data across; it arrives intact.
fn redirects_to_a_container_on_this_host(net: &str, tmp: &TempDir) {
    let host_d = format!("iet-d-{}", std::process::id());
    let _pins = RemoveOnDrop(vec![Path::new("/sys/fs/bpf/iet").join(&host_d)]);
    let run_d = tmp.path("run-d");
    std::fs::create_dir_all(&run_d).unwrap();
    let d = run_target(
        &host_d,
        &target_args(net, &host_d, 13, "d"),
        &[
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "NET_ADMIN",
            "-v",
            "/sys/fs/bpf:/sys/fs/bpf",
            "-v",
            &format!("{HOST_CGROUP2}:{HOST_CGROUP2}:ro"),
            "-v",
            &format!("{}:/run/iet", run_d.display()),
            "-e",
            &format!("IET_CGROUP={HOST_CGROUP2}"),
            "-e",
            "IET_EBPF=on",
        ],
    );
    let portal = SocketAddr::from((ip(13), 3260));
    wait_listening(&d, portal);
    let mut s = login(portal, &iqn("d"), 4);
    let data: Vec<u8> = (0..262_144u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(s.write10(0, 128, &data, 512).unwrap().status, 0);
    let back = s.read10(0, 128, 512, 512).unwrap();
    assert_eq!(back.status, 0);
    assert!(back.data == data, "256 KiB written and read back intact");
    assert_eq!(s.logout().unwrap(), 0);
    let stats = Command::new(binary("ietadm"))
        .arg("--control")
        .arg(run_d.join("ietd.sock"))
        .args(["--json", "stats"])
        .output()
        .expect("ietadm stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("JSON stats");
    assert!(
        stats["kernel"]["redirected_msgs"].as_u64().unwrap_or(0) > 0,
        "sk_msg redirected between the host and the container: {stats}\n{}",
        d.all_logs()
    );
}

/// compose.yaml's configuration loads and says what the comments say.
#[test]
fn container_example_config_loads() {
    let path = iet_tests::process::workspace_root().join("examples/container.toml");
    let config = iet::config::Config::load(&path).expect("examples/container.toml loads");
    config.validate().expect("and is valid");
    assert_eq!(config.control, Path::new("/run/iet/ietd.sock"));
    assert_eq!(
        config.ebpf.pin_dir,
        Path::new("/sys/fs/bpf/iet"),
        "left to its default"
    );
    let lun = &config.targets[0].luns[0];
    assert_eq!(
        (lun.path.as_str(), lun.create_size),
        ("/data/lun0.img", Some(1 << 30))
    );
}
