//! Command counters and latency histograms, kept per session and summed
//! per target (and per LUN of the target) for `ietadm stats` and Prometheus.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 500_000, 2_000_000,
];

/// What kind of command finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Read,
    Write,
    Other,
}

#[derive(Debug, Default)]
pub struct CommandStats {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub others: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Cumulative-free bucket counts; the last slot is +Inf.
    pub latency: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    pub latency_sum_us: AtomicU64,
    /// The same, per LUN number (filled by [`CommandStats::record_lun`]).
    pub per_lun: RwLock<BTreeMap<u64, Arc<CommandStats>>>,
}

impl CommandStats {
    /// Records a command in these totals and in its LUN's; a LUN's entry
    /// is made on its first command, later ones only take the read lock.
    pub fn record_lun(&self, lun: u64, kind: CommandKind, bytes: u64, ok: bool, took: Duration) {
        self.record(kind, bytes, ok, took);
        let known = self
            .per_lun
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&lun)
            .cloned();
        let per = known.unwrap_or_else(|| {
            self.per_lun
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(lun)
                .or_default()
                .clone()
        });
        per.record(kind, bytes, ok, took);
    }

    /// Snapshots per LUN, in LUN order.
    pub fn lun_snapshots(&self) -> Vec<(u64, StatsSnapshot)> {
        self.per_lun
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(lun, s)| (*lun, s.snapshot()))
            .collect()
    }

    pub fn record(&self, kind: CommandKind, bytes: u64, ok: bool, took: Duration) {
        let (count, sum) = match kind {
            CommandKind::Read => (&self.reads, Some(&self.read_bytes)),
            CommandKind::Write => (&self.writes, Some(&self.write_bytes)),
            CommandKind::Other => (&self.others, None),
        };
        count.fetch_add(1, Ordering::Relaxed);
        if let Some(sum) = sum {
            sum.fetch_add(bytes, Ordering::Relaxed);
        }
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let slot = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency[slot].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// A plain copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            reads: get(&self.reads),
            writes: get(&self.writes),
            others: get(&self.others),
            read_bytes: get(&self.read_bytes),
            write_bytes: get(&self.write_bytes),
            errors: get(&self.errors),
            latency: self.latency.iter().map(get).collect(),
            latency_sum_us: get(&self.latency_sum_us),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    pub reads: u64,
    pub writes: u64,
    pub others: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub errors: u64,
    pub latency: Vec<u64>,
    pub latency_sum_us: u64,
}

impl StatsSnapshot {
    pub fn add(&mut self, o: &StatsSnapshot) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.others += o.others;
        self.read_bytes += o.read_bytes;
        self.write_bytes += o.write_bytes;
        self.errors += o.errors;
        self.latency_sum_us += o.latency_sum_us;
        if self.latency.len() < o.latency.len() {
            self.latency.resize(o.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            *a += b;
        }
    }

    pub fn commands(&self) -> u64 {
        self.reads + self.writes + self.others
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_sums() {
        let s = CommandStats::default();
        s.record(CommandKind::Read, 4096, true, Duration::from_micros(80));
        s.record(CommandKind::Write, 512, false, Duration::from_secs(10));
        let snap = s.snapshot();
        assert_eq!(
            (snap.reads, snap.writes, snap.read_bytes, snap.errors),
            (1, 1, 4096, 1)
        );
        assert_eq!(snap.latency[1], 1, "80 µs falls in the 100 µs bucket");
        assert_eq!(*snap.latency.last().unwrap(), 1, "10 s is +Inf");
    }

    #[test]
    fn per_lun_histograms() {
        let s = CommandStats::default();
        s.record_lun(0, CommandKind::Read, 512, true, Duration::from_micros(10));
        s.record_lun(3, CommandKind::Write, 512, true, Duration::from_millis(3));
        s.record_lun(3, CommandKind::Write, 512, true, Duration::from_millis(3));
        assert_eq!(s.snapshot().commands(), 3);
        let luns = s.lun_snapshots();
        assert_eq!(luns.len(), 2);
        assert_eq!((luns[0].0, luns[0].1.reads), (0, 1));
        assert_eq!((luns[1].0, luns[1].1.writes), (3, 2));
        assert_eq!(luns[1].1.latency[6], 2, "3 ms falls in the 5 ms bucket");
    }
}
