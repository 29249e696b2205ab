//! Which gateway of an RBD image is active/optimized, decided through the cluster: leases
//! (cls_lock locks with a duration) on the RADOS object `iet.alua.<image>` in the image's pool.
//!
//! Every gateway holds the shared lock `members` with its ALUA group id as cookie, and tries
//! to take the exclusive lock `owner` the same way; both are renewed every `lease / 6`. The
//! holder of `owner` is active/optimized, every other member active/non-optimized, so all
//! gateways compute the same states from the same two lists. The OSD drops a lock that is not
//! renewed within its duration: when the owner dies (`kill -9`), another gateway takes
//! `owner` within `lease + lease / 6`, and states change on every gateway. A gateway that
//! cannot reach the cluster reports its own port unavailable. A gateway that takes `owner`
//! over from another breaks (and so fences) whoever holds librbd's image lock: with two
//! gateways that is the old owner; with more, a non-owner that wrote last is fenced too.
//! A clean stop releases both leases.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::ffi::{Image, LockKind, Pool};
use crate::scsi::{AccessState, AluaView, SharedAlua, TargetPortGroup};

/// How long a lock lasts without renewal, unless `alua_lease=SECS` says otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(6);
const OWNER: &str = "owner";
const MEMBERS: &str = "members";
const TAG: &str = "iet-alua";

/// The lease loop of one gateway for one image; stops (and releases its locks) when dropped.
#[derive(Debug)]
pub(super) struct Lease {
    shared: Arc<SharedAlua>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What one round of the loop needs and remembers.
struct Rounds {
    pool: Pool,
    image: Arc<Image>,
    oid: String,
    group: u16,
    cookie: String,
    lease: Duration,
    /// Each group's last state and whether a round saw it change (STATUS CODE 02h).
    seen: BTreeMap<u16, (AccessState, bool)>,
}

/// The group ids among lock cookies (other cookies are not gateways of ours).
fn groups_of(cookies: &[String]) -> Vec<u16> {
    cookies
        .iter()
        .filter_map(|c| c.parse::<u16>().ok())
        .filter(|&g| g != 0)
        .collect()
}

impl Rounds {
    /// One renewal: take or renew both locks, read both lists, compute every state.
    fn round(&mut self) -> io::Result<AluaView> {
        let lease = self.lease;
        self.pool.lock(
            &self.oid,
            MEMBERS,
            &self.cookie,
            LockKind::Shared { tag: TAG },
            lease,
        )?;
        match self
            .pool
            .lock(&self.oid, OWNER, &self.cookie, LockKind::Exclusive, lease)
        {
            Ok(()) => {
                let before = self
                    .seen
                    .iter()
                    .find(|(_, (state, _))| *state == AccessState::ActiveOptimized)
                    .map(|(&g, _)| g);
                if before.is_some_and(|g| g != self.group) {
                    self.take_over();
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        let owner = groups_of(&self.pool.lockers(&self.oid, OWNER)?)
            .first()
            .copied();
        let mut members = groups_of(&self.pool.lockers(&self.oid, MEMBERS)?);
        members.extend(owner);
        members.push(self.group);
        members.sort_unstable();
        members.dedup();
        Ok(self.view(members.into_iter().map(|g| {
            let state = if Some(g) == owner {
                AccessState::ActiveOptimized
            } else {
                AccessState::ActiveNonOptimized
            };
            (g, state)
        })))
    }

    /// The last known groups, with this gateway's port unavailable (the cluster did not answer).
    fn cut_off(&mut self) -> AluaView {
        let local = self.group;
        let mut groups: Vec<(u16, AccessState)> =
            self.seen.iter().map(|(&g, &(s, _))| (g, s)).collect();
        if !groups.iter().any(|&(g, _)| g == local) {
            groups.push((local, AccessState::Unavailable));
        }
        self.view(groups.into_iter().map(|(g, s)| {
            if g == local {
                (g, AccessState::Unavailable)
            } else {
                (g, s)
            }
        }))
    }

    fn view(&mut self, states: impl Iterator<Item = (u16, AccessState)>) -> AluaView {
        let mut groups = Vec::new();
        for (id, state) in states {
            let changed = match self.seen.get(&id) {
                Some(&(before, changed)) => changed || before != state,
                None => false,
            };
            if self
                .seen
                .get(&id)
                .is_some_and(|&(before, _)| before != state)
            {
                tracing::info!(image = %self.oid, group = id, ?state, "ALUA state changed");
            }
            self.seen.insert(id, (state, changed));
            groups.push(TargetPortGroup {
                id,
                state,
                implicit_change: changed,
            });
        }
        self.seen.retain(|id, _| groups.iter().any(|g| g.id == *id));
        AluaView {
            local: self.group,
            groups,
            implicit_transition_secs: u8::try_from((self.lease + self.lease / 6).as_secs() + 1)
                .unwrap_or(u8::MAX),
        }
    }

    /// This gateway took `owner` over from another one, whose lease ran out: it is dead or
    /// cut off. Fence it by breaking its librbd image lock now (librbd blocklists it), rather
    /// than letting writes here wait for its header watch to time out (30 s by default).
    fn take_over(&self) {
        match self.image.break_other_owners() {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(image = %self.oid, broken = n, "broke the previous owner's image lock");
            }
            Err(e) => tracing::warn!(image = %self.oid, error = %e, "breaking the image lock"),
        }
    }

    fn release(&self) {
        for name in [OWNER, MEMBERS] {
            if let Err(e) = self.pool.unlock(&self.oid, name, &self.cookie)
                && e.raw_os_error() != Some(libc::ENOENT)
            {
                tracing::warn!(image = %self.oid, lock = name, error = %e, "releasing the ALUA lease");
            }
        }
    }
}

impl Lease {
    /// Runs the first round here (so the LU starts with the cluster's states), then renews on
    /// a thread of its own. `pool` is a connection of its own: its client is the locker.
    pub(super) fn start(
        pool: Pool,
        rbd: Arc<Image>,
        image: &str,
        group: u16,
        lease: Duration,
    ) -> io::Result<Lease> {
        let mut rounds = Rounds {
            pool,
            image: rbd,
            oid: format!("iet.alua.{image}"),
            group,
            cookie: group.to_string(),
            lease,
            seen: BTreeMap::new(),
        };
        let shared = Arc::new(SharedAlua::new(rounds.round()?));
        let (stop, stopped) = mpsc::channel::<()>();
        let publish = Arc::clone(&shared);
        let renew = lease / 6;
        let thread = std::thread::Builder::new()
            .name(format!("alua-{image}"))
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(renew) {
                    let view = rounds.round().unwrap_or_else(|e| {
                        tracing::warn!(image = %rounds.oid, error = %e, "ALUA lease round failed");
                        rounds.cut_off()
                    });
                    publish.publish(view);
                }
                rounds.release();
            })?;
        Ok(Lease {
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(super) fn shared(&self) -> Arc<SharedAlua> {
        Arc::clone(&self.shared)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
