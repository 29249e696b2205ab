//! The io_uring engine for regular files and block devices (`engine = "uring"`).
//!
//! One ring per LU, not per thread. Callers are the blocking pool (up to
//! hundreds of threads), the LU's write lane and async tasks: a ring per
//! thread would multiply rings, registered files and registered buffers by
//! threads that each do a little I/O, and leave async completions without
//! one place to be reaped. A ring per LU bounds all of that by the number
//! of LUs, keeps one LU's registered file and O_DIRECT buffers together,
//! and lets its reaper thread deliver every completion (see `ring/`).
//! The price: the kernel serializes submission per ring, so buffered
//! page-cache copies of one LU do not run in parallel inside the ring.
//!
//! What it does:
//! - reads and writes as READV/WRITEV on the registered fd; short transfers
//!   continue where they stopped; EINTR and EAGAIN are retried;
//! - FUA writes carry RWF_DSYNC (else write then fdatasync), SYNCHRONIZE
//!   CACHE is an fdatasync, discard a PUNCH_HOLE fallocate (the file
//!   engine's fallbacks for block devices and filesystems without holes);
//!   write-zeroes writes zeros through the ring, as the file engine does
//!   (a ZERO_RANGE fallocate would leave unwritten extents that SEEK_DATA,
//!   and so GET LBA STATUS, reports as deallocated);
//! - with `direct`, O_DIRECT through registered page-aligned buffers
//!   (READ_FIXED/WRITE_FIXED: the pages are pinned once, not per I/O, which
//!   is where registered buffers pay; buffered I/O would only gain a copy);
//! - inside a non-blocking attempt (`nowait`), buffered reads and writes
//!   take the file engine's RWF_NOWAIT path, which completes page-cache
//!   hits on the connection's own task; anything else refuses there.
//!
//! Errors go through [`BackendError::io`], so they get the same sense as
//! the file engine's (EIO: MEDIUM ERROR, ENOSPC: SPACE ALLOCATION FAILED).

mod ring;

use std::fs::OpenOptions as FsOpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use ring::Ring;
pub(crate) use ring::probe;

use super::engine::OpenOptions;
use super::file::refuse_in_attempt;
use super::{BackendError, BlockBackend, Extent, FileBackend, check_range};

/// O_DIRECT bounce buffers per LU and their size: 8 MiB pinned per LU.
const DIRECT_BUFS: u16 = 32;
const DIRECT_CHUNK: usize = 256 << 10;
/// EAGAIN/EINTR retries of one operation before it fails.
const RETRIES: u32 = 64;

#[derive(Debug)]
pub struct UringBackend {
    /// Opening, size, extents, prefetch, resize, and the file engine's
    /// fallbacks (nowait attempts, unaligned I/O in direct mode).
    file: FileBackend,
    ring: Ring,
    direct: Option<Direct>,
}

/// The O_DIRECT side: its own fd (the ring's) and the alignment it needs.
#[derive(Debug)]
struct Direct {
    _fd: OwnedFd,
    align: u64,
}

impl UringBackend {
    /// Wraps an open store with a ring (and with `opts.direct`, an O_DIRECT fd).
    pub fn new(file: FileBackend, opts: &OpenOptions) -> Result<UringBackend, BackendError> {
        if !opts.direct {
            let ring = Ring::new(file.file().as_raw_fd(), None)
                .map_err(|e| BackendError::io("io_uring setup", e))?;
            return Ok(UringBackend {
                file,
                ring,
                direct: None,
            });
        }
        let fd: OwnedFd = FsOpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .custom_flags(libc::O_DIRECT)
            .open(file.path())
            .map_err(|e| {
                BackendError::InvalidOption(format!(
                    "direct = true: {} refuses O_DIRECT ({e})",
                    file.path().display()
                ))
            })?
            .into();
        let ring = Ring::new(fd.as_raw_fd(), Some((DIRECT_CHUNK, DIRECT_BUFS)))
            .map_err(|e| BackendError::io("io_uring setup", e))?;
        let align = u64::from(opts.block_size);
        let me = UringBackend {
            file,
            ring,
            direct: Some(Direct { _fd: fd, align }),
        };
        me.check_direct_alignment(opts.block_size)?;
        Ok(me)
    }

    /// O_DIRECT needs offsets and lengths aligned to what the store allows;
    /// one block read at offset 0 tells whether the LU's block size is enough.
    fn check_direct_alignment(&self, block_size: u32) -> Result<(), BackendError> {
        if self.size() < u64::from(block_size) {
            return Ok(());
        }
        let mut buf = self.ring.fixed_buf().expect("direct rings have buffers");
        match self.ring.read_fixed(&mut buf, block_size as usize, 0) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                Err(BackendError::InvalidOption(format!(
                    "direct = true: {} does not take O_DIRECT I/O in {block_size}-byte blocks \
                     (its alignment is larger; use block_size = 4096 or direct = false)",
                    self.file.path().display()
                )))
            }
            Err(e) => Err(BackendError::io("O_DIRECT probe read", e)),
        }
    }

    fn aligned(&self, offset: u64, len: usize) -> bool {
        self.direct
            .as_ref()
            .is_some_and(|d| offset.is_multiple_of(d.align) && (len as u64).is_multiple_of(d.align))
    }

    /// Buffered read through the ring: continues short reads; bytes past
    /// the end of the file (truncated under us) read as zeros.
    fn ring_read(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        let mut done = 0;
        let mut retries = 0;
        while done < buf.len() {
            match self.ring.readv(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    return Ok(());
                }
                Ok(n) => done += n,
                Err(e) if retry(&e, &mut retries) => {}
                Err(e) => return Err(BackendError::io("io_uring readv", e)),
            }
        }
        Ok(())
    }

    /// Buffered write through the ring; with `fua`, durable on return.
    fn ring_write(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), BackendError> {
        let mut done = 0;
        let mut retries = 0;
        let mut dsync = fua;
        while done < buf.len() {
            match self.ring.writev(&buf[done..], offset + done as u64, dsync) {
                Ok(0) => {
                    return Err(BackendError::io(
                        "io_uring writev",
                        io::Error::from(io::ErrorKind::WriteZero),
                    ));
                }
                Ok(n) => done += n,
                // A store without RWF_DSYNC: plain writes, then fdatasync.
                Err(e) if dsync && e.raw_os_error() == Some(libc::EOPNOTSUPP) => dsync = false,
                Err(e) if retry(&e, &mut retries) => {}
                Err(e) => return Err(BackendError::io("io_uring writev", e)),
            }
        }
        if fua && !dsync {
            return self.sync();
        }
        Ok(())
    }

    /// O_DIRECT read through the registered buffers. A short read (the end
    /// of the file) finishes through the page cache, which reads zeros there.
    fn direct_read(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        let mut fixed = self.ring.fixed_buf().expect("direct rings have buffers");
        let mut done = 0;
        let mut retries = 0;
        while done < buf.len() {
            let want = (buf.len() - done).min(DIRECT_CHUNK);
            let at = offset + done as u64;
            match self.ring.read_fixed(&mut fixed, want, at) {
                Ok(n) => {
                    buf[done..done + n].copy_from_slice(&fixed.as_slice()[..n]);
                    done += n;
                    if n < want {
                        return self.file.read_at(&mut buf[done..], offset + done as u64);
                    }
                }
                Err(e) if retry(&e, &mut retries) => {}
                Err(e) => return Err(BackendError::io("io_uring read (O_DIRECT)", e)),
            }
        }
        Ok(())
    }

    fn direct_write(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), BackendError> {
        let mut fixed = self.ring.fixed_buf().expect("direct rings have buffers");
        let mut done = 0;
        let mut retries = 0;
        let mut dsync = fua;
        while done < buf.len() {
            let want = (buf.len() - done).min(DIRECT_CHUNK);
            fixed.as_mut_slice()[..want].copy_from_slice(&buf[done..done + want]);
            match self
                .ring
                .write_fixed(&fixed, want, offset + done as u64, dsync)
            {
                Ok(0) => {
                    return Err(BackendError::io(
                        "io_uring write (O_DIRECT)",
                        io::Error::from(io::ErrorKind::WriteZero),
                    ));
                }
                Ok(n) if n < want => {
                    // Short: the rest (no longer aligned, maybe) through the page cache.
                    let rest = offset + (done + n) as u64;
                    drop(fixed);
                    return self.file.write_at(&buf[done + n..], rest, fua);
                }
                Ok(n) => done += n,
                Err(e) if dsync && e.raw_os_error() == Some(libc::EOPNOTSUPP) => dsync = false,
                Err(e) if retry(&e, &mut retries) => {}
                Err(e) => return Err(BackendError::io("io_uring write (O_DIRECT)", e)),
            }
        }
        if fua && !dsync {
            return self.sync();
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), BackendError> {
        let mut retries = 0;
        loop {
            match self.ring.fsync(true) {
                Ok(()) => return Ok(()),
                Err(e) if retry(&e, &mut retries) => {}
                Err(e) => return Err(BackendError::io("io_uring fdatasync", e)),
            }
        }
    }

    fn fallocate(&self, offset: u64, len: u64, mode: i32) -> io::Result<()> {
        let mut retries = 0;
        loop {
            match self.ring.fallocate(offset, len, mode) {
                Err(e) if retry(&e, &mut retries) => {}
                other => return other,
            }
        }
    }

    /// Reads `len` bytes at `offset` for an async caller: the buffer is
    /// filled by the ring and handed back, with no thread blocked meanwhile.
    pub async fn read_owned(&self, len: usize, offset: u64) -> Result<Vec<u8>, BackendError> {
        check_range(offset, len as u64, self.size())?;
        if self.direct.is_some() {
            return Err(BackendError::NotSupported("async O_DIRECT reads"));
        }
        let mut out = Vec::with_capacity(len);
        let mut retries = 0;
        while out.len() < len {
            let (res, part) = self
                .ring
                .read_owned(vec![0; len - out.len()], offset + out.len() as u64)
                .await;
            match res {
                Ok(0) => out.resize(len, 0),
                Ok(n) => out.extend_from_slice(&part[..n as usize]),
                Err(e) if retry(&e, &mut retries) => {}
                Err(e) => return Err(BackendError::io("io_uring readv", e)),
            }
        }
        Ok(out)
    }

    /// Writes `buf` at `offset` for an async caller (durable with `fua`).
    pub async fn write_owned(
        &self,
        buf: Vec<u8>,
        offset: u64,
        fua: bool,
    ) -> Result<(), BackendError> {
        check_range(offset, buf.len() as u64, self.size())?;
        if self.direct.is_some() {
            return Err(BackendError::NotSupported("async O_DIRECT writes"));
        }
        let mut rest = buf;
        let mut at = offset;
        let mut retries = 0;
        while !rest.is_empty() {
            let (res, back) = self.ring.write_owned(rest, at, fua).await;
            rest = back;
            match res {
                Ok(0) => {
                    return Err(BackendError::io(
                        "io_uring writev",
                        io::Error::from(io::ErrorKind::WriteZero),
                    ));
                }
                Ok(n) => {
                    rest.drain(..n as usize);
                    at += u64::from(n);
                }
                Err(e) if retry(&e, &mut retries) => {}
                Err(e) => return Err(BackendError::io("io_uring writev", e)),
            }
        }
        Ok(())
    }
}

/// EINTR and EAGAIN are tried again, a bounded number of times.
fn retry(e: &io::Error, retries: &mut u32) -> bool {
    if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) || *retries >= RETRIES {
        return false;
    }
    *retries += 1;
    std::thread::yield_now();
    true
}

impl BlockBackend for UringBackend {
    fn describe(&self) -> String {
        self.file.describe()
    }

    fn engine(&self) -> &'static str {
        if self.direct.is_some() {
            "uring+direct"
        } else {
            "uring"
        }
    }

    fn size(&self) -> u64 {
        self.file.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        check_range(offset, buf.len() as u64, self.size())?;
        if super::nowait::active() {
            if self.direct.is_some() {
                return refuse_in_attempt();
            }
            // preadv2(RWF_NOWAIT): the page-cache hit completes right here.
            return self.file.read_at(buf, offset);
        }
        if self.aligned(offset, buf.len()) {
            return self.direct_read(buf, offset);
        }
        if self.direct.is_some() {
            // Unaligned (never from SCSI, whose I/O is in blocks): the page cache,
            // which stays coherent with O_DIRECT I/O of the same file.
            return self.file.read_at(buf, offset);
        }
        self.ring_read(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), BackendError> {
        check_range(offset, buf.len() as u64, self.size())?;
        if super::nowait::active() {
            if fua || self.direct.is_some() {
                return refuse_in_attempt();
            }
            return self.file.write_at(buf, offset, false);
        }
        if self.aligned(offset, buf.len()) {
            return self.direct_write(buf, offset, fua);
        }
        if self.direct.is_some() {
            return self.file.write_at(buf, offset, fua);
        }
        self.ring_write(buf, offset, fua)
    }

    fn nowait_writes(&self) -> bool {
        self.direct.is_none() && self.file.nowait_writes()
    }

    /// Buffered writes queue on the LU's lane like the file engine's (the
    /// inode lock); O_DIRECT writes do not dirty the page cache and want
    /// the device's queue depth, so they run side by side.
    fn serial_writes(&self) -> bool {
        self.direct.is_none()
    }

    fn flush(&self) -> Result<(), BackendError> {
        refuse_in_attempt()?;
        self.sync()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        refuse_in_attempt()?;
        check_range(offset, len, self.size())?;
        if len == 0 {
            return Ok(());
        }
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        match self.fallocate(offset, len, mode) {
            Ok(()) => Ok(()),
            // Block devices and filesystems without holes: the file engine's
            // zeroing fallbacks (BLKZEROOUT, writing zeros).
            Err(e) if self.file.is_block_device() || e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.file.discard(offset, len)
            }
            Err(e) => Err(BackendError::io("io_uring fallocate punch hole", e)),
        }
    }

    fn supports_discard(&self) -> bool {
        true
    }

    fn resize(&self, new_size: u64) -> Result<(), BackendError> {
        self.file.resize(new_size)
    }

    fn extent_at(&self, offset: u64) -> Result<Extent, BackendError> {
        self.file.extent_at(offset)
    }

    fn prefetch(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        if self.direct.is_some() {
            return Ok(()); // nothing to warm: reads bypass the page cache
        }
        self.file.prefetch(offset, len)
    }
}

#[cfg(test)]
mod tests;
