//! EXTENDED COPY(LID1) and RECEIVE COPY RESULTS (SPC-4 §6.18, §6.20; SPC-5 §5.17): the copy
//! manager for block-to-block segments between LUs of this target named by NAA designator.

use std::sync::{Arc, PoisonError};

use super::exec::{Ctx, Exec, Fail, put};
use super::lun::{CopyResult, Lu};
use super::opcodes::Access;
use super::sense::SenseReason;

/// Descriptor type codes (SPC-4 table 110, 111).
const SEG_BLOCK_TO_BLOCK: u8 = 0x02;
const TGT_IDENTIFICATION: u8 = 0xe4;
/// Limits reported by OPERATING PARAMETERS and the Third-party Copy VPD page.
pub(crate) const MAX_TARGET_DESCRIPTORS: u16 = 8;
pub(crate) const MAX_SEGMENT_DESCRIPTORS: u16 = 16;
pub(crate) const MAX_DESCRIPTOR_LIST_LENGTH: u32 = 1024;
/// Bytes one segment may move: 65535 blocks of 4096 bytes is the most a 02h descriptor names.
pub(crate) const MAX_SEGMENT_LENGTH: u32 = 0xffff * 4096;
/// Bytes moved per backend request.
const CHUNK: usize = 1 << 20;
/// Copy results kept per LU for RECEIVE COPY STATUS; the oldest go first.
const MAX_RETAINED: usize = 16;
const HEADER_LEN: usize = 16;
const TGT_DESC_LEN: usize = 32;

/// Parameter list header (SPC-4 §6.4.2, table 104).
mod list_id_usage {
    /// Hold data and status; LIST IDENTIFIER valid.
    pub(super) const HOLD: u8 = 0b00;
}

/// One resolved block-to-block segment.
struct Segment {
    src: Arc<Lu>,
    dst: Arc<Lu>,
    src_offset: u64,
    dst_offset: u64,
    len: u64,
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0, |a, &x| (a << 8) | u64::from(x))
}

fn copy_aborted(r: SenseReason) -> Fail {
    r.into()
}

/// EXTENDED COPY(LID1) (SPC-4 §6.4). Runs to completion before status.
pub(crate) fn extended_copy(ctx: &mut Ctx<'_>, param_len: u32) -> Exec {
    // SPC-4 §6.4.1: a zero PARAMETER LIST LENGTH is not an error; nothing is copied.
    if param_len == 0 {
        return Ok(());
    }
    let p = ctx
        .data_out
        .get(..param_len as usize)
        .ok_or(SenseReason::ParameterListLengthError)?;
    if p.len() < HEADER_LEN {
        return Err(SenseReason::ParameterListLengthError.into());
    }
    let list_id = p[0];
    let usage = (p[1] >> 3) & 0x03;
    let tgt_len = be(&p[2..4]) as usize;
    let seg_len = be(&p[8..12]) as usize;
    let inline_len = be(&p[12..16]) as usize;
    if usage == 0b01 {
        return Err(SenseReason::InvalidFieldInParameterList.into());
    }
    // SPC-4 §6.4.3.1: the descriptor lists are bounded by MAXIMUM DESCRIPTOR LIST LENGTH.
    if tgt_len + seg_len > MAX_DESCRIPTOR_LIST_LENGTH as usize {
        return Err(SenseReason::ParameterListLengthError.into());
    }
    if inline_len > 0 {
        return Err(SenseReason::InlineDataLengthExceeded.into());
    }
    let body = p
        .get(HEADER_LEN..HEADER_LEN + tgt_len + seg_len)
        .ok_or(SenseReason::ParameterListLengthError)?;
    let (tgt_list, seg_list) = body.split_at(tgt_len);
    let targets = target_descriptors(ctx, tgt_list)?;
    let segments = segment_descriptors(ctx, &targets, seg_list)?;
    let mut bytes = 0u64;
    for seg in &segments {
        copy_segment(seg)?;
        bytes += seg.len;
    }
    if usage == list_id_usage::HOLD {
        let mut st = ctx.lock();
        let nexus = ctx.nexus.id;
        st.copy_results
            .retain(|r| !(r.nexus == nexus && r.list_id == list_id));
        if st.copy_results.len() >= MAX_RETAINED {
            st.copy_results.remove(0);
        }
        st.copy_results.push(CopyResult {
            nexus,
            list_id,
            segments: segments.len() as u16,
            bytes,
        });
    }
    Ok(())
}

/// Identification descriptor CSCD descriptors (E4h, SPC-4 §6.4.4.2) resolved to LUs.
fn target_descriptors(ctx: &Ctx<'_>, list: &[u8]) -> Result<Vec<Option<Arc<Lu>>>, Fail> {
    let mut targets = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        let Some(&code) = rest.first() else { break };
        if code != TGT_IDENTIFICATION {
            return Err(SenseReason::UnsupportedTargetDescriptorTypeCode.into());
        }
        let d = rest
            .get(..TGT_DESC_LEN)
            .ok_or(SenseReason::ParameterListLengthError)?;
        rest = &rest[TGT_DESC_LEN..];
        if targets.len() >= usize::from(MAX_TARGET_DESCRIPTORS) {
            return Err(SenseReason::TooManyTargetDescriptors.into());
        }
        // Byte 1: LU ID TYPE (ignored since SPC-4), NUL (obsolete), PERIPHERAL DEVICE TYPE.
        if d[1] & 0x1f != 0 {
            return Err(SenseReason::InvalidFieldInParameterList.into());
        }
        // Bytes 4..24: one designation descriptor; we match the NAA (type 3, LU association).
        let (code_set, kind, len) = (d[4] & 0x0f, d[5] & 0x3f, usize::from(d[7]));
        let designator = d.get(8..8 + len.min(20)).unwrap_or_default();
        let lu = if code_set == 1 && kind == 0x03 {
            ctx.units
                .lu_list_arcs()
                .into_iter()
                .find(|lu| lu.naa_designator()[..] == *designator)
        } else {
            None
        };
        // Bytes 28..32: block device parameters; DISK BLOCK LENGTH must be the LU's.
        let block_len = be(&d[29..32]);
        if let Some(lu) = &lu
            && block_len != u64::from(lu.block_size)
        {
            return Err(SenseReason::InvalidFieldInParameterList.into());
        }
        targets.push(lu);
    }
    Ok(targets)
}

/// Block device to block device segment descriptors (02h, SPC-4 §6.4.5.5).
fn segment_descriptors(
    ctx: &Ctx<'_>,
    targets: &[Option<Arc<Lu>>],
    list: &[u8],
) -> Result<Vec<Segment>, Fail> {
    let mut segments = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        let [code, _, l0, l1, ..] = *rest else {
            return Err(SenseReason::ParameterListLengthError.into());
        };
        let desc_len = 4 + be(&[l0, l1]) as usize;
        let d = rest
            .get(..desc_len)
            .ok_or(SenseReason::ParameterListLengthError)?;
        rest = &rest[desc_len..];
        if code != SEG_BLOCK_TO_BLOCK {
            return Err(SenseReason::UnsupportedSegmentDescriptorTypeCode.into());
        }
        if segments.len() >= usize::from(MAX_SEGMENT_DESCRIPTORS) {
            return Err(SenseReason::TooManySegmentDescriptors.into());
        }
        if d.len() != 0x1c {
            return Err(SenseReason::InvalidFieldInParameterList.into());
        }
        let dc = d[1] & 0x02 != 0;
        let lookup = |index: u64| -> Result<Arc<Lu>, Fail> {
            match targets.get(index as usize) {
                Some(Some(lu)) => Ok(Arc::clone(lu)),
                Some(None) => Err(copy_aborted(SenseReason::CopyTargetDeviceNotReachable)),
                None => Err(copy_aborted(SenseReason::UnreachableCopyTarget)),
            }
        };
        let src = lookup(be(&d[4..6]))?;
        let dst = lookup(be(&d[6..8]))?;
        let blocks = be(&d[10..12]);
        let (src_lba, dst_lba) = (be(&d[12..20]), be(&d[20..28]));
        // DC: NUMBER OF BLOCKS counts destination blocks, else source blocks.
        let len = blocks * u64::from(if dc { dst.block_size } else { src.block_size });
        let (sbs, dbs) = (u64::from(src.block_size), u64::from(dst.block_size));
        if !len.is_multiple_of(sbs) || !len.is_multiple_of(dbs) {
            return Err(copy_aborted(SenseReason::CopyAbortedNoSense));
        }
        check_cscd(ctx, &src, src_lba, len / sbs, Access::Read)?;
        check_cscd(ctx, &dst, dst_lba, len / dbs, Access::Write)?;
        segments.push(Segment {
            src_offset: src_lba * sbs,
            dst_offset: dst_lba * dbs,
            src,
            dst,
            len,
        });
    }
    Ok(segments)
}

/// The checks a READ or WRITE from this nexus would meet at the copy target: capacity,
/// write protection, reservations (SPC-5 §5.17.4: the copy manager acts for the nexus).
fn check_cscd(ctx: &Ctx<'_>, lu: &Lu, lba: u64, blocks: u64, access: Access) -> Exec {
    let st = lu.lock();
    if lba
        .checked_add(blocks)
        .is_none_or(|end| end > st.capacity_blocks)
    {
        return Err(copy_aborted(SenseReason::CopyAbortedNoSense));
    }
    if access == Access::Write && (st.read_only || st.mode.swp) {
        return Err(SenseReason::WriteProtected.into());
    }
    if st.reservation.is_some_and(|h| h != ctx.nexus.id) || st.pr.conflicts(ctx.nexus, access) {
        return Err(Fail::ReservationConflict);
    }
    Ok(())
}

/// Move one segment in chunks, holding each LU's I/O lock (shared) only for one request,
/// so two copies in opposite directions cannot deadlock. Overlap within one LU copies
/// backwards, as memmove does.
fn copy_segment(seg: &Segment) -> Exec {
    let durable = !seg.dst.lock().mode.wce;
    let backwards = Arc::ptr_eq(&seg.src, &seg.dst)
        && seg.dst_offset > seg.src_offset
        && seg.dst_offset < seg.src_offset + seg.len;
    let mut buf = vec![0u8; CHUNK.min(seg.len as usize)];
    let mut done = 0u64;
    while done < seg.len {
        let n = (seg.len - done).min(CHUNK as u64);
        let at = if backwards { seg.len - done - n } else { done };
        let b = &mut buf[..n as usize];
        {
            let _io = seg
                .src
                .io_lock
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            seg.src
                .backend
                .read_at(b, seg.src_offset + at)
                .map_err(|_| copy_aborted(SenseReason::CopyAbortedNoSense))?;
        }
        {
            let _io = seg
                .dst
                .io_lock
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            seg.dst
                .backend
                .write_at(b, seg.dst_offset + at, durable)
                .map_err(|_| copy_aborted(SenseReason::CopyAbortedNoSense))?;
        }
        done += n;
    }
    Ok(())
}

/// RECEIVE COPY RESULTS (SPC-4 §6.18): COPY STATUS(LID1) and OPERATING PARAMETERS.
pub(crate) fn receive_copy_results(
    ctx: &mut Ctx<'_>,
    service_action: u8,
    list_id: u8,
    alloc_len: u32,
) -> Exec {
    use super::cdb::sa;
    let d = match service_action {
        sa::RECEIVE_COPY_STATUS_LID1 => {
            let nexus = ctx.nexus.id;
            let mut st = ctx.lock();
            let pos = st
                .copy_results
                .iter()
                .position(|r| r.nexus == nexus && r.list_id == list_id)
                .ok_or(SenseReason::InvalidFieldInCdb)?;
            // SPC-4 §6.18.3: the status is discarded once reported.
            let r = st.copy_results.remove(pos);
            drop(st);
            copy_status(&r)
        }
        sa::RECEIVE_COPY_OPERATING_PARAMETERS => operating_parameters(),
        _ => return Err(SenseReason::InvalidFieldInCdb.into()),
    };
    put(ctx.data_in, &d, alloc_len);
    Ok(())
}

fn copy_status(r: &CopyResult) -> Vec<u8> {
    let mut d = vec![0u8; 12];
    d[0..4].copy_from_slice(&8u32.to_be_bytes());
    // HDD 0, COPY MANAGER STATUS 00h: completed without errors.
    d[5..7].copy_from_slice(&r.segments.to_be_bytes());
    // TRANSFER COUNT UNITS: bytes, or the smallest power of 2^10 that fits 32 bits.
    let (mut units, mut count) = (0u8, r.bytes);
    while count > u64::from(u32::MAX) {
        units += 1;
        count >>= 10;
    }
    d[7] = units;
    d[8..12].copy_from_slice(&(count as u32).to_be_bytes());
    d
}

/// OPERATING PARAMETERS (SPC-4 §6.18.4, table 131).
fn operating_parameters() -> Vec<u8> {
    let implemented = [SEG_BLOCK_TO_BLOCK, TGT_IDENTIFICATION];
    let mut d = vec![0u8; 44];
    d[4] = 0x01; // SNLID: LIST ID USAGE 11b is supported
    d[8..10].copy_from_slice(&MAX_TARGET_DESCRIPTORS.to_be_bytes());
    d[10..12].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
    d[12..16].copy_from_slice(&MAX_DESCRIPTOR_LIST_LENGTH.to_be_bytes());
    d[16..20].copy_from_slice(&MAX_SEGMENT_LENGTH.to_be_bytes());
    // MAXIMUM INLINE DATA LENGTH, HELD DATA LIMIT, MAXIMUM STREAM DEVICE TRANSFER SIZE: 0.
    d[34..36].copy_from_slice(&1u16.to_be_bytes()); // TOTAL CONCURRENT COPIES
    d[36] = 1; // MAXIMUM CONCURRENT COPIES
    d[37] = 9; // DATA SEGMENT GRANULARITY: 2^9 bytes
    d[43] = implemented.len() as u8;
    d.extend_from_slice(&implemented);
    let len = (d.len() - 4) as u32;
    d[0..4].copy_from_slice(&len.to_be_bytes());
    d
}

/// Third-party Copy VPD page descriptors (SPC-4 §7.8.17) for the LID1 copy manager.
pub(crate) fn third_party_copy_descriptors() -> Vec<u8> {
    use super::cdb::{op, sa};
    let mut b = Vec::new();
    let mut descriptor = |kind: u16, body: &[u8]| {
        let mut body = body.to_vec();
        body.resize(body.len().next_multiple_of(4), 0);
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&(body.len() as u16).to_be_bytes());
        b.extend_from_slice(&body);
    };
    // Supported Commands (0001h).
    let commands = [
        op::THIRD_PARTY_COPY_OUT,
        1,
        sa::EXTENDED_COPY_LID1,
        op::THIRD_PARTY_COPY_IN,
        2,
        sa::RECEIVE_COPY_STATUS_LID1,
        sa::RECEIVE_COPY_OPERATING_PARAMETERS,
    ];
    let mut body = vec![commands.len() as u8];
    body.extend_from_slice(&commands);
    descriptor(0x0001, &body);
    // Parameter Data (0004h).
    let mut body = vec![0u8; 28];
    body[4..6].copy_from_slice(&MAX_TARGET_DESCRIPTORS.to_be_bytes());
    body[6..8].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
    body[8..12].copy_from_slice(&MAX_DESCRIPTOR_LIST_LENGTH.to_be_bytes());
    descriptor(0x0004, &body);
    // Supported Descriptors (0008h).
    descriptor(0x0008, &[2, SEG_BLOCK_TO_BLOCK, TGT_IDENTIFICATION]);
    // Supported CSCD Descriptor IDs (000Ch): none.
    descriptor(0x000c, &[0, 0]);
    // General Copy Operations (8001h).
    let mut body = vec![0u8; 32];
    body[0..4].copy_from_slice(&1u32.to_be_bytes());
    body[4..8].copy_from_slice(&1u32.to_be_bytes());
    body[8..12].copy_from_slice(&MAX_SEGMENT_LENGTH.to_be_bytes());
    body[12] = 9;
    descriptor(0x8001, &body);
    b
}
