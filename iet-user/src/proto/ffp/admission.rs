//! Memory admission for write data: budgets of bytes that outstanding
//! writes may hold (per session and daemon-wide), and the grants that
//! return their bytes when dropped.
//!
//! Data that arrives unsolicited (immediate data, unsolicited Data-Out up
//! to FirstBurstLength) is always taken and charged; solicited data waits
//! for a grant, so an initiator that announces more than the budget holds
//! is throttled (R2Ts wait, MaxCmdSN stops) rather than refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Called when bytes return to a budget that someone may be waiting on.
pub type WakeHook = Arc<dyn Fn() + Send + Sync>;

/// A pool of bytes.
pub struct Budget {
    limit: AtomicU64,
    used: AtomicU64,
    wake: Option<WakeHook>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("limit", &self.limit())
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

impl Budget {
    pub fn new(limit: u64, wake: Option<WakeHook>) -> Arc<Budget> {
        Arc::new(Budget {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            wake,
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }

    /// Changes the limit (a lower one takes effect as grants return).
    pub fn set_limit(&self, limit: u64) {
        let before = self.limit.swap(limit, Ordering::AcqRel);
        if limit > before
            && let Some(wake) = &self.wake
        {
            wake();
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Spent: solicitation waits and the window stops opening.
    pub fn exhausted(&self) -> bool {
        self.used() >= self.limit()
    }

    /// Takes `n` bytes if they fit, or if nothing is taken at all (so one
    /// write larger than the budget still makes progress).
    fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used.saturating_add(n) <= self.limit()).then_some(used + n)
            })
            .is_ok()
    }

    fn take(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    fn give(&self, n: u64) {
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        if before >= self.limit()
            && let Some(wake) = &self.wake
        {
            wake();
        }
    }
}

/// The budgets one session's writes draw from.
#[derive(Debug, Clone)]
pub struct Budgets {
    pub session: Arc<Budget>,
    pub daemon: Arc<Budget>,
}

impl Budgets {
    /// Bytes for solicited data, when both budgets have room.
    pub fn try_grant(&self, n: u64) -> Option<Grant> {
        if !self.session.try_take(n) {
            return None;
        }
        if !self.daemon.try_take(n) {
            self.session.give(n);
            return None;
        }
        Some(Grant {
            budgets: self.clone(),
            bytes: n,
        })
    }

    /// Bytes for data that arrived unsolicited: always charged.
    pub fn charge(&self, n: u64) -> Grant {
        self.session.take(n);
        self.daemon.take(n);
        Grant {
            budgets: self.clone(),
            bytes: n,
        }
    }

    /// Either budget is spent.
    pub fn exhausted(&self) -> bool {
        self.session.exhausted() || self.daemon.exhausted()
    }
}

/// Bytes held against the budgets until dropped.
#[derive(Debug)]
pub struct Grant {
    budgets: Budgets,
    bytes: u64,
}

impl Grant {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds another grant's bytes to this one.
    pub fn merge(&mut self, mut other: Grant) {
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budgets.session.give(self.bytes);
            self.budgets.daemon.give(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn budgets(session: u64, daemon: u64) -> (Budgets, Arc<AtomicU32>) {
        let woke = Arc::new(AtomicU32::new(0));
        let w = woke.clone();
        let hook: WakeHook = Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        });
        (
            Budgets {
                session: Budget::new(session, None),
                daemon: Budget::new(daemon, Some(hook)),
            },
            woke,
        )
    }

    #[test]
    fn grants_stop_at_the_limit_and_return_on_drop() {
        let (b, woke) = budgets(100, 1000);
        let g1 = b.try_grant(60).unwrap();
        assert!(b.try_grant(60).is_none(), "session budget");
        let g2 = b.try_grant(40).unwrap();
        assert!(b.exhausted());
        drop(g1);
        assert_eq!(b.session.used(), 40);
        assert!(!b.exhausted());
        drop(g2);
        assert_eq!(b.daemon.used(), 0);
        assert_eq!(woke.load(Ordering::Relaxed), 0, "daemon budget never spent");
    }

    #[test]
    fn one_write_larger_than_the_budget_still_progresses() {
        let (b, _) = budgets(10, 10);
        let g = b.try_grant(50).expect("nothing else outstanding");
        assert!(b.try_grant(1).is_none());
        drop(g);
        assert!(b.try_grant(1).is_some());
    }

    #[test]
    fn unsolicited_data_is_charged_and_a_spent_daemon_budget_wakes_waiters() {
        let (b, woke) = budgets(1000, 100);
        let g = b.charge(150);
        assert!(b.daemon.exhausted());
        assert!(b.try_grant(1).is_none());
        drop(g);
        assert_eq!(woke.load(Ordering::Relaxed), 1);
    }
}
