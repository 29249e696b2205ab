//! One watched RADOS object: whole-object reads, version-guarded writes, watch/notify and
//! cls_lock locks on it (librados.h, Ceph 16).

use std::ffi::{CString, c_char, c_int, c_void};
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::rados::{LockKind, Pool};
use super::{check, cstring, rados_ioctx_t, rados_t};

#[allow(non_camel_case_types, reason = "the C names")]
type rados_write_op_t = *mut c_void;
#[allow(non_camel_case_types, reason = "the C names")]
type rados_watchcb2_t = Option<
    unsafe extern "C" fn(
        arg: *mut c_void,
        notify_id: u64,
        handle: u64,
        notifier_id: u64,
        data: *mut c_void,
        data_len: usize,
    ),
>;
#[allow(non_camel_case_types, reason = "the C names")]
type rados_watcherrcb_t = Option<unsafe extern "C" fn(arg: *mut c_void, cookie: u64, err: c_int)>;

#[link(name = "rados")]
unsafe extern "C" {
    fn rados_read(
        io: rados_ioctx_t,
        oid: *const c_char,
        buf: *mut c_char,
        len: usize,
        off: u64,
    ) -> c_int;
    fn rados_get_last_version(io: rados_ioctx_t) -> u64;
    fn rados_create_write_op() -> rados_write_op_t;
    fn rados_release_write_op(op: rados_write_op_t);
    fn rados_write_op_create(op: rados_write_op_t, exclusive: c_int, category: *const c_char);
    fn rados_write_op_assert_version(op: rados_write_op_t, ver: u64);
    fn rados_write_op_write_full(op: rados_write_op_t, buf: *const c_char, len: usize);
    fn rados_write_op_operate(
        op: rados_write_op_t,
        io: rados_ioctx_t,
        oid: *const c_char,
        mtime: *mut libc::time_t,
        flags: c_int,
    ) -> c_int;
    fn rados_watch2(
        io: rados_ioctx_t,
        oid: *const c_char,
        cookie: *mut u64,
        watchcb: rados_watchcb2_t,
        watcherrcb: rados_watcherrcb_t,
        arg: *mut c_void,
    ) -> c_int;
    fn rados_unwatch2(io: rados_ioctx_t, cookie: u64) -> c_int;
    fn rados_watch_flush(cluster: rados_t) -> c_int;
    fn rados_notify2(
        io: rados_ioctx_t,
        oid: *const c_char,
        buf: *const c_char,
        buf_len: c_int,
        timeout_ms: u64,
        reply: *mut *mut c_char,
        reply_len: *mut usize,
    ) -> c_int;
    fn rados_notify_ack(
        io: rados_ioctx_t,
        oid: *const c_char,
        notify_id: u64,
        cookie: u64,
        buf: *const c_char,
        buf_len: c_int,
    ) -> c_int;
    fn rados_buffer_free(buf: *mut c_char);
}

/// `LIBRADOS_CREATE_IDEMPOTENT`: create the object unless it exists.
const CREATE_IDEMPOTENT: c_int = 0;

/// What the watch callbacks update; boxed so librados' callback pointer stays valid.
#[derive(Debug)]
struct WatchState {
    io: rados_ioctx_t,
    oid: CString,
    /// Notifications received and watch errors seen, ever.
    notified: AtomicU64,
    /// The watch failed (the OSD session was lost): notifications may have been missed.
    lost: AtomicBool,
}

/// librados calls this on its finisher thread for every notify on the object, ours included.
unsafe extern "C" fn on_notify(
    arg: *mut c_void,
    notify_id: u64,
    handle: u64,
    _notifier_id: u64,
    _data: *mut c_void,
    _data_len: usize,
) {
    // SAFETY: `arg` is the `WatchState` box registered by `WatchedObject::watch`; it outlives
    // the watch (`WatchedObject::drop` unwatches and flushes callbacks before freeing it).
    let w = unsafe { &*arg.cast::<WatchState>() };
    // Counted before the ack, so the notifier's `notify` returns only after this is visible.
    w.notified.fetch_add(1, Ordering::AcqRel);
    // SAFETY: the I/O context lives as long as the box; no payload (null, 0).
    unsafe { rados_notify_ack(w.io, w.oid.as_ptr(), notify_id, handle, ptr::null(), 0) };
}

/// librados calls this when the watch broke and notifications may have been missed.
unsafe extern "C" fn on_watch_error(arg: *mut c_void, _cookie: u64, _err: c_int) {
    // SAFETY: as in `on_notify`.
    let w = unsafe { &*arg.cast::<WatchState>() };
    w.lost.store(true, Ordering::Release);
    w.notified.fetch_add(1, Ordering::AcqRel);
}

/// Who answered one notify: acknowledgements and watchers that timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::backend::rbd) struct NotifyReply {
    pub(in crate::backend::rbd) acks: u32,
    pub(in crate::backend::rbd) timeouts: u32,
}

impl NotifyReply {
    /// librados' reply encoding (librados.h, `rados_notify2`): le32 count of acks, each
    /// le64 gid, le64 cookie, le32 length and that many payload bytes; le32 count of
    /// timeouts, each le64 gid and le64 cookie. Bounds-checked: it comes from the cluster.
    fn parse(b: &[u8]) -> Option<NotifyReply> {
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(
                b.get(at..at.checked_add(4)?)?.try_into().ok()?,
            ))
        };
        let acks = u32_at(0)?;
        let mut at = 4usize;
        for _ in 0..acks {
            let len = u32_at(at.checked_add(16)?)? as usize;
            at = at.checked_add(20)?.checked_add(len)?;
        }
        let timeouts = u32_at(at)?;
        Some(NotifyReply { acks, timeouts })
    }
}

/// One RADOS object that this client watches, read whole and written whole under a version
/// guard. Every notify on it (from any client) and every watch error bumps a counter, so a
/// reader can tell cheaply whether its copy may be stale.
#[derive(Debug)]
pub(in crate::backend::rbd) struct WatchedObject {
    state: Box<WatchState>,
    /// The watch handle; `None` after a failed re-watch.
    handle: std::sync::Mutex<Option<u64>>,
    /// Serialises the calls whose version `rados_get_last_version` reports (per I/O context).
    ops: std::sync::Mutex<()>,
    // Declared last: dropped after the watch is gone.
    pool: Pool,
}

// SAFETY: the raw I/O context inside `WatchState` is thread-safe like the `Pool` it belongs
// to; the callbacks only touch atomics and `rados_notify_ack`.
unsafe impl Send for WatchState {}
// SAFETY: as above.
unsafe impl Sync for WatchState {}

impl WatchedObject {
    /// Creates `oid` if it does not exist (a watch needs an object) and watches it.
    pub(in crate::backend::rbd) fn open(pool: Pool, oid: &str) -> io::Result<WatchedObject> {
        let me = WatchedObject {
            state: Box::new(WatchState {
                io: pool.io,
                oid: cstring(oid)?,
                notified: AtomicU64::new(0),
                lost: AtomicBool::new(false),
            }),
            handle: std::sync::Mutex::new(None),
            ops: std::sync::Mutex::new(()),
            pool,
        };
        me.write_op(|op| {
            // SAFETY: a fresh write op; the category is unused (null is allowed).
            unsafe { rados_write_op_create(op, CREATE_IDEMPOTENT, ptr::null()) };
        })?;
        let handle = me.watch()?;
        *me.handle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
        Ok(me)
    }

    fn watch(&self) -> io::Result<u64> {
        let mut handle = 0u64;
        let arg = ptr::from_ref::<WatchState>(&self.state)
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: a connected I/O context, a NUL-terminated name, a valid out pointer; the
        // callbacks read `WatchState` through atomics and the box outlives the watch.
        check(unsafe {
            rados_watch2(
                self.pool.io,
                self.state.oid.as_ptr(),
                &raw mut handle,
                Some(on_notify),
                Some(on_watch_error),
                arg,
            )
        })?;
        Ok(handle)
    }

    /// How many notifications (and watch errors) this client has seen.
    pub(in crate::backend::rbd) fn notifications(&self) -> u64 {
        self.state.notified.load(Ordering::Acquire)
    }

    /// Whether the watch broke; [`WatchedObject::rewatch`] repairs it.
    pub(in crate::backend::rbd) fn lost(&self) -> bool {
        self.state.lost.load(Ordering::Acquire)
    }

    /// Replaces a broken watch with a new one.
    pub(in crate::backend::rbd) fn rewatch(&self) -> io::Result<()> {
        let mut handle = self
            .handle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = handle.take() {
            // SAFETY: a handle from rados_watch2 on this I/O context, unwatched once.
            unsafe { rados_unwatch2(self.pool.io, old) };
        }
        // Cleared first: an error on the new watch sets it again.
        self.state.lost.store(false, Ordering::Release);
        match self.watch() {
            Ok(h) => {
                *handle = Some(h);
                Ok(())
            }
            Err(e) => {
                self.state.lost.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// The whole object (at most `max` bytes, else `EFBIG`) and its version.
    pub(in crate::backend::rbd) fn read(&self, max: usize) -> io::Result<(Vec<u8>, u64)> {
        let _ops = self
            .ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut buf = vec![0u8; max + 1];
        // SAFETY: `buf` is `buf.len()` bytes long; librados writes at most that many.
        let n = unsafe {
            rados_read(
                self.pool.io,
                self.state.oid.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
            )
        };
        check(n)?;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n > max {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        buf.truncate(n);
        // SAFETY: a connected I/O context; the read above is the last operation on it.
        let version = unsafe { rados_get_last_version(self.pool.io) };
        Ok((buf, version))
    }

    /// Replaces the whole object if its version is still `version`; returns the new
    /// version. `ERANGE`/`EOVERFLOW` when someone else wrote it meanwhile.
    pub(in crate::backend::rbd) fn write_if(&self, data: &[u8], version: u64) -> io::Result<u64> {
        self.write_op(|op| {
            // SAFETY: a fresh write op; `data` outlives `write_op`, which runs the op.
            unsafe {
                rados_write_op_assert_version(op, version);
                rados_write_op_write_full(op, data.as_ptr().cast(), data.len());
            }
        })
    }

    /// Builds one write op with `build` and runs it; returns the object's new version.
    fn write_op(&self, build: impl FnOnce(rados_write_op_t)) -> io::Result<u64> {
        let _ops = self
            .ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: no preconditions; null on allocation failure.
        let op = unsafe { rados_create_write_op() };
        if op.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        build(op);
        // SAFETY: a built op, a connected I/O context, a NUL-terminated name, no mtime.
        let ret = unsafe {
            rados_write_op_operate(
                op,
                self.pool.io,
                self.state.oid.as_ptr(),
                ptr::null_mut(),
                0,
            )
        };
        // SAFETY: created above and run; released once.
        unsafe { rados_release_write_op(op) };
        check(ret)?;
        // SAFETY: a connected I/O context; the op above is the last operation on it.
        Ok(unsafe { rados_get_last_version(self.pool.io) })
    }

    /// Notifies every watcher of the object (this client too) and waits until all have
    /// acknowledged or `timeout` passed; says who answered.
    pub(in crate::backend::rbd) fn notify(
        &self,
        payload: &[u8],
        timeout: std::time::Duration,
    ) -> io::Result<NotifyReply> {
        let len = c_int::try_from(payload.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let mut reply: *mut c_char = ptr::null_mut();
        let mut reply_len = 0usize;
        // SAFETY: a connected I/O context, a NUL-terminated name, a payload of `len` bytes
        // and valid out pointers for the reply buffer librados allocates.
        let ret = unsafe {
            rados_notify2(
                self.pool.io,
                self.state.oid.as_ptr(),
                payload.as_ptr().cast(),
                len,
                ms,
                &raw mut reply,
                &raw mut reply_len,
            )
        };
        let parsed = if reply.is_null() {
            None
        } else {
            // SAFETY: librados allocated `reply_len` bytes at `reply`.
            let bytes = unsafe { std::slice::from_raw_parts(reply.cast::<u8>(), reply_len) };
            let parsed = NotifyReply::parse(bytes);
            // SAFETY: the reply buffer of rados_notify2, freed once, after its last use.
            unsafe { rados_buffer_free(reply) };
            parsed
        };
        // A timeout still says who answered: watchers that did not are among `timeouts`.
        match parsed {
            Some(r) if ret == 0 || ret == -libc::ETIMEDOUT => Ok(r),
            _ => {
                check(ret)?;
                Err(io::Error::from_raw_os_error(libc::EBADMSG))
            }
        }
    }

    /// Takes or renews a cls_lock lock on this object (see [`Pool::lock`]).
    pub(in crate::backend::rbd) fn lock(
        &self,
        name: &str,
        cookie: &str,
        duration: std::time::Duration,
    ) -> io::Result<()> {
        let oid = self.state.oid.to_str().unwrap_or_default();
        self.pool
            .lock(oid, name, cookie, LockKind::Exclusive, duration)
    }

    pub(in crate::backend::rbd) fn unlock(&self, name: &str, cookie: &str) -> io::Result<()> {
        let oid = self.state.oid.to_str().unwrap_or_default();
        self.pool.unlock(oid, name, cookie)
    }
}

impl Drop for WatchedObject {
    fn drop(&mut self) {
        let handle = self
            .handle
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // SAFETY: a handle from rados_watch2 on this I/O context, unwatched once.
            unsafe { rados_unwatch2(self.pool.io, handle) };
        }
        // SAFETY: a connected cluster handle; afterwards no callback runs any more, so the
        // `WatchState` box may be freed.
        unsafe { rados_watch_flush(self.pool.cluster) };
    }
}

#[cfg(test)]
mod tests {
    use super::NotifyReply;

    #[test]
    fn notify_replies_parse() {
        let mut b = 2u32.to_le_bytes().to_vec();
        for payload in [&b""[..], b"abc"] {
            b.extend_from_slice(&7u64.to_le_bytes());
            b.extend_from_slice(&1u64.to_le_bytes());
            b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            b.extend_from_slice(payload);
        }
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        assert_eq!(
            NotifyReply::parse(&b),
            Some(NotifyReply {
                acks: 2,
                timeouts: 1
            })
        );
        assert_eq!(NotifyReply::parse(&b[..b.len() - 20]), None, "truncated");
        assert_eq!(
            NotifyReply::parse(&u32::MAX.to_le_bytes()),
            None,
            "huge count"
        );
    }
}
