//! The only unsafe code of the RBD store: the few librados/librbd C functions it uses
//! (declared from Debian's `rados/librados.h` and `rbd/librbd.h`, Ceph 16) and safe wrappers.
//!
//! Every I/O goes through librbd's asynchronous API (`rbd_aio_*` with a completion): the
//! calling thread blocks on its own completion only, so concurrent callers keep several
//! requests in flight in librbd with no thread per request.

use std::ffi::{CString, c_char, c_int, c_void};
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

#[allow(non_camel_case_types, reason = "the C names")]
type rados_t = *mut c_void;
#[allow(non_camel_case_types, reason = "the C names")]
type rados_ioctx_t = *mut c_void;
#[allow(non_camel_case_types, reason = "the C names")]
type rbd_image_t = *mut c_void;
#[allow(non_camel_case_types, reason = "the C names")]
type rbd_completion_t = *mut c_void;
#[allow(non_camel_case_types, reason = "the C names")]
type rbd_callback_t = Option<unsafe extern "C" fn(rbd_completion_t, *mut c_void)>;
#[allow(non_camel_case_types, reason = "the C names")]
type rbd_update_callback_t = Option<unsafe extern "C" fn(*mut c_void)>;

#[link(name = "rados")]
unsafe extern "C" {
    fn rados_create(cluster: *mut rados_t, id: *const c_char) -> c_int;
    fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;
    fn rados_conf_set(cluster: rados_t, option: *const c_char, value: *const c_char) -> c_int;
    fn rados_connect(cluster: rados_t) -> c_int;
    fn rados_shutdown(cluster: rados_t);
    fn rados_ioctx_create(cluster: rados_t, pool: *const c_char, io: *mut rados_ioctx_t) -> c_int;
    fn rados_ioctx_destroy(io: rados_ioctx_t);
    fn rados_lock_exclusive(
        io: rados_ioctx_t,
        oid: *const c_char,
        name: *const c_char,
        cookie: *const c_char,
        desc: *const c_char,
        duration: *mut libc::timeval,
        flags: u8,
    ) -> c_int;
    fn rados_lock_shared(
        io: rados_ioctx_t,
        oid: *const c_char,
        name: *const c_char,
        cookie: *const c_char,
        tag: *const c_char,
        desc: *const c_char,
        duration: *mut libc::timeval,
        flags: u8,
    ) -> c_int;
    fn rados_unlock(
        io: rados_ioctx_t,
        oid: *const c_char,
        name: *const c_char,
        cookie: *const c_char,
    ) -> c_int;
    fn rados_list_lockers(
        io: rados_ioctx_t,
        oid: *const c_char,
        name: *const c_char,
        exclusive: *mut c_int,
        tag: *mut c_char,
        tag_len: *mut usize,
        clients: *mut c_char,
        clients_len: *mut usize,
        cookies: *mut c_char,
        cookies_len: *mut usize,
        addrs: *mut c_char,
        addrs_len: *mut usize,
    ) -> isize;
}

/// `RBD_LOCK_MODE_EXCLUSIVE` (librbd's exclusive-lock feature).
const RBD_LOCK_MODE_EXCLUSIVE: c_int = 0;
/// The most image lock owners `break_other_owners` looks at (librbd has one at a time).
const MAX_IMAGE_LOCK_OWNERS: usize = 8;
/// `LIBRADOS_LOCK_FLAG_MAY_RENEW`: take the lock, or extend it when this client holds it.
const LOCK_FLAG_MAY_RENEW: u8 = 1;
/// The most `list_lockers` allocates per buffer (names of a few hundred lockers).
const MAX_LOCKERS_BYTES: usize = 64 << 10;

#[link(name = "rbd")]
unsafe extern "C" {
    fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap: *const c_char,
    ) -> c_int;
    fn rbd_close(image: rbd_image_t) -> c_int;
    fn rbd_get_size(image: rbd_image_t, size: *mut u64) -> c_int;
    fn rbd_resize(image: rbd_image_t, size: u64) -> c_int;
    fn rbd_update_watch(
        image: rbd_image_t,
        handle: *mut u64,
        cb: rbd_update_callback_t,
        arg: *mut c_void,
    ) -> c_int;
    fn rbd_update_unwatch(image: rbd_image_t, handle: u64) -> c_int;
    fn rbd_is_exclusive_lock_owner(image: rbd_image_t, is_owner: *mut c_int) -> c_int;
    fn rbd_lock_get_owners(
        image: rbd_image_t,
        lock_mode: *mut c_int,
        lock_owners: *mut *mut c_char,
        max_lock_owners: *mut usize,
    ) -> c_int;
    fn rbd_lock_get_owners_cleanup(lock_owners: *mut *mut c_char, lock_owner_count: usize);
    fn rbd_lock_break(image: rbd_image_t, lock_mode: c_int, lock_owner: *const c_char) -> c_int;

    fn rbd_aio_create_completion(
        arg: *mut c_void,
        cb: rbd_callback_t,
        c: *mut rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_wait_for_complete(c: rbd_completion_t) -> c_int;
    fn rbd_aio_get_return_value(c: rbd_completion_t) -> isize;
    fn rbd_aio_release(c: rbd_completion_t);

    fn rbd_aio_read(
        image: rbd_image_t,
        off: u64,
        len: usize,
        buf: *mut c_char,
        c: rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_write(
        image: rbd_image_t,
        off: u64,
        len: usize,
        buf: *const c_char,
        c: rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_flush(image: rbd_image_t, c: rbd_completion_t) -> c_int;
    fn rbd_aio_discard(image: rbd_image_t, off: u64, len: u64, c: rbd_completion_t) -> c_int;
    fn rbd_aio_write_zeroes(
        image: rbd_image_t,
        off: u64,
        len: usize,
        c: rbd_completion_t,
        zero_flags: c_int,
        op_flags: c_int,
    ) -> c_int;
    fn rbd_aio_compare_and_write(
        image: rbd_image_t,
        off: u64,
        len: usize,
        cmp_buf: *const c_char,
        buf: *const c_char,
        c: rbd_completion_t,
        mismatch_off: *mut u64,
        op_flags: c_int,
    ) -> isize;
}

/// A negative errno from librados/librbd as an `io::Error`.
fn check(ret: c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret))
    } else {
        Ok(())
    }
}

/// As [`check`] for calls that return a byte count (`ssize_t`).
fn check_len(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error(
            i32::try_from(-ret).unwrap_or(libc::EIO),
        ))
    } else {
        Ok(ret.cast_unsigned())
    }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

/// A connected cluster handle with an I/O context on one pool.
#[derive(Debug)]
pub(super) struct Pool {
    cluster: rados_t,
    io: rados_ioctx_t,
}

// SAFETY: librados cluster handles and I/O contexts are thread-safe (librados.h: "the
// functions are thread-safe" for a connected handle); we only share them read-only.
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl Pool {
    /// `rados_create` + config file + `options` + `rados_connect` + `rados_ioctx_create`.
    pub(super) fn connect(
        id: &str,
        conf: &str,
        options: &[(&str, &str)],
        pool: &str,
    ) -> io::Result<Pool> {
        let id = cstring(id)?;
        let mut cluster = ptr::null_mut();
        // SAFETY: `cluster` is a valid out pointer and `id` a NUL-terminated string.
        check(unsafe { rados_create(&raw mut cluster, id.as_ptr()) })?;
        let mut me = Pool {
            cluster,
            io: ptr::null_mut(),
        };
        let conf = cstring(conf)?;
        // SAFETY: a created, unconnected handle and a NUL-terminated path.
        check(unsafe { rados_conf_read_file(me.cluster, conf.as_ptr()) })?;
        for (k, v) in options {
            let (k, v) = (cstring(k)?, cstring(v)?);
            // SAFETY: an unconnected handle and two NUL-terminated strings.
            check(unsafe { rados_conf_set(me.cluster, k.as_ptr(), v.as_ptr()) })?;
        }
        // SAFETY: a configured handle, connected once.
        check(unsafe { rados_connect(me.cluster) })?;
        let pool = cstring(pool)?;
        // SAFETY: a connected handle, a NUL-terminated pool name and a valid out pointer.
        check(unsafe { rados_ioctx_create(me.cluster, pool.as_ptr(), &raw mut me.io) })?;
        Ok(me)
    }
}

/// How a cls_lock lock on an object is taken (librados "advisory locks").
#[derive(Debug, Clone, Copy)]
pub(super) enum LockKind<'a> {
    Exclusive,
    /// Shared with every locker that gives the same tag.
    Shared {
        tag: &'a str,
    },
}

impl Pool {
    /// Takes or renews (`MAY_RENEW`) the lock `name` on object `oid` for `duration`; the OSD
    /// drops it when not renewed in time. `Err(EBUSY)` while another (client, cookie) holds it.
    pub(super) fn lock(
        &self,
        oid: &str,
        name: &str,
        cookie: &str,
        kind: LockKind<'_>,
        duration: std::time::Duration,
    ) -> io::Result<()> {
        let (oid, name, cookie) = (cstring(oid)?, cstring(name)?, cstring(cookie)?);
        let desc = cstring("iet gateway")?;
        let mut tv = libc::timeval {
            tv_sec: libc::time_t::try_from(duration.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(duration.subsec_micros()),
        };
        let ret = match kind {
            // SAFETY: a connected I/O context, NUL-terminated strings and a timeval that
            // outlive the call (librados copies them into the request).
            LockKind::Exclusive => unsafe {
                rados_lock_exclusive(
                    self.io,
                    oid.as_ptr(),
                    name.as_ptr(),
                    cookie.as_ptr(),
                    desc.as_ptr(),
                    &raw mut tv,
                    LOCK_FLAG_MAY_RENEW,
                )
            },
            LockKind::Shared { tag } => {
                let tag = cstring(tag)?;
                // SAFETY: as above.
                unsafe {
                    rados_lock_shared(
                        self.io,
                        oid.as_ptr(),
                        name.as_ptr(),
                        cookie.as_ptr(),
                        tag.as_ptr(),
                        desc.as_ptr(),
                        &raw mut tv,
                        LOCK_FLAG_MAY_RENEW,
                    )
                }
            }
        };
        check(ret)
    }

    /// Releases a lock this client holds (ENOENT when it does not, e.g. expired).
    pub(super) fn unlock(&self, oid: &str, name: &str, cookie: &str) -> io::Result<()> {
        let (oid, name, cookie) = (cstring(oid)?, cstring(name)?, cstring(cookie)?);
        // SAFETY: a connected I/O context and NUL-terminated strings.
        check(unsafe { rados_unlock(self.io, oid.as_ptr(), name.as_ptr(), cookie.as_ptr()) })
    }

    /// The cookies of the current (unexpired) holders of lock `name` on `oid`; none when the
    /// object does not exist.
    pub(super) fn lockers(&self, oid: &str, name: &str) -> io::Result<Vec<String>> {
        let (oid, name) = (cstring(oid)?, cstring(name)?);
        let mut sizes = [256usize; 4];
        loop {
            let [mut tag_len, mut clients_len, mut cookies_len, mut addrs_len] = sizes;
            let (mut tag, mut clients) = (vec![0u8; tag_len], vec![0u8; clients_len]);
            let (mut cookies, mut addrs) = (vec![0u8; cookies_len], vec![0u8; addrs_len]);
            let mut exclusive = 0;
            // SAFETY: every buffer is as long as the length passed with it; librados writes
            // at most that much and stores the lengths it needs.
            let ret = unsafe {
                rados_list_lockers(
                    self.io,
                    oid.as_ptr(),
                    name.as_ptr(),
                    &raw mut exclusive,
                    tag.as_mut_ptr().cast(),
                    &raw mut tag_len,
                    clients.as_mut_ptr().cast(),
                    &raw mut clients_len,
                    cookies.as_mut_ptr().cast(),
                    &raw mut cookies_len,
                    addrs.as_mut_ptr().cast(),
                    &raw mut addrs_len,
                )
            };
            match check_len(ret) {
                Ok(n) => {
                    cookies.truncate(cookies_len.min(cookies.len()));
                    return Ok(cookies
                        .split(|&b| b == 0)
                        .filter(|c| !c.is_empty())
                        .take(n)
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect());
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
                Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                    let need = [tag_len, clients_len, cookies_len, addrs_len];
                    if need.iter().any(|&n| n > MAX_LOCKERS_BYTES)
                        || need.iter().zip(sizes).all(|(&n, s)| n <= s)
                    {
                        return Err(e);
                    }
                    sizes = need.map(|n| n.max(1));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if !self.io.is_null() {
            // SAFETY: created by rados_ioctx_create; every image on it is closed first
            // (`Image` holds the `Pool` and is dropped before it).
            unsafe { rados_ioctx_destroy(self.io) };
        }
        // SAFETY: created by rados_create (possibly unconnected, which shutdown accepts).
        unsafe { rados_shutdown(self.cluster) };
    }
}

/// What the header-update watch keeps current; boxed so librbd's callback pointer stays valid.
#[derive(Debug)]
struct Watched {
    image: rbd_image_t,
    size: AtomicU64,
    /// How many times the size was seen to change.
    size_changes: AtomicU64,
}

/// librbd calls this on its own thread after the image header changed (resize, features, ...).
unsafe extern "C" fn header_updated(arg: *mut c_void) {
    // SAFETY: `arg` is the `Watched` box registered in `Image::open`, which outlives the
    // watch (`Image::drop` unwatches before freeing it).
    let w = unsafe { &*arg.cast::<Watched>() };
    let mut size = 0u64;
    // SAFETY: the image is open while watched; rbd-nbd queries the size from this callback too.
    if unsafe { rbd_get_size(w.image, &raw mut size) } == 0
        && w.size.swap(size, Ordering::AcqRel) != size
    {
        w.size_changes.fetch_add(1, Ordering::AcqRel);
    }
}

/// An open RBD image.
#[derive(Debug)]
pub(super) struct Image {
    watched: Box<Watched>,
    watch: Option<u64>,
    // Declared last: dropped after the image is closed.
    _pool: Pool,
}

// SAFETY: librbd image handles may be used from several threads at once; librbd serialises
// internally (its ImageCtx has its own locks), which is how QEMU and tcmu-runner use it.
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

impl Image {
    /// Opens (never creates) `name` in `pool`'s I/O context and watches its header.
    pub(super) fn open(pool: Pool, name: &str) -> io::Result<Image> {
        let name = cstring(name)?;
        let mut image = ptr::null_mut();
        // SAFETY: a valid I/O context, NUL-terminated name, valid out pointer, no snapshot.
        check(unsafe { rbd_open(pool.io, name.as_ptr(), &raw mut image, ptr::null()) })?;
        let mut size = 0;
        // SAFETY: an open image and a valid out pointer.
        let got = check(unsafe { rbd_get_size(image, &raw mut size) });
        let mut me = Image {
            watched: Box::new(Watched {
                image,
                size: AtomicU64::new(size),
                size_changes: AtomicU64::new(0),
            }),
            watch: None,
            _pool: pool,
        };
        got?;
        let mut handle = 0;
        let arg = ptr::from_ref::<Watched>(&me.watched)
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: the callback only reads `Watched` through atomics; the box lives until
        // `drop`, which unwatches first.
        check(unsafe { rbd_update_watch(image, &raw mut handle, Some(header_updated), arg) })?;
        me.watch = Some(handle);
        Ok(me)
    }

    fn raw(&self) -> rbd_image_t {
        self.watched.image
    }

    /// The size as of the last header update.
    pub(super) fn size(&self) -> u64 {
        self.watched.size.load(Ordering::Acquire)
    }

    pub(super) fn size_changes(&self) -> u64 {
        self.watched.size_changes.load(Ordering::Acquire)
    }

    pub(super) fn resize(&self, size: u64) -> io::Result<()> {
        // SAFETY: an open image.
        check(unsafe { rbd_resize(self.raw(), size) })?;
        self.watched.size.store(size, Ordering::Release);
        Ok(())
    }

    /// Issues one asynchronous request with a fresh completion and waits for it alone.
    /// `issue` must start exactly one `rbd_aio_*` call on the completion it is given.
    fn aio(&self, issue: impl FnOnce(rbd_image_t, rbd_completion_t) -> isize) -> io::Result<usize> {
        let mut c = ptr::null_mut();
        // SAFETY: no callback (we wait instead), a valid out pointer.
        check(unsafe { rbd_aio_create_completion(ptr::null_mut(), None, &raw mut c) })?;
        let started = issue(self.raw(), c);
        let ret = if started < 0 {
            started
        } else {
            // SAFETY: `c` was handed to a started request; waiting has no other precondition.
            unsafe { rbd_aio_wait_for_complete(c) };
            // SAFETY: the request completed.
            unsafe { rbd_aio_get_return_value(c) }
        };
        // SAFETY: created above; the request (if any) has completed, so librbd is done with it.
        unsafe { rbd_aio_release(c) };
        check_len(ret)
    }

    pub(super) fn read(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let (ptr, len) = (buf.as_mut_ptr().cast::<c_char>(), buf.len());
        // SAFETY: `buf` stays borrowed (and so valid) until `aio` has waited for completion.
        self.aio(|img, c| unsafe { rbd_aio_read(img, off, len, ptr, c) } as isize)
    }

    pub(super) fn write(&self, buf: &[u8], off: u64) -> io::Result<usize> {
        let (ptr, len) = (buf.as_ptr().cast::<c_char>(), buf.len());
        // SAFETY: `buf` stays borrowed until `aio` has waited for completion.
        self.aio(|img, c| unsafe { rbd_aio_write(img, off, len, ptr, c) } as isize)
    }

    pub(super) fn flush(&self) -> io::Result<()> {
        // SAFETY: an open image and a fresh completion.
        self.aio(|img, c| unsafe { rbd_aio_flush(img, c) } as isize)
            .map(drop)
    }

    pub(super) fn discard(&self, off: u64, len: u64) -> io::Result<()> {
        // SAFETY: an open image and a fresh completion; no buffer.
        self.aio(|img, c| unsafe { rbd_aio_discard(img, off, len, c) } as isize)
            .map(drop)
    }

    pub(super) fn write_zeroes(&self, off: u64, len: usize) -> io::Result<()> {
        // SAFETY: an open image and a fresh completion; no buffer; flags 0 (thin zeroes).
        self.aio(|img, c| unsafe { rbd_aio_write_zeroes(img, off, len, c, 0, 0) } as isize)
            .map(drop)
    }

    /// Atomic compare-and-write: `Ok(None)` when written, `Ok(Some(offset))` of the first
    /// differing byte (from `off`) when the medium did not match `cmp`.
    pub(super) fn compare_and_write(
        &self,
        cmp: &[u8],
        buf: &[u8],
        off: u64,
    ) -> io::Result<Option<u64>> {
        debug_assert_eq!(cmp.len(), buf.len());
        let mut mismatch = 0u64;
        let mismatch_ptr = &raw mut mismatch;
        let (cmp_ptr, buf_ptr) = (cmp.as_ptr().cast::<c_char>(), buf.as_ptr().cast::<c_char>());
        let len = cmp.len().min(buf.len());
        // SAFETY: both buffers and `mismatch` outlive the wait inside `aio`.
        let ret = self.aio(|img, c| unsafe {
            rbd_aio_compare_and_write(img, off, len, cmp_ptr, buf_ptr, c, mismatch_ptr, 0)
        });
        match ret {
            Ok(_) => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EILSEQ) => Ok(Some(mismatch)),
            Err(e) => Err(e),
        }
    }
}

impl Image {
    /// Breaks librbd's exclusive image lock when another client holds it; librbd then
    /// blocklists that client (`rbd_blocklist_on_break_lock`), so a gateway presumed dead
    /// cannot write any more. Returns how many owners were broken; 0 when this client owns
    /// the lock, nobody does, or the image has no exclusive-lock feature.
    pub(super) fn break_other_owners(&self) -> io::Result<usize> {
        let mut is_owner = 0;
        // SAFETY: an open image and a valid out pointer.
        match check(unsafe { rbd_is_exclusive_lock_owner(self.raw(), &raw mut is_owner) }) {
            Ok(()) if is_owner != 0 => return Ok(0),
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(0),
            Err(e) => return Err(e),
        }
        let mut owners = [ptr::null_mut::<c_char>(); MAX_IMAGE_LOCK_OWNERS];
        let mut count = owners.len();
        let mut mode = 0;
        // SAFETY: `owners` has room for `count` pointers; librbd fills at most that many
        // with strdup'ed strings and stores how many in `count`.
        let got = check(unsafe {
            rbd_lock_get_owners(
                self.raw(),
                &raw mut mode,
                owners.as_mut_ptr(),
                &raw mut count,
            )
        });
        match got {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => {
                return Ok(0);
            }
            Err(e) => return Err(e),
        }
        let count = count.min(owners.len());
        let mut result = Ok(0);
        for &owner in &owners[..count] {
            // SAFETY: an open image and an owner string librbd just returned.
            match check(unsafe { rbd_lock_break(self.raw(), RBD_LOCK_MODE_EXCLUSIVE, owner) }) {
                Ok(()) => result = result.map(|n| n + 1),
                // Released or broken meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => result = Err(e),
            }
        }
        // SAFETY: the `count` strings librbd allocated, freed once.
        unsafe { rbd_lock_get_owners_cleanup(owners.as_mut_ptr(), count) };
        result
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if let Some(handle) = self.watch.take() {
            // SAFETY: a handle from rbd_update_watch on this open image; after it returns
            // the callback no longer runs, so freeing `watched` afterwards is sound.
            unsafe { rbd_update_unwatch(self.raw(), handle) };
        }
        // SAFETY: opened by rbd_open, closed once; in-flight requests have all completed
        // because every request is waited for by the thread that issued it.
        unsafe { rbd_close(self.raw()) };
    }
}
