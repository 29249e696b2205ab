//! The eBPF data plane behind one small interface: loading and attaching
//! the programs, the pinned maps, and the stream of close events. With
//! eBPF off or unavailable every method is a cheap no-op.

pub mod cgroup;
mod events;
mod loader;

pub use cgroup::{in_container, instance_pin_dir};
pub use loader::default_cgroup;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;

use iet_common::{
    ConnKey, ConnRecord, Counters, PORTAL_ACCOUNTING, PORTAL_REDIRECT, PortalConfig, PortalKey,
};
use tracing::warn;

pub use events::{ConnectionEvent, EventKind};
use loader::Loaded;

/// Whether ietd uses eBPF.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EbpfMode {
    /// Load and attach; on failure serve on plain sockets after one warning.
    Auto,
    /// eBPF is required: failing to attach is fatal.
    On,
    Off,
}

#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    pub mode: EbpfMode,
    pub pin_dir: PathBuf,
    /// cgroup v2 directory for sock_ops; `None`: the root of the hierarchy
    /// on a host, the container's own cgroup inside one (never the host's
    /// root from a container).
    pub cgroup: Option<PathBuf>,
    pub portals: Vec<SocketAddr>,
}

/// The object the build embedded (empty when the toolchain was missing).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/iet-ebpf.o"));

pub struct Dataplane {
    inner: Mutex<Option<Loaded>>,
    /// Per-portal sk_msg switches, kept so portal updates preserve them.
    flags: Mutex<Vec<(PortalKey, PortalConfig)>>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("active", &self.is_active())
            .finish()
    }
}

/// Same-host redirect is on by default: `cargo xtask bench` measured it
/// correct and faster on this kernel at QD1 and QD32, and sock_ops applies
/// it only to peers on this host (loopback, or an initiator socket it saw
/// connect), so remote initiators pay nothing for it.
/// Accounting is off: sk_msg on every connection costs throughput.
pub fn default_portal_config() -> PortalConfig {
    PortalConfig {
        flags: PORTAL_REDIRECT,
        ..PortalConfig::default()
    }
}

/// An address as the maps key it: IPv6, IPv4 as v4-mapped (so 0.0.0.0
/// becomes the IPv4 wildcard `::ffff:0.0.0.0` and `::` matches all).
pub fn map_addr(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => iet_common::v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A portal as the maps key it.
pub fn portal_key(addr: SocketAddr) -> Option<PortalKey> {
    Some(PortalKey {
        addr: map_addr(addr.ip()),
        port: addr.port(),
        pad: 0,
    })
}

/// A connection as the target's socket sees it.
pub fn conn_key(local: SocketAddr, peer: SocketAddr) -> Option<ConnKey> {
    Some(ConnKey {
        local_addr: map_addr(local.ip()),
        remote_addr: map_addr(peer.ip()),
        local_port: local.port(),
        remote_port: peer.port(),
    })
}

impl Dataplane {
    pub fn disabled() -> Dataplane {
        Dataplane {
            inner: Mutex::new(None),
            flags: Mutex::new(Vec::new()),
        }
    }

    /// Off: disabled. Auto: attached, or disabled after one warning saying
    /// why. On: attached, or an error saying why. In a container that sees
    /// only the host's root cgroup: an error whatever the mode.
    pub fn start(cfg: &DataplaneConfig) -> anyhow::Result<Dataplane> {
        if cfg.mode == EbpfMode::Off {
            return Ok(Dataplane::disabled());
        }
        match Loaded::load(cfg, OBJECT) {
            Ok(loaded) => {
                let dp = Dataplane {
                    inner: Mutex::new(Some(loaded)),
                    flags: Mutex::new(Vec::new()),
                };
                dp.set_portals(&cfg.portals)?;
                Ok(dp)
            }
            // Seeing the host's root from a container is a mistake in how
            // it was started, not a missing capability: never serve on.
            Err(e)
                if e.downcast_ref::<cgroup::CgroupError>()
                    .is_some_and(|c| matches!(c, cgroup::CgroupError::HostRoot(_))) =>
            {
                Err(e)
            }
            Err(e) if cfg.mode == EbpfMode::Auto => {
                warn!("eBPF data plane unavailable, serving on plain sockets: {e:#}");
                Ok(Dataplane::disabled())
            }
            Err(e) => Err(e.context("eBPF data plane required (--ebpf on) but unavailable")),
        }
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Option<Loaded>> {
        self.inner.lock().expect("dataplane lock")
    }

    pub fn is_active(&self) -> bool {
        self.loaded().is_some()
    }

    /// Replaces the portal map (live: takes effect for new connections).
    pub fn set_portals(&self, portals: &[SocketAddr]) -> anyhow::Result<()> {
        let guard = self.loaded();
        let Some(inner) = guard.as_ref() else {
            return Ok(());
        };
        let mut flags = self.flags.lock().expect("flags lock");
        let keys: Vec<PortalKey> = portals.iter().filter_map(|p| portal_key(*p)).collect();
        flags.retain(|(k, _)| keys.contains(k));
        for k in &keys {
            if !flags.iter().any(|(f, _)| f == k) {
                flags.push((*k, default_portal_config()));
            }
        }
        inner.write_portals(&flags)
    }

    /// Switches PDU accounting and same-host redirect for one portal.
    pub fn set_portal_flags(
        &self,
        portal: SocketAddr,
        accounting: bool,
        redirect: bool,
    ) -> anyhow::Result<()> {
        let guard = self.loaded();
        let Some(inner) = guard.as_ref() else {
            return Ok(());
        };
        let key =
            portal_key(portal).ok_or_else(|| anyhow::anyhow!("{portal}: not a portal address"))?;
        let mut flags = self.flags.lock().expect("flags lock");
        let entry = flags
            .iter_mut()
            .find(|(k, _)| *k == key)
            .ok_or_else(|| anyhow::anyhow!("{portal} is not a portal"))?;
        entry.1.flags =
            (u32::from(accounting) * PORTAL_ACCOUNTING) | (u32::from(redirect) * PORTAL_REDIRECT);
        inner.write_portals(&flags)
    }

    /// TCP settings sock_ops applies to new connections of a portal.
    pub fn set_portal_tcp(
        &self,
        portal: SocketAddr,
        sndbuf: u32,
        rcvbuf: u32,
        notsent_lowat: u32,
        congestion: &str,
    ) -> anyhow::Result<()> {
        if congestion.len() >= 16
            || !congestion
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            anyhow::bail!(
                "congestion control {congestion:?}: a name of at most 15 letters, digits or _"
            );
        }
        let guard = self.loaded();
        let Some(inner) = guard.as_ref() else {
            return Ok(());
        };
        let key =
            portal_key(portal).ok_or_else(|| anyhow::anyhow!("{portal}: not a portal address"))?;
        let mut flags = self.flags.lock().expect("flags lock");
        let entry = flags
            .iter_mut()
            .find(|(k, _)| *k == key)
            .ok_or_else(|| anyhow::anyhow!("{portal} is not a portal"))?;
        entry.1.sndbuf = sndbuf;
        entry.1.rcvbuf = rcvbuf;
        entry.1.notsent_lowat = notsent_lowat;
        entry.1.congestion = [0; 16];
        entry.1.congestion[..congestion.len()].copy_from_slice(congestion.as_bytes());
        inner.write_portals(&flags)
    }

    /// Tells sk_msg which digests a connection uses (after login).
    pub fn set_connection_digests(
        &self,
        local: SocketAddr,
        peer: SocketAddr,
        header: bool,
        data: bool,
    ) -> anyhow::Result<()> {
        let guard = self.loaded();
        let (Some(inner), Some(key)) = (guard.as_ref(), conn_key(local, peer)) else {
            return Ok(());
        };
        inner.set_digests(key, header, data);
        Ok(())
    }

    /// A copy of the kernel's record of a connection.
    pub fn connection(&self, local: SocketAddr, peer: SocketAddr) -> Option<ConnRecord> {
        self.loaded().as_ref()?.connection(conn_key(local, peer)?)
    }

    /// Global counters summed over CPUs.
    pub fn global_counters(&self) -> Option<Counters> {
        self.loaded().as_ref()?.counters()
    }

    /// Close and retransmit events, once. `None` when eBPF is off.
    pub fn take_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ConnectionEvent>> {
        self.loaded().as_mut()?.take_events()
    }

    /// Detaches the programs (the pinned maps stay for bpftool); the data
    /// plane is inactive afterwards.
    pub fn shutdown(&self) {
        drop(self.loaded().take());
    }
}

/// The kernel's record of a connection, for management views.
pub fn kernel_view(
    dp: &Dataplane,
    local: SocketAddr,
    peer: SocketAddr,
) -> Option<crate::control::protocol::KernelConnView> {
    let r = dp.connection(local, peer)?;
    let p = &r.pdus;
    let pdus = [
        ("NopIn", p.nop_in),
        ("ScsiResponse", p.scsi_response),
        ("TaskMgmtResponse", p.task_mgmt_response),
        ("LoginResponse", p.login_response),
        ("TextResponse", p.text_response),
        ("DataIn", p.data_in),
        ("LogoutResponse", p.logout_response),
        ("R2t", p.r2t),
        ("AsyncMessage", p.async_message),
        ("Reject", p.reject),
        ("Other", p.other),
    ];
    Some(crate::control::protocol::KernelConnView {
        state: r.state,
        srtt_us: r.srtt_us,
        retransmits: r.retransmits,
        bytes_in: r.bytes_received,
        bytes_out: r.bytes_acked,
        pdus_by_opcode: pdus
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| ((*k).to_owned(), *n))
            .collect(),
    })
}

/// The kernel's global counters, for `ietadm stats` and metrics.
pub fn global_view(dp: &Dataplane) -> Option<serde_json::Value> {
    let c = dp.global_counters()?;
    Some(serde_json::json!({
        "accepted": c.accepted,
        "initiator_connections": c.initiator_connections,
        "closed": c.closed,
        "retransmits": c.retransmits,
        "rto_events": c.rto_events,
        "pdus_accounted": c.pdus_accounted,
        "redirected_msgs": c.redirected_msgs,
        "events_dropped": c.events_dropped,
        "table_full": c.table_full,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_socket_addresses() {
        let local: SocketAddr = "127.0.0.1:3260".parse().unwrap();
        let peer: SocketAddr = "127.0.0.2:50000".parse().unwrap();
        let k = conn_key(local, peer).unwrap();
        assert_eq!(
            (k.local_addr, k.local_port, k.remote_port),
            (iet_common::v4_mapped([127, 0, 0, 1]), 3260, 50000)
        );
        // A dual-stack socket's IPv4 peer keys the same as an IPv4 one.
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:3260".parse().unwrap();
        let v4: SocketAddr = "10.1.2.3:3260".parse().unwrap();
        assert_eq!(portal_key(mapped), portal_key(v4));
        let v6 = portal_key("[::1]:3260".parse().unwrap()).unwrap();
        assert_eq!(v6.addr, std::net::Ipv6Addr::LOCALHOST.octets());
        let any4 = portal_key("0.0.0.0:3260".parse().unwrap()).unwrap();
        assert_eq!(any4.addr, iet_common::v4_mapped([0; 4]));
        assert_eq!(
            portal_key("[::]:3260".parse().unwrap()).unwrap().addr,
            [0; 16]
        );
    }

    #[test]
    fn off_is_inert() {
        let dp = Dataplane::start(&DataplaneConfig {
            mode: EbpfMode::Off,
            pin_dir: "/nonexistent".into(),
            cgroup: None,
            portals: vec![],
        })
        .unwrap();
        assert!(!dp.is_active());
        assert!(dp.take_events().is_none());
        assert!(
            dp.connection(
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap()
            )
            .is_none()
        );
    }
}
