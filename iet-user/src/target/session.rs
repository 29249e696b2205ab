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
}

/// Live tasks of one session, by Initiator Task Tag.
#[derive(Debug, Default)]
pub struct TaskTable {
    tasks: Mutex<HashMap<u32, TaskEntry>>,
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

    /// A task completes: removes it if it is still this task (not aborted,
    /// not replaced by a new command reusing the ITT). Whoever removes the
    /// entry, completion or abort, is the one that answers.
    pub fn complete(&self, itt: u32, task: &Arc<AtomicBool>) -> bool {
        let mut tasks = self.tasks.lock().expect("task lock");
        if tasks
            .get(&itt)
            .is_some_and(|e| Arc::ptr_eq(&e.aborted, task))
        {
            tasks.remove(&itt);
            return true;
        }
        false
    }

    pub fn remove(&self, itt: u32) -> Option<TaskEntry> {
        self.tasks.lock().expect("task lock").remove(&itt)
    }

    /// Marks one task aborted and forgets it; returns its LUN.
    pub fn abort(&self, itt: u32) -> Option<u64> {
        let entry = self.remove(itt)?;
        entry.aborted.store(true, Ordering::Release);
        Some(entry.lun)
    }

    /// Aborts every task matching `pred`; returns their ITTs.
    pub fn abort_where(&self, pred: impl Fn(&TaskEntry) -> bool) -> Vec<u32> {
        let mut tasks = self.tasks.lock().expect("task lock");
        let itts: Vec<u32> = tasks
            .iter()
            .filter(|(_, e)| pred(e))
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
                aborted: flag.clone()
            }
        ));
        assert!(!t.insert(
            1,
            TaskEntry {
                lun: 0,
                cmd_sn: 2,
                cid: 0,
                aborted: Arc::default()
            }
        ));
        assert_eq!(t.abort(1), Some(0));
        assert!(flag.load(Ordering::Acquire));
        assert!(t.is_empty());
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
    /// what it holds for it at once (pending Data-Out included).
    pub fn abort_task(&self, itt: u32) -> bool {
        let Some(entry) = self.tasks.remove(itt) else {
            return false;
        };
        entry.aborted.store(true, Ordering::Release);
        if let Some(conn) = self.connection(entry.cid) {
            conn.inbox.push(ConnNews::Aborted(itt));
        }
        if let Some(t) = self.target() {
            let nexus = self.nexus().map_or(0, |n| n.id);
            t.task_sets.wake_aborted(|n, i| n == nexus && i == itt);
        }
        true
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
        };
        session.tasks.insert(itt, entry).then(|| TaskSlot {
            session: session.clone(),
            itt,
            aborted,
            set: None,
            in_window: false,
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

    /// The command is done: frees everything and says whether it still
    /// owns its answer (not aborted, not replaced).
    pub fn finish(self) -> bool {
        let owned = self.session.tasks.complete(self.itt, &self.aborted);
        owned && !self.is_aborted()
        // Drop frees the window slot and the task set entry, before the
        // answer goes out (its MaxCmdSN shows the freed slot).
    }
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        self.session.tasks.complete(self.itt, &self.aborted);
        self.set.take();
        if self.in_window {
            self.session.window.complete();
        }
    }
}
