//! Runs the target inside the test process on a loopback port, for
//! protocol tests that need no root, no eBPF and no binary.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use iet::config::{Config, LunSpec, PortalConfig, TargetConfig};
use iet::dataplane::EbpfMode;
use tokio_util::sync::CancellationToken;

pub const TARGET: &str = "iqn.2026-11.io.iet:test";

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A config with one target and `mem:` LUNs on a free loopback port.
pub fn mem_config(luns: &[&str]) -> Config {
    let mut target = TargetConfig::new(TARGET);
    target.luns = luns
        .iter()
        .enumerate()
        .map(|(n, s)| LunSpec::new(n as u64, s))
        .collect();
    Config {
        portals: vec![PortalConfig::new(SocketAddr::from((
            [127, 0, 0, 1],
            free_port(),
        )))],
        targets: vec![target],
        control: std::env::temp_dir().join(format!(
            "iet-test-{}-{}.sock",
            std::process::id(),
            free_port()
        )),
        ebpf: iet::config::EbpfConfig {
            mode: EbpfMode::Off,
            ..iet::config::EbpfConfig::default()
        },
        ..Config::default()
    }
}

pub struct InProcessTarget {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessTarget {
    pub fn start(config: Config) -> InProcessTarget {
        let addr = config.portals[0].listen;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                if let Err(e) = iet::daemon::run(config, None, token).await {
                    panic!("target failed: {e:#}");
                }
            });
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "target did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        InProcessTarget {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            t.join().expect("target thread panicked");
        }
    }
}

impl Drop for InProcessTarget {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
