//! `cargo xtask bench --container`: same-host redirect between containers. A target container
//! (release image, 1 GiB `mem:` LUN, sock_ops on the cgroup holding every Docker container) and,
//! per run, the release `iet-load` in an initiator container on the same bridge; redirect on and
//! off alternate through `ietadm portal set`. Writes target/bench/container.md.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Sample, median};
use crate::image::{ImageArgs, TARGET_IMAGE};
use crate::prereq::{self, run, step};

/// Every container and network this section makes carries it, so what a
/// crashed run left is removed by the next.
const LABEL: &str = "io.iet.bench=container";
const NETWORK: &str = "iet-bench-c2c";
const SUBNET: &str = "10.212.14.0/24";
const TARGET_IP: &str = "10.212.14.10";
const INITIATOR_IP: &str = "10.212.14.20";
const TARGET_NAME: &str = "iet-bench-c2c-target";
const INITIATOR_NAME: &str = "iet-bench-c2c-initiator";
const IQN: &str = "iqn.2026-12.io.iet:bench-c2c";
/// The image's portal, as `ietadm portal set` names it.
const PORTAL: &str = "0.0.0.0:3260";

/// (name, iet-load pattern, I/O size, queue depth)
const CASES: &[(&str, &str, u32, usize)] = &[
    ("4K random read QD1", "randread", 4096, 1),
    ("4K random read QD32", "randread", 4096, 32),
    ("4K random write QD32", "randwrite", 4096, 32),
    ("128K sequential read QD32", "seqread", 128 * 1024, 32),
];

/// Debian's docker client (the one that matches its dockerd) when present.
fn docker_bin() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

fn docker(args: &[&str]) -> anyhow::Result<Output> {
    Command::new(docker_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("docker {args:?} (Debian package docker.io)"))
}

/// Runs docker and returns its trimmed stdout, failing with its stderr.
fn docker_ok(args: &[&str]) -> anyhow::Result<String> {
    let out = docker(args)?;
    if !out.status.success() {
        bail!(
            "docker {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn daemon_answers() -> bool {
    docker(&["info", "--format", "{{.ServerVersion}}"]).is_ok_and(|o| o.status.success())
}

/// A reachable dockerd; one started here is stopped by its PID on drop.
struct Engine(Option<Child>);

impl Engine {
    /// The running dockerd, or one started with the cgroupfs driver (which
    /// puts containers at /docker/<id>, where sock_ops is attached).
    fn up(log: &Path) -> anyhow::Result<Engine> {
        if daemon_answers() {
            return Ok(Engine(None));
        }
        step("starting dockerd (stopped again at the end)");
        let logfile = std::fs::File::create(log)?;
        let child = Command::new("dockerd")
            .args(["--exec-opt", "native.cgroupdriver=cgroupfs"])
            .stdin(Stdio::null())
            .stdout(logfile.try_clone()?)
            .stderr(logfile)
            .spawn()
            .context("starting dockerd (Debian package docker.io)")?;
        let engine = Engine(Some(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !daemon_answers() {
            if Instant::now() > deadline {
                bail!("dockerd did not answer within 30 s; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(engine)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let Some(child) = self.0.as_mut() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: signalling a child we spawned and have not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
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

/// Undoes one thing on drop: `docker ARGS`, then removes `dirs`.
struct Undo {
    docker: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Undo {
    fn docker(args: &[&str]) -> Undo {
        Undo {
            docker: args.iter().map(|a| (*a).to_owned()).collect(),
            dirs: Vec::new(),
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.docker.is_empty() {
            let args: Vec<&str> = self.docker.iter().map(String::as_str).collect();
            let _ = docker(&args);
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn remove_leftovers() -> anyhow::Result<()> {
    let label = format!("label={LABEL}");
    for id in docker_ok(&["ps", "-aq", "--filter", &label])?.lines() {
        let _ = docker(&["rm", "-f", "-v", id]);
    }
    for id in docker_ok(&["network", "ls", "-q", "--filter", &label])?.lines() {
        let _ = docker(&["network", "rm", id]);
    }
    Ok(())
}

/// The host's cgroup2 mount point: /sys/fs/cgroup/unified on a hybrid
/// host, /sys/fs/cgroup on a v2-only one.
fn cgroup2_mount() -> anyhow::Result<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next() == Some("cgroup2"))
                .then(|| left.split_whitespace().nth(4).map(str::to_owned))?
        })
        .context("no cgroup2 mount on the host")
}

/// The target's `ietadm`: the release build on the host, through the
/// control socket on a host directory.
struct Control {
    ietadm: PathBuf,
    socket: PathBuf,
}

impl Control {
    fn ietadm(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.ietadm)
            .arg("--control")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("running ietadm")?;
        if !out.status.success() {
            bail!(
                "ietadm {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn redirected_msgs(&self) -> anyhow::Result<u64> {
        let stats: serde_json::Value =
            serde_json::from_str(&self.ietadm(&["--json", "stats"])?).context("ietadm stats")?;
        stats["kernel"]["redirected_msgs"]
            .as_u64()
            .with_context(|| format!("no kernel counters (is the data plane on?): {stats}"))
    }

    fn set_redirect(&self, on: bool) -> anyhow::Result<()> {
        let on = if on { "true" } else { "false" };
        self.ietadm(&[
            "portal",
            "set",
            PORTAL,
            "--accounting",
            "false",
            "--redirect",
            on,
        ])
        .map(drop)
    }
}

/// `iet-load ARGS` in a fresh initiator container; its stdout.
fn iet_load_in_container(iet_load: &Path, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let _remove = Undo::docker(&["rm", "-f", "-v", INITIATOR_NAME]);
    let mount = format!("{}:/usr/local/bin/iet-load:ro", iet_load.display());
    let mut all = vec![
        "run",
        "--rm",
        "--name",
        INITIATOR_NAME,
        "--label",
        LABEL,
        "--network",
        NETWORK,
        "--ip",
        INITIATOR_IP,
        "--no-healthcheck",
        "-v",
        &mount,
        "--entrypoint",
        "/usr/local/bin/iet-load",
        TARGET_IMAGE,
    ];
    all.extend_from_slice(args);
    let out = docker(&all)?;
    if !out.status.success() {
        bail!(
            "iet-load {args:?} in a container: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn sample(stdout: &[u8]) -> anyhow::Result<Sample> {
    let v: serde_json::Value = serde_json::from_slice(stdout).context("iet-load JSON")?;
    if v["errors"].as_u64() != Some(0) {
        bail!("commands failed: {v}");
    }
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let u = |k: &str| v[k].as_u64().unwrap_or(0);
    Ok(Sample {
        iops: f("iops"),
        mib_per_s: f("mib_per_s"),
        p50_us: u("p50_us"),
        p99_us: u("p99_us"),
        p999_us: u("p999_us"),
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// One case's medians with redirect on and off, and the messages sk_msg
/// redirected over its runs in each mode.
struct Row {
    name: &'static str,
    on: Sample,
    off: Sample,
    redirected_on: u64,
    redirected_off: u64,
}

pub(super) fn bench(root: &Path, smoke: bool) -> anyhow::Result<()> {
    if !prereq::is_root() {
        bail!("the container section needs root (Docker, eBPF)");
    }
    let started = Instant::now();
    let (seconds, rounds, span_mib) = if smoke { (1, 1, 64) } else { (5, 3, 1024) };
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    prereq::apt(&["docker.io"])?;
    let _engine = Engine::up(&out_dir.join("dockerd.log"))?;
    crate::image::image(&ImageArgs {
        // `docker` (a name: image.rs keys its work directory by it).
        engine: "docker".to_owned(),
        initiator: false,
        debug: false,
        tag: TARGET_IMAGE.to_owned(),
    })?;
    step("building the release iet-load");
    run(Command::new(prereq::cargo()).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "iet-tests",
        "--bin",
        "iet-load",
    ]))?;
    let iet_load = root.join("target/release/iet-load");
    let run_dir = out_dir.join("container-run");
    std::fs::create_dir_all(&run_dir)?;
    let control = Control {
        ietadm: root.join("target/release/ietadm"),
        socket: run_dir.join("ietd.sock"),
    };

    step("a target container and an initiator container on one bridge");
    remove_leftovers()?;
    docker_ok(&[
        "network", "create", "--driver", "bridge", "--label", LABEL, "--subnet", SUBNET, NETWORK,
    ])?;
    let _network = Undo::docker(&["network", "rm", NETWORK]);
    let _target = start_target(&run_dir)?;
    let portal = format!("{TARGET_IP}:3260");
    let common = ["--portal", portal.as_str(), "--target", IQN];

    step(&format!(
        "writing {span_mib} MiB over the bridge and reading it back (iet-load --verify)"
    ));
    let span = span_mib.to_string();
    let mut verify_args = common.to_vec();
    verify_args.extend_from_slice(&["--verify", "--span-mib", &span, "--io-size", "1048576"]);
    let verified = iet_load_in_container(&iet_load, &verify_args)?;
    println!("{}", String::from_utf8_lossy(&verified).trim());

    step(&format!(
        "redirect on vs off, alternating: {rounds} round(s) of {seconds} s per case"
    ));
    let cpu = cpu_model();
    println!("CPU: {cpu}");
    let mut rows = Vec::new();
    for case in CASES {
        let row = measure(
            &control,
            &iet_load,
            &common,
            *case,
            (seconds, rounds, span_mib),
        )?;
        println!(
            "{:28} on {:>9.0} IOPS  off {:>9.0} IOPS  ratio {:.2}",
            row.name,
            row.on.iops,
            row.off.iops,
            row.on.iops / row.off.iops.max(1.0)
        );
        rows.push(row);
    }
    control.set_redirect(true)?;
    let md = report(&rows, &cpu, seconds, rounds, span_mib, smoke);
    std::fs::write(out_dir.join("container.md"), &md)?;
    print!("\n{md}");
    println!(
        "wrote {} ({} s)",
        out_dir.join("container.md").display(),
        started.elapsed().as_secs()
    );
    if let Some(r) = rows
        .iter()
        .find(|r| r.redirected_on == 0 || r.redirected_off > 0)
    {
        bail!(
            "{}: {} messages redirected with redirect on, {} with it off",
            r.name,
            r.redirected_on,
            r.redirected_off
        );
    }
    Ok(())
}

/// The target container: the release image, a 1 GiB `mem:` LUN, the
/// host's bpffs and cgroup2 hierarchy, sock_ops on Docker's cgroup (every
/// container's parent), the control socket in `run_dir`. Removed, with its
/// pin directory, when the returned value drops.
fn start_target(run_dir: &Path) -> anyhow::Result<Undo> {
    let cgroup2 = cgroup2_mount()?;
    let docker_cgroup = format!("{cgroup2}/docker");
    let mut target = Undo::docker(&["rm", "-f", "-v", TARGET_NAME]);
    target
        .dirs
        .push(Path::new("/sys/fs/bpf/iet").join(TARGET_NAME));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        TARGET_NAME,
        "--hostname",
        TARGET_NAME,
        "--label",
        LABEL,
        "--network",
        NETWORK,
        "--ip",
        TARGET_IP,
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "NET_ADMIN",
        "-v",
        "/sys/fs/bpf:/sys/fs/bpf",
        "-v",
        &format!("{cgroup2}:{cgroup2}:ro"),
        "-v",
        &format!("{}:/run/iet", run_dir.display()),
        "-e",
        &format!("IET_TARGET={IQN}"),
        "-e",
        "IET_LUN=mem:1G",
        "-e",
        &format!("IET_CGROUP={docker_cgroup}"),
        "-e",
        "IET_EBPF=on",
        TARGET_IMAGE,
    ])?;
    wait_listening(format!("{TARGET_IP}:3260").parse()?)?;
    let pid = docker_ok(&["inspect", "--format", "{{.State.Pid}}", TARGET_NAME])?;
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    if !own.lines().any(|l| l.starts_with("0::/docker/")) {
        bail!(
            "the target container is not below {docker_cgroup} (cgroup {own:?}): dockerd needs \
             --exec-opt native.cgroupdriver=cgroupfs"
        );
    }
    Ok(target)
}
/// One case, redirect on and off alternating for `rounds` rounds (which
/// mode goes first alternates too), each run in a fresh initiator
/// container; medians and the messages redirected in each mode.
fn measure(
    control: &Control,
    iet_load: &Path,
    common: &[&str],
    (name, pattern, size, qd): (&'static str, &str, u32, usize),
    (seconds, rounds, span_mib): (u32, usize, u64),
) -> anyhow::Result<Row> {
    let (size, qd) = (size.to_string(), qd.to_string());
    let (secs, span) = (seconds.to_string(), span_mib.to_string());
    let mut args = common.to_vec();
    args.extend_from_slice(&["--pattern", pattern, "--io-size", &size, "--qd", &qd]);
    args.extend_from_slice(&["--seconds", &secs, "--span-mib", &span]);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let (mut redirected_on, mut redirected_off) = (0, 0);
    for round in 0..rounds {
        for redirect in [round % 2 == 0, round % 2 != 0] {
            control.set_redirect(redirect)?;
            let before = control.redirected_msgs()?;
            let s = sample(&iet_load_in_container(iet_load, &args)?)?;
            let delta = control.redirected_msgs()? - before;
            if redirect {
                on.push(s);
                redirected_on += delta;
            } else {
                off.push(s);
                redirected_off += delta;
            }
        }
    }
    Ok(Row {
        name,
        on: median(&on),
        off: median(&off),
        redirected_on,
        redirected_off,
    })
}

fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err() {
        if Instant::now() > deadline {
            let logs = docker(&["logs", TARGET_NAME])?;
            bail!(
                "the target container does not listen on {addr}:\n{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn report(
    rows: &[Row],
    cpu: &str,
    seconds: u32,
    rounds: usize,
    span_mib: u64,
    smoke: bool,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Same-host redirect between containers{}\n",
        if smoke {
            " (smoke run: not a measurement)"
        } else {
            ""
        }
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(
        md,
        "Machine: {} cores ({cpu}), kernel {}, load average {} at the end. A target container \
         (1 GiB `mem:` LUN, sock_ops on Docker's cgroup) and the release `iet-load` in an initiator \
         container on one bridge; {rounds} alternating round(s) of {seconds} s per mode over \
         {span_mib} MiB written beforehand, medians.\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        load.split_whitespace().next().unwrap_or("?"),
    );
    let _ = writeln!(
        md,
        "| case | redirect on IOPS | redirect off IOPS | on/off | on MiB/s | off MiB/s | on p50/p99 µs | off p50/p99 µs | messages redirected (on, off) |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {}/{} | {}/{} | {}, {} |",
            r.name,
            r.on.iops,
            r.off.iops,
            r.on.iops / r.off.iops.max(1.0),
            r.on.mib_per_s,
            r.off.mib_per_s,
            r.on.p50_us,
            r.on.p99_us,
            r.off.p50_us,
            r.off.p99_us,
            r.redirected_on,
            r.redirected_off
        );
    }
    md
}
