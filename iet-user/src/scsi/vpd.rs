//! Vital product data pages (SPC-5 §7.7, SBC-4 §6.6). Identifiers derive only from
//! the LUN's configured serial and device_id, so they survive restarts.

use super::exec::{Ctx, Fail};
use super::sense::SenseReason;

/// Supported pages, ascending (SPC-5 §7.7.16 requires the order).
const PAGES: [u8; 8] = [0x00, 0x80, 0x83, 0x86, 0x8f, 0xb0, 0xb1, 0xb2];

/// Largest transfer we accept in one command, in bytes: the transport's write buffer
/// limit, and what libiscsi's 65536-block WRITE SAME tests need at 512-byte blocks.
pub(crate) const MAX_TRANSFER_BYTES: u32 = 32 << 20;
/// Limits for UNMAP (SBC-4 §6.6.4).
pub(crate) const MAX_UNMAP_DESCRIPTORS: u32 = 256;
pub(crate) const MAX_UNMAP_BLOCKS: u32 = 0x0010_0000;
/// MAXIMUM WRITE SAME LENGTH: bounds the work one command can cause.
/// Below 65536 blocks: one WRITE SAME never needs a 4-byte length, and its
/// non-unmap form stays within what one command may allocate.
pub(crate) const MAX_WRITE_SAME_BLOCKS: u64 = 0xffff;

pub(crate) fn max_transfer_blocks(block_size: u32) -> u32 {
    MAX_TRANSFER_BYTES / block_size
}

fn with_header(page: u8, body: &[u8]) -> Vec<u8> {
    let mut d = vec![0x00, page];
    d.extend_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend_from_slice(body);
    d
}

fn designator(dst: &mut Vec<u8>, byte0: u8, byte1: u8, data: &[u8]) {
    dst.extend_from_slice(&[byte0, byte1, 0, data.len() as u8]);
    dst.extend_from_slice(data);
}

/// SCSI name string: NUL-terminated, padded to a multiple of 4 (SPC-5 §7.7.6.11).
fn name_string(s: &str) -> Vec<u8> {
    let mut b: Vec<u8> = s.bytes().take(250).collect();
    b.push(0);
    b.resize(b.len().next_multiple_of(4), 0);
    b
}

pub(crate) fn page(ctx: &Ctx<'_>, page: u8) -> Result<Vec<u8>, Fail> {
    let lu = ctx.lu;
    let bs = lu.block_size;
    Ok(match page {
        0x00 => with_header(0x00, &PAGES),
        0x80 => {
            let serial: Vec<u8> = lu
                .serial
                .bytes()
                .filter(u8::is_ascii_graphic)
                .take(250)
                .collect();
            with_header(0x80, &serial)
        }
        0x83 => {
            let mut b = Vec::new();
            // T10 vendor ID (ASCII, LU association): vendor padded to 8 + serial.
            let mut t10: Vec<u8> = lu.vendor.bytes().take(8).collect();
            t10.resize(8, b' ');
            t10.extend(lu.serial.bytes().filter(u8::is_ascii_graphic).take(200));
            designator(&mut b, 0x02, 0x01, &t10);
            designator(&mut b, 0x01, 0x03, &lu.naa_designator());
            // Relative target port (PIV, target port association, iSCSI protocol 5h).
            let alua = super::alua::port_ids(lu);
            let rtp = alua
                .map_or(ctx.nexus.relative_target_port, |(rtp, _)| rtp)
                .to_be_bytes();
            designator(&mut b, 0x51, 0x94, &[0, 0, rtp[0], rtp[1]]);
            // Target port group (type 5h, binary, target port association; SPC-5 §7.7.6.7).
            if let Some((_, group)) = alua {
                let g = group.to_be_bytes();
                designator(&mut b, 0x01, 0x15, &[0, 0, g[0], g[1]]);
            }
            // Target port name (SCSI name string, UTF-8).
            designator(&mut b, 0x53, 0x98, &name_string(&ctx.nexus.target_port));
            // Target device name: the target port name without ",t,0x...".
            let device = ctx
                .nexus
                .target_port
                .split(",t,")
                .next()
                .unwrap_or_default();
            designator(&mut b, 0x53, 0xa8, &name_string(device));
            with_header(0x83, &b)
        }
        0x86 => {
            let mut b = vec![0u8; 0x3c];
            // HEADSUP, ORDSUP, SIMPSUP.
            b[1] = 0x07;
            with_header(0x86, &b)
        }
        0x8f => with_header(0x8f, &super::xcopy::third_party_copy_descriptors()),
        0xb0 => {
            let mut b = vec![0u8; 0x3c];
            // WSNZ = 0: WRITE SAME with zero blocks means "to the end".
            b[1] = 0xff; // MAXIMUM COMPARE AND WRITE LENGTH
            b[2..4].copy_from_slice(&1u16.to_be_bytes());
            b[4..8].copy_from_slice(&max_transfer_blocks(bs).to_be_bytes());
            b[8..12].copy_from_slice(&(128 * 1024 / bs).to_be_bytes());
            b[12..16].copy_from_slice(&max_transfer_blocks(bs).to_be_bytes());
            if lu.thin {
                b[16..20].copy_from_slice(&MAX_UNMAP_BLOCKS.to_be_bytes());
                b[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
                b[24..28].copy_from_slice(&1u32.to_be_bytes());
            }
            b[32..40].copy_from_slice(&MAX_WRITE_SAME_BLOCKS.to_be_bytes());
            // MAXIMUM ATOMIC TRANSFER LENGTH; ATOMIC ALIGNMENT and ATOMIC TRANSFER LENGTH
            // GRANULARITY 0 (no restriction); no atomic boundaries (SBC-4 §6.6.4).
            b[40..44].copy_from_slice(&max_transfer_blocks(bs).to_be_bytes());
            with_header(0xb0, &b)
        }
        0xb1 => {
            let mut b = vec![0u8; 0x3c];
            b[0..2].copy_from_slice(&1u16.to_be_bytes()); // non-rotating medium
            b[3] = 0x40; // WABEREQ 01b: reads after a block erase succeed
            with_header(0xb1, &b)
        }
        0xb2 => {
            let mut b = vec![0u8; 4];
            if lu.thin {
                // LBPU, LBPWS, LBPWS10, LBPRZ=001b; provisioning type 010b (thin).
                b[1] = 0x80 | 0x40 | 0x20 | 0x04;
                b[2] = 0x02;
            }
            with_header(0xb2, &b)
        }
        _ => return Err(SenseReason::InvalidFieldInCdb.into()),
    })
}
