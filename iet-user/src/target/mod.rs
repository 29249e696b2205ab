//! The live registry: targets and their LUNs, portals, access rules and the
//! table of sessions by TSIH and by (initiator, ISID, target).

pub mod acl;
pub mod limits;
pub mod session;
pub mod stats;
pub mod tmf;
pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::proto::params::TargetParams;
use crate::scsi::LogicalUnits;
pub use acl::Acl;
use session::Session;

/// A CHAP user name and secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChapAccount {
    pub user: String,
    pub secret: String,
}

/// Per-target settings an admin can change at runtime.
#[derive(Debug, Clone, Default)]
pub struct TargetSettings {
    pub alias: Option<String>,
    /// CHAP accounts an initiator may authenticate as; empty: no CHAP.
    pub incoming: Vec<ChapAccount>,
    /// The account the target answers mutual CHAP with.
    pub outgoing: Option<ChapAccount>,
    pub acl: Acl,
    /// Negotiation limits, NOP timers and the command window.
    pub params: TargetParams,
}

impl TargetSettings {
    /// Idle time before a NOP-In ping; `None` disables pings.
    pub fn nop_interval(&self) -> Option<Duration> {
        (self.params.nop_interval_secs > 0)
            .then(|| Duration::from_secs(u64::from(self.params.nop_interval_secs)))
    }

    pub fn nop_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.params.nop_timeout_secs.max(1)))
    }
}

#[derive(Debug)]
pub struct Target {
    /// IET's target id, shown in the /proc formats.
    pub tid: u32,
    pub name: String,
    pub luns: Arc<LogicalUnits>,
    /// One thread per LU for buffered writes, shared by every session.
    pub lanes: Arc<crate::transport::lane::WriteLanes<crate::transport::exec::LaneWrite>>,
    pub settings: RwLock<TargetSettings>,
    /// How each LUN was configured, for `ietadm save` and views.
    pub lun_specs: Mutex<BTreeMap<u64, crate::config::LunSpec>>,
    /// Commands of every session this target has had.
    pub stats: stats::CommandStats,
    /// Each LU's task set (SAM-5 §8), shared by every session.
    pub task_sets: Arc<session::TaskSets>,
}

impl Target {
    pub fn new(name: &str, settings: TargetSettings) -> Target {
        Target {
            tid: 0,
            name: name.to_owned(),
            luns: Arc::new(LogicalUnits::new()),
            lanes: Arc::default(),
            settings: RwLock::new(settings),
            lun_specs: Mutex::new(BTreeMap::new()),
            stats: stats::CommandStats::default(),
            task_sets: Arc::default(),
        }
    }

    pub fn settings(&self) -> TargetSettings {
        self.settings.read().expect("settings lock").clone()
    }
}

/// A listening address, and the address advertised for it in SendTargets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    pub listen: SocketAddr,
    pub advertise: Option<SocketAddr>,
    /// Its portal group: every target is one SCSI target port per group.
    pub tpgt: u16,
}

/// The SCSI target ports of target `name`: one per portal group (SAM-5 §4.6.5).
fn target_ports(name: &str, portals: &[Portal]) -> Vec<crate::scsi::TargetPort> {
    let mut tags: Vec<u16> = portals.iter().map(|p| p.tpgt).collect();
    tags.sort_unstable();
    tags.dedup();
    tags.into_iter()
        .map(|tpgt| session::target_port(name, tpgt))
        .collect()
}

/// Why a session could not be created or joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("no session with that TSIH")]
    SessionDoesNotExist,
    #[error("the session has its maximum number of connections")]
    TooManyConnections,
}

#[derive(Debug, Default)]
struct SessionTable {
    by_tsih: HashMap<u16, Arc<Session>>,
    next_tsih: u16,
}

#[derive(Debug, Default)]
pub struct Registry {
    targets: RwLock<BTreeMap<String, Arc<Target>>>,
    sessions: Mutex<SessionTable>,
    portals: RwLock<Vec<Portal>>,
    nexus_ids: AtomicU64,
    /// CHAP for discovery sessions; empty: none required.
    pub discovery_incoming: RwLock<Vec<ChapAccount>>,
    pub discovery_outgoing: RwLock<Option<ChapAccount>>,
    /// iSNSAccessControl: when set, a login needs the iSNS server's consent.
    pub isns_access: std::sync::OnceLock<Arc<crate::isns::Access>>,
    /// The eBPF data plane, once the daemon has started it.
    pub dataplane: std::sync::OnceLock<Arc<crate::dataplane::Dataplane>>,
    /// Memory admission for write data.
    pub admission: Admission,
    /// Abuse limits on logins.
    pub limits: limits::Limits,
}

/// Default bytes of write data one session may hold.
pub const DEFAULT_SESSION_WRITE_BUDGET: u64 = 64 << 20;
/// Default bytes of write data all sessions together may hold.
pub const DEFAULT_DAEMON_WRITE_BUDGET: u64 = 1024 << 20;

/// The daemon-wide write budget, the per-session limit, and the wake-up
/// for connections whose writes wait for budget.
#[derive(Debug)]
pub struct Admission {
    pub daemon: Arc<crate::proto::ffp::admission::Budget>,
    pub session_limit: std::sync::atomic::AtomicU64,
    pub freed: Arc<tokio::sync::Notify>,
}

impl Admission {
    pub fn new(daemon_limit: u64, session_limit: u64) -> Admission {
        let freed = Arc::new(tokio::sync::Notify::new());
        let wake = freed.clone();
        Admission {
            daemon: crate::proto::ffp::admission::Budget::new(
                daemon_limit,
                Some(Arc::new(move || wake.notify_waiters())),
            ),
            session_limit: AtomicU64::new(session_limit),
            freed,
        }
    }

    /// Sets both limits; the session limit applies to new sessions.
    pub fn set_limits(&self, daemon: u64, session: u64) {
        self.daemon.set_limit(daemon);
        self.session_limit.store(session, Ordering::Relaxed);
    }

    /// Budgets for a new session.
    pub fn for_session(&self) -> crate::proto::ffp::admission::Budgets {
        let wake = self.freed.clone();
        crate::proto::ffp::admission::Budgets {
            session: crate::proto::ffp::admission::Budget::new(
                self.session_limit.load(Ordering::Relaxed),
                Some(Arc::new(move || wake.notify_waiters())),
            ),
            daemon: self.daemon.clone(),
        }
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(DEFAULT_DAEMON_WRITE_BUDGET, DEFAULT_SESSION_WRITE_BUDGET)
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a target under a fresh tid; `None` when the name is taken.
    pub fn add_target(&self, mut target: Target) -> Option<Arc<Target>> {
        let mut targets = self.targets.write().expect("targets lock");
        if targets.contains_key(&target.name) {
            return None;
        }
        target.tid = targets.values().map(|t| t.tid).max().unwrap_or(0) + 1;
        let target = Arc::new(target);
        target
            .luns
            .set_target_ports(target_ports(&target.name, &self.portals()));
        targets.insert(target.name.clone(), target.clone());
        Some(target)
    }

    pub fn remove_target(&self, name: &str) -> Option<Arc<Target>> {
        self.targets.write().expect("targets lock").remove(name)
    }

    pub fn target(&self, name: &str) -> Option<Arc<Target>> {
        self.targets
            .read()
            .expect("targets lock")
            .get(name)
            .cloned()
    }

    pub fn targets(&self) -> Vec<Arc<Target>> {
        self.targets
            .read()
            .expect("targets lock")
            .values()
            .cloned()
            .collect()
    }

    /// Replaces the portals, and so the target ports every target's LUs know.
    pub fn set_portals(&self, portals: Vec<Portal>) {
        for t in self.targets() {
            t.luns.set_target_ports(target_ports(&t.name, &portals));
        }
        *self.portals.write().expect("portals lock") = portals;
    }

    /// The portal group of the portal a connection arrived on (`local`: its local address),
    /// a wildcard listener matching by port.
    pub fn portal_group(&self, local: SocketAddr) -> u16 {
        let portals = self.portals.read().expect("portals lock");
        let local_ip = match local.ip() {
            std::net::IpAddr::V6(v6) => {
                v6.to_ipv4_mapped().map_or(local.ip(), std::net::IpAddr::V4)
            }
            ip @ std::net::IpAddr::V4(_) => ip,
        };
        portals
            .iter()
            .find(|p| p.listen.port() == local.port() && p.listen.ip() == local_ip)
            .or_else(|| {
                portals
                    .iter()
                    .find(|p| p.listen.port() == local.port() && p.listen.ip().is_unspecified())
            })
            .map_or(crate::config::DEFAULT_TPGT, |p| p.tpgt)
    }

    pub fn portals(&self) -> Vec<Portal> {
        self.portals.read().expect("portals lock").clone()
    }

    pub fn next_nexus_id(&self) -> u64 {
        self.nexus_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a new session under a fresh TSIH, first closing any
    /// session with the same initiator, ISID and target port (session
    /// reinstatement of that I_T nexus, RFC 7143 §6.3.5: the same ISID through
    /// another portal group is another nexus). Returns the TSIH and the old session.
    pub fn insert_session(
        &self,
        make: impl FnOnce(u16) -> Arc<Session>,
    ) -> (Arc<Session>, Option<Arc<Session>>) {
        let mut table = self.sessions.lock().expect("sessions lock");
        let tsih = loop {
            table.next_tsih = table.next_tsih.wrapping_add(1);
            let t = table.next_tsih;
            if t != 0 && !table.by_tsih.contains_key(&t) {
                break t;
            }
        };
        let session = make(tsih);
        let target_port = session.nexus().map(|n| n.target_port.as_str());
        let old_tsih = table.by_tsih.iter().find_map(|(t, s)| {
            (s.id.initiator_name == session.id.initiator_name
                && s.id.isid == session.id.isid
                && s.nexus().map(|n| n.target_port.as_str()) == target_port)
                .then_some(*t)
        });
        let old = old_tsih.and_then(|t| table.by_tsih.remove(&t));
        table.by_tsih.insert(tsih, session.clone());
        (session, old)
    }

    pub fn session(&self, tsih: u16) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .by_tsih
            .get(&tsih)
            .cloned()
    }

    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .by_tsih
            .values()
            .cloned()
            .collect()
    }

    /// The live connection with these addresses, if any.
    pub fn connection(&self, local: SocketAddr, peer: SocketAddr) -> Option<session::ConnHandle> {
        let norm = |a: SocketAddr| match a {
            SocketAddr::V6(v6) => v6
                .ip()
                .to_ipv4_mapped()
                .map_or(a, |v4| SocketAddr::new(v4.into(), v6.port())),
            v4 @ SocketAddr::V4(_) => v4,
        };
        let (local, peer) = (norm(local), norm(peer));
        self.sessions().iter().find_map(|s| {
            s.connections
                .lock()
                .expect("conn lock")
                .values()
                .find(|c| norm(c.local) == local && norm(c.peer) == peer)
                .cloned()
        })
    }

    /// Forgets a session (its last connection ended).
    /// Removes a connection from its session; the last one out ends the
    /// session (nexus loss).
    pub fn leave_session(&self, session: &Arc<Session>, cid: u16, conn: &session::ConnHandle) {
        let last = {
            let mut conns = session.connections.lock().expect("conn lock");
            if conns
                .get(&cid)
                .is_some_and(|c| Arc::ptr_eq(&c.inbox, &conn.inbox))
            {
                conns.remove(&cid);
            }
            conns.is_empty()
        };
        if last {
            self.end_session(session);
        }
    }

    /// Ends a session: its tasks are aborted (blocked ones woken to end),
    /// held commands forgotten, and SCSI sees the I_T nexus go.
    pub fn end_session(&self, session: &Arc<Session>) {
        session.close();
        let itts = session.tasks.abort_where(|_| true);
        session.window.drain_held();
        if let session::SessionKind::Normal { target, nexus } = &session.kind {
            if !itts.is_empty() {
                let id = nexus.id;
                target.task_sets.wake_aborted(|n, _| n == id);
            }
            target.luns.nexus_loss(nexus);
        }
        self.remove_session(session);
        tracing::info!(tsih = session.id.tsih, "session ended");
    }

    pub fn remove_session(&self, session: &Arc<Session>) {
        let mut table = self.sessions.lock().expect("sessions lock");
        if table
            .by_tsih
            .get(&session.id.tsih)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            table.by_tsih.remove(&session.id.tsih);
        }
    }
}
