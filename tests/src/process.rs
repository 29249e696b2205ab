//! Running the real `ietd` and `ietadm` binaries for end-to-end tests.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Path of a workspace binary in the debug profile, built once if missing.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let path = target_dir().join("debug").join(name);
    BUILT.get_or_init(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace_root())
            .args(["build", "-q", "-p", "iet-user", "--bins"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building ietd and ietadm failed");
    });
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A private directory that nobody else uses, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("iet-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running ietd; killed on drop.
pub struct Ietd {
    pub child: Child,
    pub portal: SocketAddr,
    pub control: PathBuf,
    pub log: PathBuf,
}

impl Ietd {
    /// Starts `ietd` with `args` plus `--control` (unless given), logging to
    /// `<dir>/ietd.log`, and waits until `portal` accepts connections.
    pub fn start(dir: &TempDir, portal: SocketAddr, args: &[&str]) -> Ietd {
        Ietd::start_with(dir, portal, args, None)
    }

    /// As [`Ietd::start`], with a command prefix such as `setpriv ...`.
    pub fn start_with(
        dir: &TempDir,
        portal: SocketAddr,
        args: &[&str],
        prefix: Option<&[&str]>,
    ) -> Ietd {
        let control = dir.path("ietd.sock");
        let log = dir.path("ietd.log");
        let logfile = std::fs::File::create(&log).expect("log file");
        let ietd = binary("ietd");
        let mut cmd = match prefix {
            Some(p) => {
                let mut c = Command::new(p[0]);
                c.args(&p[1..]).arg(&ietd);
                c
            }
            None => Command::new(&ietd),
        };
        if !args.contains(&"--control") {
            cmd.arg("--control").arg(&control);
        }
        cmd.args(args)
            .env("RUST_LOG", "info,iet_ebpf=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logfile);
        let child = cmd.spawn().expect("spawn ietd");
        let mut me = Ietd {
            child,
            portal,
            control,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&portal, Duration::from_millis(200)).is_err() {
            if let Ok(Some(st)) = me.child.try_wait() {
                panic!("ietd exited with {st} before listening:\n{}", me.log());
            }
            assert!(
                Instant::now() < deadline,
                "ietd did not listen on {portal}:\n{}",
                me.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (up to 15 s); returns whether it exited with 0.
    pub fn stop(&mut self) -> bool {
        // SAFETY: kill with a child's pid and a valid signal number.
        unsafe {
            libc::kill(self.child.id().cast_signed(), libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs ietadm against this daemon.
    pub fn adm(&self, args: &[&str]) -> Output {
        Command::new(binary("ietadm"))
            .arg("--control")
            .arg(&self.control)
            .args(args)
            .output()
            .expect("run ietadm")
    }

    /// Runs ietadm and returns stdout, panicking with the daemon log on failure.
    pub fn adm_ok(&self, args: &[&str]) -> String {
        let out = self.adm(args);
        assert!(
            out.status.success(),
            "ietadm {args:?} failed: {}\nietd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Ietd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// In CI a privileged test that cannot run is a failure, not a skip.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root, and CI must run it"
    );
    eprintln!("skipping {test}: needs root");
    false
}
