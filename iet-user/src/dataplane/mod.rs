//! Placeholder until the eBPF data plane lands.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EbpfMode {
    Auto,
    On,
    Off,
}

pub struct DataplaneConfig {
    pub mode: EbpfMode,
    pub pin_dir: PathBuf,
    pub cgroup: Option<PathBuf>,
    pub portals: Vec<SocketAddr>,
}

pub struct Dataplane;

impl Dataplane {
    #[allow(
        clippy::needless_pass_by_value,
        reason = "placeholder with the real signature"
    )]
    pub fn start(cfg: DataplaneConfig) -> anyhow::Result<Dataplane> {
        let DataplaneConfig { mode, .. } = cfg;
        match mode {
            EbpfMode::On => anyhow::bail!("eBPF is not available in this build"),
            EbpfMode::Auto => tracing::warn!("eBPF data plane unavailable (not in this build): serving on plain sockets"),
            EbpfMode::Off => {}
        }
        Ok(Dataplane)
    }

    pub fn is_active(&self) -> bool {
        false
    }

    pub fn set_portals(&self, _portals: &[SocketAddr]) -> anyhow::Result<()> {
        Ok(())
    }

    pub fn shutdown(self) {}
}

/// The kernel's record of a connection, for management views.
pub fn kernel_view(
    _dp: &Dataplane,
    _local: SocketAddr,
    _peer: SocketAddr,
) -> Option<crate::control::protocol::KernelConnView> {
    None
}

/// The kernel's global counters, for `ietadm stats`.
pub fn global_view(_dp: &Dataplane) -> Option<serde_json::Value> {
    None
}
