//! Registered O_DIRECT bounce buffers: one page-aligned allocation cut
//! into chunks, each leased to one operation at a time.

use std::io;
use std::ptr::NonNull;
use std::sync::{Condvar, Mutex, PoisonError};

use super::lock;

/// A lease on one registered, page-aligned buffer (O_DIRECT bounce buffer).
pub(crate) struct FixedBuf<'a> {
    pub(super) pool: &'a FixedPool,
    pub(super) index: u16,
}

impl FixedBuf<'_> {
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the chunk lies inside the pool's allocation, and this lease is its only user.
        unsafe { std::slice::from_raw_parts(self.pool.chunk_ptr(self.index), self.pool.chunk) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.pool.chunk_ptr(self.index), self.pool.chunk) }
    }
}

impl Drop for FixedBuf<'_> {
    fn drop(&mut self) {
        let mut free = lock(&self.pool.free);
        free.push(self.index);
        drop(free);
        self.pool.freed.notify_one();
    }
}

/// Page-aligned memory registered with the ring (IORING_REGISTER_BUFFERS):
/// the kernel pins it once instead of on every O_DIRECT operation.
pub(super) struct FixedPool {
    base: NonNull<u8>,
    layout: std::alloc::Layout,
    pub(super) chunk: usize,
    free: Mutex<Vec<u16>>,
    freed: Condvar,
}

impl FixedPool {
    pub(super) fn new(chunk: usize, count: u16) -> io::Result<FixedPool> {
        let layout = std::alloc::Layout::from_size_align(chunk * usize::from(count), 4096)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the layout has a non-zero size (both factors are non-zero).
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(base).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(FixedPool {
            base,
            layout,
            chunk,
            free: Mutex::new((0..count).rev().collect()),
            freed: Condvar::new(),
        })
    }

    fn chunk_ptr(&self, index: u16) -> *mut u8 {
        // SAFETY: `index` is below the chunk count, so the offset stays inside the allocation.
        unsafe { self.base.as_ptr().add(usize::from(index) * self.chunk) }
    }

    pub(super) fn iovecs(&self) -> Vec<libc::iovec> {
        let count = self.layout.size() / self.chunk;
        (0..count)
            .map(|i| libc::iovec {
                iov_base: self.chunk_ptr(i as u16).cast(),
                iov_len: self.chunk,
            })
            .collect()
    }

    pub(super) fn lease(&self) -> FixedBuf<'_> {
        let mut free = lock(&self.free);
        loop {
            if let Some(index) = free.pop() {
                return FixedBuf { pool: self, index };
            }
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for FixedPool {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring that had it registered is
        // gone (it is dropped first, see `Shared`'s field order).
        unsafe { std::alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}
