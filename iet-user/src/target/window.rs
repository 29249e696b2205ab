//! The session's CmdSN window with its ordering queue, and the task sets of
//! a target's LUs that delivered commands enter in CmdSN order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::proto::ffp::conn::CmdSnCheck;
use crate::proto::ffp::ordering::{Arrival, CmdSnQueue};
use crate::scsi::TaskAttr;
use crate::scsi::task_set::{TaskSet, Ticket};

/// The session's CmdSN window and ordering queue (RFC 7143 §3.2.2.1),
/// shared by its connections; ExpCmdSN and MaxCmdSN are mirrored in atomics
/// for the writers that stamp every PDU.
#[derive(Debug)]
pub struct CmdWindow {
    exp_cmd_sn: AtomicU32,
    max_cmd_sn: AtomicU32,
    queue: Mutex<CmdSnQueue<Option<Delivery>>>,
}

/// A SCSI command that reached the window: who owns it, and how it enters
/// its LU's task set once it is in CmdSN order.
#[derive(Debug)]
pub struct Delivery {
    pub cid: u16,
    pub itt: u32,
    pub lun: u64,
    pub attr: TaskAttr,
}

/// A delivered command's place in its task set; completes it on drop.
pub struct TaskSetSlot {
    sets: Arc<TaskSets>,
    lun: u64,
    ticket: Ticket,
}

impl std::fmt::Debug for TaskSetSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSetSlot")
            .field("lun", &self.lun)
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

impl Drop for TaskSetSlot {
    fn drop(&mut self) {
        self.sets.complete(self.lun, self.ticket);
    }
}

/// Waits until the task may run (SAM-5 §8.6); `None` when it may now.
pub type EnableWait = Option<tokio::sync::oneshot::Receiver<()>>;

/// A command in CmdSN order, entered in its task set.
#[derive(Debug)]
pub struct Delivered {
    pub cid: u16,
    pub itt: u32,
    pub slot: TaskSetSlot,
    pub wait: EnableWait,
}

/// One LU's task set: tasks named by (nexus, ITT), woken by a oneshot.
type LuTaskSet = TaskSet<(u64, u32), tokio::sync::oneshot::Sender<()>>;

/// The task sets of one target's LUs, by LUN.
#[derive(Debug, Default)]
pub struct TaskSets {
    sets: Mutex<HashMap<u64, LuTaskSet>>,
}

impl TaskSets {
    fn enter(self: &Arc<Self>, nexus: u64, d: &Delivery) -> (TaskSetSlot, EnableWait) {
        let mut sets = self.sets.lock().expect("task sets lock");
        let (ticket, wait) = sets.entry(d.lun).or_default().enter(
            (nexus, d.itt),
            d.attr,
            tokio::sync::oneshot::channel,
        );
        (
            TaskSetSlot {
                sets: self.clone(),
                lun: d.lun,
                ticket,
            },
            wait,
        )
    }

    fn complete(&self, lun: u64, ticket: Ticket) {
        let mut sets = self.sets.lock().expect("task sets lock");
        if let Some(set) = sets.get_mut(&lun) {
            set.complete(ticket, |w| {
                let _ = w.send(());
            });
        }
    }

    /// Wakes blocked tasks that were aborted so they end without running
    /// (their waiter sees the channel close).
    pub fn wake_aborted(&self, pred: impl Fn(u64, u32) -> bool) {
        let mut sets = self.sets.lock().expect("task sets lock");
        for set in sets.values_mut() {
            drop(set.take_waiters(|(n, i)| pred(*n, *i)));
        }
    }
}

impl CmdWindow {
    pub fn new(exp_cmd_sn: u32, depth: u32) -> CmdWindow {
        let queue = CmdSnQueue::new(exp_cmd_sn, depth);
        CmdWindow {
            exp_cmd_sn: AtomicU32::new(queue.exp_cmd_sn()),
            max_cmd_sn: AtomicU32::new(queue.max_cmd_sn()),
            queue: Mutex::new(queue),
        }
    }

    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.load(Ordering::Acquire)
    }

    pub fn max_cmd_sn(&self) -> u32 {
        self.max_cmd_sn.load(Ordering::Acquire)
    }

    fn publish(&self, q: &CmdSnQueue<Option<Delivery>>) {
        self.exp_cmd_sn.store(q.exp_cmd_sn(), Ordering::Release);
        self.max_cmd_sn.store(q.max_cmd_sn(), Ordering::Release);
    }

    /// A SCSI command's CmdSN: false when dropped (outside the window),
    /// else held (ahead of ExpCmdSN) or delivered. Delivered commands, this one and the held
    /// ones it released, enter their task sets here, under the window's
    /// lock, so every LU sees them in CmdSN order; they are pushed to `out`.
    pub fn arrive(
        &self,
        cmd_sn: u32,
        immediate: bool,
        d: Delivery,
        nexus: u64,
        sets: &Arc<TaskSets>,
        out: &mut Vec<Delivered>,
    ) -> bool {
        let mut q = self.queue.lock().expect("window lock");
        let verdict = q.arrive(cmd_sn, immediate, true, true, Some(d), |d| {
            let Some(d) = d else { return };
            let (slot, wait) = sets.enter(nexus, &d);
            out.push(Delivered {
                cid: d.cid,
                itt: d.itt,
                slot,
                wait,
            });
        });
        self.publish(&q);
        !matches!(verdict, Arrival::Drop(_))
    }

    /// A counted command finished: the window opens by one.
    pub fn complete(&self) {
        let mut q = self.queue.lock().expect("window lock");
        q.complete();
        self.publish(&q);
    }

    /// Holds MaxCmdSN (write budget spent) or releases it; true when
    /// MaxCmdSN moved and the initiator should hear of it.
    pub fn set_throttled(&self, throttled: bool) -> bool {
        let mut q = self.queue.lock().expect("window lock");
        let moved = q.set_throttled(throttled);
        self.publish(&q);
        moved
    }

    /// Forgets the held commands (the session ends).
    pub fn drain_held(&self) {
        let mut q = self.queue.lock().expect("window lock");
        q.drain_held();
        self.publish(&q);
    }
}

impl CmdSnCheck for CmdWindow {
    fn accept(&self, cmd_sn: u32, immediate: bool) -> bool {
        let mut q = self.queue.lock().expect("window lock");
        let v = q.arrive(cmd_sn, immediate, false, false, None, |_| {});
        self.publish(&q);
        !matches!(v, Arrival::Drop(_))
    }

    fn exp_cmd_sn(&self) -> u32 {
        CmdWindow::exp_cmd_sn(self)
    }
}
