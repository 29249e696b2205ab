//! Layouts shared by the eBPF programs (`iet-ebpf`) and the daemon
//! (`iet-user`): map keys and values, the event record, and the names of
//! every map and program, which are a public interface (bpftool users rely
//! on them). Every type is `#[repr(C)]` with fixed-width fields and
//! explicit padding; addresses are `[u8; 4]` in network order and ports are
//! in host order so `bpftool map dump` reads naturally.
#![no_std]

/// Program names, as `bpftool prog` lists them.
pub const PROG_SOCK_OPS: &str = "iet_sock_ops";
pub const PROG_SK_MSG: &str = "iet_sk_msg";

/// Map names; each is pinned at `<pin dir>/<name>`.
pub const MAP_PORTALS: &str = "portals";
pub const MAP_CONNECTIONS: &str = "connections";
pub const MAP_SOCKETS: &str = "sockets";
pub const MAP_COUNTERS: &str = "counters";
pub const MAP_EVENTS: &str = "events";

/// Every pinned map.
pub const PINNED_MAPS: [&str; 4] = [MAP_PORTALS, MAP_CONNECTIONS, MAP_COUNTERS, MAP_EVENTS];

pub const MAX_PORTALS: u32 = 64;
pub const MAX_CONNECTIONS: u32 = 16_384;

/// A portal: IPv6 address, IPv4 as v4-mapped (`::ffff:a.b.c.d`), and port.
/// `::ffff:0.0.0.0` matches every local IPv4 address, `::` every address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortalKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub pad: u16,
}

/// The v4-mapped form (RFC 4291 §2.5.5.2) that keys IPv4 in the maps.
#[must_use]
pub const fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// Whether a map address is v4-mapped.
#[must_use]
pub const fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[0] == 0
        && a[1] == 0
        && a[2] == 0
        && a[3] == 0
        && a[4] == 0
        && a[5] == 0
        && a[6] == 0
        && a[7] == 0
        && a[8] == 0
        && a[9] == 0
        && a[10] == 0xff
        && a[11] == 0xff
}

/// Count PDUs by opcode on the target's transmit side (sk_msg).
pub const PORTAL_ACCOUNTING: u32 = 1;
/// Redirect same-host traffic to the peer socket's ingress (sk_msg).
pub const PORTAL_REDIRECT: u32 = 2;

/// Per-portal settings the daemon writes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortalConfig {
    /// `PORTAL_ACCOUNTING | PORTAL_REDIRECT`.
    pub flags: u32,
    /// SO_SNDBUF / SO_RCVBUF for accepted sockets; 0 leaves the kernel's.
    pub sndbuf: u32,
    pub rcvbuf: u32,
    /// TCP_NOTSENT_LOWAT; 0 leaves it unset.
    pub notsent_lowat: u32,
    /// TCP congestion control algorithm (NUL-padded name, e.g. `bbr`);
    /// empty leaves the system default.
    pub congestion: [u8; 16],
}

/// A connection as seen from the socket that owns the record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// IPv6, IPv4 as v4-mapped.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
}

impl ConnKey {
    /// The same connection as the other end sees it.
    #[must_use]
    pub const fn reversed(&self) -> ConnKey {
        ConnKey {
            local_addr: self.remote_addr,
            remote_addr: self.local_addr,
            local_port: self.remote_port,
            remote_port: self.local_port,
        }
    }
}

/// The socket accepted on a portal (the target's end).
pub const ROLE_TARGET: u32 = 1;
/// A same-host socket connected to one of our portals (an initiator's end).
pub const ROLE_INITIATOR: u32 = 2;

/// HeaderDigest=CRC32C on the connection (written by the daemon after login).
pub const DIGEST_HEADER: u32 = 1;
/// DataDigest=CRC32C.
pub const DIGEST_DATA: u32 = 2;

/// Target PDUs sent, by opcode (RFC 7143 §11.1.1.1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PduCounts {
    pub nop_in: u64,
    pub scsi_response: u64,
    pub task_mgmt_response: u64,
    pub login_response: u64,
    pub text_response: u64,
    pub data_in: u64,
    pub logout_response: u64,
    pub r2t: u64,
    pub async_message: u64,
    pub reject: u64,
    pub other: u64,
    /// Bytes of the PDUs counted above, digests and padding included.
    pub bytes: u64,
}

/// Per-connection record, kept by sock_ops (TCP) and sk_msg (PDUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnRecord {
    /// `ROLE_TARGET` or `ROLE_INITIATOR`.
    pub role: u32,
    /// TCP state (TCP_ESTABLISHED = 1 ... TCP_CLOSING = 11).
    pub state: u32,
    /// Smoothed RTT in microseconds.
    pub srtt_us: u32,
    /// `DIGEST_HEADER | DIGEST_DATA`, for the sk_msg PDU parser.
    pub digests: u32,
    pub retransmits: u64,
    pub rto_events: u64,
    pub bytes_received: u64,
    pub bytes_acked: u64,
    pub segs_in: u64,
    pub segs_out: u64,
    pub established_ns: u64,
    pub updated_ns: u64,
    pub pdus: PduCounts,
}

/// Global counters (one slot of an array map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub accepted: u64,
    pub initiator_connections: u64,
    pub closed: u64,
    pub retransmits: u64,
    pub rto_events: u64,
    pub pdus_accounted: u64,
    pub redirected_msgs: u64,
    pub events_dropped: u64,
    pub table_full: u64,
}

pub const EVENT_CLOSED: u32 = 1;
pub const EVENT_RETRANSMIT: u32 = 2;
pub const EVENT_RTO: u32 = 3;

/// What sock_ops reports to the daemon through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    pub kind: u32,
    /// TCP state after the transition (for `EVENT_CLOSED`).
    pub state: u32,
    pub role: u32,
    pub srtt_us: u32,
    pub key: ConnKey,
    pub pad: u32,
    pub retransmits: u64,
    pub ts_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is repr(C), made of integers and byte arrays with
    // explicit padding fields, so any bit pattern is valid.
    unsafe impl aya::Pod for super::PortalKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortalConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<PortalKey>(), 20);
        assert_eq!(size_of::<PortalConfig>(), 32);
        assert_eq!(size_of::<ConnKey>(), 36);
        assert_eq!(size_of::<PduCounts>(), 12 * 8);
        assert_eq!(size_of::<ConnRecord>(), 16 + 8 * 8 + size_of::<PduCounts>());
        assert_eq!(size_of::<Counters>(), 9 * 8);
        assert_eq!(size_of::<ConnEvent>(), 16 + 36 + 4 + 16);
    }

    #[test]
    fn reversal_swaps_ends() {
        let k = ConnKey {
            local_addr: v4_mapped([127, 0, 0, 1]),
            remote_addr: v4_mapped([127, 0, 0, 2]),
            local_port: 3260,
            remote_port: 50000,
        };
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed().local_port, 50000);
        assert!(is_v4_mapped(&k.local_addr));
        assert!(!is_v4_mapped(&[0; 16]));
    }
}
