//! `cargo xtask ceph start|stop|status`: a one-node Ceph cluster (one monitor, one memstore
//! OSD, pool `rbd`, image `rbd/disk1`) for trying RBD LUNs; the tests start the same one.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

// The tests' helper, shared so that both start the cluster the same way.
#[allow(
    dead_code,
    reason = "the tests use more of the helper than the command line"
)]
#[path = "../../tests/src/ceph.rs"]
pub mod cluster;

/// The monitor's port for `cargo xtask ceph` (the tests pick free ports instead).
const DEFAULT_PORT: u16 = 6790;

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Create a fresh cluster and leave it running (prints how to use it).
    Start {
        /// Monitor port on 127.0.0.1.
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
    },
    /// Stop the daemons by their PIDs (the state stays until the next start).
    Stop,
    /// Show the daemons and `ceph -s`.
    Status,
}

/// Where the cluster keeps its state: `target/ceph` unless `--dir` says otherwise.
pub fn default_dir() -> PathBuf {
    crate::root().join("target/ceph")
}

pub fn ceph(action: &Action, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(default_dir);
    match action {
        Action::Start { port } => {
            crate::prereq::step("Ceph packages");
            crate::prereq::apt(cluster::PACKAGES)?;
            crate::prereq::step("one-node Ceph cluster");
            let c = cluster::Cluster::start(&dir, *port)
                .with_context(|| format!("starting a cluster in {}", dir.display()))?;
            println!(
                "started in {:.1?}: monitor {}, image {}/{} ({} MiB)",
                c.startup,
                c.mon,
                cluster::POOL,
                cluster::IMAGE,
                cluster::IMAGE_MIB
            );
            println!(
                "\nServe it:  target/release/ietd --target iqn.2026-11.io.iet:rbd --lun '{}'",
                c.lun_spec(cluster::IMAGE)
            );
            println!(
                "Inspect:   rbd -c {} info {}/{}",
                c.conf.display(),
                cluster::POOL,
                cluster::IMAGE
            );
            println!("Stop:      cargo xtask ceph stop");
            c.detach();
            Ok(())
        }
        Action::Stop => {
            let c = cluster::Cluster::attach(&dir)?;
            let pids = c.pids();
            c.stop()?;
            println!("stopped {} daemon(s) in {}", pids.len(), dir.display());
            Ok(())
        }
        Action::Status => {
            let c = cluster::Cluster::attach(&dir)?;
            print!("{}", c.status());
            Ok(())
        }
    }
}
