//! Regular-file and block-device backing store: positional I/O on one `File`.
//! Files are sparse; discard punches holes. Block devices use BLKGETSIZE64 and a zeroing
//! discard (punch hole, else BLKZEROOUT): plain BLKDISCARD does not promise zeros, and
//! we report LBPRZ. FUA writes use pwritev2(RWF_DSYNC), falling back to pwrite + fdatasync.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BackendError, BlockBackend, Extent, check_range};

// linux/fs.h: _IOR(0x12, 114, size_t) and _IO(0x12, 127).
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKZEROOUT: libc::c_ulong = 0x127f;

#[derive(Debug)]
pub struct FileBackend {
    path: PathBuf,
    file: File,
    is_block_device: bool,
    size: AtomicU64,
    /// Cleared once the filesystem refuses RWF_NOWAIT buffered writes.
    nowait_writes: std::sync::atomic::AtomicBool,
}

impl FileBackend {
    /// Open `path` read-write. With `create_size`, a missing file is created sparse with that size.
    pub fn open(path: &Path, create_size: Option<u64>) -> Result<Self, BackendError> {
        Self::open_with(path, create_size, false)
    }

    /// Open `path` read-only (a write-protected LUN): the file or device
    /// needs no write permission, and nothing can write through it.
    pub fn open_read_only(path: &Path) -> Result<Self, BackendError> {
        Self::open_with(path, None, true)
    }

    fn open_with(
        path: &Path,
        create_size: Option<u64>,
        read_only: bool,
    ) -> Result<Self, BackendError> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(!read_only);
        if create_size.is_some() {
            opts.create(true);
        }
        let file = opts
            .open(path)
            .map_err(|e| BackendError::io("open backing store", e))?;
        let meta = file
            .metadata()
            .map_err(|e| BackendError::io("stat backing store", e))?;
        let is_block_device = meta.file_type().is_block_device();
        let size = if is_block_device {
            block_device_size(&file)?
        } else {
            if meta.len() == 0
                && let Some(size) = create_size
            {
                file.set_len(size)
                    .map_err(|e| BackendError::io("size new backing file", e))?;
            }
            file.metadata()
                .map_err(|e| BackendError::io("stat backing store", e))?
                .len()
        };
        Ok(Self {
            path: path.to_owned(),
            file,
            is_block_device,
            size: AtomicU64::new(size),
            nowait_writes: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// One durable write: the data is on stable storage when this returns.
    fn write_dsync(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let rest = &buf[done..];
            let iov = libc::iovec {
                iov_base: rest.as_ptr().cast_mut().cast(),
                iov_len: rest.len(),
            };
            let pos = i64::try_from(offset + done as u64)
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: one iovec describing `rest`, which outlives the call; the kernel only
            // reads from it (pwritev2 never writes through iov_base).
            let n = unsafe {
                libc::pwritev2(
                    self.file.as_raw_fd(),
                    &raw const iov,
                    1,
                    pos,
                    libc::RWF_DSYNC,
                )
            };
            match n {
                n if n > 0 => done += n.cast_unsigned(),
                0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), BackendError> {
        self.file
            .sync_data()
            .map_err(|e| BackendError::io("fdatasync", e))
    }

    pub(super) fn file(&self) -> &File {
        &self.file
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn is_block_device(&self) -> bool {
        self.is_block_device
    }
}

fn block_device_size(file: &File) -> Result<u64, BackendError> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &raw mut size) };
    if rc < 0 {
        return Err(BackendError::io("BLKGETSIZE64", io::Error::last_os_error()));
    }
    Ok(size)
}

impl BlockBackend for FileBackend {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn engine(&self) -> &'static str {
        "file"
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        check_range(offset, buf.len() as u64, self.size())?;
        // SAFETY: `buf` is valid for writes of its length.
        unsafe { self.read_raw(buf.as_mut_ptr(), buf.len(), offset) }
    }

    fn read_append(&self, out: &mut Vec<u8>, len: usize, offset: u64) -> Result<(), BackendError> {
        check_range(offset, len as u64, self.size())?;
        out.reserve(len);
        let start = out.len();
        // SAFETY: the spare capacity holds `len` writable bytes; `read_raw`
        // initializes all of them when it succeeds, and only then do they
        // become part of the vector.
        unsafe {
            self.read_raw(out.as_mut_ptr().add(start), len, offset)?;
            out.set_len(start + len);
        }
        Ok(())
    }

    /// The range's clean pages are dropped from the page cache first (POSIX_FADV_DONTNEED),
    /// so the read reaches the filesystem or device. Dirty pages stay, and are what the
    /// store will hold; WRITE AND VERIFY writes durably first, so its range has none.
    fn read_medium(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        refuse_in_attempt()?;
        check_range(offset, buf.len() as u64, self.size())?;
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(buf.len())) else {
            return Err(BackendError::OutOfRange {
                offset,
                len: buf.len() as u64,
                size: self.size(),
            });
        };
        // SAFETY: posix_fadvise takes plain integers and an fd we own; advice only.
        let rc = unsafe {
            libc::posix_fadvise(self.file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED)
        };
        if rc != 0 {
            return Err(BackendError::io(
                "posix_fadvise DONTNEED",
                io::Error::from_raw_os_error(rc),
            ));
        }
        self.read_at(buf, offset)
    }

    fn nowait_writes(&self) -> bool {
        self.nowait_writes.load(Ordering::Relaxed)
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), BackendError> {
        check_range(offset, buf.len() as u64, self.size())?;
        if super::nowait::active() {
            if fua {
                return refuse_in_attempt();
            }
            return self.write_nowait(buf, offset);
        }
        if fua {
            match self.write_dsync(buf, offset) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {}
                other => return other.map_err(|e| BackendError::io("pwritev2 RWF_DSYNC", e)),
            }
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| BackendError::io("pwrite", e))?;
        if fua { self.sync() } else { Ok(()) }
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
        let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(BackendError::OutOfRange {
                offset,
                len,
                size: self.size(),
            });
        };
        // SAFETY: fallocate takes plain integers and an fd we own.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                n,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if self.is_block_device {
                let range: [u64; 2] = [offset, len];
                // SAFETY: BLKZEROOUT reads two u64s (start, length) from the pointer, valid for the call.
                let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), BLKZEROOUT, range.as_ptr()) };
                if rc < 0 {
                    return Err(BackendError::io("BLKZEROOUT", io::Error::last_os_error()));
                }
                return Ok(());
            }
            if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
                // No hole punching here: zeroing keeps "reads as zero" true.
                let zeros = vec![0u8; 1 << 20];
                let mut pos = offset;
                while pos < offset + len {
                    let n = (offset + len - pos).min(zeros.len() as u64) as usize;
                    self.file
                        .write_all_at(&zeros[..n], pos)
                        .map_err(|e| BackendError::io("zero range", e))?;
                    pos += n as u64;
                }
                return Ok(());
            }
            return Err(BackendError::io("fallocate punch hole", err));
        }
        Ok(())
    }

    fn supports_discard(&self) -> bool {
        true
    }

    fn resize(&self, new_size: u64) -> Result<(), BackendError> {
        if self.is_block_device {
            // The device was resized underneath; pick up its new size.
            let size = block_device_size(&self.file)?;
            self.size.store(size, Ordering::Release);
            return if size == new_size {
                Ok(())
            } else {
                Err(BackendError::NotSupported("resizing a block device"))
            };
        }
        self.file
            .set_len(new_size)
            .map_err(|e| BackendError::io("ftruncate", e))?;
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }

    fn extent_at(&self, offset: u64) -> Result<Extent, BackendError> {
        let size = self.size();
        if offset >= size {
            return Err(BackendError::OutOfRange {
                offset,
                len: 0,
                size,
            });
        }
        if self.is_block_device {
            return Ok(Extent {
                mapped: true,
                len: size - offset,
            });
        }
        let Ok(off) = i64::try_from(offset) else {
            return Err(BackendError::OutOfRange {
                offset,
                len: 0,
                size,
            });
        };
        let fd = self.file.as_raw_fd();
        // SAFETY: lseek on an fd we own; SEEK_DATA/SEEK_HOLE only move the file offset,
        // which we never use (all I/O is positional).
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                // No data after offset: all hole to the end.
                Some(libc::ENXIO) => Ok(Extent {
                    mapped: false,
                    len: size - offset,
                }),
                _ => Ok(Extent {
                    mapped: true,
                    len: size - offset,
                }),
            };
        }
        let data = data.cast_unsigned();
        if data > offset {
            return Ok(Extent {
                mapped: false,
                len: data.min(size) - offset,
            });
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, off, libc::SEEK_HOLE) };
        let end = if hole < 0 {
            size
        } else {
            hole.cast_unsigned().min(size)
        };
        Ok(Extent {
            mapped: true,
            len: end.saturating_sub(offset).max(1),
        })
    }

    fn prefetch(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(());
        };
        // SAFETY: posix_fadvise takes plain integers and an fd we own; advice only.
        unsafe { libc::posix_fadvise(self.file.as_raw_fd(), off, n, libc::POSIX_FADV_WILLNEED) };
        Ok(())
    }
}

/// Inside a non-blocking attempt only page-cache reads may run.
pub(super) fn refuse_in_attempt() -> Result<(), BackendError> {
    if super::nowait::active() {
        super::nowait::would_block();
        return Err(BackendError::io(
            "non-blocking attempt",
            io::Error::from(io::ErrorKind::WouldBlock),
        ));
    }
    Ok(())
}

impl FileBackend {
    /// pwritev2(RWF_NOWAIT): a buffered write that would not wait. A short
    /// or refused write is reported as blocked; the caller runs the whole
    /// (idempotent) write again on the blocking pool.
    fn write_nowait(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        use std::os::fd::AsRawFd;
        use std::sync::atomic::Ordering::Relaxed;
        if !self.nowait_writes.load(Relaxed) {
            return refuse_in_attempt();
        }
        let iov = libc::iovec {
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        let at = i64::try_from(offset).unwrap_or(i64::MAX);
        // SAFETY: one valid iovec over our buffer (only read by the kernel).
        let n = unsafe {
            libc::pwritev2(
                self.file.as_raw_fd(),
                &raw const iov,
                1,
                at,
                libc::RWF_NOWAIT,
            )
        };
        if usize::try_from(n).is_ok_and(|n| n == buf.len()) {
            return Ok(());
        }
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP) {
            // ext4, among others: buffered writes cannot be non-blocking.
            self.nowait_writes.store(false, Relaxed);
        }
        super::nowait::would_block();
        Err(BackendError::io(
            "pwritev2 RWF_NOWAIT",
            io::Error::from(io::ErrorKind::WouldBlock),
        ))
    }

    /// Fills `len` bytes at `ptr` from `offset`: pread, or inside a
    /// non-blocking attempt preadv2(RWF_NOWAIT), which succeeds only from
    /// the page cache. Bytes past the end of the file (truncated under us)
    /// read as zeros.
    ///
    /// # Safety
    /// `ptr` must be valid for writes of `len` bytes. On success all of
    /// them are initialized.
    unsafe fn read_raw(&self, ptr: *mut u8, len: usize, offset: u64) -> Result<(), BackendError> {
        use std::os::fd::AsRawFd;
        let (flags, what) = if super::nowait::active() {
            (libc::RWF_NOWAIT, "preadv2 RWF_NOWAIT")
        } else {
            (0, "pread")
        };
        let mut done = 0;
        while done < len {
            let iov = libc::iovec {
                // SAFETY: within the caller's `len` bytes.
                iov_base: unsafe { ptr.add(done) }.cast(),
                iov_len: len - done,
            };
            let at = i64::try_from(offset + done as u64).unwrap_or(i64::MAX);
            // SAFETY: one iovec over memory the caller lets us write; the fd is ours.
            let n = unsafe { libc::preadv2(self.file.as_raw_fd(), &raw const iov, 1, at, flags) };
            match n {
                0 => {
                    // SAFETY: as above.
                    unsafe { ptr.add(done).write_bytes(0, len - done) };
                    return Ok(());
                }
                n if n > 0 => done += n.cast_unsigned(),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    if flags != 0 {
                        super::nowait::would_block();
                    }
                    return Err(BackendError::io(what, e));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("iet-backend-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir
    }

    #[test]
    fn create_sparse_write_punch() {
        let path = temp_path("punch");
        let b = FileBackend::open(&path, Some(16 << 20)).expect("create");
        assert_eq!(b.size(), 16 << 20);
        let blocks0 = std::fs::metadata(&path).expect("stat").blocks();
        let data = vec![0x5au8; 4 << 20];
        b.write_at(&data, 1 << 20, true).expect("fua write");
        let blocks1 = std::fs::metadata(&path).expect("stat").blocks();
        assert!(
            blocks1 > blocks0 + 4000,
            "write allocated blocks: {blocks0} -> {blocks1}"
        );
        let mut back = vec![0u8; 4096];
        b.read_at(&mut back, 1 << 20).expect("read");
        assert!(back.iter().all(|&x| x == 0x5a));
        assert!(b.extent_at(1 << 20).expect("extent").mapped);
        b.discard(1 << 20, 4 << 20).expect("punch");
        let blocks2 = std::fs::metadata(&path).expect("stat").blocks();
        assert!(
            blocks2 < blocks1,
            "punch freed blocks: {blocks1} -> {blocks2}"
        );
        b.read_at(&mut back, 1 << 20).expect("read");
        assert!(back.iter().all(|&x| x == 0));
        assert!(!b.extent_at(1 << 20).expect("extent").mapped);
        assert!(b.write_at(&[0u8; 2], (16 << 20) - 1, false).is_err());
        b.resize(32 << 20).expect("grow");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 32 << 20);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn fua_write_is_readable_after_reopen() {
        let path = temp_path("fua");
        {
            let b = FileBackend::open(&path, Some(1 << 20)).expect("create");
            b.write_at(b"durable!", 4096, true).expect("fua");
            b.flush().expect("flush");
        }
        let b = FileBackend::open(&path, None).expect("reopen");
        let mut back = [0u8; 8];
        b.read_at(&mut back, 4096).expect("read");
        assert_eq!(&back, b"durable!");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn missing_file_without_create_fails() {
        let path = temp_path("missing");
        assert!(FileBackend::open(&path, None).is_err());
    }
}
