//! Reusable I/O buffers. Data-In and write buffers come from power-of-two
//! size classes and go back when the last PDU that references them has
//! been written, so the steady state allocates no large buffers (glibc
//! maps, faults in and unmaps each one: half the throughput of 128 KiB
//! reads in some runs). Buffers idle for a whole trim period are freed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

const MIN_SHIFT: u32 = 12;
const MAX_SHIFT: u32 = 20;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// Most bytes kept in free lists, over all classes.
const KEEP_BYTES: usize = 32 << 20;

struct Class {
    free: Vec<Vec<u8>>,
    /// Fewest free buffers since the last trim: that many went unused.
    low_water: usize,
}

/// Free lists by size class.
pub struct BufPool {
    classes: [Mutex<Class>; CLASSES],
    kept: AtomicUsize,
}

/// The daemon's pool.
pub static POOL: BufPool = BufPool::new();

fn class_of(capacity: usize) -> Option<usize> {
    let shift = capacity
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
        .max(MIN_SHIFT);
    (shift <= MAX_SHIFT).then(|| (shift - MIN_SHIFT) as usize)
}

fn class_size(class: usize) -> usize {
    1 << (class as u32 + MIN_SHIFT)
}

impl BufPool {
    pub const fn new() -> BufPool {
        BufPool {
            classes: [const {
                Mutex::new(Class {
                    free: Vec::new(),
                    low_water: 0,
                })
            }; CLASSES],
            kept: AtomicUsize::new(0),
        }
    }

    fn lock(&self, class: usize) -> std::sync::MutexGuard<'_, Class> {
        self.classes[class]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An empty buffer with room for `len` bytes.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let Some(class) = class_of(len) else {
            return Vec::with_capacity(len);
        };
        let reused = {
            let mut c = self.lock(class);
            let v = c.free.pop();
            c.low_water = c.low_water.min(c.free.len());
            v
        };
        match reused {
            Some(mut v) => {
                self.kept.fetch_sub(v.capacity(), Ordering::Relaxed);
                v.clear();
                v
            }
            None => Vec::with_capacity(class_size(class)),
        }
    }

    /// Returns a buffer from [`BufPool::take`] for reuse.
    pub fn give(&self, v: Vec<u8>) {
        let cap = v.capacity();
        let Some(class) = class_of(cap) else {
            return;
        };
        if cap != class_size(class) {
            return;
        }
        if self.kept.fetch_add(cap, Ordering::Relaxed) + cap > KEEP_BYTES {
            self.kept.fetch_sub(cap, Ordering::Relaxed);
            return;
        }
        self.lock(class).free.push(v);
    }

    /// Frees the buffers no one needed since the last call (run
    /// periodically); returns how many bytes went.
    pub fn trim(&self) -> usize {
        let mut freed = 0;
        for class in 0..CLASSES {
            let unused: Vec<Vec<u8>> = {
                let mut c = self.lock(class);
                let keep = c.free.len() - c.low_water.min(c.free.len());
                let unused = c.free.split_off(keep);
                c.low_water = c.free.len();
                unused
            };
            let bytes: usize = unused.iter().map(Vec::capacity).sum();
            self.kept.fetch_sub(bytes, Ordering::Relaxed);
            freed += bytes;
        }
        freed
    }

    /// Bytes held in free lists.
    pub fn kept_bytes(&self) -> usize {
        self.kept.load(Ordering::Relaxed)
    }
}

impl Default for BufPool {
    fn default() -> Self {
        Self::new()
    }
}

/// An empty buffer from the daemon's pool with room for `len` bytes.
pub fn take(len: usize) -> Vec<u8> {
    POOL.take(len)
}

/// Returns a buffer to the daemon's pool.
pub fn give(v: Vec<u8>) {
    POOL.give(v);
}

/// Shares a buffer as `Bytes`; it returns to the daemon's pool when the
/// last slice of it is dropped.
pub fn shared(v: Vec<u8>) -> Bytes {
    Bytes::from_owner(Pooled(v))
}

struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_then_trimmed() {
        let pool = BufPool::new();
        let mut a = pool.take(100_000);
        assert!(a.capacity() >= 100_000 && a.is_empty());
        let ptr = a.as_ptr();
        a.extend_from_slice(&[7; 1000]);
        pool.give(a);
        let again = pool.take(70_000);
        assert_eq!(again.as_ptr(), ptr, "the same 128 KiB buffer comes back");
        assert!(again.is_empty());
        pool.give(again);
        assert_eq!(pool.kept_bytes(), 128 << 10);
        // Unused for a whole trim period: freed.
        pool.trim();
        assert_eq!(pool.kept_bytes(), 128 << 10);
        pool.trim();
        assert_eq!(pool.kept_bytes(), 0);
        // Odd capacities and huge buffers are not kept.
        pool.give(Vec::with_capacity(5000));
        pool.give(Vec::with_capacity(8 << 20));
        assert_eq!(pool.kept_bytes(), 0);
        assert_eq!(pool.take(8 << 20).capacity(), 8 << 20);
    }

    #[test]
    fn shared_buffers_outlive_their_slices() {
        let mut v = take(4096);
        v.extend_from_slice(b"hello world");
        let b = shared(v);
        let tail = b.slice(6..);
        drop(b);
        assert_eq!(&tail[..], b"world");
    }

    #[test]
    fn the_pool_keeps_a_bounded_amount() {
        let pool = BufPool::new();
        let bufs: Vec<Vec<u8>> = (0..100).map(|_| pool.take(1 << 20)).collect();
        for b in bufs {
            pool.give(b);
        }
        assert_eq!(pool.kept_bytes(), KEEP_BYTES);
    }
}
