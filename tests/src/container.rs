//! Docker and Podman for end-to-end tests: dockerd started when it is not
//! running (and stopped by its PID), containers and networks removed on drop.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use iet_common::{MAP_CONNECTIONS, PROG_SOCK_OPS};

use crate::initiator::{Conn, LoginOptions};

/// Every container and network a test makes carries this label, so a run
/// that crashed is cleaned up by the next one.
pub const LABEL: &str = "io.iet.test=container";

/// Debian's docker client (the one that matches its dockerd) when present.
pub fn docker_bin() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

pub fn docker(args: &[&str]) -> Output {
    engine(docker_bin(), args)
}

/// Runs docker and returns its trimmed stdout; panics with stderr on failure.
pub fn docker_ok(args: &[&str]) -> String {
    engine_ok(docker_bin(), args)
}

/// Whether `program` is installed; outside CI a test without it skips
/// (`cargo xtask test` installs docker.io and podman), in CI it fails.
pub fn require_program(test: &str, program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    if found {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs {program}, and CI must run it"
    );
    eprintln!("skipping {test}: {program} is not installed (cargo xtask test installs it)");
    false
}

/// Runs a container engine's command line (docker or podman).
pub fn engine(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{bin} {args:?}: {e} (install Debian's docker.io / podman)"))
}

/// As [`engine`], returning trimmed stdout; panics with stderr on failure.
pub fn engine_ok(bin: &str, args: &[&str]) -> String {
    let out = engine(bin, args);
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn daemon_answers() -> bool {
    Command::new(docker_bin())
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A reachable dockerd; the one this test started is stopped on drop.
pub struct Engine {
    started: Option<Child>,
}

impl Engine {
    /// Uses a running dockerd or starts one (cgroupfs driver, which this
    /// hybrid-cgroup host needs), waiting until it answers.
    pub fn up(log: &Path) -> Engine {
        if daemon_answers() {
            return Engine { started: None };
        }
        let logfile = std::fs::File::create(log).expect("dockerd log");
        let child = Command::new("dockerd")
            .args(["--exec-opt", "native.cgroupdriver=cgroupfs"])
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("log"))
            .stderr(logfile)
            .spawn()
            .unwrap_or_else(|e| panic!("starting dockerd: {e} (install Debian's docker.io)"));
        let mut engine = Engine {
            started: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !daemon_answers() {
            if let Some(Ok(Some(st))) = engine.started.as_mut().map(Child::try_wait) {
                panic!(
                    "dockerd exited with {st}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 30 s:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        engine
    }

    pub fn started_here(&self) -> bool {
        self.started.is_some()
    }

    /// Removes what an earlier, crashed run left behind.
    pub fn remove_leftovers(&self) {
        let label = format!("label={LABEL}");
        let ids = docker_ok(&["ps", "-aq", "--filter", &label]);
        for id in ids.lines() {
            let _ = docker(&["rm", "-f", "-v", id]);
        }
        let nets = docker_ok(&["network", "ls", "-q", "--filter", &label]);
        for id in nets.lines() {
            let _ = docker(&["network", "rm", id]);
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let Some(child) = self.started.as_mut() else {
            return;
        };
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: signalling a child we spawned and have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A user-defined bridge network, removed on drop.
pub struct Network {
    pub name: String,
}

impl Network {
    pub fn create(name: &str, subnet: &str) -> Network {
        docker_ok(&[
            "network", "create", "--driver", "bridge", "--label", LABEL, "--subnet", subnet, name,
        ]);
        Network {
            name: name.to_owned(),
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// A detached container, removed (with its anonymous volumes) on drop.
pub struct Container {
    pub name: String,
    /// The engine's binary (docker or podman).
    pub engine: String,
}

impl Container {
    /// `docker run -d --name NAME --label ... ARGS`.
    pub fn run(name: &str, args: &[&str]) -> Container {
        Container::run_with(docker_bin(), name, args)
    }

    /// `ENGINE run -d --name NAME --label ... ARGS`.
    pub fn run_with(bin: &str, name: &str, args: &[&str]) -> Container {
        let _ = engine(bin, &["rm", "-f", "-v", name]);
        let mut all = vec!["run", "-d", "--name", name, "--label", LABEL];
        all.extend_from_slice(args);
        engine_ok(bin, &all);
        Container {
            name: name.to_owned(),
            engine: bin.to_owned(),
        }
    }

    pub fn inspect(&self, format: &str) -> String {
        engine_ok(&self.engine, &["inspect", "--format", format, &self.name])
    }

    /// The container's init process as the host sees it.
    pub fn pid(&self) -> u32 {
        self.inspect("{{.State.Pid}}")
            .parse()
            .expect("a numeric pid")
    }

    /// The cgroup v2 directory of the container on the host, from
    /// /proc/PID/cgroup and the host's cgroup2 mount.
    pub fn host_cgroup(&self) -> PathBuf {
        let text = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid()))
            .expect("/proc/PID/cgroup");
        let own = iet::dataplane::cgroup::own_cgroup(&text).expect("a cgroup v2 line");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mounts = iet::dataplane::cgroup::cgroup2_mounts(&mountinfo);
        iet::dataplane::cgroup::resolve(own, &mounts).expect("the host shows the container")
    }

    /// (stdout, stderr) of `docker logs`.
    pub fn logs(&self) -> (String, String) {
        let out = engine(&self.engine, &["logs", &self.name]);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Both log streams, for failure messages.
    pub fn all_logs(&self) -> String {
        let (out, err) = self.logs();
        format!("--- {} stdout:\n{out}--- stderr:\n{err}", self.name)
    }

    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// Waits for the container to exit and returns its exit code; panics
    /// with its logs after `within` (the container is removed on drop).
    pub fn wait_exit(&self, within: Duration) -> i64 {
        let deadline = Instant::now() + within;
        while self.running() {
            assert!(
                Instant::now() < deadline,
                "{} still runs after {within:?}:\n{}",
                self.name,
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.inspect("{{.State.ExitCode}}")
            .parse()
            .expect("a numeric exit code")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = engine(&self.engine, &["rm", "-f", "-v", &self.name]);
    }
}

/// Directories removed on drop, e.g. the pin directories containers leave
/// on the host's bpffs.
pub struct RemoveOnDrop(pub Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `cargo xtask image --debug`: the same Containerfile and local base as a
/// release image, with the binaries the test run already built.
pub fn build_image(engine: &str, tag: &str) {
    let started = Instant::now();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(crate::process::workspace_root())
        .args(["run", "-q", "-p", "xtask", "--", "image", "--debug"])
        .args(["--engine", engine, "--tag", tag])
        .status()
        .expect("cargo xtask image");
    assert!(
        status.success(),
        "cargo xtask image --debug --engine {engine} failed"
    );
    println!("image {tag} built with {engine} in {:?}", started.elapsed());
}

/// Waits until the container's portal accepts connections.
pub fn wait_listening(c: &Container, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err() {
        assert!(
            c.running(),
            "{} exited before listening:\n{}",
            c.name,
            c.all_logs()
        );
        assert!(
            Instant::now() < deadline,
            "{} did not listen on {addr}:\n{}",
            c.name,
            c.all_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool (Debian package bpftool) runs");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return serde_json::json!([]);
    }
    serde_json::from_slice(&out.stdout).expect("bpftool prints JSON")
}

/// Target-side remote ports (the initiators' ports) in a pinned map.
pub fn tracked_peer_ports(pin_dir: &Path) -> Vec<u64> {
    let map = pin_dir.join(MAP_CONNECTIONS);
    bpftool_json(&["map", "dump", "pinned", &map.to_string_lossy()])
        .as_array()
        .expect("a map dump is an array")
        .iter()
        .filter_map(|e| e["formatted"]["key"]["remote_port"].as_u64())
        .collect()
}

/// Ids of the sock_ops programs named ours attached to a cgroup directory.
pub fn sock_ops_on(dir: &Path) -> Vec<u64> {
    bpftool_json(&["cgroup", "show", &dir.to_string_lossy()])
        .as_array()
        .expect("cgroup show is an array")
        .iter()
        .filter(|p| {
            p["attach_type"]
                .as_str()
                .is_some_and(|t| t.ends_with("sock_ops"))
                && p["name"] == PROG_SOCK_OPS
        })
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

pub fn login(addr: SocketAddr, target: &str, isid: u8) -> Conn {
    let mut c = Conn::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut opts = LoginOptions::normal(target);
    opts.isid[5] = isid;
    c.login(&opts)
        .unwrap_or_else(|e| panic!("login to {target} at {addr}: {e:?}"));
    c.clear_unit_attention(0).expect("TEST UNIT READY");
    c
}

pub fn local_port(c: &Conn) -> u64 {
    u64::from(c.sock.local_addr().expect("local address").port())
}
