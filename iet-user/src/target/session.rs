//! Sessions as the full-feature phase sees them: the CmdSN window shared by
//! a session's connections, and the table of its live tasks.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::proto::seq;
use crate::scsi::ItNexus;

/// ExpCmdSN/MaxCmdSN bookkeeping (RFC 7143 §4.2.2.1). MaxCmdSN opens as
/// commands complete, so the window bounds the commands queued per session.
#[derive(Debug)]
pub struct CmdWindow {
    exp_cmd_sn: AtomicU32,
    max_cmd_sn: AtomicU32,
    inner: Mutex<WindowState>,
}

#[derive(Debug)]
struct WindowState {
    exp_cmd_sn: u32,
    /// CmdSNs received ahead of ExpCmdSN (possible with several connections).
    ahead: BTreeSet<u32>,
    active: u32,
    depth: u32,
}

/// What to do with a non-immediate command's CmdSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdSnVerdict {
    Accept,
    /// Outside the window or a duplicate: silently ignored (RFC 7143 §4.2.2.1).
    Drop,
}

impl CmdWindow {
    pub fn new(exp_cmd_sn: u32, depth: u32) -> CmdWindow {
        let depth = depth.max(1);
        CmdWindow {
            exp_cmd_sn: AtomicU32::new(exp_cmd_sn),
            max_cmd_sn: AtomicU32::new(exp_cmd_sn.wrapping_add(depth - 1)),
            inner: Mutex::new(WindowState {
                exp_cmd_sn,
                ahead: BTreeSet::new(),
                active: 0,
                depth,
            }),
        }
    }

    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.load(Ordering::Acquire)
    }

    pub fn max_cmd_sn(&self) -> u32 {
        self.max_cmd_sn.load(Ordering::Acquire)
    }

    /// Checks a command's CmdSN; an accepted command counts as active
    /// until [`CmdWindow::complete`] when `counts` is set.
    pub fn accept(&self, cmd_sn: u32, immediate: bool, counts: bool) -> CmdSnVerdict {
        let mut st = self.inner.lock().expect("window lock");
        if !immediate {
            let max = self.max_cmd_sn();
            if !seq::in_window(cmd_sn, st.exp_cmd_sn, max) || st.ahead.contains(&cmd_sn) {
                return CmdSnVerdict::Drop;
            }
            if cmd_sn == st.exp_cmd_sn {
                st.exp_cmd_sn = st.exp_cmd_sn.wrapping_add(1);
                loop {
                    let next = st.exp_cmd_sn;
                    if !st.ahead.remove(&next) {
                        break;
                    }
                    st.exp_cmd_sn = next.wrapping_add(1);
                }
            } else {
                st.ahead.insert(cmd_sn);
            }
        }
        if counts {
            st.active += 1;
        }
        self.publish(&st);
        CmdSnVerdict::Accept
    }

    /// A counted command finished: the window opens by one.
    pub fn complete(&self) {
        let mut st = self.inner.lock().expect("window lock");
        st.active = st.active.saturating_sub(1);
        self.publish(&st);
    }

    fn publish(&self, st: &WindowState) {
        let room = st.depth.saturating_sub(st.active).max(1);
        let max = st.exp_cmd_sn.wrapping_add(room - 1);
        self.exp_cmd_sn.store(st.exp_cmd_sn, Ordering::Release);
        // MaxCmdSN never moves backwards (RFC 7143 §4.2.2.1).
        let old = self.max_cmd_sn.load(Ordering::Acquire);
        if seq::gt(max, old) {
            self.max_cmd_sn.store(max, Ordering::Release);
        }
    }
}

/// A command that is running or waiting for data.
#[derive(Debug)]
pub struct TaskEntry {
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

/// The I_T nexus of a session.
pub fn nexus_for(
    id: u64,
    initiator_name: &str,
    isid: &[u8; 6],
    target_name: &str,
    tpgt: u16,
) -> ItNexus {
    ItNexus {
        id,
        initiator_port: format!("{initiator_name},i,0x{}", isid_hex(isid)),
        target_port: format!("{target_name},t,0x{tpgt:04x}"),
        relative_target_port: tpgt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_in_order_and_drops_outside() {
        let w = CmdWindow::new(10, 4);
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (10, 13));
        assert_eq!(w.accept(10, false, true), CmdSnVerdict::Accept);
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (11, 13));
        assert_eq!(
            w.accept(14, false, true),
            CmdSnVerdict::Drop,
            "beyond MaxCmdSN"
        );
        assert_eq!(w.accept(9, false, true), CmdSnVerdict::Drop, "already seen");
        w.complete();
        assert_eq!(w.max_cmd_sn(), 14);
    }

    #[test]
    fn gaps_fill_across_connections() {
        let w = CmdWindow::new(0, 8);
        assert_eq!(w.accept(2, false, false), CmdSnVerdict::Accept);
        assert_eq!(w.accept(1, false, false), CmdSnVerdict::Accept);
        assert_eq!(w.exp_cmd_sn(), 0);
        assert_eq!(w.accept(2, false, false), CmdSnVerdict::Drop, "duplicate");
        assert_eq!(w.accept(0, false, false), CmdSnVerdict::Accept);
        assert_eq!(w.exp_cmd_sn(), 3);
    }

    #[test]
    fn immediate_does_not_advance() {
        let w = CmdWindow::new(5, 4);
        assert_eq!(w.accept(5, true, false), CmdSnVerdict::Accept);
        assert_eq!(w.exp_cmd_sn(), 5);
    }

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
}

/// A logged-in session, shared by its connections.
#[derive(Debug)]
pub struct Session {
    pub id: SessionId,
    pub kind: SessionKind,
    pub params: FfpParams,
    /// The negotiated keys as sent on the wire, for management views.
    pub negotiated: Vec<(String, String)>,
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

    /// Closes every connection of the session now.
    pub fn close(&self) {
        self.closed.cancel();
        for conn in self.connections.lock().expect("conn lock").values() {
            conn.cancel.cancel();
        }
    }
}
