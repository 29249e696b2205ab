//! Container to container on one host (root and Docker; in CI a skip is a
//! failure): a target container and initiator containers on one bridge,
//! the target's sock_ops on the cgroup that holds every Docker container
//! (`IET_CGROUP=/sys/fs/cgroup/unified/docker`, the host's cgroup2
//! hierarchy bind-mounted read-only). Each initiator container runs this
//! build's `iet-load --verify`, bind-mounted into the iet image: a seeded
//! pattern written over the bridge and read back, every byte compared.
//!
//! - redirect on (the default): data identical, sk_msg redirected messages;
//! - `ietadm portal set ... --redirect false`: data identical, sock_ops
//!   still sees the initiator connect, and not one message is redirected;
//! - redirect on again: it redirects again, so the switch is the cause.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use iet_tests::container::{
    Container, Engine, Network, RemoveOnDrop, build_image, require_program, sock_ops_on,
    wait_listening,
};
use iet_tests::process::{TempDir, binary, require_root};
use iet_tests::verify::VerifyResult;

const IMAGE: &str = "iet:test-c2c";
const SUBNET: &str = "10.212.13.0/24";
const HOST_CGROUP2: &str = "/sys/fs/cgroup/unified";
/// Where Docker's cgroupfs driver puts containers in the v2 hierarchy.
const DOCKER_CGROUP: &str = "/sys/fs/cgroup/unified/docker";
const PORTAL: &str = "0.0.0.0:3260";
const IQN: &str = "iqn.2026-12.io.iet:c2c";
const SPAN_MIB: u64 = 16;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 212, 13, last)
}

/// The target's kernel counters, from `ietadm --json stats` on the host
/// through the volume-mounted control socket.
#[derive(Debug, Clone, Copy)]
struct Kernel {
    redirected_msgs: u64,
    initiator_connections: u64,
}

struct Target {
    container: Container,
    control: PathBuf,
}

impl Target {
    fn ietadm(&self, args: &[&str]) -> String {
        let out = Command::new(binary("ietadm"))
            .arg("--control")
            .arg(&self.control)
            .args(args)
            .output()
            .expect("ietadm runs");
        assert!(
            out.status.success(),
            "ietadm {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.container.all_logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn kernel(&self) -> Kernel {
        let stats: serde_json::Value =
            serde_json::from_str(&self.ietadm(&["--json", "stats"])).expect("JSON stats");
        let counter = |name: &str| {
            stats["kernel"][name]
                .as_u64()
                .unwrap_or_else(|| panic!("kernel.{name} in the stats: {stats}"))
        };
        Kernel {
            redirected_msgs: counter("redirected_msgs"),
            initiator_connections: counter("initiator_connections"),
        }
    }

    fn set_redirect(&self, on: bool) {
        self.ietadm(&[
            "portal",
            "set",
            PORTAL,
            "--accounting",
            "false",
            "--redirect",
            if on { "true" } else { "false" },
        ]);
    }
}

/// An initiator container at `last` on the network running `iet-load
/// --verify` to completion; asserts it exits 0 with every byte identical.
fn write_then_verify(net: &str, last: u8, run: &str, seed: u64) -> VerifyResult {
    let iet_load = env!("CARGO_BIN_EXE_iet-load");
    let name = format!("iet-c2c-i{last}-{}", std::process::id());
    let span = SPAN_MIB.to_string();
    let seed = seed.to_string();
    let portal = SocketAddr::from((ip(10), 3260)).to_string();
    let i = Container::run(
        &name,
        &[
            "--network",
            net,
            "--ip",
            &ip(last).to_string(),
            "--no-healthcheck",
            "-v",
            &format!("{iet_load}:/usr/local/bin/iet-load:ro"),
            "--entrypoint",
            "/usr/local/bin/iet-load",
            IMAGE,
            "--portal",
            &portal,
            "--target",
            IQN,
            "--verify",
            "--span-mib",
            &span,
            "--io-size",
            "262144",
            "--seed",
            &seed,
        ],
    );
    let code = i.wait_exit(Duration::from_mins(2));
    let (stdout, _) = i.logs();
    assert_eq!(
        code,
        0,
        "{run}: iet-load --verify in a container exits 0:\n{}",
        i.all_logs()
    );
    let result: VerifyResult = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{run}: a JSON result:\n{}", i.all_logs()));
    assert_eq!(
        (
            result.written_bytes,
            result.verified_bytes,
            result.mismatched_bytes
        ),
        (SPAN_MIB << 20, SPAN_MIB << 20, 0),
        "{run}: every byte read back is the byte written: {result:?}"
    );
    assert_eq!(result.first_mismatch, None, "{run}: {result:?}");
    println!(
        "{run}: {SPAN_MIB} MiB verified in {} ms",
        result.milliseconds
    );
    result
}

#[test]
fn redirects_between_containers_on_this_host() {
    if !require_root("redirects_between_containers_on_this_host")
        || !require_program("redirects_between_containers_on_this_host", "dockerd")
    {
        return;
    }
    let started = Instant::now();
    let tmp = TempDir::new("c2c");
    let engine = Engine::up(&tmp.path("dockerd.log"));
    engine.remove_leftovers();
    build_image("docker", IMAGE);
    let id = std::process::id();
    let net = Network::create(&format!("iet-c2c-{id}"), SUBNET);
    let host_t = format!("iet-c2c-t-{id}");
    let _pins = RemoveOnDrop(vec![Path::new("/sys/fs/bpf/iet").join(&host_t)]);
    let run_t = tmp.path("run-t");
    std::fs::create_dir_all(&run_t).unwrap();
    let container = Container::run(
        &host_t,
        &[
            "--network",
            &net.name,
            "--ip",
            &ip(10).to_string(),
            "--hostname",
            &host_t,
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "NET_ADMIN",
            "-v",
            "/sys/fs/bpf:/sys/fs/bpf",
            "-v",
            &format!("{HOST_CGROUP2}:{HOST_CGROUP2}:ro"),
            "-v",
            &format!("{}:/run/iet", run_t.display()),
            "-e",
            &format!("IET_TARGET={IQN}"),
            "-e",
            "IET_LUN=mem:64M",
            "-e",
            &format!("IET_CGROUP={DOCKER_CGROUP}"),
            "-e",
            "IET_EBPF=on",
            IMAGE,
        ],
    );
    wait_listening(&container, SocketAddr::from((ip(10), 3260)));
    let t = Target {
        container,
        control: run_t.join("ietd.sock"),
    };

    // The premise: the target's cgroup is below the one sock_ops sits on,
    // and so is every container Docker starts next (the initiators).
    let docker_cgroup = Path::new(DOCKER_CGROUP);
    let own = t.container.host_cgroup();
    assert!(
        own.starts_with(docker_cgroup) && own != docker_cgroup,
        "the target container's cgroup {} is below {DOCKER_CGROUP}",
        own.display()
    );
    assert_eq!(
        sock_ops_on(docker_cgroup).len(),
        1,
        "one sock_ops of ours on {DOCKER_CGROUP}:\n{}",
        t.container.all_logs()
    );

    let before = t.kernel();
    let on = write_then_verify(&net.name, 20, "redirect on", 0x0c2c_0001);
    let after_on = t.kernel();
    assert!(
        after_on.initiator_connections > before.initiator_connections,
        "sock_ops saw the initiator container connect: {before:?} -> {after_on:?}"
    );
    assert!(
        after_on.redirected_msgs > before.redirected_msgs,
        "sk_msg redirected between the two containers: {before:?} -> {after_on:?}\n{}",
        t.container.all_logs()
    );

    t.set_redirect(false);
    let off = write_then_verify(&net.name, 21, "redirect off", 0x0c2c_0002);
    let after_off = t.kernel();
    assert!(
        after_off.initiator_connections > after_on.initiator_connections,
        "with redirect off sock_ops still sees the initiator: {after_on:?} -> {after_off:?}"
    );
    assert_eq!(
        after_off.redirected_msgs, after_on.redirected_msgs,
        "with redirect off no message is redirected"
    );

    t.set_redirect(true);
    write_then_verify(&net.name, 22, "redirect on again", 0x0c2c_0003);
    let again = t.kernel();
    assert!(
        again.redirected_msgs > after_off.redirected_msgs,
        "switched back on, sk_msg redirects again: {after_off:?} -> {again:?}"
    );
    println!(
        "redirected messages: {} (on), 0 (off), {} (on again); verify took {} ms on, {} ms off",
        after_on.redirected_msgs - before.redirected_msgs,
        again.redirected_msgs - after_off.redirected_msgs,
        on.milliseconds,
        off.milliseconds
    );
    drop(t);
    drop(net);
    drop(engine);
    println!("container-to-container test took {:?}", started.elapsed());
}
