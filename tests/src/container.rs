//! Docker for end-to-end tests: dockerd started when it is not running
//! (and stopped by its PID), containers and networks removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    Command::new(docker_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e} (install Debian's docker.io)"))
}

/// Runs docker and returns its trimmed stdout; panics with stderr on failure.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}\n{}",
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
}

impl Container {
    /// `docker run -d --name NAME --label ... ARGS`.
    pub fn run(name: &str, args: &[&str]) -> Container {
        let _ = docker(&["rm", "-f", "-v", name]);
        let mut all = vec!["run", "-d", "--name", name, "--label", LABEL];
        all.extend_from_slice(args);
        docker_ok(&all);
        Container {
            name: name.to_owned(),
        }
    }

    pub fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "--format", format, &self.name])
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
        let out = docker(&["logs", &self.name]);
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
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}
