//! Abuse limits on logins (the daemon's, not one session's): logins in
//! progress at once, sessions per target and per initiator, and CHAP
//! failure throttling by initiator name and source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The limits an admin sets (`[limits]` in TOML, `ietadm limits set`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Logins (connections not yet in full-feature phase) at once; more
    /// are answered with Login status 0x0301 (service unavailable).
    pub max_logins_in_progress: u32,
    /// Seconds a whole login may take before the connection is closed.
    pub login_timeout_secs: u32,
    /// Sessions one initiator name may have with one target; 0: no limit
    /// (the target's own `MaxSessions` bounds all initiators together).
    pub max_sessions_per_initiator: u32,
    /// CHAP failures from one initiator name and address before it is
    /// locked out.
    pub chap_failures_before_lockout: u32,
    /// Seconds a lockout lasts.
    pub chap_lockout_secs: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_logins_in_progress: 64,
            login_timeout_secs: 15,
            max_sessions_per_initiator: 0,
            chap_failures_before_lockout: 5,
            chap_lockout_secs: 60,
        }
    }
}

/// Refusals and failures counted for `ietadm stats` and metrics.
#[derive(Debug, Default)]
pub struct LimitCounters {
    pub logins_refused_busy: AtomicU64,
    pub logins_timed_out: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub chap_failures: AtomicU64,
    pub chap_lockouts: AtomicU64,
    pub chap_refused_locked: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// How many (initiator, address) pairs the failure table remembers.
const MAX_TRACKED: usize = 4096;
/// A pair's failures are forgotten after this long without another.
const FORGET_AFTER: Duration = Duration::from_mins(10);

/// What a login from this initiator and address may do about CHAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChapGate {
    Allowed,
    /// Locked out: refuse (Login status 0x0201) after `delay`.
    Locked {
        delay: Duration,
    },
}

/// The live limits and their state.
#[derive(Debug, Default)]
pub struct Limits {
    settings: RwLock<LimitSettings>,
    in_progress: Arc<AtomicUsize>,
    failures: Mutex<HashMap<(String, IpAddr), Failures>>,
    pub counters: LimitCounters,
}

/// A login in progress; dropping it frees the place.
#[derive(Debug)]
pub struct LoginPermit(Arc<AtomicUsize>);

impl Drop for LoginPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limits {
    pub fn settings(&self) -> LimitSettings {
        *self.settings.read().expect("limits lock")
    }

    pub fn set(&self, s: LimitSettings) {
        *self.settings.write().expect("limits lock") = s;
    }

    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.settings().login_timeout_secs.max(1)))
    }

    /// A place for one more login, if there is one.
    pub fn try_login(&self) -> Option<LoginPermit> {
        let max = self.settings().max_logins_in_progress.max(1) as usize;
        let ok = self
            .in_progress
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !ok {
            self.counters
                .logins_refused_busy
                .fetch_add(1, Ordering::Relaxed);
        }
        ok.then(|| LoginPermit(self.in_progress.clone()))
    }

    /// Whether CHAP may be tried by this initiator from this address now.
    pub fn chap_gate(&self, initiator: &str, from: IpAddr, now: Instant) -> ChapGate {
        let table = self.failures.lock().expect("failures lock");
        match table.get(&(initiator.to_owned(), from)) {
            Some(f) if f.locked_until.is_some_and(|t| now < t) => {
                self.counters
                    .chap_refused_locked
                    .fetch_add(1, Ordering::Relaxed);
                ChapGate::Locked {
                    delay: delay_after(f.count),
                }
            }
            _ => ChapGate::Allowed,
        }
    }

    /// A CHAP failure: returns how long to wait before answering it (the
    /// delay grows with each failure), and locks the pair out after
    /// `chap_failures_before_lockout` of them.
    pub fn chap_failed(&self, initiator: &str, from: IpAddr, now: Instant) -> Duration {
        let s = self.settings();
        self.counters.chap_failures.fetch_add(1, Ordering::Relaxed);
        let mut table = self.failures.lock().expect("failures lock");
        if table.len() >= MAX_TRACKED {
            table.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if table.len() >= MAX_TRACKED {
                // Still full: forget the oldest.
                if let Some(oldest) = table
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| k.clone())
                {
                    table.remove(&oldest);
                }
            }
        }
        let f = table
            .entry((initiator.to_owned(), from))
            .or_insert(Failures {
                count: 0,
                last: now,
                locked_until: None,
            });
        if now.duration_since(f.last) > FORGET_AFTER {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        if f.count >= s.chap_failures_before_lockout.max(1)
            && f.locked_until.is_none_or(|t| now >= t)
        {
            f.locked_until = Some(now + Duration::from_secs(u64::from(s.chap_lockout_secs)));
            self.counters.chap_lockouts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                initiator,
                %from,
                failures = f.count,
                secs = s.chap_lockout_secs,
                "CHAP failures: initiator locked out"
            );
        }
        delay_after(f.count)
    }

    /// A successful CHAP login clears the pair's record.
    pub fn chap_succeeded(&self, initiator: &str, from: IpAddr) {
        self.failures
            .lock()
            .expect("failures lock")
            .remove(&(initiator.to_owned(), from));
    }
}

/// 100 ms after the first failure, doubling, at most 3 s.
fn delay_after(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << failures.saturating_sub(1).min(5));
    Duration::from_millis(ms.min(3000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_in_progress_are_bounded() {
        let l = Limits::default();
        l.set(LimitSettings {
            max_logins_in_progress: 2,
            ..LimitSettings::default()
        });
        let a = l.try_login().unwrap();
        let _b = l.try_login().unwrap();
        assert!(l.try_login().is_none());
        drop(a);
        assert!(l.try_login().is_some());
        assert_eq!(l.counters.logins_refused_busy.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn chap_failures_slow_down_then_lock_out_one_pair_only() {
        let l = Limits::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        let d1 = l.chap_failed("iqn.bad", ip, t0);
        let d2 = l.chap_failed("iqn.bad", ip, t0);
        assert!(d2 > d1, "the delay grows");
        for _ in 0..3 {
            l.chap_failed("iqn.bad", ip, t0);
        }
        assert!(matches!(
            l.chap_gate("iqn.bad", ip, t0),
            ChapGate::Locked { .. }
        ));
        assert_eq!(l.chap_gate("iqn.good", ip, t0), ChapGate::Allowed);
        assert_eq!(
            l.chap_gate("iqn.bad", ip, t0 + Duration::from_secs(61)),
            ChapGate::Allowed,
            "the lockout ends"
        );
        l.chap_succeeded("iqn.bad", ip);
        assert_eq!(l.chap_gate("iqn.bad", ip, t0), ChapGate::Allowed);
        assert!(delay_after(40) <= Duration::from_secs(3));
    }
}
