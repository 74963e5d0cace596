//! [`SyncStats`]: how long the writer thread's syncs take, readable from any thread.
//!
//! Owns the record of the acknowledgement path's disk time (and of the segments the writer
//! rolled into, prepared or not, which sets what a sync costs, and whether a failed write
//! made the log read-only): every acknowledgement waits for
//! one of these syncs, so a slow sync delays every append queued behind it. `stalled` sums the
//! syncs longer than [`STALL`]; as a share of wall time it bounds from below the share of
//! appends that waited more than `STALL` (issue 5's ack p99 goal is 10 ms).
//!
//! Hand-rolled rather than an `hdrhistogram::Histogram`: that one is not `Sync`, so the
//! writer would have to take a lock that a reader (a metrics scrape) can hold; 32 atomic
//! power-of-two buckets are enough for the quantile bounds the benches print.
//!
//! Invariants: the writer thread is the only writer (relaxed atomic adds, no lock); each
//! counter is exact on its own, but a [`SyncSnapshot`] read while syncs complete may take its
//! fields from slightly different instants.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A sync longer than this counts as a stall.
pub const STALL: Duration = Duration::from_millis(10);

/// Bucket `i > 0` counts syncs of `[2^(i-1), 2^i)` microseconds; bucket 0 those under 1 µs.
/// 32 buckets reach past an hour.
const BUCKETS: usize = 32;

/// Counters the writer thread adds to after each sync.
#[derive(Debug, Default)]
pub struct SyncStats {
    syncs: AtomicU64,
    total_us: AtomicU64,
    stalled_us: AtomicU64,
    max_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    segments: AtomicU64,
    segments_unprepared: AtomicU64,
    read_only: AtomicBool,
}

impl SyncStats {
    /// Counts one segment started by a rollover; `prepared` is false when no prepared file
    /// was ready and the segment grows as it is written.
    pub(crate) fn record_segment(&self, prepared: bool) {
        self.segments.fetch_add(1, Ordering::Relaxed);
        if !prepared {
            self.segments_unprepared.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one sync that took `took`.
    pub(crate) fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        if took > STALL {
            self.stalled_us.fetch_add(us, Ordering::Relaxed);
        }
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Notes that a write or sync failed: the log takes no more appends until reopened.
    pub(crate) fn record_read_only(&self) {
        self.read_only.store(true, Ordering::Release);
    }

    /// Whether a failed write or sync made the log read-only (until it is reopened).
    pub fn read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    /// The counters as of now.
    pub fn snapshot(&self) -> SyncSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SyncSnapshot {
            syncs: load(&self.syncs),
            total: Duration::from_micros(load(&self.total_us)),
            stalled: Duration::from_micros(load(&self.stalled_us)),
            max: Duration::from_micros(load(&self.max_us)),
            buckets: std::array::from_fn(|i| load(&self.buckets[i])),
            segments: load(&self.segments),
            segments_unprepared: load(&self.segments_unprepared),
        }
    }
}

fn bucket(us: u64) -> usize {
    // 0 → 0, 1 → 1, 2..=3 → 2, 4..=7 → 3, …
    (u64::BITS - us.leading_zeros()).min(BUCKETS as u32 - 1) as usize
}

/// The writer's syncs since the log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSnapshot {
    /// Syncs made (one per batch, plus one per segment filled within a batch).
    pub syncs: u64,
    /// Time spent in them.
    pub total: Duration,
    /// Time spent in syncs longer than [`STALL`].
    pub stalled: Duration,
    /// The longest one.
    pub max: Duration,
    buckets: [u64; BUCKETS],
    /// Segments started by rollovers (not the one open at start).
    pub segments: u64,
    /// Of those, the ones started without a prepared file ready: they grow as they are
    /// written, so each of their syncs also writes the inode (about twice the time).
    pub segments_unprepared: u64,
}

impl SyncSnapshot {
    /// An upper bound of the `q` quantile of sync durations (within a factor of 2: the top of
    /// its power-of-two bucket, never above `max`); zero without syncs.
    pub fn quantile_at_most(&self, q: f64) -> Duration {
        if self.syncs == 0 {
            return Duration::ZERO;
        }
        // The rank of the quantile, from 1; `q` outside 0..=1 is clamped, so the product is
        // within 0..=syncs (exact in f64 below 2^52 syncs, about 140 years at 1 per µs).
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_sign_loss,
            clippy::cast_possible_truncation
        )]
        let rank = ((q.clamp(0.0, 1.0) * self.syncs as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let top_us = if i == 0 { 0 } else { (1u64 << i) - 1 };
                return Duration::from_micros(top_us).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 1);
        assert_eq!(bucket(2), 2);
        assert_eq!(bucket(3), 2);
        assert_eq!(bucket(4), 3);
        assert_eq!(bucket(1023), 10);
        assert_eq!(bucket(1024), 11);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn stalls_totals_and_quantiles() {
        let stats = SyncStats::default();
        assert_eq!(stats.snapshot().quantile_at_most(0.99), Duration::ZERO);
        for _ in 0..98 {
            stats.record(Duration::from_micros(300));
        }
        stats.record(Duration::from_millis(10));
        stats.record(Duration::from_millis(40));
        let s = stats.snapshot();
        assert_eq!(s.syncs, 100);
        assert_eq!(s.total, Duration::from_micros(98 * 300 + 50_000));
        // Exactly STALL is not a stall; longer is.
        assert_eq!(s.stalled, Duration::from_millis(40));
        assert_eq!(s.max, Duration::from_millis(40));
        // 300 µs lies in [256, 512).
        assert_eq!(s.quantile_at_most(0.5), Duration::from_micros(511));
        assert_eq!(s.quantile_at_most(0.98), Duration::from_micros(511));
        // 10,000 µs lies in [8192, 16384).
        assert_eq!(s.quantile_at_most(0.99), Duration::from_micros(16_383));
        // The top bucket is capped by the maximum.
        assert_eq!(s.quantile_at_most(1.0), Duration::from_millis(40));
    }
}
