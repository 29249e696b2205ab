//! librbd: an open image, its header watch, and its asynchronous I/O (`rbd_aio_*` with a
//! completion): the calling thread blocks on its own completion only, so concurrent callers
//! keep several requests in flight in librbd with no thread per request.

use std::ffi::{c_char, c_int, c_void};
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Pool, check, check_len, cstring, rados_ioctx_t};

#[allow(non_camel_case_types, reason = "the C names")]
type rbd_image_t = *mut c_void;
#[allow(non_camel_case_types, reason = "the C names")]
type rbd_completion_t = *mut c_void;
#[allow(non_camel_case_types, reason = "the C names")]
type rbd_callback_t = Option<unsafe extern "C" fn(rbd_completion_t, *mut c_void)>;
#[allow(non_camel_case_types, reason = "the C names")]
type rbd_update_callback_t = Option<unsafe extern "C" fn(*mut c_void)>;

/// `RBD_LOCK_MODE_EXCLUSIVE` (librbd's exclusive-lock feature).
const RBD_LOCK_MODE_EXCLUSIVE: c_int = 0;
/// The most image lock owners `break_other_owners` looks at (librbd has one at a time).
const MAX_IMAGE_LOCK_OWNERS: usize = 8;
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
pub(in crate::backend::rbd) struct Image {
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
    pub(in crate::backend::rbd) fn open(pool: Pool, name: &str) -> io::Result<Image> {
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
    pub(in crate::backend::rbd) fn size(&self) -> u64 {
        self.watched.size.load(Ordering::Acquire)
    }

    pub(in crate::backend::rbd) fn size_changes(&self) -> u64 {
        self.watched.size_changes.load(Ordering::Acquire)
    }

    pub(in crate::backend::rbd) fn resize(&self, size: u64) -> io::Result<()> {
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

    pub(in crate::backend::rbd) fn read(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let (ptr, len) = (buf.as_mut_ptr().cast::<c_char>(), buf.len());
        // SAFETY: `buf` stays borrowed (and so valid) until `aio` has waited for completion.
        self.aio(|img, c| unsafe { rbd_aio_read(img, off, len, ptr, c) } as isize)
    }

    pub(in crate::backend::rbd) fn write(&self, buf: &[u8], off: u64) -> io::Result<usize> {
        let (ptr, len) = (buf.as_ptr().cast::<c_char>(), buf.len());
        // SAFETY: `buf` stays borrowed until `aio` has waited for completion.
        self.aio(|img, c| unsafe { rbd_aio_write(img, off, len, ptr, c) } as isize)
    }

    pub(in crate::backend::rbd) fn flush(&self) -> io::Result<()> {
        // SAFETY: an open image and a fresh completion.
        self.aio(|img, c| unsafe { rbd_aio_flush(img, c) } as isize)
            .map(drop)
    }

    pub(in crate::backend::rbd) fn discard(&self, off: u64, len: u64) -> io::Result<()> {
        // SAFETY: an open image and a fresh completion; no buffer.
        self.aio(|img, c| unsafe { rbd_aio_discard(img, off, len, c) } as isize)
            .map(drop)
    }

    pub(in crate::backend::rbd) fn write_zeroes(&self, off: u64, len: usize) -> io::Result<()> {
        // SAFETY: an open image and a fresh completion; no buffer; flags 0 (thin zeroes).
        self.aio(|img, c| unsafe { rbd_aio_write_zeroes(img, off, len, c, 0, 0) } as isize)
            .map(drop)
    }

    /// Atomic compare-and-write: `Ok(None)` when written, `Ok(Some(offset))` of the first
    /// differing byte (from `off`) when the medium did not match `cmp`.
    pub(in crate::backend::rbd) fn compare_and_write(
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
    pub(in crate::backend::rbd) fn break_other_owners(&self) -> io::Result<usize> {
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
