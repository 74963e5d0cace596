//! A worker's measurements: per-second figures for the live view and the over-time plots,
//! and the measured window's histograms and counters for the report.
//!
//! Owns recording rules: latencies in µs from the intended send time; the final histograms
//! take only messages whose intended time lies in the measured window (after warm-up); the
//! interval ones take everything, by when it happened. Errors are tallied by reason. Pure
//! bookkeeping: the engine passes `now` in.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::live::hist;
use crate::live::protocol::{Tick, WorkerLine};

/// One second's figures, reset at each tick.
#[derive(Debug)]
struct Interval {
    sends: u64,
    deliveries: u64,
    errors: u64,
    e2e: Histogram<u64>,
    sent: Histogram<u64>,
}

impl Default for Interval {
    fn default() -> Self {
        Self {
            sends: 0,
            deliveries: 0,
            errors: 0,
            e2e: hist::new(),
            sent: hist::new(),
        }
    }
}

/// Counters the report lists by name.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) sends: u64,
    pub(crate) acked: u64,
    pub(crate) refused: u64,
    pub(crate) resent: u64,
    pub(crate) deliveries: u64,
    pub(crate) catchup_deliveries: u64,
    pub(crate) resent_deliveries: u64,
    pub(crate) chat_updates: u64,
    pub(crate) receipts_received: u64,
    pub(crate) acks_sent: u64,
    pub(crate) reconnects: u64,
    pub(crate) disconnects: u64,
    pub(crate) skipped_no_device: u64,
    pub(crate) foreign_messages: u64,
    pub(crate) devices_offline_at_end: u64,
    pub(crate) unanswered_at_end: u64,
}

impl Counts {
    /// Every counter with its report name.
    pub(crate) fn named(&self) -> [(&'static str, u64); 16] {
        [
            ("sends", self.sends),
            ("acked", self.acked),
            ("refused", self.refused),
            ("resent", self.resent),
            ("deliveries", self.deliveries),
            ("catchup_deliveries", self.catchup_deliveries),
            ("resent_deliveries", self.resent_deliveries),
            ("chat_updates", self.chat_updates),
            ("receipts_received", self.receipts_received),
            ("acks_sent", self.acks_sent),
            ("reconnects", self.reconnects),
            ("disconnects", self.disconnects),
            ("skipped_no_device", self.skipped_no_device),
            ("foreign_messages", self.foreign_messages),
            ("devices_offline_at_end", self.devices_offline_at_end),
            ("unanswered_at_end", self.unanswered_at_end),
        ]
    }
}

/// A worker's measurements; see the module doc.
#[derive(Debug)]
pub(crate) struct Stats {
    /// The measured window, by intended send time: `[from, to)` ns.
    window: (u64, u64),
    interval: Interval,
    pub(crate) counts: Counts,
    /// End-to-end delivery latency, measured window.
    pub(crate) e2e: Histogram<u64>,
    /// Send → `Sent` latency, measured window.
    pub(crate) sent: Histogram<u64>,
    /// How late each send left versus its intended time, measured window.
    pub(crate) lateness: Histogram<u64>,
    /// Socket → upgrade complete, every connection.
    pub(crate) connect: Histogram<u64>,
    /// Socket → `SyncDone`, every connection.
    pub(crate) sync: Histogram<u64>,
    /// Failures by reason.
    pub(crate) fails: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            window: (u64::MAX, u64::MAX),
            interval: Interval::default(),
            counts: Counts::default(),
            e2e: hist::new(),
            sent: hist::new(),
            lateness: hist::new(),
            connect: hist::new(),
            sync: hist::new(),
            fails: BTreeMap::new(),
        }
    }
}

impl Stats {
    /// Sets the measured window, `[from_ns, to_ns)` of intended send times.
    pub(crate) fn set_window(&mut self, from_ns: u64, to_ns: u64) {
        self.window = (from_ns, to_ns);
    }

    fn measured(&self, intended_ns: u64) -> bool {
        (self.window.0..self.window.1).contains(&intended_ns)
    }

    /// A message left `lateness_us` after its intended time.
    pub(crate) fn on_send(&mut self, intended_ns: u64, lateness_us: u64) {
        self.counts.sends += 1;
        self.interval.sends += 1;
        if self.measured(intended_ns) {
            self.lateness.saturating_record(lateness_us);
        }
    }

    /// A send was acknowledged `latency_us` after its intended time.
    pub(crate) fn on_sent(&mut self, intended_ns: u64, latency_us: u64) {
        self.counts.acked += 1;
        self.interval.sent.saturating_record(latency_us);
        if self.measured(intended_ns) {
            self.sent.saturating_record(latency_us);
        }
    }

    /// A message was delivered live `latency_us` after its intended time.
    pub(crate) fn on_delivery(&mut self, intended_ns: u64, latency_us: u64) {
        self.counts.deliveries += 1;
        self.interval.deliveries += 1;
        self.interval.e2e.saturating_record(latency_us);
        if self.measured(intended_ns) {
            self.e2e.saturating_record(latency_us);
        }
    }

    /// A failure, tallied by reason.
    pub(crate) fn fail(&mut self, reason: impl Into<String>) {
        self.interval.errors += 1;
        *self.fails.entry(reason.into()).or_default() += 1;
    }

    /// The interval's figures as a tick line; starts the next interval.
    pub(crate) fn tick(&mut self, second: u64, conns: u64) -> WorkerLine {
        let i = std::mem::take(&mut self.interval);
        WorkerLine::Tick(Tick {
            second,
            conns,
            sends: i.sends,
            deliveries: i.deliveries,
            errors: i.errors,
            e2e: hist::encode(&i.e2e),
            sent: hist::encode(&i.sent),
        })
    }

    /// The final histograms, counters and failures as lines.
    pub(crate) fn final_lines(&self) -> Vec<WorkerLine> {
        let hists = [
            ("e2e", &self.e2e),
            ("sent", &self.sent),
            ("lateness", &self.lateness),
            ("connect", &self.connect),
            ("sync", &self.sync),
        ];
        let mut lines: Vec<WorkerLine> = hists
            .into_iter()
            .map(|(name, h)| WorkerLine::Hist {
                name: name.into(),
                hist: hist::encode(h),
            })
            .collect();
        lines.extend(
            self.counts
                .named()
                .into_iter()
                .map(|(name, value)| WorkerLine::Count {
                    name: name.into(),
                    value,
                }),
        );
        lines.extend(self.fails.iter().map(|(reason, &count)| WorkerLine::Fail {
            count,
            reason: reason.clone(),
        }));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_filters_final_histograms_only() {
        let mut s = Stats::default();
        s.set_window(1_000, 2_000);
        s.on_delivery(500, 10); // warm-up
        s.on_delivery(1_500, 20);
        s.on_delivery(2_000, 30); // after the window
        assert_eq!(s.e2e.len(), 1);
        assert_eq!(s.counts.deliveries, 3);
        s.fail("result RateLimited");
        s.fail("result RateLimited");
        let WorkerLine::Tick(t) = s.tick(4, 9) else {
            panic!("a tick")
        };
        assert_eq!((t.second, t.conns, t.deliveries, t.errors), (4, 9, 3, 2));
        assert_eq!(hist::decode(&t.e2e).expect("decodes").len(), 3);
        let WorkerLine::Tick(t) = s.tick(5, 9) else {
            panic!("a tick")
        };
        assert_eq!(
            (t.deliveries, t.e2e.as_str()),
            (0, "-"),
            "reset per interval"
        );
        assert_eq!(s.fails.values().sum::<u64>(), 2);
    }
}
