//! iet under Podman with its least privilege (root and Podman; in CI a
//! skip is a failure): `--cap-add BPF,NET_ADMIN,PERFMON` and the seccomp
//! profile in contrib/ load the data plane; without that profile, or
//! without PERFMON, `--ebpf on` fails and says why.

use std::path::Path;
use std::time::Duration;

use iet_tests::container::{
    Container, build_image, engine, local_port, login, require_program, sock_ops_on,
    tracked_peer_ports, wait_listening,
};
use iet_tests::libiscsi;
use iet_tests::process::{require_root, workspace_root};

const PODMAN: &str = "podman";
const IMAGE: &str = "localhost/iet:test";
const IQN: &str = "iqn.2026-12.io.iet:podman";

/// Podman cannot raise limits without CAP_SYS_RESOURCE, and by default it
/// asks for more than this host allows: ask for what we already have.
fn ulimits() -> Vec<String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to an rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) };
    assert_eq!(rc, 0, "getrlimit");
    vec![
        "--ulimit".into(),
        format!("nofile={}:{}", lim.rlim_max, lim.rlim_max),
        "--ulimit".into(),
        "nproc=4096:4096".into(),
    ]
}

fn run(name: &str, caps: &str, seccomp: bool) -> Container {
    let profile = workspace_root().join("contrib/seccomp-ietd.json");
    let seccomp_opt = format!("seccomp={}", profile.display());
    let mut args: Vec<String> = ulimits();
    args.extend(["--hostname".into(), name.into()]);
    args.extend(["--cap-add".into(), caps.into()]);
    if seccomp {
        args.extend(["--security-opt".into(), seccomp_opt]);
    }
    args.extend(
        [
            "-v",
            "/sys/fs/bpf:/sys/fs/bpf",
            "-v",
            "/sys/fs/cgroup/unified:/sys/fs/cgroup/unified:ro",
            "-e",
            &format!("IET_TARGET={IQN}"),
            "-e",
            "IET_LUN=mem:64M",
            "-e",
            "IET_EBPF=on",
            IMAGE,
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Container::run_with(PODMAN, name, &args)
}

/// Waits for a container that must fail to exit, and returns its log.
fn failed_log(c: &Container) -> String {
    let _ = engine(PODMAN, &["wait", &c.name]);
    assert_eq!(
        c.inspect("{{.State.ExitCode}}"),
        "1",
        "ietd --ebpf on must fail:\n{}",
        c.all_logs()
    );
    c.all_logs()
}

#[test]
fn podman_least_privilege() {
    if !require_root("podman_least_privilege") || !require_program("podman_least_privilege", PODMAN)
    {
        return;
    }
    build_image(PODMAN, IMAGE);
    let id = std::process::id();
    let name = format!("iet-pm-{id}");
    let pins = Path::new("/sys/fs/bpf/iet").join(&name);
    let ct = run(&name, "BPF,NET_ADMIN,PERFMON", true);
    let ip = ct.inspect("{{.NetworkSettings.IPAddress}}");
    let portal = format!("{ip}:3260")
        .parse()
        .expect("the container's address");
    wait_listening(&ct, portal);
    let inq = libiscsi::run(
        "iscsi-inq",
        &[&format!("iscsi://{ip}/{IQN}/0")],
        Duration::from_secs(20),
    );
    assert!(inq.success, "iscsi-inq: {inq:?}\n{}", ct.all_logs());
    let session = login(portal, IQN, 1);
    let port = local_port(&session);
    assert!(
        tracked_peer_ports(&pins).contains(&port),
        "the pinned map shows the session (port {port})\n{}",
        ct.all_logs()
    );
    assert_eq!(
        sock_ops_on(&ct.host_cgroup()).len(),
        1,
        "sock_ops on the container's cgroup"
    );
    drop(session);
    drop(ct);
    let _ = std::fs::remove_dir_all(&pins);

    // Podman's own profile allows bpf(2) only with CAP_SYS_ADMIN.
    let no_profile = run(&format!("iet-pm-np-{id}"), "BPF,NET_ADMIN,PERFMON", false);
    let log = failed_log(&no_profile);
    assert!(log.contains("Operation not permitted"), "{log}");
    // Without PERFMON the verifier refuses sock_ops' pointer arithmetic.
    let no_perfmon = run(&format!("iet-pm-nperf-{id}"), "BPF,NET_ADMIN", true);
    let log = failed_log(&no_perfmon);
    assert!(log.contains("verifier rejected sock_ops"), "{log}");
}
