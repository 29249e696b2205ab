//! Async operations on owned buffers: the future's waker is stored in its
//! slot and called by whoever drains the completion (usually the reaper).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use io_uring::opcode;

use super::{FILE, Keep, Shared, Slot, State, Waiter, lock, result};

/// An async read or write of an owned buffer; resolves to the result and
/// the buffer. Dropping it early leaves the buffer with the ring until the
/// kernel is done with it.
pub(crate) struct Op {
    shared: Arc<Shared>,
    state: OpState,
}

enum OpState {
    /// Waiting for a slot (or not yet tried).
    Queued {
        buf: Vec<u8>,
        offset: u64,
        dsync: bool,
        write: bool,
    },
    InFlight(u32),
    Finished,
}

impl Op {
    pub(super) fn new(
        shared: Arc<Shared>,
        buf: Vec<u8>,
        offset: u64,
        write: bool,
        dsync: bool,
    ) -> Op {
        Op {
            shared,
            state: OpState::Queued {
                buf,
                offset,
                dsync,
                write,
            },
        }
    }
}

impl Future for Op {
    type Output = (io::Result<u32>, Vec<u8>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let shared = &*this.shared;
        match std::mem::replace(&mut this.state, OpState::Finished) {
            OpState::Queued {
                buf,
                offset,
                dsync,
                write,
            } => {
                let (mut st, id) = shared.take_slot(lock(&shared.state), Some(cx.waker()));
                let Some(id) = id else {
                    this.state = OpState::Queued {
                        buf,
                        offset,
                        dsync,
                        write,
                    };
                    return Poll::Pending;
                };
                let iov = libc::iovec {
                    iov_base: buf.as_ptr().cast_mut().cast(),
                    iov_len: buf.len(),
                };
                let flags = if dsync { libc::RWF_DSYNC } else { 0 };
                let waiter = Waiter::Task(cx.waker().clone());
                // SAFETY: the buffer moves into the slot (its heap memory does not move) and
                // stays there until the completion is taken or, if this future is dropped,
                // until the reaper frees the slot.
                let pushed = unsafe {
                    shared.push(
                        &mut st,
                        id,
                        Some(iov),
                        |iovec| {
                            if write {
                                opcode::Writev::new(FILE, iovec, 1)
                                    .offset(offset)
                                    .rw_flags(flags)
                                    .build()
                            } else {
                                opcode::Readv::new(FILE, iovec, 1).offset(offset).build()
                            }
                        },
                        waiter,
                        Keep::Owned(buf),
                    )
                };
                if let Err(e) = pushed {
                    return Poll::Ready((Err(e), Vec::new()));
                }
                drop(st);
                shared.submit();
                this.state = OpState::InFlight(id);
                let mut st = lock(&shared.state);
                shared.drain(&mut st);
                Self::take_done(shared, &mut st, id, cx, &mut this.state)
            }
            OpState::InFlight(id) => {
                let mut st = lock(&shared.state);
                this.state = OpState::InFlight(id);
                Self::take_done(shared, &mut st, id, cx, &mut this.state)
            }
            OpState::Finished => panic!("io_uring Op polled after completion"),
        }
    }
}

impl Op {
    fn take_done(
        shared: &Shared,
        st: &mut State,
        id: u32,
        cx: &Context<'_>,
        state: &mut OpState,
    ) -> Poll<(io::Result<u32>, Vec<u8>)> {
        match &mut st.slots[id as usize] {
            Slot::Done { res, keep } => {
                let res = *res;
                let buf = match std::mem::replace(keep, Keep::Borrowed) {
                    Keep::Owned(buf) => buf,
                    Keep::Borrowed => Vec::new(),
                };
                shared.free_slot(st, id);
                *state = OpState::Finished;
                Poll::Ready((result(res), buf))
            }
            Slot::Busy { waiter, .. } => {
                *waiter = Waiter::Task(cx.waker().clone());
                Poll::Pending
            }
            Slot::Free => {
                *state = OpState::Finished;
                Poll::Ready((Err(io::Error::from_raw_os_error(libc::EIO)), Vec::new()))
            }
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if let OpState::InFlight(id) = self.state {
            let mut st = lock(&self.shared.state);
            match &mut st.slots[id as usize] {
                Slot::Busy { waiter, .. } => *waiter = Waiter::Gone,
                Slot::Done { .. } => self.shared.free_slot(&mut st, id),
                Slot::Free => {}
            }
        }
    }
}
