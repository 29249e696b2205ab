//! SBC-4 block commands: READ/WRITE/VERIFY/WRITE AND VERIFY, WRITE SAME, UNMAP,
//! COMPARE AND WRITE, ORWRITE, PRE-FETCH, SYNCHRONIZE CACHE, READ CAPACITY,
//! GET LBA STATUS, READ DEFECT DATA. Backends see byte ranges, never CDBs.

use std::sync::{PoisonError, RwLockReadGuard, RwLockWriteGuard};

use super::cdb::{Cdb, Rw};
use super::exec::{Ctx, Exec, Fail, put};
use super::lun::Lu;
use super::sense::{Sense, SenseReason};
use super::vpd::{
    MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, MAX_WRITE_SAME_BLOCKS, max_transfer_blocks,
};
use crate::backend::{BackendError, BackendErrorKind};

/// `Ctx::shared_io` for an LU borrowed apart from its context.
fn shared_io(lu: &Lu) -> Result<RwLockReadGuard<'_, ()>, Fail> {
    if crate::backend::nowait::active() {
        return match lu.io_lock.try_read() {
            Ok(g) => Ok(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                crate::backend::nowait::would_block();
                Err(SenseReason::InternalTargetFailure.into())
            }
        };
    }
    Ok(lu.io_lock.read().unwrap_or_else(PoisonError::into_inner))
}

/// Which way the failed I/O went, to pick the medium-error sense.
#[derive(Clone, Copy)]
pub(crate) enum Dir {
    Read,
    Write,
}

pub(crate) fn io_fail(dir: Dir, e: &BackendError) -> Fail {
    let reason = match (e.kind(), dir) {
        (BackendErrorKind::Medium, Dir::Read) => SenseReason::UnrecoveredReadError,
        (BackendErrorKind::Medium, Dir::Write) => SenseReason::WriteError,
        (BackendErrorKind::OutOfSpace, _) => SenseReason::SpaceAllocationFailedWriteProtect,
        (BackendErrorKind::OutOfRange, _) => SenseReason::LbaOutOfRange,
        _ => SenseReason::InternalTargetFailure,
    };
    // Inside a non-blocking attempt "would block" is expected, not a failure.
    if !crate::backend::nowait::active() {
        tracing::warn!(error = %e, "backing store I/O failed");
    }
    reason.into()
}

impl Ctx<'_> {
    pub(crate) fn bs(&self) -> u64 {
        u64::from(self.lu.block_size)
    }

    /// LBA range check (SBC-4 §4.5): LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub(crate) fn check_range(&self, lba: u64, blocks: u64) -> Result<(), Fail> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.capacity_blocks => Ok(()),
            _ => Err(SenseReason::LbaOutOfRange.into()),
        }
    }

    /// Common checks of the read/write family; returns the byte range.
    pub(crate) fn check_rw(&self, rw: &Rw) -> Result<(u64, u64), Fail> {
        // No protection information: any *PROTECT value is INVALID FIELD IN CDB (SBC-4 §5.x tables).
        if rw.protect != 0 {
            return Err(SenseReason::InvalidFieldInCdb.into());
        }
        self.check_range(rw.lba, u64::from(rw.blocks))?;
        if rw.blocks > max_transfer_blocks(self.lu.block_size) {
            return Err(SenseReason::InvalidFieldInCdb.into());
        }
        Ok((rw.lba * self.bs(), u64::from(rw.blocks) * self.bs()))
    }

    pub(crate) fn check_writable(&self) -> Result<(), Fail> {
        if self.write_protected {
            return Err(SenseReason::WriteProtected.into());
        }
        Ok(())
    }

    /// With the write cache off every write is durable before status (SBC-4 §4.15).
    pub(crate) fn durable(&self, fua: bool) -> bool {
        fua || !self.wce
    }

    /// Reads and writes share the LU's I/O lock; COMPARE AND WRITE, ORWRITE, WRITE ATOMIC
    /// and WRITE AND VERIFY take it exclusively. Inside a non-blocking attempt a held lock
    /// is "would block", not a wait on the reactor thread.
    pub(crate) fn shared_io(&self) -> Result<RwLockReadGuard<'_, ()>, Fail> {
        shared_io(self.lu)
    }

    pub(crate) fn exclusive_io(&self) -> RwLockWriteGuard<'_, ()> {
        self.lu
            .io_lock
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn read_into(&self, buf: &mut [u8], offset: u64) -> Result<(), Fail> {
        self.backend()
            .read_at(buf, offset)
            .map_err(|e| io_fail(Dir::Read, &e))
    }

    /// Read what the medium holds, past any cached copy (for a verify's compare).
    pub(crate) fn read_medium(&self, buf: &mut [u8], offset: u64) -> Result<(), Fail> {
        self.backend()
            .read_medium(buf, offset)
            .map_err(|e| io_fail(Dir::Read, &e))
    }

    pub(crate) fn write_from(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), Fail> {
        self.backend()
            .write_at(buf, offset, self.durable(fua))
            .map_err(|e| io_fail(Dir::Write, &e))
    }
}

pub(crate) fn execute(ctx: &mut Ctx<'_>, cdb: Cdb) -> Exec {
    match cdb {
        Cdb::Read(rw) => read(ctx, &rw),
        Cdb::Write(rw) => write(ctx, &rw),
        Cdb::Verify { rw, bytchk } => verify(ctx, &rw, bytchk),
        Cdb::WriteAndVerify { rw, bytchk } => write_and_verify(ctx, &rw, bytchk),
        Cdb::WriteAtomic { rw, boundary } => write_atomic(ctx, &rw, boundary),
        Cdb::WriteSame {
            rw,
            unmap,
            anchor,
            ndob,
        } => write_same(ctx, &rw, unmap, anchor, ndob),
        Cdb::Unmap { anchor, param_len } => unmap(ctx, anchor, param_len),
        Cdb::CompareAndWrite(rw) => compare_and_write(ctx, &rw),
        Cdb::OrWrite(rw) => orwrite(ctx, &rw),
        Cdb::PreFetch { lba, blocks, .. } => {
            ctx.check_range(lba, u64::from(blocks))?;
            let bs = ctx.bs();
            // A hint only; failure to prefetch is not an error.
            let _ = ctx.backend().prefetch(lba * bs, u64::from(blocks) * bs);
            Ok(())
        }
        Cdb::SynchronizeCache { lba, blocks, .. } => {
            ctx.check_range(lba, u64::from(blocks))?;
            ctx.backend().flush().map_err(|e| io_fail(Dir::Write, &e))
        }
        Cdb::ReadCapacity10 => {
            let last = u32::try_from(ctx.capacity_blocks - 1).unwrap_or(u32::MAX);
            let mut d = [0u8; 8];
            d[..4].copy_from_slice(&last.to_be_bytes());
            d[4..].copy_from_slice(&ctx.lu.block_size.to_be_bytes());
            ctx.data_in.extend_from_slice(&d);
            Ok(())
        }
        Cdb::ReadCapacity16 { alloc_len } => {
            put(ctx.data_in, &read_capacity16(ctx), alloc_len);
            Ok(())
        }
        Cdb::GetLbaStatus { lba, alloc_len } => get_lba_status(ctx, lba, alloc_len),
        Cdb::ReadDefectData {
            ten,
            plist,
            glist,
            format,
            alloc_len,
        } => {
            // No defect lists: a header with a zero-length list in the requested format.
            let flags = (u8::from(plist) << 4) | (u8::from(glist) << 3) | format;
            let d: &[u8] = if ten {
                &[0, flags, 0, 0]
            } else {
                &[0, flags, 0, 0, 0, 0, 0, 0]
            };
            put(ctx.data_in, d, alloc_len);
            Ok(())
        }
        _ => Err(SenseReason::InvalidCommandOperationCode.into()),
    }
}

fn read(ctx: &mut Ctx<'_>, rw: &Rw) -> Exec {
    let (offset, len) = ctx.check_rw(rw)?;
    // `len` is bounded by the maximum transfer length checked above.
    let Ctx { lu, data_in, .. } = ctx;
    let _io = shared_io(lu)?;
    lu.backend
        .read_append(data_in, len as usize, offset)
        .map_err(|e| io_fail(Dir::Read, &e))
}

fn write(ctx: &mut Ctx<'_>, rw: &Rw) -> Exec {
    let (offset, len) = ctx.check_rw(rw)?;
    ctx.check_writable()?;
    // Write what arrived: with EDTL < the CDB's length only EDTL bytes are written
    // (FCP-4 §9.4.2 a), which the transport reports as an overflow residual.
    let n = (len as usize).min(ctx.data_out.len());
    if n == 0 {
        return Ok(());
    }
    let _io = ctx.shared_io()?;
    ctx.write_from(&ctx.data_out[..n], offset, rw.fua)
}

/// WRITE AND VERIFY(10/12/16) (SBC-4 §5.45..§5.47): the write is durable; with BYTCHK 01b
/// the medium is then read back (past the page cache) and compared with the Data-Out
/// buffer, under the exclusive I/O lock so no other write can land in between. BYTCHK 1xb
/// is reserved.
fn write_and_verify(ctx: &mut Ctx<'_>, rw: &Rw, bytchk: u8) -> Exec {
    if bytchk > 1 {
        return Err(super::sense::Sense::invalid_cdb_field(1, Some(2)).into());
    }
    if bytchk == 0 {
        return write(ctx, &Rw { fua: true, ..*rw });
    }
    let (offset, len) = ctx.check_rw(rw)?;
    ctx.check_writable()?;
    let n = (len as usize).min(ctx.data_out.len());
    if n == 0 {
        return Ok(());
    }
    let _io = ctx.exclusive_io();
    let written = &ctx.data_out[..n];
    ctx.write_from(written, offset, true)?;
    let mut medium = vec![0u8; n];
    ctx.read_medium(&mut medium, offset)?;
    match medium.iter().zip(written).position(|(a, b)| a != b) {
        // INFORMATION: offset of the first miscompared byte in the Data-Out buffer.
        Some(pos) => Err(Sense::with_info(SenseReason::MiscompareDuringVerify, pos as u64).into()),
        None => Ok(()),
    }
}

/// WRITE ATOMIC(16) (SBC-4 §5.48, §4.29): all of the blocks or none, as seen by every
/// other command on this LU: the write runs under the exclusive I/O lock, which READ and
/// WRITE take shared. Atomic with respect to concurrent commands, not to a crash of the
/// host in the middle of the backing store's write.
fn write_atomic(ctx: &mut Ctx<'_>, rw: &Rw, boundary: u16) -> Exec {
    // MAXIMUM ATOMIC BOUNDARY SIZE is zero: a non-zero ATOMIC BOUNDARY is invalid.
    if boundary != 0 {
        return Err(super::sense::Sense::invalid_cdb_field(10, None).into());
    }
    let (offset, len) = ctx.check_rw(rw)?;
    ctx.check_writable()?;
    let len = len as usize;
    if len == 0 {
        return Ok(());
    }
    // Fewer Data-Out bytes than the CDB names cannot be written atomically.
    let data = ctx
        .data_out
        .get(..len)
        .ok_or(SenseReason::InvalidFieldInInformationUnit)?;
    let _io = ctx.exclusive_io();
    ctx.write_from(data, offset, rw.fua)
}

/// VERIFY (SBC-4 §5.30): BYTCHK 00b medium only, 01b compare, 11b compare one block to each.
fn verify(ctx: &mut Ctx<'_>, rw: &Rw, bytchk: u8) -> Exec {
    let (offset, len) = ctx.check_rw(rw)?;
    let bs = ctx.bs() as usize;
    let expected_len = match bytchk {
        0 => return Ok(()),
        1 => len as usize,
        3 => bs,
        _ => return Err(SenseReason::InvalidFieldInCdb.into()),
    };
    if len == 0 {
        return Ok(());
    }
    let expected = ctx
        .data_out
        .get(..expected_len)
        .ok_or(SenseReason::InvalidFieldInCdb)?;
    let mut medium = vec![0u8; len as usize];
    {
        let _io = ctx.shared_io()?;
        ctx.read_medium(&mut medium, offset)?;
    }
    let mismatch = if bytchk == 1 {
        medium.iter().zip(expected).position(|(a, b)| a != b)
    } else {
        medium.chunks(bs).enumerate().find_map(|(i, blk)| {
            blk.iter()
                .zip(expected)
                .position(|(a, b)| a != b)
                .map(|p| i * bs + p)
        })
    };
    match mismatch {
        // INFORMATION: offset of the first miscompared byte in the Data-Out buffer.
        Some(pos) => Err(Sense::with_info(SenseReason::MiscompareDuringVerify, pos as u64).into()),
        None => Ok(()),
    }
}

/// Blocks per buffer when WRITE SAME replicates its pattern.
const WRITE_SAME_CHUNK_BLOCKS: usize = 256;

/// WRITE SAME(10/16) (SBC-4 §5.49, §5.50).
fn write_same(ctx: &mut Ctx<'_>, rw: &Rw, unmap: bool, anchor: bool, ndob: bool) -> Exec {
    if rw.protect != 0 {
        return Err(SenseReason::InvalidFieldInCdb.into());
    }
    // ANC_SUP is zero in the Logical Block Provisioning VPD page.
    if anchor {
        return Err(SenseReason::InvalidFieldInCdb.into());
    }
    ctx.check_writable()?;
    // LBPWS/LBPWS10 are zero without thin provisioning (SBC-4 §5.49).
    if unmap && !ctx.lu.thin {
        return Err(SenseReason::InvalidFieldInCdb.into());
    }
    // WSNZ is zero: NUMBER OF LOGICAL BLOCKS zero means "through the last LBA".
    let blocks = if rw.blocks == 0 {
        if rw.lba > ctx.capacity_blocks {
            return Err(SenseReason::LbaOutOfRange.into());
        }
        let blocks = ctx.capacity_blocks - rw.lba;
        // The implied length is still bounded by MAXIMUM WRITE SAME LENGTH (SBC-4 §6.6.4).
        if blocks > MAX_WRITE_SAME_BLOCKS {
            return Err(SenseReason::InvalidFieldInCdb.into());
        }
        blocks
    } else {
        ctx.check_range(rw.lba, u64::from(rw.blocks))?;
        if u64::from(rw.blocks) > MAX_WRITE_SAME_BLOCKS {
            return Err(SenseReason::InvalidFieldInCdb.into());
        }
        u64::from(rw.blocks)
    };
    let bs = ctx.bs() as usize;
    let zero_block = vec![0u8; bs];
    let pattern: &[u8] = if ndob {
        &zero_block
    } else {
        // Exactly one logical block of Data-Out.
        if ctx.data_out.len() != bs {
            return Err(SenseReason::InvalidFieldInCdb.into());
        }
        ctx.data_out
    };
    if blocks == 0 {
        return Ok(());
    }
    let offset = rw.lba * bs as u64;
    let len = blocks * bs as u64;
    let _io = ctx.shared_io()?;
    if unmap && ctx.lu.thin {
        // With UNMAP set we deallocate whatever the pattern (as LIO and tgt do); LBPRZ=1
        // tells the initiator the blocks now read as zeros.
        ctx.backend()
            .discard(offset, len)
            .map_err(|e| io_fail(Dir::Write, &e))?;
        return if ctx.wce { Ok(()) } else { flush(ctx) };
    }
    let per_chunk =
        WRITE_SAME_CHUNK_BLOCKS.min(usize::try_from(blocks).unwrap_or(WRITE_SAME_CHUNK_BLOCKS));
    let buf = pattern.repeat(per_chunk);
    let mut done = 0u64;
    while done < blocks {
        let n = (blocks - done).min(per_chunk as u64) as usize;
        ctx.backend()
            .write_at(&buf[..n * bs], offset + done * bs as u64, false)
            .map_err(|e| io_fail(Dir::Write, &e))?;
        done += n as u64;
    }
    if ctx.wce { Ok(()) } else { flush(ctx) }
}

pub(crate) fn flush(ctx: &Ctx<'_>) -> Exec {
    ctx.backend().flush().map_err(|e| io_fail(Dir::Write, &e))
}

/// UNMAP (SBC-4 §5.31): validate every descriptor before deallocating any.
fn unmap(ctx: &mut Ctx<'_>, anchor: bool, param_len: u32) -> Exec {
    ctx.check_writable()?;
    // LBPU is zero without thin provisioning: the command is not supported.
    if !ctx.lu.thin {
        return Err(SenseReason::InvalidCommandOperationCode.into());
    }
    if anchor {
        return Err(SenseReason::InvalidFieldInCdb.into());
    }
    if param_len == 0 {
        return Ok(());
    }
    if param_len < 8 {
        return Err(SenseReason::ParameterListLengthError.into());
    }
    let data = ctx
        .data_out
        .get(..param_len as usize)
        .ok_or(SenseReason::ParameterListLengthError)?;
    let bd_len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let descs = data
        .get(8..8 + bd_len)
        .ok_or(SenseReason::ParameterListLengthError)?;
    let count = descs.len() / 16;
    if count > MAX_UNMAP_DESCRIPTORS as usize {
        return Err(SenseReason::InvalidFieldInParameterList.into());
    }
    let mut ranges = Vec::with_capacity(count);
    for d in descs.chunks_exact(16) {
        let mut lba = [0u8; 8];
        lba.copy_from_slice(&d[..8]);
        let lba = u64::from_be_bytes(lba);
        let blocks = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        if blocks > MAX_UNMAP_BLOCKS {
            return Err(SenseReason::InvalidFieldInParameterList.into());
        }
        ctx.check_range(lba, u64::from(blocks))?;
        if blocks > 0 {
            ranges.push((lba, u64::from(blocks)));
        }
    }
    let bs = ctx.bs();
    let _io = ctx.shared_io()?;
    for (lba, blocks) in ranges {
        ctx.backend()
            .discard(lba * bs, blocks * bs)
            .map_err(|e| io_fail(Dir::Write, &e))?;
    }
    if ctx.wce { Ok(()) } else { flush(ctx) }
}

/// COMPARE AND WRITE (SBC-4 §5.3): the compare and the write are one atomic
/// operation with respect to every other write to this LU (exclusive `io_lock`).
fn compare_and_write(ctx: &mut Ctx<'_>, rw: &Rw) -> Exec {
    let (offset, len) = ctx.check_rw(rw)?;
    ctx.check_writable()?;
    if len == 0 {
        // NUMBER OF LOGICAL BLOCKS is one byte: Data-Out here means the initiator
        // meant more than 255 blocks (beyond MAXIMUM COMPARE AND WRITE LENGTH).
        return if ctx.data_out.is_empty() {
            Ok(())
        } else {
            Err(SenseReason::InvalidFieldInCdb.into())
        };
    }
    let len = len as usize;
    if ctx.data_out.len() != 2 * len {
        return Err(SenseReason::InvalidFieldInCdb.into());
    }
    let (verify, write) = ctx.data_out.split_at(len);
    // A store that compares and writes itself (RBD) is atomic across every
    // gateway, not only within this one; it may refuse a range it cannot do.
    if ctx.backend().supports_compare_and_write() {
        match ctx.backend().compare_and_write(verify, write, offset) {
            Ok(crate::backend::CompareOutcome::Written) => {
                return if ctx.durable(rw.fua) {
                    ctx.backend().flush().map_err(|e| io_fail(Dir::Write, &e))
                } else {
                    Ok(())
                };
            }
            Ok(crate::backend::CompareOutcome::Miscompare(pos)) => {
                return Err(Sense::with_info(SenseReason::MiscompareDuringVerify, pos).into());
            }
            Err(e) if e.kind() == BackendErrorKind::NotSupported => {}
            Err(e) => return Err(io_fail(Dir::Write, &e)),
        }
    }
    let _io = ctx.exclusive_io();
    let mut medium = vec![0u8; len];
    ctx.read_into(&mut medium, offset)?;
    if let Some(pos) = medium.iter().zip(verify).position(|(a, b)| a != b) {
        return Err(Sense::with_info(SenseReason::MiscompareDuringVerify, pos as u64).into());
    }
    ctx.write_from(write, offset, rw.fua)
}

/// ORWRITE(16) (SBC-4 §5.8) with BMOP 000b: medium |= Data-Out, atomically.
fn orwrite(ctx: &mut Ctx<'_>, rw: &Rw) -> Exec {
    let (offset, len) = ctx.check_rw(rw)?;
    ctx.check_writable()?;
    let n = (len as usize).min(ctx.data_out.len());
    if n == 0 {
        return Ok(());
    }
    let _io = ctx.exclusive_io();
    let mut medium = vec![0u8; n];
    ctx.read_into(&mut medium, offset)?;
    for (m, d) in medium.iter_mut().zip(ctx.data_out) {
        *m |= d;
    }
    ctx.write_from(&medium, offset, rw.fua)
}

/// READ CAPACITY(16) parameter data (SBC-4 §5.21.2).
fn read_capacity16(ctx: &Ctx<'_>) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&(ctx.capacity_blocks - 1).to_be_bytes());
    d[8..12].copy_from_slice(&ctx.lu.block_size.to_be_bytes());
    if ctx.lu.thin {
        d[14] = 0x80 | 0x40; // LBPME, LBPRZ
    }
    d
}

/// GET LBA STATUS (SBC-4 §5.7): one descriptor per run of mapped/deallocated blocks.
fn get_lba_status(ctx: &mut Ctx<'_>, lba: u64, alloc_len: u32) -> Exec {
    if lba >= ctx.capacity_blocks {
        return Err(SenseReason::LbaOutOfRange.into());
    }
    let bs = ctx.bs();
    let max_desc = (alloc_len.saturating_sub(8) / 16).clamp(1, 64);
    let mut descs = Vec::new();
    let mut pos = lba;
    while pos < ctx.capacity_blocks && descs.len() < max_desc as usize {
        let remaining = ctx.capacity_blocks - pos;
        let (mapped, blocks) = if ctx.lu.thin {
            let ext = ctx
                .backend()
                .extent_at(pos * bs)
                .map_err(|e| io_fail(Dir::Read, &e))?;
            // A block is deallocated only if all of it is a hole.
            let blocks = if ext.mapped {
                ext.len.div_ceil(bs)
            } else {
                ext.len / bs
            };
            if blocks == 0 {
                (true, 1)
            } else {
                (ext.mapped, blocks)
            }
        } else {
            (true, remaining)
        };
        let blocks = blocks.min(remaining).min(u64::from(u32::MAX));
        descs.push((pos, blocks as u32, u8::from(!mapped)));
        pos += blocks;
    }
    let mut d = Vec::with_capacity(8 + descs.len() * 16);
    d.extend_from_slice(&((4 + descs.len() * 16) as u32).to_be_bytes());
    d.extend_from_slice(&[0; 4]);
    for (lba, blocks, status) in descs {
        d.extend_from_slice(&lba.to_be_bytes());
        d.extend_from_slice(&blocks.to_be_bytes());
        d.extend_from_slice(&[status, 0, 0, 0]);
    }
    put(ctx.data_in, &d, alloc_len);
    Ok(())
}
