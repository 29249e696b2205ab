//! The persistent reservations of an RBD image, shared by all its gateways: the RADOS object
//! `iet.pr.<image>` in the image's pool holds them (an opaque blob to this module, see
//! `scsi/pr/shared.rs`).
//!
//! - Updates are read-modify-writes under the cls_lock lock `update` on the object (a lease
//!   of [`LOCK_DURATION`], so a gateway that dies holding it blocks the others that long at
//!   most), and each write is also guarded by the version read (`assert_version`): a writer
//!   whose lease ran out while it stalled fails instead of overwriting a newer copy.
//! - Every gateway watches the object. After an update the writer notifies and waits for
//!   every watcher's acknowledgement (at most [`NOTIFY_TIMEOUT`], for a watcher that died);
//!   a watcher's callback only bumps a counter, and the gateway re-reads before its next
//!   command. Watch/notify rather than a version check before every command: the check
//!   would put a round trip to the OSD in front of every READ and WRITE while a reservation
//!   exists; the notification costs one read per change. While the watch is broken
//!   (`watcherrcb`) the copy counts as stale, so every command re-reads (and re-watches).
//! - "No other gateway has the LU open" is a notify that only this gateway's own watch
//!   answers; a gateway killed without closing keeps its watch for `osd_client_watch_timeout`
//!   (30 s), and counts as open until then.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::ffi::{Pool, WatchedObject};
use crate::backend::nowait;
use crate::scsi::{PrUpdate, SharedPrStore, Versioned};

/// How long the update lock lasts if its holder never unlocks (it died).
const LOCK_DURATION: Duration = Duration::from_secs(10);
/// How long an update waits for the lock: longer than a dead holder keeps it.
const LOCK_WAIT: Duration = Duration::from_secs(15);
/// How long an update waits for every gateway to acknowledge its notification.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the "anyone else here?" notify waits for answers when the LU opens.
const ALONE_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest copy read: 1024 registrations and 256 events fit many times over.
const MAX_BYTES: usize = 1 << 20;
const LOCK: &str = "update";
const COOKIE: &str = "iet-pr";

/// The shared PR state of one image, as seen by one gateway.
#[derive(Debug)]
pub(super) struct ClusterPrStore {
    object: WatchedObject,
    /// The notification count as of the last read.
    seen: AtomicU64,
    /// This gateway's updates, one at a time: the cls_lock is per client, and renews for it.
    updating: Mutex<()>,
}

impl ClusterPrStore {
    /// Watches (creating it if needed) `iet.pr.<image>` through a connection of its own.
    pub(super) fn open(pool: Pool, image: &str) -> io::Result<ClusterPrStore> {
        Ok(ClusterPrStore {
            object: WatchedObject::open(pool, &format!("iet.pr.{image}"))?,
            seen: AtomicU64::new(0),
            updating: Mutex::new(()),
        })
    }

    fn read_now(&self) -> io::Result<Versioned> {
        if nowait::active() {
            nowait::would_block();
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.object.lost() {
            match self.object.rewatch() {
                Ok(()) => tracing::info!("watching the shared persistent reservations again"),
                Err(e) => tracing::warn!(error = %e, "re-watching the shared reservations"),
            }
        }
        // Taken before the read: a notification during the read makes the next one read again.
        let notified = self.object.notifications();
        let (data, version) = self.object.read(MAX_BYTES)?;
        self.seen.store(notified, Ordering::Release);
        Ok(Versioned {
            data: (!data.is_empty()).then_some(data),
            version,
        })
    }
}

/// One update in progress: the cls_lock and this gateway's turn.
struct Update<'a> {
    store: &'a ClusterPrStore,
    _turn: MutexGuard<'a, ()>,
}

impl PrUpdate for Update<'_> {
    fn read(&mut self) -> io::Result<Versioned> {
        self.store.read_now()
    }

    fn write(&mut self, data: &[u8], version: u64) -> io::Result<u64> {
        self.store.object.write_if(data, version)
    }
}

impl Drop for Update<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.store.object.unlock(LOCK, COOKIE)
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            tracing::warn!(error = %e, "releasing the shared reservations' lock");
        }
    }
}

impl SharedPrStore for ClusterPrStore {
    fn may_have_changed(&self) -> bool {
        self.object.lost() || self.object.notifications() != self.seen.load(Ordering::Acquire)
    }

    fn read(&self) -> io::Result<Versioned> {
        self.read_now()
    }

    fn lock(&self) -> io::Result<Box<dyn PrUpdate + '_>> {
        if nowait::active() {
            nowait::would_block();
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let turn = self.updating.lock().unwrap_or_else(PoisonError::into_inner);
        let start = Instant::now();
        loop {
            match self.object.lock(LOCK, COOKIE, LOCK_DURATION) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Box::new(Update {
            store: self,
            _turn: turn,
        }))
    }

    fn alone(&self) -> io::Result<bool> {
        let r = self.object.notify(b"open", ALONE_TIMEOUT)?;
        // This gateway's own watch answers too.
        Ok(r.acks + r.timeouts <= 1)
    }

    fn notify(&self) {
        match self.object.notify(b"changed", NOTIFY_TIMEOUT) {
            Ok(r) if r.timeouts > 0 => tracing::warn!(
                timeouts = r.timeouts,
                "gateways did not acknowledge a reservation change (dead, or cut off)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "notifying the other gateways"),
        }
    }
}
