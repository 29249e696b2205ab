//! Write lanes: the buffered writes of one logical unit run in arrival
//! order on that unit's own thread, which answers them in batches.
//!
//! ext4 (among others) cannot take a buffered write without possibly
//! blocking (no RWF_NOWAIT) and serializes writers on the inode lock, so a
//! pool of threads that each wake, contend and sleep per write loses to one
//! thread that stays busy while writes queue. Measured on the bench: the
//! blocking pool did about 45k 4 KiB writes/s at QD32, a lane about
//! three times that.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use tracing::warn;

use super::spin::{self, SpinSlot};
use super::writer::{ConnTx, OutPdu};

/// Writes run before their answers are sent together. Larger batches
/// starve the initiator's pipeline (32 measured 30% slower at QD32).
const BATCH: usize = 8;

/// A buffered write waiting for its lane.
pub trait LaneJob: Send + Sized + 'static {
    /// Held until the answer is queued on its connection's writer.
    type Guard: Send + 'static;
    /// The LU whose lane runs it.
    fn lun(&self) -> u64;
    /// Runs the write (blocking); returns where its answer goes, the
    /// answer (empty when it was aborted) and what to drop once it is sent.
    fn run(self) -> (ConnTx, Vec<OutPdu>, Self::Guard);
    /// No lane thread could take it: run it elsewhere.
    fn run_elsewhere(self);
}

/// The lanes of one target, by LUN, started on first use.
pub struct WriteLanes<J> {
    lanes: Mutex<HashMap<u64, Sender<J>>>,
}

impl<J> Default for WriteLanes<J> {
    fn default() -> Self {
        WriteLanes {
            lanes: Mutex::new(HashMap::new()),
        }
    }
}

impl<J> std::fmt::Debug for WriteLanes<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteLanes").finish_non_exhaustive()
    }
}

impl<J: LaneJob> WriteLanes<J> {
    /// Queues a write on its LU's lane (call inside the runtime); if no
    /// lane thread can be started it runs on the blocking pool instead.
    pub fn submit(&self, write: J) {
        if let Err(w) = self.try_submit(write) {
            w.run_elsewhere();
        }
    }

    #[allow(
        clippy::result_large_err,
        reason = "the write is handed back, not boxed"
    )]
    fn try_submit(&self, write: J) -> Result<(), J> {
        let lun = write.lun();
        let mut lanes = self
            .lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let write = match lanes.get(&lun) {
            Some(lane) => match lane.send(write) {
                Ok(()) => return Ok(()),
                // The thread is gone: start another.
                Err(e) => e.0,
            },
            None => write,
        };
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = channel();
        let spawned = std::thread::Builder::new()
            .name(format!("iet-lane-{lun}"))
            .spawn(move || run(&rx, &runtime));
        if let Err(e) = spawned {
            warn!(lun, "cannot start a write lane: {e}");
            return Err(write);
        }
        let sent = tx.send(write).map_err(|e| e.0);
        lanes.insert(lun, tx);
        sent
    }
}

/// A lane thread: runs queued writes, then sends their answers; ends when
/// its target (the last sender) is gone.
fn run<J: LaneJob>(queue: &Receiver<J>, runtime: &tokio::runtime::Handle) {
    let mut answers: Vec<(ConnTx, Vec<OutPdu>, J::Guard)> = Vec::with_capacity(BATCH);
    let mut poll = Duration::ZERO;
    loop {
        let idle_since = Instant::now();
        let Some(first) = next_write(queue, poll) else {
            return;
        };
        // Poll next time only while writes keep coming soon after each other
        // (a QD1 initiator's next write comes one round trip after its
        // answer; a sleep and wake-up cost about that much again).
        let max_poll = spin::lane_budget();
        poll = if idle_since.elapsed() < max_poll {
            max_poll
        } else {
            Duration::ZERO
        };
        let mut next = Some(first);
        while let Some(w) = next.take() {
            let (tx, pdus, guard) = w.run();
            if !pdus.is_empty() {
                answers.push((tx, pdus, guard));
            }
            if answers.len() >= BATCH {
                break;
            }
            next = queue.try_recv().ok();
        }
        for (tx, pdus, guard) in answers.drain(..) {
            let mut pdus = pdus.into_iter();
            while let Some(pdu) = pdus.next() {
                match tx.try_send(pdu) {
                    Ok(()) => {}
                    Err(None) => break,
                    // A full queue (a slow initiator) must not stall the lane.
                    Err(Some(pdu)) => {
                        let rest: Vec<OutPdu> = std::iter::once(pdu).chain(pdus).collect();
                        runtime.spawn(async move {
                            for pdu in rest {
                                if !tx.send_pdu(pdu).await {
                                    break;
                                }
                            }
                            drop(guard);
                        });
                        break;
                    }
                }
            }
        }
    }
}

/// The next queued write: polled for up to `poll` (yielding the CPU), then
/// waited for. `None` when the lane's target is gone.
fn next_write<J>(queue: &Receiver<J>, poll: Duration) -> Option<J> {
    let until = Instant::now() + poll;
    let _slot = if poll.is_zero() {
        None
    } else {
        match SpinSlot::try_acquire() {
            Some(slot) => Some(slot),
            None => return queue.recv().ok(),
        }
    };
    loop {
        match queue.try_recv() {
            Ok(w) => return Some(w),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if Instant::now() < until => std::thread::yield_now(),
            Err(TryRecvError::Empty) => return queue.recv().ok(),
        }
    }
}
