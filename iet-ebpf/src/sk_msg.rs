//! sk_msg on the sockhash: per-PDU accounting of what the target sends,
//! stepping PDU by PDU with bpf_msg_apply_bytes, and the same-host fast
//! path that hands a message straight to the peer socket's ingress. Both
//! are switched per portal; with both off the program only passes.

use aya_ebpf::bindings::{BPF_F_INGRESS, sk_action::SK_PASS};
use aya_ebpf::helpers::{bpf_msg_apply_bytes, bpf_msg_pull_data};
use aya_ebpf::macros::sk_msg;
use aya_ebpf::programs::SkMsgContext;
use iet_common::{
    ConnKey, ConnRecord, DIGEST_DATA, DIGEST_HEADER, PORTAL_ACCOUNTING, PORTAL_REDIRECT, PortalKey,
    ROLE_TARGET, is_v4_mapped, v4_mapped,
};

use crate::maps::{CONNECTIONS, PORTALS, SOCKETS, count};

const BHS_LEN: u32 = 48;

#[sk_msg]
pub fn iet_sk_msg(ctx: SkMsgContext) -> u32 {
    try_sk_msg(&ctx).unwrap_or(SK_PASS)
}

const AF_INET: u32 = 2;

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

/// As sock_ops keys it: IPv4 v4-mapped, IPv6 as it is.
fn key_of(ctx: &SkMsgContext) -> ConnKey {
    // SAFETY: reading sk_msg_md fields the verifier allows.
    let md = unsafe { &*ctx.msg };
    let mut key = ConnKey {
        local_addr: [0; 16],
        remote_addr: [0; 16],
        local_port: md.local_port as u16,
        remote_port: u32::from_be(md.remote_port) as u16,
    };
    if md.family == AF_INET {
        key.local_addr = v4_mapped(md.local_ip4.to_ne_bytes());
        key.remote_addr = v4_mapped(md.remote_ip4.to_ne_bytes());
    } else {
        // SAFETY: both arrays are fields of the kernel's sk_msg_md.
        unsafe {
            ip6_into(&mut key.local_addr, &raw const md.local_ip6);
            ip6_into(&mut key.remote_addr, &raw const md.remote_ip6);
        }
    }
    key
}

fn flags_for(key: &ConnKey, role: u32) -> u32 {
    // The portal is our end for the target's socket, the peer's otherwise.
    let (addr, port) = if role == ROLE_TARGET {
        (key.local_addr, key.local_port)
    } else {
        (key.remote_addr, key.remote_port)
    };
    // One key on the stack, re-aimed: exact, the IPv4 wildcard for a
    // v4-mapped address, then `::`.
    let mut k = PortalKey { addr, port, pad: 0 };
    // SAFETY: read-only copies of map values.
    if let Some(c) = unsafe { PORTALS.get(&k) } {
        return c.flags;
    }
    if is_v4_mapped(&addr) {
        k.addr = v4_mapped([0; 4]);
        // SAFETY: as above.
        if let Some(c) = unsafe { PORTALS.get(&k) } {
            return c.flags;
        }
    }
    k.addr = [0; 16];
    // SAFETY: as above.
    unsafe { PORTALS.get(&k) }.map_or(0, |c| c.flags)
}

fn try_sk_msg(ctx: &SkMsgContext) -> Result<u32, u32> {
    let mut key = key_of(ctx);
    let Some(rec) = CONNECTIONS.get_ptr_mut(key) else {
        return Ok(SK_PASS);
    };
    // SAFETY: a live map value; only copies of plain fields are read.
    let (role, digests) = unsafe { ((*rec).role, (*rec).digests) };
    let flags = flags_for(&key, role);
    if flags & PORTAL_ACCOUNTING != 0 && role == ROLE_TARGET {
        // SAFETY: `rec` is a live map value.
        unsafe { account(ctx, &mut *rec, digests) };
    }
    if flags & PORTAL_REDIRECT != 0 {
        let mut peer = key.reversed();
        if SOCKETS.redirect_msg(ctx, &mut peer, u64::from(BPF_F_INGRESS)) == i64::from(SK_PASS) {
            count(|c| &mut c.redirected_msgs, 1);
            return Ok(SK_PASS);
        }
        key = peer;
        let _ = key;
    }
    Ok(SK_PASS)
}

/// Counts the PDU that starts at the front of this message and asks to be
/// called again where the next one starts.
///
/// # Safety
/// `rec` must point to a live map value.
unsafe fn account(ctx: &SkMsgContext, rec: &mut ConnRecord, digests: u32) {
    // SAFETY: helper on our context; makes the first 48 bytes linear.
    if unsafe { bpf_msg_pull_data(ctx.msg.cast(), 0, BHS_LEN, 0) } != 0 {
        return;
    }
    let data = ctx.data();
    let end = ctx.data_end();
    if data + BHS_LEN as usize > end {
        return;
    }
    // SAFETY: bounds checked just above against data_end.
    let bhs = unsafe { &*(data as *const [u8; 48]) };
    let opcode = bhs[0] & 0x3f;
    let ahs = u32::from(bhs[4]) * 4;
    let dlen = (u32::from(bhs[5]) << 16) | (u32::from(bhs[6]) << 8) | u32::from(bhs[7]);
    let mut total = BHS_LEN + ahs + ((dlen + 3) & !3);
    if digests & DIGEST_HEADER != 0 {
        total += 4;
    }
    if digests & DIGEST_DATA != 0 && dlen > 0 {
        total += 4;
    }
    let pdus = &mut rec.pdus;
    let slot = match opcode {
        0x20 => &mut pdus.nop_in,
        0x21 => &mut pdus.scsi_response,
        0x22 => &mut pdus.task_mgmt_response,
        0x23 => &mut pdus.login_response,
        0x24 => &mut pdus.text_response,
        0x25 => &mut pdus.data_in,
        0x26 => &mut pdus.logout_response,
        0x31 => &mut pdus.r2t,
        0x32 => &mut pdus.async_message,
        0x3f => &mut pdus.reject,
        _ => &mut pdus.other,
    };
    // sk_msg runs under the socket lock: plain adds on the record are safe.
    *slot += 1;
    rec.pdus.bytes += u64::from(total);
    count(|c| &mut c.pdus_accounted, 1);
    // SAFETY: helper on our context.
    unsafe { bpf_msg_apply_bytes(ctx.msg.cast(), total) };
}
