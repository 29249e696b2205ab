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
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use super::buffers;
use super::command::{CommandInfo, ExecContext};
use super::spin::{self, SpinSlot};
use super::writer::OutPdu;

/// Writes run before their answers are sent together. Larger batches
/// starve the initiator's pipeline (32 measured 30% slower at QD32).
const BATCH: usize = 8;

/// A buffered write waiting for its lane.
pub struct LaneWrite {
    pub exec: Arc<ExecContext>,
    pub info: CommandInfo,
    pub data: Vec<u8>,
    pub aborted: Arc<AtomicBool>,
    pub exp_data_sn: u32,
    pub started: Instant,
}

/// The lanes of one target, by LUN, started on first use.
#[derive(Default)]
pub struct WriteLanes {
    lanes: Mutex<HashMap<u64, Sender<LaneWrite>>>,
}

impl std::fmt::Debug for WriteLanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteLanes").finish_non_exhaustive()
    }
}

impl WriteLanes {
    /// Queues a write on its LU's lane (call inside the runtime); if no
    /// lane thread can be started it runs on the blocking pool instead.
    pub fn submit(&self, write: LaneWrite) {
        if let Err(w) = self.try_submit(write) {
            tokio::spawn(w.exec.execute(w.info, w.data, w.aborted, w.exp_data_sn));
        }
    }

    #[allow(
        clippy::result_large_err,
        reason = "the write is handed back, not boxed"
    )]
    fn try_submit(&self, write: LaneWrite) -> Result<(), LaneWrite> {
        let lun = write.info.lun_number();
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
fn run(queue: &Receiver<LaneWrite>, runtime: &tokio::runtime::Handle) {
    let mut answers: Vec<(Arc<ExecContext>, Vec<OutPdu>)> = Vec::with_capacity(BATCH);
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
            let (outcome, data_in) = w.exec.run_blocking(&w.info, &w.data);
            let written = w.data.len() as u64;
            buffers::give(w.data);
            w.exec.record(&w.info, &outcome, written, 0, w.started);
            if let Some(pdus) = w
                .exec
                .answer(&w.info, &w.aborted, &outcome, data_in, w.exp_data_sn)
            {
                let pdus = pdus
                    .into_iter()
                    .map(|(bhs, data, stat_sn)| OutPdu { bhs, data, stat_sn })
                    .collect();
                answers.push((w.exec, pdus));
            }
            if answers.len() >= BATCH {
                break;
            }
            next = queue.try_recv().ok();
        }
        for (exec, pdus) in answers.drain(..) {
            let mut pdus = pdus.into_iter();
            while let Some(pdu) = pdus.next() {
                match exec.tx.try_send(pdu) {
                    Ok(()) => {}
                    Err(None) => break,
                    // A full queue (a slow initiator) must not stall the lane.
                    Err(Some(pdu)) => {
                        let rest: Vec<OutPdu> = std::iter::once(pdu).chain(pdus).collect();
                        runtime.spawn(async move {
                            for pdu in rest {
                                if !exec.tx.send_pdu(pdu).await {
                                    break;
                                }
                            }
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
fn next_write(queue: &Receiver<LaneWrite>, poll: Duration) -> Option<LaneWrite> {
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
