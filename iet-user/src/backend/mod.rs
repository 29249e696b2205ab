//! Backing stores: block operations on files, block devices and RAM.
//! Backends see byte ranges and flushes, never CDBs; `scsi` maps `BackendErrorKind` to sense.

mod engine;
mod file;
mod memory;
mod pr_file;
#[cfg(feature = "rbd")]
pub mod rbd;
mod uring;

use std::fmt;
use std::io;
use std::sync::Arc;

pub mod nowait;

pub use engine::{Engine, OpenOptions, open_local, resolve, uring_available};
pub use file::FileBackend;
pub use memory::MemoryBackend;
pub use pr_file::FilePrStore;
pub use uring::UringBackend;

/// What went wrong, classified by how the SCSI layer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The medium could not be read or written (EIO).
    Medium,
    /// No space left to allocate blocks (ENOSPC, EDQUOT).
    OutOfSpace,
    /// The operation is not supported by this store (e.g. discard on tmpfs).
    NotSupported,
    /// Offset or length beyond the end of the store.
    OutOfRange,
    /// The spec could not be parsed or the store could not be opened.
    InvalidSpec,
    /// Anything else.
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        kind: BackendErrorKind,
        #[source]
        source: io::Error,
    },
    #[error("invalid backend spec {0:?}")]
    InvalidSpec(String),
    #[error("range {offset}+{len} beyond end of store ({size} bytes)")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("{0} not supported by this backing store")]
    NotSupported(&'static str),
    /// A LUN setting the store cannot honour (an engine, O_DIRECT).
    #[error("{0}")]
    InvalidOption(String),
}

impl BackendError {
    pub fn kind(&self) -> BackendErrorKind {
        match self {
            Self::Io { kind, .. } => *kind,
            Self::InvalidSpec(_) | Self::InvalidOption(_) => BackendErrorKind::InvalidSpec,
            Self::OutOfRange { .. } => BackendErrorKind::OutOfRange,
            Self::NotSupported(_) => BackendErrorKind::NotSupported,
        }
    }

    pub(crate) fn io(context: &'static str, source: io::Error) -> Self {
        let kind = match source.raw_os_error() {
            Some(libc::EIO | libc::ENXIO | libc::ENODATA) => BackendErrorKind::Medium,
            Some(libc::ENOSPC | libc::EDQUOT) => BackendErrorKind::OutOfSpace,
            Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL) => BackendErrorKind::NotSupported,
            _ => BackendErrorKind::Other,
        };
        Self::Io {
            context,
            kind,
            source,
        }
    }
}

/// A contiguous run of logical bytes that are all mapped or all deallocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub mapped: bool,
    /// Length from the queried offset; at least 1 byte unless at the end of the store.
    pub len: u64,
}

/// Result of [`BlockBackend::compare_and_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOutcome {
    /// The medium matched and the new data is written.
    Written,
    /// Nothing written: the first differing byte is this many bytes after the offset.
    Miscompare(u64),
}

/// Synchronous positional block I/O. Called from blocking threads, so methods may block.
pub trait BlockBackend: Send + Sync + fmt::Debug {
    /// Human-readable spec (`mem:256M`, a path) for management views.
    fn describe(&self) -> String;
    /// The I/O engine serving it (`file`, `uring`, `uring+direct`); `native`
    /// for stores with their own (RAM, librbd).
    fn engine(&self) -> &'static str {
        "native"
    }
    /// Current size in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`; holes read as zeros.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError>;
    /// Append `len` bytes read from `offset` to `out` (left as it was on error).
    fn read_append(&self, out: &mut Vec<u8>, len: usize, offset: u64) -> Result<(), BackendError> {
        let start = out.len();
        out.resize(start + len, 0);
        let read = self.read_at(&mut out[start..], offset);
        if read.is_err() {
            out.truncate(start);
        }
        read
    }
    /// Fill `buf` from the medium itself, not from a cached copy of it (the read-back of
    /// WRITE AND VERIFY and VERIFY, SBC-4 §5.30, §5.45): what a verify compares must be
    /// what the store kept. A store without a cache between us and it just reads.
    fn read_medium(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.read_at(buf, offset)
    }
    /// Write `buf` at `offset`. With `fua`, return only once the data is on stable storage.
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), BackendError>;
    /// Whether a plain write may succeed inside a non-blocking attempt
    /// (false once the filesystem refused RWF_NOWAIT writes).
    fn nowait_writes(&self) -> bool {
        false
    }
    /// Whether buffered writes do best one at a time on the LU's write lane (a local file's
    /// inode lock). A networked store (RBD) wants them in flight together instead.
    fn serial_writes(&self) -> bool {
        true
    }
    /// Make every completed write durable (SYNCHRONIZE CACHE).
    fn flush(&self) -> Result<(), BackendError>;
    /// Deallocate a byte range; it reads as zeros afterwards.
    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError>;
    /// Whether `discard` really frees space (drives LBPME/LBPU reporting).
    fn supports_discard(&self) -> bool;
    /// Grow or shrink the store. Block devices cannot, so the default refuses.
    fn resize(&self, _new_size: u64) -> Result<(), BackendError> {
        Err(BackendError::NotSupported("resize"))
    }
    /// Provisioning status of the bytes starting at `offset` (GET LBA STATUS).
    fn extent_at(&self, offset: u64) -> Result<Extent, BackendError> {
        Ok(Extent {
            mapped: true,
            len: self.size().saturating_sub(offset),
        })
    }
    /// Write zeros over a byte range (WRITE SAME with zeros); the range stays allocated.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        const CHUNK: u64 = 1 << 20;
        check_range(offset, len, self.size())?;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            self.write_at(&zeros[..n as usize], offset + done, false)?;
            done += n;
        }
        Ok(())
    }
    /// Compare `compare` with the medium at `offset` and, if equal, write `write` there, as one
    /// atomic operation even against other gateways of a shared store (COMPARE AND WRITE,
    /// SBC-4 §5.3). Stores without one, or without one for this range, answer `NotSupported`;
    /// the SCSI layer then compares under its own lock.
    fn compare_and_write(
        &self,
        _compare: &[u8],
        _write: &[u8],
        _offset: u64,
    ) -> Result<CompareOutcome, BackendError> {
        Err(BackendError::NotSupported("compare and write"))
    }
    /// Whether [`BlockBackend::compare_and_write`] is implemented.
    fn supports_compare_and_write(&self) -> bool {
        false
    }
    /// Store-specific counters as (name, value) for metrics views (e.g. `rbd_in_flight`).
    fn metrics(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// The ALUA target port groups of a store served by several gateways (SPC-5 §5.16),
    /// kept current by the store; `None` (the default) for a store one gateway owns.
    fn alua(&self) -> Option<Arc<crate::scsi::SharedAlua>> {
        None
    }
    /// Where the persistent reservations of a store served by several gateways live, so
    /// every gateway enforces the same ones; `None` (the default) keeps them in the LU.
    fn shared_pr(&self) -> Option<Arc<dyn crate::scsi::SharedPrStore>> {
        None
    }
    /// Hint that a range will be read soon (PRE-FETCH). Best effort.
    fn prefetch(&self, _offset: u64, _len: u64) -> Result<(), BackendError> {
        Ok(())
    }
}

pub(crate) fn check_range(offset: u64, len: u64, size: u64) -> Result<(), BackendError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BackendError::OutOfRange { offset, len, size }),
    }
}

/// Parse a size such as `4096`, `256M`, `1G`, `2T` (binary multiples).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        b't' | b'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// Open a backing store from a spec: `mem:SIZE` for RAM, `rbd:POOL/IMAGE[?conf=..&id=..&keyring=..]`
/// for an existing Ceph RBD image, otherwise a path to an existing regular file or block device.
pub fn open_backend(spec: &str) -> Result<Arc<dyn BlockBackend>, BackendError> {
    if let Some(rest) = spec.strip_prefix("rbd:") {
        return open_rbd(spec, rest);
    }
    if let Some(size) = spec.strip_prefix("mem:") {
        let size = parse_size(size).ok_or_else(|| BackendError::InvalidSpec(spec.to_owned()))?;
        return Ok(Arc::new(MemoryBackend::new(size)));
    }
    if spec.is_empty() {
        return Err(BackendError::InvalidSpec(spec.to_owned()));
    }
    Ok(Arc::new(FileBackend::open(spec.as_ref(), None)?))
}

/// Like [`open_backend`]; with `read_only` a file or device is opened
/// without write access (RAM stores are always writable underneath).
pub fn open_backend_for(
    spec: &str,
    read_only: bool,
) -> Result<Arc<dyn BlockBackend>, BackendError> {
    open_backend_with(
        spec,
        &OpenOptions {
            read_only,
            engine: Engine::File,
            ..OpenOptions::default()
        },
    )
}

/// Opens a store as a LUN's settings say: files and block devices with
/// their engine (and O_DIRECT); RAM and RBD stores have their own I/O, so
/// asking them for io_uring or O_DIRECT is an error (`auto` is not).
pub fn open_backend_with(
    spec: &str,
    opts: &OpenOptions,
) -> Result<Arc<dyn BlockBackend>, BackendError> {
    let own_io = spec.starts_with("mem:") || spec.starts_with("rbd:");
    if own_io && (opts.engine != Engine::Auto || opts.direct) {
        return Err(BackendError::InvalidOption(format!(
            "{spec}: engine and direct apply to files and block devices only \
             (leave engine = \"auto\" and direct = false)"
        )));
    }
    if own_io || spec.is_empty() {
        return open_backend(spec);
    }
    open_local(spec.as_ref(), opts)
}

#[cfg(feature = "rbd")]
fn open_rbd(spec: &str, rest: &str) -> Result<Arc<dyn BlockBackend>, BackendError> {
    let parsed =
        rbd::RbdSpec::parse(rest).ok_or_else(|| BackendError::InvalidSpec(spec.to_owned()))?;
    Ok(Arc::new(rbd::RbdBackend::open(parsed)?))
}

#[cfg(not(feature = "rbd"))]
fn open_rbd(_spec: &str, _rest: &str) -> Result<Arc<dyn BlockBackend>, BackendError> {
    Err(BackendError::NotSupported(
        "RBD (built without the `rbd` feature)",
    ))
}

/// Like [`open_backend`], but a missing regular file is created (sparse) with `size` bytes.
pub fn open_or_create_backend(
    spec: &str,
    size: u64,
) -> Result<Arc<dyn BlockBackend>, BackendError> {
    if spec.starts_with("mem:") || spec.starts_with("rbd:") {
        return open_backend(spec);
    }
    open_local(
        spec.as_ref(),
        &OpenOptions {
            create_size: Some(size),
            engine: Engine::File,
            ..OpenOptions::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999999T"), None);
    }

    #[test]
    fn mem_spec_opens() {
        let b = open_backend("mem:1M").expect("mem backend");
        assert_eq!(b.size(), 1 << 20);
        assert_eq!(
            open_backend("mem:zz").unwrap_err().kind(),
            BackendErrorKind::InvalidSpec
        );
    }
}
