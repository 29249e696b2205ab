//! sock_ops: finds connections to our portals, tunes them as IET's kernel
//! module did (TCP_NODELAY, buffer sizes), puts them in the sockhash, and
//! keeps their TCP state, RTT and retransmits; closes and retransmits are
//! reported to the daemon through the ring buffer.

use aya_ebpf::bindings::{
    BPF_ANY, BPF_NOEXIST, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
    BPF_SOCK_OPS_RETRANS_CB, BPF_SOCK_OPS_RETRANS_CB_FLAG, BPF_SOCK_OPS_RTO_CB,
    BPF_SOCK_OPS_RTO_CB_FLAG, BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
    BPF_SOCK_OPS_STATE_CB_FLAG,
};
use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_setsockopt};
use aya_ebpf::macros::sock_ops;
use aya_ebpf::programs::SockOpsContext;
use iet_common::{
    ConnEvent, ConnKey, ConnRecord, EVENT_CLOSED, EVENT_RETRANSMIT, EVENT_RTO, PORTAL_ACCOUNTING,
    PORTAL_REDIRECT, PortalConfig, PortalKey, ROLE_INITIATOR, ROLE_TARGET, is_v4_mapped, v4_mapped,
};

use crate::maps::{CONNECTIONS, EVENTS, PORTALS, SOCKETS, count};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const SOL_SOCKET: i32 = 1;
const SO_SNDBUF: i32 = 7;
const SO_RCVBUF: i32 = 8;
const SOL_TCP: i32 = 6;
const TCP_NODELAY: i32 = 1;
const TCP_NOTSENT_LOWAT: i32 = 25;
const TCP_CONGESTION: i32 = 13;

const TCP_ESTABLISHED: u32 = 1;
const TCP_FIN_WAIT1: u32 = 4;
const TCP_CLOSE: u32 = 7;
const TCP_CLOSE_WAIT: u32 = 8;

#[sock_ops]
pub fn iet_sock_ops(ctx: SockOpsContext) -> u32 {
    match try_sock_ops(&ctx) {
        Ok(()) | Err(()) => 1,
    }
}

/// An IPv6 address from four network-order context words, read one by one
/// at constant offsets (the verifier refuses a computed context pointer).
///
/// # Safety
/// `words` must point into the program's context.
unsafe fn ip6_into(a: &mut [u8; 16], words: *const [u32; 4]) {
    // SAFETY: per the contract; volatile keeps each load a direct ctx access.
    let w = unsafe {
        [
            core::ptr::read_volatile(&raw const (*words)[0]),
            core::ptr::read_volatile(&raw const (*words)[1]),
            core::ptr::read_volatile(&raw const (*words)[2]),
            core::ptr::read_volatile(&raw const (*words)[3]),
        ]
    };
    let mut i = 0;
    while i < 4 {
        let b = w[i].to_ne_bytes();
        a[i * 4] = b[0];
        a[i * 4 + 1] = b[1];
        a[i * 4 + 2] = b[2];
        a[i * 4 + 3] = b[3];
        i += 1;
    }
}

/// IPv4 as v4-mapped, IPv6 as it is (a dual-stack socket's IPv4
/// connection already carries v4-mapped addresses).
fn key_of(ctx: &SockOpsContext) -> ConnKey {
    let mut key = ConnKey {
        local_addr: [0; 16],
        remote_addr: [0; 16],
        local_port: ctx.local_port() as u16,
        // remote_port holds the network-order port in its upper half.
        remote_port: u32::from_be(ctx.remote_port()) as u16,
    };
    if ctx.family() == AF_INET {
        key.local_addr = v4_mapped(ctx.local_ip4().to_ne_bytes());
        key.remote_addr = v4_mapped(ctx.remote_ip4().to_ne_bytes());
    } else {
        // SAFETY: both arrays are fields of the kernel's bpf_sock_ops.
        unsafe {
            ip6_into(&mut key.local_addr, &raw const (*ctx.ops).local_ip6);
            ip6_into(&mut key.remote_addr, &raw const (*ctx.ops).remote_ip6);
        }
    }
    key
}

/// The portal config for an address: exact, then the IPv4 wildcard
/// (0.0.0.0) for a v4-mapped address, then `::`.
#[inline(never)]
fn portal(addr: [u8; 16], port: u16) -> Option<PortalConfig> {
    let mut k = PortalKey { addr, port, pad: 0 };
    // SAFETY: read-only copy of a map value.
    if let Some(cfg) = unsafe { PORTALS.get(&k) } {
        return Some(*cfg);
    }
    if is_v4_mapped(&addr) {
        k.addr = v4_mapped([0; 4]);
        // SAFETY: as above.
        if let Some(cfg) = unsafe { PORTALS.get(&k) } {
            return Some(*cfg);
        }
    }
    k.addr = [0; 16];
    // SAFETY: as above.
    unsafe { PORTALS.get(&k) }.copied()
}

fn setsockopt(ctx: &SockOpsContext, level: i32, name: i32, value: u32) {
    let mut v = value;
    // SAFETY: ctx.ops is the program's context; the value lives on our stack.
    unsafe {
        bpf_setsockopt(ctx.ops.cast(), level, name, (&raw mut v).cast(), 4);
    }
}

fn try_sock_ops(ctx: &SockOpsContext) -> Result<(), ()> {
    if ctx.family() != AF_INET && ctx.family() != AF_INET6 {
        return Ok(());
    }
    match ctx.op() {
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_passive_established(ctx),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_active_established(ctx),
        BPF_SOCK_OPS_STATE_CB => on_state(ctx, ctx.arg(1)),
        BPF_SOCK_OPS_RTT_CB => on_rtt(ctx),
        BPF_SOCK_OPS_RETRANS_CB => on_retransmit(ctx, EVENT_RETRANSMIT),
        BPF_SOCK_OPS_RTO_CB => on_retransmit(ctx, EVENT_RTO),
        _ => {}
    }
    Ok(())
}

/// Our end of a connection to a portal: tune it as IET did, and track it.
/// Each handler keeps its own stack frame (IPv6 keys are 36 bytes).
#[inline(never)]
fn on_passive_established(ctx: &SockOpsContext) {
    let key = key_of(ctx);
    let Some(cfg) = portal(key.local_addr, key.local_port) else {
        return;
    };
    tune(ctx, &cfg);
    track(ctx, key, ROLE_TARGET, wants_sk_msg(cfg.flags, &key));
    count(|c| &mut c.accepted, 1);
    log_tracked(ctx, &key);
}

/// A connection's sample of smoothed RTT.
#[inline(never)]
fn on_rtt(ctx: &SockOpsContext) {
    if let Some(rec) = CONNECTIONS.get_ptr_mut(key_of(ctx)) {
        // SAFETY: a live map value; plain stores of gauges.
        unsafe {
            (*rec).srtt_us = (*ctx.ops).srtt_us >> 3;
            refresh(ctx, &mut *rec);
        }
    }
}

/// The portal's TCP settings on an accepted socket.
#[inline(never)]
fn tune(ctx: &SockOpsContext, cfg: &PortalConfig) {
    // IET set TCP_NODELAY on every connection it took over.
    setsockopt(ctx, SOL_TCP, TCP_NODELAY, 1);
    if cfg.sndbuf > 0 {
        setsockopt(ctx, SOL_SOCKET, SO_SNDBUF, cfg.sndbuf);
    }
    if cfg.rcvbuf > 0 {
        setsockopt(ctx, SOL_SOCKET, SO_RCVBUF, cfg.rcvbuf);
    }
    if cfg.notsent_lowat > 0 {
        setsockopt(ctx, SOL_TCP, TCP_NOTSENT_LOWAT, cfg.notsent_lowat);
    }
    if cfg.congestion[0] != 0 {
        let mut name = cfg.congestion;
        // SAFETY: ctx.ops is the program's context; the name is a
        // 16-byte buffer on our stack (TCP_CA_NAME_MAX).
        unsafe {
            bpf_setsockopt(
                ctx.ops.cast(),
                SOL_TCP,
                TCP_CONGESTION,
                (&raw mut name).cast(),
                16,
            );
        }
    }
}

#[inline(never)]
fn log_tracked(ctx: &SockOpsContext, key: &ConnKey) {
    if is_v4_mapped(&key.remote_addr) {
        aya_log_ebpf::debug!(
            ctx,
            "iSCSI connection {}.{}.{}.{}:{} -> port {} tuned and tracked",
            key.remote_addr[12],
            key.remote_addr[13],
            key.remote_addr[14],
            key.remote_addr[15],
            key.remote_port,
            key.local_port
        );
    } else {
        aya_log_ebpf::debug!(
            ctx,
            "iSCSI connection (IPv6) port {} -> port {} tuned and tracked",
            key.remote_port,
            key.local_port
        );
    }
}

/// An initiator on this host connecting to a portal port.
#[inline(never)]
fn on_active_established(ctx: &SockOpsContext) {
    let key = key_of(ctx);
    let Some(cfg) = portal(key.remote_addr, key.remote_port) else {
        return;
    };
    // Whether the target is ours is known only on its side, which
    // is established after this one: a remote target's socket never
    // enters the sockhash, and this socket's redirect just passes.
    track(ctx, key, ROLE_INITIATOR, cfg.flags & PORTAL_REDIRECT != 0);
    count(|c| &mut c.initiator_connections, 1);
}

/// 127.0.0.0/8 (v4-mapped) or ::1.
fn is_loopback(addr: [u8; 16]) -> bool {
    if is_v4_mapped(&addr) {
        return addr[12] == 127;
    }
    let mut i = 0;
    while i < 15 {
        if addr[i] != 0 {
            return false;
        }
        i += 1;
    }
    addr[15] == 1
}

/// The peer's socket is on this host and in our sockhash: a loopback
/// peer, or one whose connect sock_ops saw (an initiator in a container
/// on this host, when sock_ops sits on a cgroup holding both ends). Its
/// active side was established, and recorded, before this passive side.
#[inline(never)]
fn peer_is_ours(key: &ConnKey) -> bool {
    if is_loopback(key.remote_addr) {
        return true;
    }
    // SAFETY: a read-only copy of a map value.
    unsafe { CONNECTIONS.get(&key.reversed()) }.is_some_and(|r| r.role == ROLE_INITIATOR)
}

/// Accounting puts every connection of the portal under sk_msg; redirect
/// only the ones whose peer is ours, since for any other peer there is
/// nothing to redirect to and sk_msg only costs.
fn wants_sk_msg(flags: u32, key: &ConnKey) -> bool {
    flags & PORTAL_ACCOUNTING != 0 || (flags & PORTAL_REDIRECT != 0 && peer_is_ours(key))
}

/// Starts tracking a socket: record and callbacks, and the sockhash entry
/// (which puts sk_msg on its send path) only when a portal switch needs it:
/// sk_msg has a cost even when it only passes.
#[inline(never)]
fn track(ctx: &SockOpsContext, mut key: ConnKey, role: u32, needs_sk_msg: bool) {
    if needs_sk_msg {
        // SAFETY: the context pointer is the kernel's bpf_sock_ops.
        let ops = unsafe { &mut *ctx.ops };
        let _ = SOCKETS.update(&mut key, ops, u64::from(BPF_ANY));
    }
    // SAFETY: helper call with no memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let rec = ConnRecord {
        role,
        state: TCP_ESTABLISHED,
        established_ns: now,
        updated_ns: now,
        ..ConnRecord::default()
    };
    if CONNECTIONS
        .insert(&key, &rec, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Either present (a reused 4-tuple) or the table is full.
        if CONNECTIONS.insert(&key, &rec, u64::from(BPF_ANY)).is_err() {
            count(|c| &mut c.table_full, 1);
        }
    }
    let _ = ctx.set_cb_flags(
        (BPF_SOCK_OPS_STATE_CB_FLAG
            | BPF_SOCK_OPS_RTT_CB_FLAG
            | BPF_SOCK_OPS_RETRANS_CB_FLAG
            | BPF_SOCK_OPS_RTO_CB_FLAG) as i32,
    );
}

/// Copies the TCP counters the context exposes into the record.
///
/// # Safety
/// `ctx.ops` must be the program's context.
unsafe fn refresh(ctx: &SockOpsContext, rec: &mut ConnRecord) {
    // SAFETY: reading context fields the verifier allows for sock_ops.
    let ops = unsafe { &*ctx.ops };
    rec.bytes_received = ops.bytes_received;
    rec.bytes_acked = ops.bytes_acked;
    rec.segs_in = u64::from(ops.segs_in);
    rec.segs_out = u64::from(ops.segs_out);
    rec.retransmits = u64::from(ops.total_retrans);
    // SAFETY: helper call with no memory arguments.
    rec.updated_ns = unsafe { bpf_ktime_get_ns() };
}

fn emit(kind: u32, key: ConnKey, rec: &ConnRecord, state: u32) {
    let Some(mut slot) = EVENTS.reserve(0) else {
        count(|c| &mut c.events_dropped, 1);
        return;
    };
    slot.write(ConnEvent {
        kind,
        state,
        role: rec.role,
        srtt_us: rec.srtt_us,
        key,
        pad: 0,
        retransmits: rec.retransmits,
        // SAFETY: helper call with no memory arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    });
    slot.submit(0);
}

#[inline(never)]
fn on_state(ctx: &SockOpsContext, new_state: u32) {
    let key = key_of(ctx);
    let Some(rec) = CONNECTIONS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: a live map value.
    let snapshot = unsafe {
        (*rec).state = new_state;
        refresh(ctx, &mut *rec);
        *rec
    };
    match new_state {
        TCP_CLOSE_WAIT | TCP_FIN_WAIT1 => emit(EVENT_CLOSED, key, &snapshot, new_state),
        TCP_CLOSE => {
            emit(EVENT_CLOSED, key, &snapshot, new_state);
            let _ = CONNECTIONS.remove(key);
            count(|c| &mut c.closed, 1);
        }
        _ => {}
    }
}

#[inline(never)]
fn on_retransmit(ctx: &SockOpsContext, kind: u32) {
    let key = key_of(ctx);
    let Some(rec) = CONNECTIONS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: a live map value, updated under the socket lock.
    let snapshot = unsafe {
        if kind == EVENT_RTO {
            (*rec).rto_events += 1;
        }
        refresh(ctx, &mut *rec);
        *rec
    };
    if kind == EVENT_RTO {
        count(|c| &mut c.rto_events, 1);
    } else {
        count(|c| &mut c.retransmits, 1);
    }
    emit(kind, key, &snapshot, snapshot.state);
}
