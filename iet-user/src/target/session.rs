//! Sessions as the full-feature phase sees them: the CmdSN window shared by
//! a session's connections, and the table of its live tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub use super::window::{CmdWindow, Delivered, Delivery, EnableWait, TaskSetSlot, TaskSets};
use crate::scsi::ItNexus;

/// A command that is running or waiting for data.
#[derive(Debug)]
pub struct TaskEntry {
    /// Flat LUN number.
    pub lun: u64,
    pub cmd_sn: u32,
    pub cid: u16,
    pub aborted: Arc<AtomicBool>,
    /// Its completion claimed the answer, which is on its way to the
    /// writer: too late to abort, and task management waits for it.
    pub answering: bool,
}

/// What aborting one task found.
#[derive(Debug, Clone)]
pub enum Abort {
    /// Marked aborted: it will answer nothing.
    Aborted,
    /// Its answer is being sent; the flag identifies it for
    /// [`TaskTable::answered`].
    Answering(Arc<AtomicBool>),
    /// No such task (done already).
    Unknown,
}

/// Live tasks of one session, by Initiator Task Tag.
#[derive(Debug, Default)]
pub struct TaskTable {
    tasks: Mutex<HashMap<u32, TaskEntry>>,
    /// Woken whenever an answering task's answer is queued.
    released: tokio::sync::Notify,
}

impl TaskTable {
    /// Registers a task; false when the ITT is already in use.
    pub fn insert(&self, itt: u32, entry: TaskEntry) -> bool {
        let mut tasks = self.tasks.lock().expect("task lock");
        if tasks.contains_key(&itt) {
            return false;
        }
        tasks.insert(itt, entry);
        true
    }

    /// A task completes: claims its answer if it is still this task (not
    /// aborted, not replaced by a new command reusing the ITT). Whoever
    /// settles the entry first, completion or abort, is the one that answers.
    pub fn claim(&self, itt: u32, task: &Arc<AtomicBool>) -> bool {
        let mut tasks = self.tasks.lock().expect("task lock");
        match tasks.get_mut(&itt) {
            Some(e) if Arc::ptr_eq(&e.aborted, task) && !e.answering => {
                e.answering = true;
                true
            }
            _ => false,
        }
    }

    /// Forgets the task if it is still this one (its answer is queued, or
    /// it ended without one).
    pub fn release(&self, itt: u32, task: &Arc<AtomicBool>) {
        let answered = {
            let mut tasks = self.tasks.lock().expect("task lock");
            match tasks.get(&itt) {
                Some(e) if Arc::ptr_eq(&e.aborted, task) => {
                    tasks.remove(&itt).is_some_and(|e| e.answering)
                }
                _ => false,
            }
        };
        if answered {
            self.released.notify_waiters();
        }
    }

    /// Whether this task's answer is still on its way.
    fn is_answering(&self, itt: u32, task: &Arc<AtomicBool>) -> bool {
        self.tasks
            .lock()
            .expect("task lock")
            .get(&itt)
            .is_some_and(|e| Arc::ptr_eq(&e.aborted, task))
    }

    /// Waits until the answer of a task that [`Abort::Answering`] named is
    /// queued, up to `deadline`; false when it was not by then.
    pub async fn answered(
        &self,
        itt: u32,
        task: &Arc<AtomicBool>,
        deadline: tokio::time::Instant,
    ) -> bool {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.is_answering(itt, task) {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return !self.is_answering(itt, task);
            }
        }
    }

    /// Marks one task aborted and forgets it, unless its answer is on its
    /// way already.
    pub fn abort(&self, itt: u32) -> (Abort, Option<TaskEntry>) {
        let mut tasks = self.tasks.lock().expect("task lock");
        match tasks.get(&itt) {
            None => (Abort::Unknown, None),
            Some(e) if e.answering => (Abort::Answering(e.aborted.clone()), None),
            Some(_) => {
                let entry = tasks.remove(&itt);
                if let Some(e) = &entry {
                    e.aborted.store(true, Ordering::Release);
                }
                (Abort::Aborted, entry)
            }
        }
    }

    /// Aborts every task matching `pred`; returns their ITTs.
    pub fn abort_where(&self, pred: impl Fn(&TaskEntry) -> bool) -> Vec<u32> {
        let mut tasks = self.tasks.lock().expect("task lock");
        let itts: Vec<u32> = tasks
            .iter()
            .filter(|(_, e)| !e.answering && pred(e))
            .map(|(i, _)| *i)
            .collect();
        for itt in &itts {
            if let Some(e) = tasks.remove(itt) {
                e.aborted.store(true, Ordering::Release);
            }
        }
        itts
    }

    /// The tasks as task management sees them.
    pub fn views(&self, nexus: u64, out: &mut Vec<crate::proto::ffp::tmf::TaskView>) {
        let tasks = self.tasks.lock().expect("task lock");
        out.extend(
            tasks
                .iter()
                .map(|(itt, e)| crate::proto::ffp::tmf::TaskView {
                    nexus,
                    itt: *itt,
                    lun: e.lun,
                    cmd_sn: e.cmd_sn,
                }),
        );
    }

    pub fn len(&self) -> usize {
        self.tasks.lock().expect("task lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Identity of a session (RFC 7143 §4.4.1): the initiator's ISID and
/// name, and the TSIH we assigned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    pub initiator_name: String,
    pub isid: [u8; 6],
    pub tsih: u16,
}

/// Formats an ISID for initiator port names and logs.
pub fn isid_hex(isid: &[u8; 6]) -> String {
    use std::fmt::Write;
    isid.iter().fold(String::with_capacity(12), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The SCSI target port of a target in portal group `tpgt` (RFC 7143 §4.4.1 iSCSI
/// target port name); the tag is its relative target port identifier.
pub fn target_port(target_name: &str, tpgt: u16) -> crate::scsi::TargetPort {
    crate::scsi::TargetPort {
        name: format!("{target_name},t,0x{tpgt:04x}"),
        relative_id: tpgt,
    }
}

/// The I_T nexus of a session.
pub fn nexus_for(
    id: u64,
    initiator_name: &str,
    isid: &[u8; 6],
    target_name: &str,
    tpgt: u16,
) -> ItNexus {
    let port = target_port(target_name, tpgt);
    ItNexus {
        id,
        initiator_port: format!("{initiator_name},i,0x{}", isid_hex(isid)),
        target_port: port.name,
        relative_target_port: port.relative_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_table_aborts() {
        let t = TaskTable::default();
        let flag = Arc::new(AtomicBool::new(false));
        assert!(t.insert(
            1,
            TaskEntry {
                lun: 0,
                cmd_sn: 1,
                cid: 0,
                aborted: flag.clone(),
                answering: false,
            }
        ));
        assert!(!t.insert(
            1,
            TaskEntry {
                lun: 0,
                cmd_sn: 2,
                cid: 0,
                aborted: Arc::default(),
                answering: false,
            }
        ));
        assert!(matches!(t.abort(1).0, Abort::Aborted));
        assert!(flag.load(Ordering::Acquire));
        assert!(t.is_empty());
    }

    /// A task whose completion claimed the answer is not aborted; the
    /// abort sees it answering, and waits until its answer is released.
    #[test]
    fn answering_task_is_waited_for() {
        let t = Arc::new(TaskTable::default());
        let flag = Arc::new(AtomicBool::new(false));
        let entry = TaskEntry {
            lun: 0,
            cmd_sn: 1,
            cid: 0,
            aborted: flag.clone(),
            answering: false,
        };
        assert!(t.insert(7, entry));
        assert!(t.claim(7, &flag));
        assert!(!t.claim(7, &flag), "claimed once");
        assert!(matches!(t.abort(7).0, Abort::Answering(f) if Arc::ptr_eq(&f, &flag)));
        assert!(!flag.load(Ordering::Acquire), "not aborted");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
            assert!(!t.answered(7, &flag, soon).await, "still answering");
            let (t2, f2) = (t.clone(), flag.clone());
            let later = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            let waiter = tokio::spawn(async move { t2.answered(7, &f2, later).await });
            tokio::task::yield_now().await;
            t.release(7, &flag);
            assert!(waiter.await.expect("waiter"), "released");
        });
        assert!(t.is_empty());
        assert!(matches!(t.abort(7).0, Abort::Unknown));
    }
}

/// Operational parameters the full-feature phase runs with, derived from
/// the login's negotiated values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FfpParams {
    pub write: crate::proto::task::WriteParams,
    /// The initiator's MaxRecvDataSegmentLength: our largest Data-In.
    pub max_send_segment: u32,
    pub max_burst_length: u32,
    pub queued_commands: u32,
}

/// How a session was opened.
#[derive(Debug, Clone)]
pub enum SessionKind {
    Normal {
        target: Arc<super::Target>,
        nexus: Arc<ItNexus>,
    },
    Discovery,
}

/// One live control handle per connection of a session.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub cid: u16,
    pub local: std::net::SocketAddr,
    pub peer: std::net::SocketAddr,
    /// Cancelling closes the connection at once.
    pub cancel: tokio_util::sync::CancellationToken,
    /// Asks the connection to log out (Async Message) before closing.
    pub logout_request: Arc<tokio::sync::Notify>,
    pub tx_counters: Arc<crate::transport::writer::TxCounters>,
    /// What other connections and sessions tell this one.
    pub inbox: Arc<Inbox>,
}

/// News for a connection from elsewhere in the target.
#[derive(Debug)]
pub enum ConnNews {
    /// One of its commands is now in CmdSN order (another connection of
    /// the session filled the gap before it).
    Delivered(Delivered),
    /// One of its tasks was aborted (task management, another session).
    Aborted(u32),
}

/// A connection's mailbox: pushed from any thread, drained by its task.
#[derive(Debug, Default)]
pub struct Inbox {
    news: Mutex<Vec<ConnNews>>,
    pub notify: tokio::sync::Notify,
}

impl Inbox {
    pub fn push(&self, news: ConnNews) {
        self.news.lock().expect("inbox lock").push(news);
        self.notify.notify_one();
    }

    /// Takes everything queued so far into `out`.
    pub fn drain_into(&self, out: &mut Vec<ConnNews>) {
        out.append(&mut self.news.lock().expect("inbox lock"));
    }
}

/// A logged-in session, shared by its connections.
#[derive(Debug)]
pub struct Session {
    pub id: SessionId,
    pub kind: SessionKind,
    pub params: FfpParams,
    /// The negotiated keys as sent on the wire, for management views: the
    /// session's, then the leading connection's once it is up.
    pub negotiated: Mutex<Vec<(String, String)>>,
    /// What this session's writes may hold (and the daemon's share).
    pub budgets: crate::proto::ffp::admission::Budgets,
    /// Negotiated MaxConnections (MC/S).
    pub max_connections: u16,
    pub window: Arc<CmdWindow>,
    pub tasks: TaskTable,
    pub stats: super::stats::CommandStats,
    pub connections: Mutex<HashMap<u16, ConnHandle>>,
    /// Cancelled when the whole session ends.
    pub closed: tokio_util::sync::CancellationToken,
}

impl Session {
    pub fn target(&self) -> Option<&Arc<super::Target>> {
        match &self.kind {
            SessionKind::Normal { target, .. } => Some(target),
            SessionKind::Discovery => None,
        }
    }

    pub fn nexus(&self) -> Option<&ItNexus> {
        match &self.kind {
            SessionKind::Normal { nexus, .. } => Some(nexus),
            SessionKind::Discovery => None,
        }
    }

    /// The negotiated keys for management views.
    pub fn negotiated(&self) -> Vec<(String, String)> {
        self.negotiated.lock().expect("negotiated lock").clone()
    }

    /// The connection with this CID, if it is up.
    pub fn connection(&self, cid: u16) -> Option<ConnHandle> {
        self.connections
            .lock()
            .expect("conn lock")
            .get(&cid)
            .cloned()
    }

    /// Aborts one task: it answers nothing, and its owner connection drops
    /// what it holds for it at once (pending Data-Out included). A task
    /// whose answer is on its way already is left to finish.
    pub fn abort_task(&self, itt: u32) -> Abort {
        let (found, entry) = self.tasks.abort(itt);
        let Some(entry) = entry else {
            return found;
        };
        if let Some(conn) = self.connection(entry.cid) {
            conn.inbox.push(ConnNews::Aborted(itt));
        }
        if let Some(t) = self.target() {
            let nexus = self.nexus().map_or(0, |n| n.id);
            t.task_sets.wake_aborted(|n, i| n == nexus && i == itt);
        }
        found
    }

    /// Closes every connection of the session now.
    pub fn close(&self) {
        self.closed.cancel();
        for conn in self.connections.lock().expect("conn lock").values() {
            conn.cancel.cancel();
        }
    }
}

/// One command's claim on its session, from acceptance to answer: its
/// window slot, its task-table entry and (once delivered) its place in the
/// LU's task set. Dropping it frees all three, whoever drops it.
#[derive(Debug)]
pub struct TaskSlot {
    session: Arc<Session>,
    itt: u32,
    aborted: Arc<AtomicBool>,
    set: Option<TaskSetSlot>,
    in_window: bool,
    /// [`TaskSlot::finish`] handed the task-table entry to an [`Answer`].
    claimed: bool,
}

/// A completed command's right to answer, held until its answer PDUs are
/// queued on the connection's writer: task management that finds the task
/// answering waits for this to drop before it answers itself (RFC 7143
/// §11.6.2: no response of an affected task after the TMF response).
#[derive(Debug)]
pub struct Answer {
    session: Arc<Session>,
    itt: u32,
    task: Arc<AtomicBool>,
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.session.tasks.release(self.itt, &self.task);
    }
}

impl TaskSlot {
    /// Registers a task in the session's table; `None` when the ITT is in
    /// use. The window slot is taken by [`CmdWindow::arrive`].
    pub fn register(
        session: &Arc<Session>,
        itt: u32,
        lun: u64,
        cmd_sn: u32,
        cid: u16,
    ) -> Option<TaskSlot> {
        let aborted = Arc::new(AtomicBool::new(false));
        let entry = TaskEntry {
            lun,
            cmd_sn,
            cid,
            aborted: aborted.clone(),
            answering: false,
        };
        session.tasks.insert(itt, entry).then(|| TaskSlot {
            session: session.clone(),
            itt,
            aborted,
            set: None,
            in_window: false,
            claimed: false,
        })
    }

    pub fn itt(&self) -> u32 {
        self.itt
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// The window took the command: it holds a slot until dropped.
    pub fn accepted(&mut self) {
        self.in_window = true;
    }

    /// The command is in CmdSN order and in its task set.
    pub fn delivered(&mut self, set: TaskSetSlot) {
        self.set = Some(set);
    }

    /// The command is done: frees its window slot and task-set place, and
    /// returns its right to answer unless it was aborted (or replaced).
    pub fn finish(mut self) -> Option<Answer> {
        if !self.session.tasks.claim(self.itt, &self.aborted) || self.is_aborted() {
            return None;
        }
        self.claimed = true;
        Some(Answer {
            session: self.session.clone(),
            itt: self.itt,
            task: self.aborted.clone(),
        })
        // Drop frees the window slot and the task set entry, before the
        // answer goes out (its MaxCmdSN shows the freed slot).
    }
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        if !self.claimed {
            self.session.tasks.release(self.itt, &self.aborted);
        }
        self.set.take();
        if self.in_window {
            self.session.window.complete();
        }
    }
}
