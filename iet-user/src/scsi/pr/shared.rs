//! Persistent reservations of a logical unit that several gateways serve (one RBD image
//! exported by several ietd): the state lives in a store they share ([`SharedPrStore`]; for
//! RBD the RADOS object `iet.pr.<image>`, see `backend/rbd/pr.rs`), so a reservation taken
//! through one gateway is enforced through every other (SPC-5 §5.13: the reservation belongs
//! to the logical unit, whatever port it was taken through).
//!
//! - **Updates** (every PERSISTENT RESERVE OUT): [`begin`] takes the store's cross-gateway
//!   lock and reads its copy, the service action runs on that copy as before (`out.rs`),
//!   [`Txn::commit`] writes it back guarded by the version read, and [`Txn::publish`] unlocks
//!   and notifies every gateway, waiting until they heard it, before the status is sent.
//! - **Reads**: a gateway keeps the copy it last read. The store says cheaply (an atomic)
//!   whether a notification arrived since; then [`refresh`] re-reads it before the next
//!   command is checked. After a PR OUT completed, every gateway that acknowledged the
//!   notification has flagged its copy stale, so no later command there is checked against
//!   the old state. A gateway whose watch broke re-reads before every command until the watch
//!   is back (a version check per command, bounded to that degraded case).
//! - **Unit attentions** the service action established (REGISTRATIONS PREEMPTED,
//!   RESERVATIONS PREEMPTED / RELEASED, by initiator and target port) are appended to the
//!   shared copy as numbered events; each gateway establishes, for its own nexuses, those it
//!   has not seen yet when it installs a newer copy, so they are reported on the next command.
//! - **Target ports**: the copy lists every gateway's target ports, each gateway adding its
//!   own before its first command on the LU is checked, so a REGISTER with ALL_TG_PT through
//!   one gateway registers on the others' ports too (SPC-5 §6.17.4). A gateway that has not
//!   yet seen a command on the LU is not listed.
//! - **APTPL** (SPC-5 §5.13.5): the copy always holds the whole state with its APTPL bit. A
//!   gateway that opens the LU while no other gateway has it open (the LU "powers on") drops
//!   a state saved without APTPL.

use std::fmt;
use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::super::exec::Fail;
use super::super::lun::{Lu, LuState};
use super::super::sense::SenseReason;
use super::super::ua::UnitAttentions;
use super::super::{LogicalUnits, TargetPort};
use super::{MAX_REGISTRATIONS, PrState, PrStore};

/// One copy of the shared state and the version it was read at (0: never written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub data: Option<Vec<u8>>,
    pub version: u64,
}

/// PR state shared by every gateway of a logical unit (an opaque blob to the store).
pub trait SharedPrStore: Send + Sync + fmt::Debug {
    /// Cheap (no I/O): whether the copy may have changed since this gateway last read it.
    fn may_have_changed(&self) -> bool;
    /// The current copy. Inside a non-blocking attempt it refuses with `WouldBlock`.
    fn read(&self) -> io::Result<Versioned>;
    /// Excludes every other gateway's update until the returned guard is dropped.
    fn lock(&self) -> io::Result<Box<dyn PrUpdate + '_>>;
    /// Whether no other gateway has the logical unit open.
    fn alone(&self) -> io::Result<bool>;
    /// Tells every gateway the copy changed; returns once they heard it (or a bound passed).
    fn notify(&self);
}

/// A read-modify-write under the store's lock; dropping it unlocks.
pub trait PrUpdate {
    fn read(&mut self) -> io::Result<Versioned>;
    /// Replaces the copy if it is still at `version`; returns the new version.
    fn write(&mut self, data: &[u8], version: u64) -> io::Result<u64>;
}

/// The unit attentions of persistent reservations that cross gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum PrUa {
    RegistrationsPreempted,
    ReservationsPreempted,
    ReservationsReleased,
}

impl PrUa {
    fn of(r: SenseReason) -> Option<Self> {
        match r {
            SenseReason::RegistrationsPreempted => Some(Self::RegistrationsPreempted),
            SenseReason::ReservationsPreempted => Some(Self::ReservationsPreempted),
            SenseReason::ReservationsReleased => Some(Self::ReservationsReleased),
            _ => None,
        }
    }

    fn reason(self) -> SenseReason {
        match self {
            Self::RegistrationsPreempted => SenseReason::RegistrationsPreempted,
            Self::ReservationsPreempted => SenseReason::ReservationsPreempted,
            Self::ReservationsReleased => SenseReason::ReservationsReleased,
        }
    }
}

/// A unit attention for the nexuses of one (initiator port, target port) identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Event {
    seq: u64,
    initiator_port: String,
    target_port: String,
    ua: PrUa,
}

/// The shared copy: the state and the most recent unit attention events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Shared {
    state: PrState,
    events: Vec<Event>,
    /// The number the next event gets.
    next_seq: u64,
    /// Every gateway's target ports (absent in copies written before gateways listed them).
    #[serde(default)]
    ports: Vec<TargetPort>,
}

/// Events kept in the copy; a gateway that did not read for longer misses the oldest.
const MAX_EVENTS: usize = 256;
/// Longer than any iSCSI port name (a 223-byte name, `,i,0x` and 12 hex digits).
const MAX_PORT_NAME: usize = 256;
/// Target ports the copy may list: one portal group per gateway, many times over.
const MAX_PORTS: usize = 256;

impl Shared {
    /// Parses a copy read from the cluster: nothing in it is trusted.
    fn decode(data: Option<&[u8]>) -> io::Result<Shared> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let Some(data) = data.filter(|d| !d.is_empty()) else {
            return Ok(Shared::default());
        };
        let s: Shared = serde_json::from_slice(data)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if s.state.registrations.len() > MAX_REGISTRATIONS
            || s.events.len() > MAX_EVENTS
            || s.ports.len() > MAX_PORTS
            || s.ports.iter().any(|p| p.name.len() > MAX_PORT_NAME)
        {
            return Err(invalid("too many registrations or events"));
        }
        let long = |p: &str| p.len() > MAX_PORT_NAME;
        if s.state
            .registrations
            .iter()
            .any(|r| long(&r.initiator_port) || long(&r.target_port))
            || s.events
                .iter()
                .any(|e| long(&e.initiator_port) || long(&e.target_port) || e.seq >= s.next_seq)
        {
            return Err(invalid("malformed registration or event"));
        }
        if s.state
            .reservation
            .as_ref()
            .is_some_and(|r| !super::valid_type(r.pr_type))
        {
            return Err(invalid("invalid reservation type"));
        }
        Ok(s)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What this gateway last installed from the store (per LU, inside `LuState`).
#[derive(Debug, Default)]
pub(crate) struct Synced {
    version: u64,
    /// Events numbered below this have been established here.
    next_seq: u64,
    /// This gateway's target ports are in the copy.
    ports_listed: bool,
}

/// Installs `shared` (read at `version`) unless the LU already has that copy or a newer
/// one: the state, and the unit attentions other gateways established since the last copy.
fn install(st: &mut LuState, version: u64, shared: &Shared) {
    if version <= st.pr_sync.version {
        return;
    }
    for e in shared
        .events
        .iter()
        .filter(|e| e.seq >= st.pr_sync.next_seq)
    {
        st.ua
            .establish_port(&e.initiator_port, &e.target_port, e.ua.reason());
    }
    st.pr = shared.state.clone();
    st.pr_sync = Synced {
        version,
        next_seq: shared.next_seq,
        ports_listed: st.pr_sync.ports_listed,
    };
}

/// Adds this gateway's target ports to the copy, once per LU, under the store's lock.
fn list_ports(lu: &Lu, store: &dyn SharedPrStore, ours: Vec<TargetPort>) -> io::Result<()> {
    let mut update = store.lock()?;
    let snap = update.read()?;
    let mut shared = Shared::decode(snap.data.as_deref())?;
    let missing: Vec<TargetPort> = ours
        .into_iter()
        .filter(|p| !shared.ports.contains(p))
        .collect();
    let mut version = snap.version;
    if !missing.is_empty() {
        if shared.ports.len() + missing.len() > MAX_PORTS {
            return Err(io::Error::other("too many target ports in the shared copy"));
        }
        shared.ports.extend(missing);
        version = update.write(&shared.encode(), snap.version)?;
    }
    drop(update);
    let mut st = lu.lock();
    install(&mut st, version, &shared);
    st.pr_sync.ports_listed = true;
    drop(st);
    if version != snap.version {
        store.notify();
    }
    Ok(())
}

/// APTPL through the shared copy: it always holds the whole state and its APTPL bit, so
/// the save that `out.rs` does for APTPL has nothing left to do.
#[derive(Debug)]
struct InSharedCopy;

impl PrStore for InSharedCopy {
    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(None)
    }

    fn save(&self, _data: Option<&[u8]>) -> io::Result<()> {
        Ok(())
    }
}

/// The `PrStore` an LU with a shared store reports APTPL support through (PTPL_C).
pub(crate) fn aptpl_store() -> Arc<dyn PrStore> {
    Arc::new(InSharedCopy)
}

/// The state an LU starts with. When no other gateway has the LU open, it powers on:
/// a state saved without APTPL is cleared (SPC-5 §5.13.5), in the store too.
pub(crate) fn load(store: &dyn SharedPrStore) -> io::Result<(PrState, Synced)> {
    let snap = store.read()?;
    let shared = Shared::decode(snap.data.as_deref())?;
    if shared.state.aptpl || !shared.state.is_active() || !store.alone()? {
        let synced = Synced {
            version: snap.version,
            next_seq: shared.next_seq,
            ports_listed: false,
        };
        return Ok((shared.state, synced));
    }
    let mut update = store.lock()?;
    let snap = update.read()?;
    let shared = Shared::decode(snap.data.as_deref())?;
    if shared.state.aptpl {
        let synced = Synced {
            version: snap.version,
            next_seq: shared.next_seq,
            ports_listed: false,
        };
        return Ok((shared.state, synced));
    }
    // The gateways' ports stay listed: they are the target's, not the state's.
    let cleared = Shared {
        next_seq: shared.next_seq,
        ports: shared.ports,
        ..Shared::default()
    };
    let version = update.write(&cleared.encode(), snap.version)?;
    tracing::info!("persistent reservations without APTPL cleared: no other gateway had the LU");
    Ok((
        PrState::default(),
        Synced {
            version,
            next_seq: cleared.next_seq,
            ports_listed: false,
        },
    ))
}

/// Before a command is checked: re-read the shared copy if it may have changed. An error
/// means the state is unknown; commands that a reservation could refuse must not run then.
pub(crate) fn refresh(units: &LogicalUnits, lu: &Lu) -> Result<(), SenseReason> {
    let Some(store) = &lu.pr_shared else {
        return Ok(());
    };
    let listed = lu.lock().pr_sync.ports_listed;
    if listed && !store.may_have_changed() {
        return Ok(());
    }
    let snap = match store.read() {
        Ok(snap) => snap,
        // A non-blocking attempt: the command runs again on the blocking pool.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "reading the shared persistent reservations");
            return Err(SenseReason::InternalTargetFailure);
        }
    };
    let shared = Shared::decode(snap.data.as_deref()).map_err(|e| {
        tracing::warn!(error = %e, "shared persistent reservations unreadable");
        SenseReason::InternalTargetFailure
    })?;
    if !listed {
        // After a read that may block: inside a non-blocking attempt it refused above.
        return list_ports(lu, store.as_ref(), units.target_ports()).map_err(|e| {
            tracing::warn!(error = %e, "listing this gateway's target ports in the shared copy");
            SenseReason::InternalTargetFailure
        });
    }
    install(&mut lu.lock(), snap.version, &shared);
    Ok(())
}

/// One PERSISTENT RESERVE OUT against the shared copy.
pub(crate) struct Txn<'a> {
    store: &'a dyn SharedPrStore,
    update: Box<dyn PrUpdate + 'a>,
    shared: Shared,
    version: u64,
    written: bool,
}

/// Locks and reads the shared copy; `None` for an LU without a shared store. Called before
/// the LU's own lock is taken, so waiting for another gateway blocks no I/O here.
pub(crate) fn begin(lu: &Lu) -> Result<Option<Txn<'_>>, Fail> {
    let Some(store) = lu.pr_shared.as_deref() else {
        return Ok(None);
    };
    let failed = |e: io::Error| {
        tracing::warn!(error = %e, "locking the shared persistent reservations");
        Fail::from(SenseReason::InsufficientRegistrationResources)
    };
    let mut update = store.lock().map_err(failed)?;
    let snap = update.read().map_err(failed)?;
    let shared = Shared::decode(snap.data.as_deref()).map_err(failed)?;
    Ok(Some(Txn {
        store,
        update,
        shared,
        version: snap.version,
        written: false,
    }))
}

impl Txn<'_> {
    /// The target ports of every gateway that listed its own.
    pub(crate) fn ports(&self) -> &[TargetPort] {
        &self.shared.ports
    }

    /// Brings the LU up to the locked copy and starts recording the unit attentions the
    /// service action establishes.
    pub(crate) fn install(&self, st: &mut LuState) {
        install(st, self.version, &self.shared);
        st.ua.record_ports();
    }

    /// Writes the state the service action left (and its unit attentions) back, if anything
    /// changed. On error nothing was written.
    pub(crate) fn commit(
        &mut self,
        pr: &PrState,
        before: &PrState,
        ua: &mut UnitAttentions,
        synced: &mut Synced,
    ) -> io::Result<()> {
        let recorded = ua.recorded_ports();
        if *pr == *before && recorded.is_empty() {
            return Ok(());
        }
        let mut next = self.shared.clone();
        for (initiator_port, target_port, r) in recorded {
            if let Some(ua) = PrUa::of(r) {
                next.events.push(Event {
                    seq: next.next_seq,
                    initiator_port,
                    target_port,
                    ua,
                });
                next.next_seq += 1;
            }
        }
        let excess = next.events.len().saturating_sub(MAX_EVENTS);
        next.events.drain(..excess);
        next.state = pr.clone();
        let version = self.update.write(&next.encode(), self.version)?;
        *synced = Synced {
            version,
            next_seq: next.next_seq,
            ports_listed: synced.ports_listed,
        };
        self.shared = next;
        self.version = version;
        self.written = true;
        Ok(())
    }

    /// Unlocks, then tells the other gateways (after the LU's own lock is released).
    pub(crate) fn publish(self) {
        let Txn {
            store,
            update,
            written,
            ..
        } = self;
        drop(update);
        if written {
            store.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_round_trip_and_hostile_ones_are_refused() {
        let mut s = Shared::default();
        s.state.aptpl = true;
        s.events.push(Event {
            seq: 0,
            initiator_port: "iqn.x,i,0x000000000001".into(),
            target_port: "iqn.t,t,0x0001".into(),
            ua: PrUa::RegistrationsPreempted,
        });
        s.next_seq = 1;
        let bytes = s.encode();
        assert_eq!(Shared::decode(Some(&bytes)).expect("decode"), s);
        assert_eq!(Shared::decode(None).expect("none"), Shared::default());
        assert_eq!(Shared::decode(Some(b"")).expect("empty"), Shared::default());
        assert!(Shared::decode(Some(b"{\"state\":1}")).is_err());
        let mut bad = s.clone();
        bad.next_seq = 0;
        assert!(
            Shared::decode(Some(&bad.encode())).is_err(),
            "event numbered ahead"
        );
        let mut bad = s;
        bad.events[0].target_port = "t".repeat(MAX_PORT_NAME + 1);
        assert!(Shared::decode(Some(&bad.encode())).is_err(), "long name");
    }
}
