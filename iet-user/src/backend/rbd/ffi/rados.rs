//! librados: a connected cluster handle with an I/O context on one pool, and cls_lock
//! ("advisory") locks.

use std::ffi::{c_char, c_int};
use std::io;
use std::ptr;

use super::{check, check_len, cstring, rados_ioctx_t, rados_t};

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

/// `LIBRADOS_LOCK_FLAG_MAY_RENEW`: take the lock, or extend it when this client holds it.
const LOCK_FLAG_MAY_RENEW: u8 = 1;
/// The most `list_lockers` allocates per buffer (names of a few hundred lockers).
const MAX_LOCKERS_BYTES: usize = 64 << 10;

/// A connected cluster handle with an I/O context on one pool.
#[derive(Debug)]
pub(in crate::backend::rbd) struct Pool {
    pub(super) cluster: rados_t,
    pub(super) io: rados_ioctx_t,
}

// SAFETY: librados cluster handles and I/O contexts are thread-safe (librados.h: "the
// functions are thread-safe" for a connected handle); we only share them read-only.
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl Pool {
    /// `rados_create` + config file + `options` + `rados_connect` + `rados_ioctx_create`.
    pub(in crate::backend::rbd) fn connect(
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
pub(in crate::backend::rbd) enum LockKind<'a> {
    Exclusive,
    /// Shared with every locker that gives the same tag.
    Shared {
        tag: &'a str,
    },
}

impl Pool {
    /// Takes or renews (`MAY_RENEW`) the lock `name` on object `oid` for `duration`; the OSD
    /// drops it when not renewed in time. `Err(EBUSY)` while another (client, cookie) holds it.
    pub(in crate::backend::rbd) fn lock(
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
    pub(in crate::backend::rbd) fn unlock(
        &self,
        oid: &str,
        name: &str,
        cookie: &str,
    ) -> io::Result<()> {
        let (oid, name, cookie) = (cstring(oid)?, cstring(name)?, cstring(cookie)?);
        // SAFETY: a connected I/O context and NUL-terminated strings.
        check(unsafe { rados_unlock(self.io, oid.as_ptr(), name.as_ptr(), cookie.as_ptr()) })
    }

    /// The cookies of the current (unexpired) holders of lock `name` on `oid`; none when the
    /// object does not exist.
    pub(in crate::backend::rbd) fn lockers(
        &self,
        oid: &str,
        name: &str,
    ) -> io::Result<Vec<String>> {
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
