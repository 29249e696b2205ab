//! A one-node Ceph cluster for tests and `cargo xtask ceph`: one monitor (msgr v1 on loopback),
//! one memstore OSD, no mgr, no auth, all state under one directory, daemons stopped by PID.
//!
//! This file has no dependencies beyond std, libc and anyhow: xtask includes it with `#[path]`,
//! so the tests and the command line start the same cluster the same way.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Debian packages that provide the daemons, the CLI and librbd's headers.
pub const PACKAGES: &[&str] = &["ceph-mon", "ceph-osd", "ceph-common", "librbd-dev"];

/// The pool and image every cluster gets, as in the recipe.
pub const POOL: &str = "rbd";
pub const IMAGE: &str = "disk1";
/// Size of `rbd/disk1` in MiB.
pub const IMAGE_MIB: u64 = 1024;

/// Bytes of RAM the memstore OSD may hold.
const MEMSTORE_BYTES: u64 = 2 << 30;
/// Daemons in start order; stopped in reverse.
const DAEMONS: &[&str] = &["mon.a", "osd.0"];
/// Budget for one CLI call (a monitor that is not up makes the CLI wait forever).
const CLI_TIMEOUT: Duration = Duration::from_mins(1);

/// A cluster whose state lives in `dir`. Dropping a cluster returned by [`Cluster::start`]
/// stops it; [`Cluster::detach`] leaves it running (for `cargo xtask ceph start`).
#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    /// `ceph.conf` for clients (`rbd -c`, `ietd --lun rbd:rbd/disk1?conf=...`).
    pub conf: PathBuf,
    pub mon: SocketAddr,
    /// How long [`Cluster::start`] took, image creation included.
    pub startup: Duration,
    stop_on_drop: bool,
}

/// Whether the Ceph daemons and tools are installed.
pub fn installed() -> bool {
    ["ceph-mon", "ceph-osd", "ceph", "rbd", "monmaptool"]
        .iter()
        .all(|b| Path::new("/usr/bin").join(b).exists())
}

/// A loopback TCP port nobody listens on now (the kernel's choice, so parallel tests differ).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(l.local_addr()?.port())
}

fn uuid() -> anyhow::Result<String> {
    let u = std::fs::read_to_string("/proc/sys/kernel/random/uuid").context("reading a uuid")?;
    Ok(u.trim().to_owned())
}

fn config(dir: &Path, fsid: &str, mon: SocketAddr) -> String {
    let d = dir.display();
    let mut c = String::from("[global]\n");
    for (k, v) in [
        ("fsid", fsid.to_owned()),
        ("mon host", format!("v1:{mon}")),
        ("mon initial members", "a".to_owned()),
        ("public addr", mon.ip().to_string()),
        ("ms bind msgr2", "false".to_owned()),
        ("auth cluster required", "none".to_owned()),
        ("auth service required", "none".to_owned()),
        ("auth client required", "none".to_owned()),
        ("mon allow pool size one", "true".to_owned()),
        ("mon warn on pool no redundancy", "false".to_owned()),
        // A full /tmp must not stop the monitor: the data is small and thrown away.
        ("mon data avail crit", "0".to_owned()),
        ("mon data avail warn", "0".to_owned()),
        ("osd pool default size", "1".to_owned()),
        ("osd pool default min size", "1".to_owned()),
        ("osd pool default pg autoscale mode", "off".to_owned()),
        ("osd crush chooseleaf type", "0".to_owned()),
        ("osd objectstore", "memstore".to_owned()),
        ("memstore device bytes", MEMSTORE_BYTES.to_string()),
        ("run dir", format!("{d}/run")),
        ("admin socket", format!("{d}/run/$name.asok")),
        ("pid file", format!("{d}/run/$name.pid")),
        ("log file", format!("{d}/log/$name.log")),
        ("mon data", format!("{d}/mon/$id")),
        ("osd data", format!("{d}/osd/$id")),
        ("keyring", format!("{d}/keyring")),
    ] {
        let _ = writeln!(c, "{k} = {v}");
    }
    c
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {what}"))?;
    let deadline = Instant::now() + CLI_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Runs `f` up to five times, a second apart, returning its first success or last error.
fn retry<T>(mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut tries = 1;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if tries >= 5 => return Err(e),
            Err(_) => {
                tries += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Whether `pid` runs (a zombie waiting for its reaper counts as gone).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

impl Cluster {
    /// Creates a fresh cluster in `dir` (emptied first) with its monitor on
    /// `127.0.0.1:mon_port`, then pool `rbd` and the 1 GiB image `rbd/disk1`.
    /// On any failure the daemons started so far are stopped again.
    pub fn start(dir: &Path, mon_port: u16) -> anyhow::Result<Cluster> {
        let t0 = Instant::now();
        if Cluster::attach(dir).is_ok_and(|c| !c.pids().is_empty()) {
            bail!("a cluster is already running in {}", dir.display());
        }
        let _ = std::fs::remove_dir_all(dir);
        for sub in ["run", "log", "mon", "osd/0"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let dir = dir.canonicalize()?;
        let mon = SocketAddr::from(([127, 0, 0, 1], mon_port));
        let fsid = uuid()?;
        let conf = dir.join("ceph.conf");
        std::fs::write(&conf, config(&dir, &fsid, mon))?;
        let mut cluster = Cluster {
            dir: dir.clone(),
            conf,
            mon,
            startup: Duration::ZERO,
            stop_on_drop: true,
        };
        if let Err(e) = cluster.bootstrap(&fsid) {
            // Stop what runs, keep the logs for the error report.
            cluster.stop_on_drop = false;
            let _ = cluster.stop();
            return Err(e.context(format!("logs in {}/log", dir.display())));
        }
        cluster.startup = t0.elapsed();
        Ok(cluster)
    }

    fn bootstrap(&self, fsid: &str) -> anyhow::Result<()> {
        let monmap = self.dir.join("monmap");
        run(Command::new("monmaptool")
            .args(["--create", "--fsid", fsid, "--add", "a"])
            .arg(format!("v1:{}", self.mon))
            .arg(&monmap))?;
        run(self
            .daemon("ceph-mon")
            .args(["--mkfs", "-i", "a", "--monmap"])
            .arg(&monmap))?;
        run(self.daemon("ceph-mon").args(["-i", "a"]))?;
        // The monitor may still be forming its quorum: ask until it answers.
        retry(|| self.ceph(&["mon", "stat"]))?;
        let osd_uuid = uuid()?;
        // `osd new` with the same uuid is idempotent.
        let id = retry(|| self.ceph(&["osd", "new", &osd_uuid]))?;
        if id.trim() != "0" {
            bail!("the new OSD got id {id:?}, expected 0");
        }
        run(self
            .daemon("ceph-osd")
            .args(["-i", "0", "--mkfs", "--osd-uuid", &osd_uuid]))?;
        // The OSD's first monitor commands can meet the same zero-fsid race as the CLI (see
        // `ceph`): it then exits ("wrong fsid"), and starts again.
        retry(|| run(self.daemon("ceph-osd").args(["-i", "0"])))?;
        self.wait_osd_up(Duration::from_mins(1))?;
        self.ceph(&["osd", "pool", "create", POOL, "8"])?;
        self.ceph(&["osd", "pool", "application", "enable", POOL, "rbd"])?;
        self.rbd(&[
            "create",
            "--size",
            &IMAGE_MIB.to_string(),
            &format!("{POOL}/{IMAGE}"),
        ])?;
        Ok(())
    }

    /// The cluster already set up in `dir` (running or not), left running on drop.
    pub fn attach(dir: &Path) -> anyhow::Result<Cluster> {
        let conf = dir.join("ceph.conf");
        let text = std::fs::read_to_string(&conf)
            .with_context(|| format!("no cluster in {} ({})", dir.display(), conf.display()))?;
        let mon = text
            .lines()
            .find_map(|l| l.strip_prefix("mon host = v1:"))
            .and_then(|a| a.trim().parse().ok())
            .with_context(|| format!("no `mon host` in {}", conf.display()))?;
        Ok(Cluster {
            dir: dir.to_path_buf(),
            conf,
            mon,
            startup: Duration::ZERO,
            stop_on_drop: false,
        })
    }

    /// Leaves the daemons running when this value is dropped.
    pub fn detach(mut self) {
        self.stop_on_drop = false;
    }

    fn daemon(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.arg("-c").arg(&self.conf);
        c
    }

    /// Runs the `ceph` CLI against this cluster and returns its stdout.
    ///
    /// Now and then the CLI sends its first command before it has the monitor map, with a
    /// zero fsid, and the monitor answers EPERM ("problem getting command descriptions",
    /// "handle_command on fsid 0000.." in its log): such calls are made again.
    pub fn ceph(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut tries = 0;
        loop {
            let out = run(self
                .daemon("ceph")
                .args(["--connect-timeout", "30"])
                .args(args));
            match out {
                Err(e)
                    if tries < 5
                        && format!("{e:#}").contains("problem getting command descriptions") =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
                done => return done,
            }
        }
    }

    /// Runs the `rbd` CLI against this cluster and returns its stdout.
    pub fn rbd(&self, args: &[&str]) -> anyhow::Result<String> {
        run(self.daemon("rbd").args(args))
    }

    /// The `rbd:` LUN spec of an image of this cluster, for `ietd --lun`.
    pub fn lun_spec(&self, image: &str) -> String {
        format!("rbd:{POOL}/{image}?conf={}", self.conf.display())
    }

    fn wait_osd_up(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let stat = self.ceph(&["osd", "stat"])?;
            if stat.contains("1 up") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the OSD did not come up within {limit:?}: {stat}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Running daemons as (name, pid), read from their pid files.
    pub fn pids(&self) -> Vec<(&'static str, i32)> {
        DAEMONS
            .iter()
            .filter_map(|&name| {
                let file = self.dir.join("run").join(format!("{name}.pid"));
                let pid = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
                alive(pid).then_some((name, pid))
            })
            .collect()
    }

    /// One line per daemon, then `ceph -s` when the monitor is up.
    pub fn status(&self) -> String {
        let pids = self.pids();
        let mut s = format!("cluster in {} (monitor {})\n", self.dir.display(), self.mon);
        for name in DAEMONS {
            match pids.iter().find(|(n, _)| n == name) {
                Some((_, pid)) => {
                    let _ = writeln!(s, "  {name}: running, pid {pid}");
                }
                None => {
                    let _ = writeln!(s, "  {name}: stopped");
                }
            }
        }
        if pids.iter().any(|(n, _)| *n == "mon.a") {
            match self.ceph(&["-s"]) {
                Ok(out) => s.push_str(&out),
                Err(e) => {
                    let _ = writeln!(s, "ceph -s: {e:#}");
                }
            }
        }
        s
    }

    /// SIGTERM to each daemon by PID (OSD first), SIGKILL after 15 s; then waits for exit.
    pub fn stop(&self) -> anyhow::Result<()> {
        for &(name, pid) in self.pids().iter().rev() {
            // SAFETY: kill with a pid read from the daemon's own pid file and a valid signal.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive(pid) {
                // SAFETY: as above.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if alive(pid) {
                bail!("{name} (pid {pid}) did not exit");
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.stop_on_drop {
            if let Err(e) = self.stop() {
                eprintln!("stopping the Ceph cluster in {}: {e:#}", self.dir.display());
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Starts a cluster for an end-to-end test in a private directory on a free port.
/// Without Ceph installed the test is skipped (`None`), except in CI (`CI` set), where it fails.
pub fn start_for_test(test: &str) -> Option<Cluster> {
    if !installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs Ceph ({}), and CI must run it",
            PACKAGES.join(" ")
        );
        eprintln!(
            "skipping {test}: Ceph is not installed ({})",
            PACKAGES.join(" ")
        );
        return None;
    }
    let dir = std::env::temp_dir().join(format!("iet-ceph-{test}-{}", std::process::id()));
    let port = free_port().expect("a free loopback port");
    let cluster = Cluster::start(&dir, port)
        .unwrap_or_else(|e| panic!("{test}: the Ceph cluster did not start: {e:#}"));
    eprintln!(
        "{test}: Ceph cluster up in {:.1?} (monitor {})",
        cluster.startup, cluster.mon
    );
    Some(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_the_recipe_and_attach_reads_it_back() {
        let dir = std::env::temp_dir().join(format!("iet-ceph-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mon = SocketAddr::from(([127, 0, 0, 1], 6790));
        let text = config(&dir, "f00", mon);
        for line in [
            "mon host = v1:127.0.0.1:6790",
            "ms bind msgr2 = false",
            "auth client required = none",
            "mon allow pool size one = true",
            "osd objectstore = memstore",
            "memstore device bytes = 2147483648",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        std::fs::write(dir.join("ceph.conf"), &text).unwrap();
        let c = Cluster::attach(&dir).expect("attach");
        assert_eq!(c.mon, mon);
        assert!(c.pids().is_empty(), "nothing runs in a fresh directory");
        assert!(c.lun_spec("disk1").starts_with("rbd:rbd/disk1?conf=/"));
        drop(c);
        assert!(
            dir.exists(),
            "an attached cluster leaves its directory alone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
