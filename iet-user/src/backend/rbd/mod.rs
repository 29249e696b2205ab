//! RBD images as LUNs (`rbd:POOL/IMAGE?conf=..&id=..&keyring=..`) through librbd's
//! asynchronous API; the spec grammar, per-image counters and the `BlockBackend` mapping.
//!
//! The store opens an existing image (never creates one). Writes with FUA are a write then
//! a flush, UNMAP is a discard, zeroing is librbd's write-zeroes, and COMPARE AND WRITE is
//! librbd's compare-and-write, atomic across every gateway of the image (librbd 16 does that for
//! one 512-byte sector, the size VMware's ATS uses; larger ranges report `NotSupported`). The image's size
//! is followed through a header watch, so a resize by `rbd resize` is seen by
//! [`BlockBackend::size`] and counted in [`RbdBackend::size_changes`]. With `alua_group=N` the
//! gateways of an image elect the active/optimized one through the cluster (`lease.rs`).
//! Persistent reservations of the image live in the cluster too, shared by its gateways
//! (`pr.rs`).

mod ffi;
mod lease;
mod pr;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{BackendError, BackendErrorKind, BlockBackend, CompareOutcome, check_range, nowait};

/// Where the cluster's configuration is read from unless `conf=` says otherwise.
pub const DEFAULT_CONF: &str = "/etc/ceph/ceph.conf";
/// The client name (`client.<id>`) unless `id=` says otherwise.
pub const DEFAULT_ID: &str = "admin";
/// The most librbd 16 compares and writes atomically: one aligned 512-byte sector.
pub const CAW_SECTOR: u64 = 512;

/// A parsed `rbd:` spec: `rbd:POOL/IMAGE` plus optional `?conf=PATH&id=NAME&keyring=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdSpec {
    pub pool: String,
    pub image: String,
    pub conf: String,
    pub id: String,
    pub keyring: Option<String>,
    /// `alua_group=N` (1..=65535): this gateway's ALUA target port group; with it the LU
    /// reports ALUA and the gateways of the image elect an active/optimized one (`lease.rs`).
    pub alua_group: Option<u16>,
    /// `alua_lease=SECS` (2..=60): how long the owner's lease lasts without renewal.
    pub alua_lease: Duration,
}

impl RbdSpec {
    /// Parses the part after `rbd:`. Names may not contain `/`, `?`, `&` or `=`.
    pub fn parse(rest: &str) -> Option<RbdSpec> {
        let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (pool, image) = name.split_once('/')?;
        let valid = |s: &str| !s.is_empty() && !s.contains(['/', '&', '=', '\0']);
        if !valid(pool) || !valid(image) {
            return None;
        }
        let mut spec = RbdSpec {
            pool: pool.to_owned(),
            image: image.to_owned(),
            conf: DEFAULT_CONF.to_owned(),
            id: DEFAULT_ID.to_owned(),
            keyring: None,
            alua_group: None,
            alua_lease: lease::DEFAULT_LEASE,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=')?;
            if v.is_empty() || v.contains('\0') {
                return None;
            }
            match k {
                "conf" => v.clone_into(&mut spec.conf),
                "id" => v.clone_into(&mut spec.id),
                "keyring" => spec.keyring = Some(v.to_owned()),
                "alua_group" => spec.alua_group = Some(v.parse().ok().filter(|&g| g != 0)?),
                "alua_lease" => {
                    let secs: u64 = v.parse().ok().filter(|s| (2..=60).contains(s))?;
                    spec.alua_lease = Duration::from_secs(secs);
                }
                _ => return None,
            }
        }
        Some(spec)
    }
}

impl fmt::Display for RbdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rbd:{}/{}", self.pool, self.image)
    }
}

/// Requests and bytes that went through one image on this gateway (the per-gateway RBD
/// metrics, also reported through [`BlockBackend::metrics`]).
#[derive(Debug, Default)]
pub struct RbdCounters {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub flushes: AtomicU64,
    pub discards: AtomicU64,
    pub compare_and_writes: AtomicU64,
    pub miscompares: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Requests in librbd right now, and the most seen at once.
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
}

/// Counts one request in flight until dropped.
struct InFlight<'a>(&'a RbdCounters);

impl<'a> InFlight<'a> {
    fn new(c: &'a RbdCounters, op: &AtomicU64, bytes: Option<(&AtomicU64, usize)>) -> Self {
        op.fetch_add(1, Ordering::Relaxed);
        if let Some((counter, n)) = bytes {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        let now = c.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        c.max_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open RBD image.
pub struct RbdBackend {
    spec: RbdSpec,
    image: Arc<ffi::Image>,
    counters: RbdCounters,
    /// The ALUA election, with `alua_group=`.
    lease: Option<lease::Lease>,
    /// The persistent reservations every gateway of the image enforces.
    pr: Arc<pr::ClusterPrStore>,
}

impl fmt::Debug for RbdBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbdBackend")
            .field("spec", &self.spec)
            .field("size", &self.image.size())
            .finish_non_exhaustive()
    }
}

fn open_error(source: io::Error) -> BackendError {
    let kind = match source.raw_os_error() {
        Some(libc::ENOENT | libc::EINVAL | libc::EACCES | libc::EPERM) => {
            BackendErrorKind::InvalidSpec
        }
        _ => BackendErrorKind::Other,
    };
    BackendError::Io {
        context: "opening the RBD image",
        kind,
        source,
    }
}

impl RbdBackend {
    /// Connects to the cluster named by `spec` and opens (never creates) the image.
    pub fn open(spec: RbdSpec) -> Result<Self, BackendError> {
        let mut options = vec![
            // Fail within seconds, not librados' 5 minutes, when no monitor answers.
            ("client_mount_timeout", "30"),
            // No client-side cache: another gateway on the same image must read what this
            // one acknowledged (ceph-iscsi's tcmu-runner turns it off for the same reason).
            ("rbd_cache", "false"),
            // A discard must zero partial objects too: UNMAP'd blocks then read as zeros.
            ("rbd_skip_partial_discard", "false"),
        ];
        if let Some(k) = &spec.keyring {
            options.push(("keyring", k));
        }
        let pool =
            ffi::Pool::connect(&spec.id, &spec.conf, &options, &spec.pool).map_err(open_error)?;
        let image = Arc::new(ffi::Image::open(pool, &spec.image).map_err(open_error)?);
        let lease = match spec.alua_group {
            Some(group) => {
                // A connection of its own: its client is the one that holds the locks.
                let pool = ffi::Pool::connect(&spec.id, &spec.conf, &options, &spec.pool)
                    .map_err(open_error)?;
                Some(
                    lease::Lease::start(
                        pool,
                        Arc::clone(&image),
                        &spec.image,
                        group,
                        spec.alua_lease,
                    )
                    .map_err(|source| BackendError::Io {
                        context: "taking part in the ALUA election",
                        kind: BackendErrorKind::Other,
                        source,
                    })?,
                )
            }
            None => None,
        };
        // A connection of its own: its I/O context reports the versions of the PR object,
        // and a stuck OSD fails PR updates instead of hanging them.
        let mut pr_options = options.clone();
        pr_options.push(("rados_osd_op_timeout", "30"));
        let pr = ffi::Pool::connect(&spec.id, &spec.conf, &pr_options, &spec.pool)
            .and_then(|pool| pr::ClusterPrStore::open(pool, &spec.image))
            .map_err(|source| BackendError::Io {
                context: "opening the shared persistent reservations",
                kind: BackendErrorKind::Other,
                source,
            })?;
        Ok(RbdBackend {
            spec,
            image,
            counters: RbdCounters::default(),
            lease,
            pr: Arc::new(pr),
        })
    }

    pub fn spec(&self) -> &RbdSpec {
        &self.spec
    }

    /// How often the image's size changed since it was opened (by anyone, anywhere).
    pub fn size_changes(&self) -> u64 {
        self.image.size_changes()
    }

    pub fn counters(&self) -> &RbdCounters {
        &self.counters
    }

    /// Every librbd call waits on the network: inside a non-blocking attempt (a read tried on
    /// the reactor thread) the store refuses, and the transport retries on the blocking pool.
    fn refuse_in_attempt() -> Result<(), BackendError> {
        if nowait::active() {
            nowait::would_block();
            return Err(BackendError::io(
                "non-blocking attempt",
                io::Error::from(io::ErrorKind::WouldBlock),
            ));
        }
        Ok(())
    }

    fn fail(&self, context: &'static str, e: io::Error) -> BackendError {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        BackendError::io(context, e)
    }
}

impl BlockBackend for RbdBackend {
    fn describe(&self) -> String {
        self.spec.to_string()
    }

    fn size(&self) -> u64 {
        self.image.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        Self::refuse_in_attempt()?;
        check_range(offset, buf.len() as u64, self.size())?;
        let c = &self.counters;
        let _f = InFlight::new(c, &c.reads, Some((&c.read_bytes, buf.len())));
        let n = self
            .image
            .read(buf, offset)
            .map_err(|e| self.fail("RBD read", e))?;
        // librbd returns short reads only past the end (a concurrent shrink).
        if n < buf.len() {
            return Err(BackendError::OutOfRange {
                offset,
                len: buf.len() as u64,
                size: self.size(),
            });
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), BackendError> {
        Self::refuse_in_attempt()?;
        check_range(offset, buf.len() as u64, self.size())?;
        let c = &self.counters;
        {
            let _f = InFlight::new(c, &c.writes, Some((&c.write_bytes, buf.len())));
            self.image
                .write(buf, offset)
                .map_err(|e| self.fail("RBD write", e))?;
        }
        if fua {
            // SBC-4 §4.15 FUA: librbd has no per-write FUA; a flush after the write is one.
            self.flush()?;
        }
        Ok(())
    }

    /// librbd keeps many writes in flight; a lane would send them one at a time (measured at
    /// 4 KiB QD32 on the one-node cluster: about half the IOPS of WCE off, which skips the lane).
    fn serial_writes(&self) -> bool {
        false
    }

    fn flush(&self) -> Result<(), BackendError> {
        Self::refuse_in_attempt()?;
        let c = &self.counters;
        let _f = InFlight::new(c, &c.flushes, None);
        self.image.flush().map_err(|e| self.fail("RBD flush", e))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        Self::refuse_in_attempt()?;
        check_range(offset, len, self.size())?;
        let c = &self.counters;
        let _f = InFlight::new(c, &c.discards, None);
        self.image
            .discard(offset, len)
            .map_err(|e| self.fail("RBD discard", e))
    }

    fn supports_discard(&self) -> bool {
        true
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        Self::refuse_in_attempt()?;
        check_range(offset, len, self.size())?;
        let c = &self.counters;
        let n = usize::try_from(len).map_err(|_| BackendError::OutOfRange {
            offset,
            len,
            size: self.size(),
        })?;
        let _f = InFlight::new(c, &c.writes, Some((&c.write_bytes, n)));
        self.image
            .write_zeroes(offset, n)
            .map_err(|e| self.fail("RBD write-zeroes", e))
    }

    fn resize(&self, new_size: u64) -> Result<(), BackendError> {
        Self::refuse_in_attempt()?;
        self.image
            .resize(new_size)
            .map_err(|e| self.fail("RBD resize", e))
    }

    fn compare_and_write(
        &self,
        compare: &[u8],
        write: &[u8],
        offset: u64,
    ) -> Result<CompareOutcome, BackendError> {
        Self::refuse_in_attempt()?;
        if compare.len() != write.len() {
            return Err(BackendError::InvalidSpec(
                "compare and write buffers differ in length".to_owned(),
            ));
        }
        check_range(offset, write.len() as u64, self.size())?;
        // librbd 16 (ImageCompareAndWriteRequest::prune_object_extents) refuses with EINVAL
        // any compare-and-write that leaves one 512-byte sector: such ranges fall back.
        if offset % CAW_SECTOR + write.len() as u64 > CAW_SECTOR {
            return Err(BackendError::NotSupported(
                "RBD compare and write beyond one 512-byte sector",
            ));
        }
        let c = &self.counters;
        let _f = InFlight::new(
            c,
            &c.compare_and_writes,
            Some((&c.write_bytes, write.len())),
        );
        match self
            .image
            .compare_and_write(compare, write, offset)
            .map_err(|e| self.fail("RBD compare-and-write", e))?
        {
            None => Ok(CompareOutcome::Written),
            Some(at) => {
                c.miscompares.fetch_add(1, Ordering::Relaxed);
                Ok(CompareOutcome::Miscompare(at))
            }
        }
    }

    fn supports_compare_and_write(&self) -> bool {
        true
    }

    fn alua(&self) -> Option<Arc<crate::scsi::SharedAlua>> {
        self.lease.as_ref().map(lease::Lease::shared)
    }

    fn shared_pr(&self) -> Option<Arc<dyn crate::scsi::SharedPrStore>> {
        Some(Arc::clone(&self.pr) as Arc<dyn crate::scsi::SharedPrStore>)
    }

    fn metrics(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("rbd_reads", get(&c.reads)),
            ("rbd_writes", get(&c.writes)),
            ("rbd_flushes", get(&c.flushes)),
            ("rbd_discards", get(&c.discards)),
            ("rbd_compare_and_writes", get(&c.compare_and_writes)),
            ("rbd_miscompares", get(&c.miscompares)),
            ("rbd_read_bytes", get(&c.read_bytes)),
            ("rbd_write_bytes", get(&c.write_bytes)),
            ("rbd_errors", get(&c.errors)),
            ("rbd_in_flight", get(&c.in_flight)),
            ("rbd_max_in_flight", get(&c.max_in_flight)),
            ("rbd_size_bytes", self.size()),
            ("rbd_size_changes", self.size_changes()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s = RbdSpec::parse("rbd/disk1").expect("plain spec");
        assert_eq!((s.pool.as_str(), s.image.as_str()), ("rbd", "disk1"));
        assert_eq!((s.conf.as_str(), s.id.as_str()), (DEFAULT_CONF, DEFAULT_ID));
        assert_eq!(s.keyring, None);
        assert_eq!(s.to_string(), "rbd:rbd/disk1");

        let s = RbdSpec::parse("p/i?conf=/tmp/c.conf&id=iet&keyring=/k").expect("options");
        assert_eq!(s.conf, "/tmp/c.conf");
        assert_eq!(s.id, "iet");
        assert_eq!(s.keyring.as_deref(), Some("/k"));
        assert_eq!(s.alua_group, None);

        let s = RbdSpec::parse("p/i?alua_group=2&alua_lease=4").expect("ALUA options");
        assert_eq!(s.alua_group, Some(2));
        assert_eq!(s.alua_lease, Duration::from_secs(4));

        for bad in [
            "",
            "rbd",
            "/disk1",
            "rbd/",
            "rbd/a/b",
            "p/i?x=1",
            "p/i?conf",
            "p/i?conf=",
            "p/i?alua_group=0",
            "p/i?alua_group=65536",
            "p/i?alua_lease=1",
        ] {
            assert_eq!(RbdSpec::parse(bad), None, "{bad:?}");
        }
    }
}
