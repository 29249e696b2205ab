//! The task set of one logical unit (SAM-5 §8): when a task with a SIMPLE,
//! ORDERED or HEAD OF QUEUE attribute may enter the enabled state.
//!
//! While only SIMPLE tasks run, a counter is all the state there is (the
//! fast path). From the first ORDERED or HEAD OF QUEUE task on, tasks are
//! tracked one by one in age order until the set drains again; every
//! untracked task is older than every tracked one.

use std::collections::VecDeque;

use super::TaskAttr;

/// A task's place in the set, returned by [`TaskSet::enter`] and given
/// back to [`TaskSet::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    /// A SIMPLE task entered with nothing tracked: only counted.
    Untracked,
    Tracked(u64),
}

#[derive(Debug)]
struct Entry<K, W> {
    seq: u64,
    key: K,
    attr: TaskAttr,
    /// Present while the task waits to be enabled.
    waiter: Option<W>,
}

/// One LU's task set (TST=000: shared by every I_T nexus). `K` names a
/// task (nexus and tag), `W` wakes a task that was blocked.
#[derive(Debug)]
pub struct TaskSet<K, W> {
    untracked: u64,
    next_seq: u64,
    tracked: VecDeque<Entry<K, W>>,
}

impl<K, W> Default for TaskSet<K, W> {
    fn default() -> Self {
        TaskSet {
            untracked: 0,
            next_seq: 0,
            tracked: VecDeque::new(),
        }
    }
}

impl<K: PartialEq, W> TaskSet<K, W> {
    /// Tasks in the set (enabled or not).
    pub fn len(&self) -> usize {
        self.untracked as usize + self.tracked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A task enters the set. When it may not run yet, `park` makes its
    /// waker (kept here) and what the caller waits on (returned).
    pub fn enter<R>(
        &mut self,
        key: K,
        attr: TaskAttr,
        park: impl FnOnce() -> (W, R),
    ) -> (Ticket, Option<R>) {
        let attr = match attr {
            // An untagged command is a SIMPLE task (SAM-5 §8.6.1).
            TaskAttr::Untagged => TaskAttr::Simple,
            a => a,
        };
        if self.tracked.is_empty() && attr == TaskAttr::Simple {
            self.untracked += 1;
            return (Ticket::Untracked, None);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let enabled = self.may_enable(self.tracked.len(), attr);
        let (waiter, wait) = if enabled {
            (None, None)
        } else {
            let (w, r) = park();
            (Some(w), Some(r))
        };
        self.tracked.push_back(Entry {
            seq,
            key,
            attr,
            waiter,
        });
        (Ticket::Tracked(seq), wait)
    }

    /// SAM-5 §8.6: whether the task at `index` (with the tracked tasks
    /// before it still in the set) may be enabled.
    fn may_enable(&self, index: usize, attr: TaskAttr) -> bool {
        let older = self.tracked.iter().take(index);
        match attr {
            // "…shall enter the enabled task state immediately" (§8.6.4).
            TaskAttr::HeadOfQueue => true,
            // "…shall not enter the enabled task state until all older
            // tasks in the task set have completed" (§8.6.3).
            TaskAttr::Ordered => self.untracked == 0 && index == 0,
            // "…until all older HEAD OF QUEUE tasks and older ORDERED
            // tasks in the task set have completed" (§8.6.2).
            _ => older
                .into_iter()
                .all(|e| !matches!(e.attr, TaskAttr::Ordered | TaskAttr::HeadOfQueue)),
        }
    }

    /// A task left the set (completed or aborted); the wakers of tasks that
    /// may now run are passed to `wake`. Idempotent for tracked tickets.
    pub fn complete(&mut self, ticket: Ticket, mut wake: impl FnMut(W)) {
        match ticket {
            Ticket::Untracked => self.untracked = self.untracked.saturating_sub(1),
            Ticket::Tracked(seq) => {
                let Some(i) = self.tracked.iter().position(|e| e.seq == seq) else {
                    return;
                };
                self.tracked.remove(i);
            }
        }
        for i in 0..self.tracked.len() {
            if self.tracked[i].waiter.is_some()
                && self.may_enable(i, self.tracked[i].attr)
                && let Some(w) = self.tracked[i].waiter.take()
            {
                wake(w);
            }
        }
    }

    /// Hands out the wakers of blocked tasks matching `pred` (aborted
    /// tasks, which must end without running); they stay in the set until
    /// completed.
    pub fn take_waiters(&mut self, pred: impl Fn(&K) -> bool) -> Vec<W> {
        self.tracked
            .iter_mut()
            .filter(|e| pred(&e.key))
            .filter_map(|e| e.waiter.take())
            .collect()
    }

    /// Keys of the tracked tasks, oldest first (for QUERY TASK SET).
    pub fn tracked_keys(&self) -> impl Iterator<Item = &K> {
        self.tracked.iter().map(|e| &e.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Set = TaskSet<u32, u32>;

    fn enter(set: &mut Set, key: u32, attr: TaskAttr) -> (Ticket, bool) {
        let (t, wait) = set.enter(key, attr, || (key, ()));
        (t, wait.is_none())
    }

    fn complete(set: &mut Set, t: Ticket) -> Vec<u32> {
        let mut woke = Vec::new();
        set.complete(t, |w| woke.push(w));
        woke
    }

    #[test]
    fn simple_tasks_only_count() {
        let mut set = Set::default();
        let (first, ok) = enter(&mut set, 1, TaskAttr::Simple);
        assert!(ok);
        assert_eq!(first, Ticket::Untracked);
        enter(&mut set, 2, TaskAttr::Untagged);
        assert_eq!(set.len(), 2);
        assert!(complete(&mut set, first).is_empty());
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn ordered_waits_for_older_and_blocks_newer() {
        let mut set = Set::default();
        let (older, _) = enter(&mut set, 1, TaskAttr::Simple);
        let (ordered, ok) = enter(&mut set, 2, TaskAttr::Ordered);
        assert!(!ok, "an older SIMPLE task is running");
        let (newer, ok) = enter(&mut set, 3, TaskAttr::Simple);
        assert!(!ok, "a newer SIMPLE task waits for the ORDERED one");
        assert_eq!(complete(&mut set, older), vec![2]);
        assert!(complete(&mut set, ordered).contains(&3));
        assert!(complete(&mut set, newer).is_empty());
        assert!(set.is_empty());
        // The set drained: back to counting.
        assert_eq!(enter(&mut set, 4, TaskAttr::Simple).0, Ticket::Untracked);
    }

    #[test]
    fn ordered_after_ordered_runs_one_at_a_time() {
        let mut set = Set::default();
        let (o1, ok1) = enter(&mut set, 1, TaskAttr::Ordered);
        let (o2, ok2) = enter(&mut set, 2, TaskAttr::Ordered);
        assert!(ok1 && !ok2);
        assert_eq!(complete(&mut set, o1), vec![2]);
        complete(&mut set, o2);
    }

    #[test]
    fn head_of_queue_runs_at_once_and_holds_newer_simple() {
        let mut set = Set::default();
        let (older, _) = enter(&mut set, 1, TaskAttr::Simple);
        let (ordered, ok) = enter(&mut set, 2, TaskAttr::Ordered);
        assert!(!ok);
        let (head, ok) = enter(&mut set, 3, TaskAttr::HeadOfQueue);
        assert!(ok, "HEAD OF QUEUE passes a waiting ORDERED task");
        let (newer, ok) = enter(&mut set, 4, TaskAttr::Simple);
        assert!(!ok);
        assert!(complete(&mut set, head).is_empty(), "4 still waits for 2");
        assert_eq!(complete(&mut set, older), vec![2]);
        assert_eq!(complete(&mut set, ordered), vec![4]);
        complete(&mut set, newer);
        assert!(set.is_empty());
    }

    #[test]
    fn aborted_waiters_are_handed_out_and_completion_is_idempotent() {
        let mut set = Set::default();
        let (older, _) = enter(&mut set, 1, TaskAttr::Simple);
        let (ordered, _) = enter(&mut set, 2, TaskAttr::Ordered);
        assert_eq!(set.take_waiters(|k| *k == 2), vec![2]);
        complete(&mut set, ordered);
        complete(&mut set, ordered);
        assert_eq!(set.len(), 1);
        complete(&mut set, older);
        assert!(set.is_empty());
    }
}
