//! The one io_uring of a logical unit, and every `unsafe` the engine needs.
//!
//! Each operation takes a slot (at most [`SLOTS`] in flight, so neither
//! queue can overflow) whose index is the SQE's `user_data`. Whoever holds
//! the state lock drains the completion queue and hands each result to its
//! slot: the submitter itself right after `io_uring_enter` (a page-cache
//! hit completes inside that call, so it never sleeps), or the reaper
//! thread, the ring's only waiter in the kernel, which unparks a blocked
//! caller or wakes an awaiting task. No thread per request, no blocking
//! pool: a sync caller parks on its own slot, an async caller's waker is
//! called from the reaper.
//!
//! Memory the kernel reads or writes stays valid until the CQE arrives:
//! sync calls borrow it and do not return before their completion; async
//! calls move their buffer into the slot, which keeps it even when the
//! future is dropped early; the reaper (which owns a reference to all of
//! this) only ends once no slot is in the kernel.

mod fixed;
mod op;

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::thread::{JoinHandle, Thread};

use io_uring::{IoUring, opcode, squeue, types};

pub(crate) use fixed::FixedBuf;
use fixed::FixedPool;
pub(crate) use op::Op;

/// Operations in flight at once per ring; more wait for a slot.
pub(crate) const SLOTS: u32 = 128;
/// `user_data` of the NOP that tells the reaper to stop.
const STOP: u64 = u64::MAX;
/// The registered file's index (the LU's one fd).
const FILE: types::Fixed = types::Fixed(0);

/// Whether this kernel lets us create a ring with every opcode the engine
/// uses; `Err` says why not.
pub(crate) fn probe() -> Result<(), String> {
    let ring = IoUring::new(2).map_err(|e| format!("io_uring_setup: {e}"))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("IORING_REGISTER_PROBE: {e}"))?;
    for (code, name) in [
        (opcode::Readv::CODE, "READV"),
        (opcode::Writev::CODE, "WRITEV"),
        (opcode::ReadFixed::CODE, "READ_FIXED"),
        (opcode::WriteFixed::CODE, "WRITE_FIXED"),
        (opcode::Fsync::CODE, "FSYNC"),
        (opcode::Fallocate::CODE, "FALLOCATE"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("IORING_OP_{name} is not supported"));
        }
    }
    Ok(())
}

/// What a slot keeps alive for the kernel besides its iovec.
#[derive(Debug)]
enum Keep {
    /// The caller's memory; the caller waits for the completion.
    Borrowed,
    /// An async caller's buffer, handed back with the result.
    Owned(Vec<u8>),
}

#[derive(Debug)]
enum Waiter {
    Thread(Thread),
    Task(Waker),
    /// The future was dropped: free the slot when the CQE comes.
    Gone,
}

#[derive(Debug)]
enum Slot {
    Free,
    Busy { waiter: Waiter, keep: Keep },
    Done { res: i32, keep: Keep },
}

#[derive(Debug)]
struct State {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Tasks waiting for a free slot.
    slot_waiters: Vec<Waker>,
    busy: u32,
    stopping: bool,
}

struct Shared {
    // Field order matters: the ring (and its registration of `bufs`) goes first.
    ring: IoUring,
    state: Mutex<State>,
    slot_freed: Condvar,
    /// One iovec per slot, at a fixed address; slot `i` owns `iovecs[i]` while busy.
    iovecs: Box<[UnsafeCell<libc::iovec>]>,
    bufs: Option<FixedPool>,
}

// SAFETY: `iovecs[i]` is only touched by the holder of slot `i` (taken and freed under the
// state lock); `bufs` hands out chunks through exclusive leases; the rest is Sync already.
unsafe impl Sync for Shared {}
// SAFETY: nothing in `Shared` is tied to the thread that made it.
unsafe impl Send for Shared {}

/// One LU's ring with its reaper thread.
pub(crate) struct Ring {
    shared: Arc<Shared>,
    reaper: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ring {
    /// A ring for `fd` (registered as its one fixed file); with
    /// `fixed_bufs` = (chunk bytes, count), a pool of registered buffers.
    pub(crate) fn new(fd: RawFd, fixed_bufs: Option<(usize, u16)>) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_cqsize(2 * SLOTS)
            .build(SLOTS + 1)?;
        ring.submitter().register_files(&[fd])?;
        let bufs = match fixed_bufs {
            Some((chunk, count)) => {
                let pool = FixedPool::new(chunk, count)?;
                let iovecs = pool.iovecs();
                // SAFETY: the iovecs describe `pool`'s allocation, which outlives the ring
                // (`Shared` drops the ring first).
                unsafe { ring.submitter().register_buffers(&iovecs)? };
                Some(pool)
            }
            None => None,
        };
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let shared = Arc::new(Shared {
            ring,
            state: Mutex::new(State {
                slots: (0..SLOTS).map(|_| Slot::Free).collect(),
                free: (0..SLOTS).rev().collect(),
                slot_waiters: Vec::new(),
                busy: 0,
                stopping: false,
            }),
            slot_freed: Condvar::new(),
            iovecs: (0..SLOTS).map(|_| UnsafeCell::new(empty)).collect(),
            bufs,
        });
        let reaping = shared.clone();
        let reaper = std::thread::Builder::new()
            .name("iet-uring".to_owned())
            .spawn(move || reaping.reap_until_stopped())?;
        Ok(Ring {
            shared,
            reaper: Some(reaper),
        })
    }

    /// preadv2 of `buf` at `offset`: bytes read (short at the end of the file).
    pub(crate) fn readv(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: `buf` is exclusively borrowed until `run` returns, which is after the CQE.
        unsafe {
            self.shared.run(Some(iov), |iovec| {
                opcode::Readv::new(FILE, iovec, 1).offset(offset).build()
            })
        }
        .map(|n| n as usize)
    }

    /// pwritev2 of `buf` at `offset` (RWF_DSYNC with `dsync`): bytes written.
    pub(crate) fn writev(&self, buf: &[u8], offset: u64, dsync: bool) -> io::Result<usize> {
        let iov = libc::iovec {
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        let flags = if dsync { libc::RWF_DSYNC } else { 0 };
        // SAFETY: `buf` is borrowed until the CQE; the kernel only reads it.
        unsafe {
            self.shared.run(Some(iov), |iovec| {
                opcode::Writev::new(FILE, iovec, 1)
                    .offset(offset)
                    .rw_flags(flags)
                    .build()
            })
        }
        .map(|n| n as usize)
    }

    /// fdatasync (or fsync without `datasync`).
    pub(crate) fn fsync(&self, datasync: bool) -> io::Result<()> {
        let flags = if datasync {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        };
        // SAFETY: no memory is passed to the kernel.
        unsafe {
            self.shared
                .run(None, |_| opcode::Fsync::new(FILE).flags(flags).build())
        }
        .map(drop)
    }

    /// fallocate(2) with `mode` over `len` bytes at `offset`.
    pub(crate) fn fallocate(&self, offset: u64, len: u64, mode: i32) -> io::Result<()> {
        // SAFETY: no memory is passed to the kernel.
        unsafe {
            self.shared.run(None, |_| {
                opcode::Fallocate::new(FILE, len)
                    .offset(offset)
                    .mode(mode)
                    .build()
            })
        }
        .map(drop)
    }

    /// A registered buffer for O_DIRECT, waiting for one to be free; `None`
    /// when this ring has none.
    pub(crate) fn fixed_buf(&self) -> Option<FixedBuf<'_>> {
        self.shared.bufs.as_ref().map(FixedPool::lease)
    }

    /// READ_FIXED of `len` bytes (at most the chunk) into `buf` from `offset`.
    pub(crate) fn read_fixed(
        &self,
        buf: &mut FixedBuf<'_>,
        len: usize,
        offset: u64,
    ) -> io::Result<usize> {
        let len = len.min(buf.pool.chunk);
        let ptr = buf.as_mut_slice().as_mut_ptr();
        let index = buf.index;
        // SAFETY: the lease is exclusively borrowed until the CQE, and `len` fits the chunk.
        unsafe {
            self.shared.run(None, |_| {
                opcode::ReadFixed::new(FILE, ptr, len as u32, index)
                    .offset(offset)
                    .build()
            })
        }
        .map(|n| n as usize)
    }

    /// WRITE_FIXED of the first `len` bytes of `buf` at `offset`.
    pub(crate) fn write_fixed(
        &self,
        buf: &FixedBuf<'_>,
        len: usize,
        offset: u64,
        dsync: bool,
    ) -> io::Result<usize> {
        let len = len.min(buf.pool.chunk);
        let ptr = buf.as_slice().as_ptr();
        let flags = if dsync { libc::RWF_DSYNC } else { 0 };
        // SAFETY: the lease is borrowed until the CQE; the kernel only reads it.
        unsafe {
            self.shared.run(None, |_| {
                opcode::WriteFixed::new(FILE, ptr, len as u32, buf.index)
                    .offset(offset)
                    .rw_flags(flags)
                    .build()
            })
        }
        .map(|n| n as usize)
    }

    /// Reads into an owned buffer (filling it from `offset`) for an async
    /// caller; the buffer comes back with the result.
    pub(crate) fn read_owned(&self, buf: Vec<u8>, offset: u64) -> Op {
        Op::new(self.shared.clone(), buf, offset, false, false)
    }

    /// Writes an owned buffer at `offset` for an async caller.
    pub(crate) fn write_owned(&self, buf: Vec<u8>, offset: u64, dsync: bool) -> Op {
        Op::new(self.shared.clone(), buf, offset, true, dsync)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.shared.state);
            st.stopping = true;
            let nop = opcode::Nop::new().build().user_data(STOP);
            // SAFETY: a NOP references no memory; the lock makes this the only SQ user;
            // the SQ has room for one entry more than there are slots.
            let pushed = unsafe { self.shared.ring.submission_shared().push(&nop) };
            if pushed.is_err() {
                tracing::error!("io_uring: no room to stop the reaper");
                return;
            }
        }
        let _ = self.shared.ring.submit();
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
        }
    }
}

impl Shared {
    /// Takes a slot, waiting for one; `None` only with `waker` set, when the
    /// task must wait (its waker is queued).
    fn take_slot<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        waker: Option<&Waker>,
    ) -> (MutexGuard<'a, State>, Option<u32>) {
        loop {
            if let Some(id) = st.free.pop() {
                st.busy += 1;
                return (st, Some(id));
            }
            if let Some(w) = waker {
                st.slot_waiters.push(w.clone());
                return (st, None);
            }
            st = self
                .slot_freed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn free_slot(&self, st: &mut State, id: u32) {
        st.slots[id as usize] = Slot::Free;
        st.free.push(id);
        st.busy -= 1;
        for w in st.slot_waiters.drain(..) {
            w.wake();
        }
        self.slot_freed.notify_one();
    }

    /// Fills slot `id`'s iovec and queues `entry` for it.
    ///
    /// # Safety
    /// Whatever memory `entry` (or `iov`) refers to must stay valid until the slot's
    /// completion is taken.
    unsafe fn push(
        &self,
        st: &mut State,
        id: u32,
        iov: Option<libc::iovec>,
        entry: impl FnOnce(*const libc::iovec) -> squeue::Entry,
        waiter: Waiter,
        keep: Keep,
    ) -> io::Result<()> {
        let cell = &self.iovecs[id as usize];
        if let Some(iov) = iov {
            // SAFETY: slot `id` is ours, and with it this iovec.
            unsafe { *cell.get() = iov };
        }
        let sqe = entry(cell.get().cast_const()).user_data(u64::from(id));
        // SAFETY: the state lock is held, so this is the only SubmissionQueue; the caller
        // vouches for the memory the entry refers to.
        let pushed = unsafe { self.ring.submission_shared().push(&sqe) };
        if pushed.is_err() {
            // Cannot happen: the SQ has more entries than there are slots.
            self.free_slot(st, id);
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        st.slots[id as usize] = Slot::Busy { waiter, keep };
        Ok(())
    }

    /// Submits queued entries; the reaper's own `io_uring_enter` picks up
    /// whatever a transient failure leaves behind.
    fn submit(&self) {
        if let Err(e) = self.ring.submit()
            && !matches!(
                e.raw_os_error(),
                Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
            )
        {
            tracing::warn!("io_uring_enter: {e}");
        }
    }

    /// One sync operation: queue, submit, then take the result as soon as
    /// it is there (often at once), parking until the reaper delivers it.
    ///
    /// # Safety
    /// As [`Shared::push`]; this returns only after the completion.
    unsafe fn run(
        &self,
        iov: Option<libc::iovec>,
        entry: impl FnOnce(*const libc::iovec) -> squeue::Entry,
    ) -> io::Result<u32> {
        let (mut st, id) = self.take_slot(lock(&self.state), None);
        let id = id.expect("sync callers wait for a slot");
        let waiter = Waiter::Thread(std::thread::current());
        // SAFETY: the caller keeps the memory valid until we return, after the completion.
        unsafe { self.push(&mut st, id, iov, entry, waiter, Keep::Borrowed)? };
        drop(st);
        self.submit();
        loop {
            let mut st = lock(&self.state);
            self.drain(&mut st);
            if let Slot::Done { res, .. } = st.slots[id as usize] {
                self.free_slot(&mut st, id);
                return result(res);
            }
            drop(st);
            std::thread::park();
        }
    }

    /// Hands every posted completion to its slot (state lock held).
    fn drain(&self, st: &mut State) {
        // SAFETY: the state lock is held, so this is the only CompletionQueue.
        let cq = unsafe { self.ring.completion_shared() };
        for cqe in cq {
            let Ok(id) = u32::try_from(cqe.user_data()) else {
                continue; // STOP: `stopping` is already set
            };
            let slot = std::mem::replace(&mut st.slots[id as usize], Slot::Free);
            let Slot::Busy { waiter, keep } = slot else {
                tracing::error!(id, "io_uring completion for an idle slot");
                st.slots[id as usize] = slot;
                continue;
            };
            let res = cqe.result();
            match waiter {
                Waiter::Gone => self.free_slot(st, id),
                Waiter::Thread(t) => {
                    st.slots[id as usize] = Slot::Done { res, keep };
                    t.unpark();
                }
                Waiter::Task(w) => {
                    st.slots[id as usize] = Slot::Done { res, keep };
                    w.wake();
                }
            }
        }
    }

    /// The reaper: the ring's one waiter in the kernel.
    fn reap_until_stopped(&self) {
        loop {
            {
                let mut st = lock(&self.state);
                self.drain(&mut st);
                if st.stopping && st.busy == 0 {
                    return;
                }
            }
            match self.ring.submitter().submit_and_wait(1) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) => {}
                Err(e) => {
                    tracing::error!("io_uring reaper: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }
}

fn result(res: i32) -> io::Result<u32> {
    u32::try_from(res).map_err(|_| io::Error::from_raw_os_error(-res))
}
