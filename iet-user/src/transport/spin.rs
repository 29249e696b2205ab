//! Busy polling, rationed. On a VM a halted vCPU takes tens of
//! microseconds to wake, more than a loopback round trip, so a thread that
//! expects work within microseconds polls for it instead of sleeping. One
//! spinning thread per two CPUs keeps a CPU awake; more would only take
//! time from the initiator and from each other.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

static SPINNING: AtomicUsize = AtomicUsize::new(0);
/// How long a connection polls for its next PDU; 0 turns busy polling off.
static BUDGET_US: AtomicU32 = AtomicU32::new(DEFAULT_BUDGET_US);

/// A loopback round trip with the initiator's own work is 10–50 µs here;
/// 100 µs covers it with room (50 measured half as effective, 200 no better).
pub const DEFAULT_BUDGET_US: u32 = 100;

/// Sets the busy-poll budget (the `busy_poll_us` setting) for connections
/// that start from now on, and for write lanes from their next idle wait.
pub fn set_budget_us(us: u32) {
    BUDGET_US.store(us.min(10_000), Ordering::Relaxed);
}

pub fn budget_us() -> u32 {
    BUDGET_US.load(Ordering::Relaxed)
}

/// How long a connection polls for its next PDU.
pub fn connection_budget() -> Duration {
    Duration::from_micros(u64::from(budget_us()))
}

/// How long a write lane polls for its next write: longer than a
/// connection, to span the reads between the writes of a mixed workload
/// (70/30 at QD1 measured half the IOPS with the lane at 100 µs).
pub fn lane_budget() -> Duration {
    connection_budget() * 5 / 2
}

/// Whether a connection polls for its next PDU instead of sleeping: while
/// each PDU comes soon after the connection went idle, one at a time (a
/// pipeline of about one command), with nothing of it still running
/// elsewhere. Deeper pipelines arrive in batches and are served better by
/// sleeping: polling them cost a third of 4 KiB QD32 read throughput.
#[derive(Debug, Clone)]
pub struct PollPolicy {
    budget: Duration,
    /// Average PDUs per wake-up, in sixteenths.
    pdus_per_wake: u32,
}

impl PollPolicy {
    pub fn new(budget: Duration) -> PollPolicy {
        PollPolicy {
            budget,
            pdus_per_wake: 16,
        }
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Whether to poll from the start (before any PDU has been seen).
    pub fn enabled(&self) -> bool {
        !self.budget.is_zero()
    }

    /// After a wake-up that delivered `pdus` PDUs `waited` after the
    /// connection went idle: whether to poll before the next wait. `idle`
    /// means none of the connection's commands is still running.
    pub fn after_wake(&mut self, waited: Duration, pdus: u32, idle: bool) -> bool {
        self.pdus_per_wake = self.pdus_per_wake - self.pdus_per_wake / 8 + pdus.min(1024) * 2;
        self.enabled() && waited < self.budget && idle && self.pdus_per_wake < 24
    }
}

fn limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)))
}

/// The right to busy-poll, held while polling.
#[derive(Debug)]
pub struct SpinSlot(&'static AtomicUsize);

impl SpinSlot {
    /// A slot when fewer threads than the limit are polling.
    pub fn try_acquire() -> Option<SpinSlot> {
        SpinSlot::acquire_in(&SPINNING, limit())
    }

    fn acquire_in(spinning: &'static AtomicUsize, limit: usize) -> Option<SpinSlot> {
        spinning
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| SpinSlot(spinning))
    }
}

impl Drop for SpinSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn a_pipeline_of_one_polls() {
        let mut p = PollPolicy::new(100 * US);
        for _ in 0..100 {
            assert!(p.after_wake(20 * US, 1, true));
        }
        // A slow initiator, or a command still running: sleep.
        assert!(!p.after_wake(500 * US, 1, true));
        assert!(!p.after_wake(20 * US, 1, false));
    }

    #[test]
    fn batches_sleep_until_they_stop() {
        let mut p = PollPolicy::new(100 * US);
        for _ in 0..4 {
            p.after_wake(20 * US, 8, true);
        }
        assert!(!p.after_wake(20 * US, 1, true));
        let polls_again = (0..64).any(|_| p.after_wake(20 * US, 1, true));
        assert!(polls_again, "the average decays back to one PDU a wake-up");
    }

    #[test]
    fn a_zero_budget_never_polls() {
        let mut p = PollPolicy::new(Duration::ZERO);
        assert!(!p.enabled());
        assert!(!p.after_wake(Duration::ZERO, 1, true));
    }

    #[test]
    fn slots_are_rationed_and_returned() {
        static SPINNING: AtomicUsize = AtomicUsize::new(0);
        let take = || SpinSlot::acquire_in(&SPINNING, 2);
        let held: Vec<SpinSlot> = std::iter::from_fn(take).take(64).collect();
        assert_eq!(held.len(), 2, "never more slots than the limit");
        assert!(take().is_none());
        drop(held);
        assert!(take().is_some());
        assert!(limit() >= 1);
    }
}
