//! The human-readable summary of a run (`summary.txt`, and what `loadgen live` prints).
//!
//! Owns the text only: the verdict and why, each SLO term, throughput, a latency table,
//! the ledger, churn events, the main counters and the errors. Reads a [`Report`]; computes
//! nothing new.

use std::fmt::Write as _;

use crate::live::report::Report;

impl Report {
    /// The summary text.
    pub(crate) fn summary(&self) -> String {
        let mut t = String::new();
        self.head(&mut t);
        self.latency_table(&mut t);
        self.outcome(&mut t);
        t
    }

    fn head(&self, t: &mut String) {
        let s = &self.scenario;
        let _ = writeln!(
            t,
            "loadgen live: scenario {:?}, {} devices ({} users × {}), {} worker(s), {} target(s)",
            s.name,
            self.devices,
            s.users,
            s.devices_per_user,
            self.workers,
            self.targets.len()
        );
        let verdict = self.verdict.to_uppercase();
        let _ = writeln!(t, "verdict: {verdict} (exit {})", self.exit_code);
        for reason in &self.invalid_reasons {
            let _ = writeln!(t, "  invalid: {reason}");
        }
        let _ = writeln!(t, "SLO {}:", self.slo);
        for c in &self.checks {
            let observed = match (c.observed, c.unit) {
                (None, _) => "nothing measured".to_owned(),
                (Some(v), "us") => ms(v),
                (Some(v), _) => v.to_string(),
            };
            let mark = if c.pass { "pass" } else { "FAIL" };
            let _ = writeln!(t, "  {:<20} observed {observed:<14} {mark}", c.term);
        }
        let _ = writeln!(
            t,
            "load: offered {:.1} msg/s; measured {:.1} s: {:.1} sends/s, {:.1} deliveries/s",
            self.offered_rate_per_s,
            self.measured_s,
            self.measured_sends_per_s,
            self.measured_deliveries_per_s
        );
    }

    fn latency_table(&self, t: &mut String) {
        let _ = writeln!(
            t,
            "latency (ms)      {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, label) in [
            ("e2e", "end-to-end"),
            ("sent", "send→Sent"),
            ("lateness", "send lateness"),
            ("connect", "connect"),
            ("sync", "connect→SyncDone"),
        ] {
            if let Some(x) = self.latency_us.get(name) {
                let _ = writeln!(
                    t,
                    "  {label:<16}{:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    x.count,
                    ms(x.p50),
                    ms(x.p90),
                    ms(x.p99),
                    ms(x.p999),
                    ms(x.max)
                );
            }
        }
    }

    fn outcome(&self, t: &mut String) {
        let l = &self.ledger.total;
        let _ = writeln!(
            t,
            "ledger: delivered {}, lost {}, duplicated {}, out of order {}, phantom {}, \
             redelivered after reconnect {} (not a fault)",
            l.delivered, l.lost, l.dup, l.order, l.phantom, l.redelivered
        );
        for e in &self.churn_events {
            let synced = e.all_synced_s.map_or_else(
                || "not all came back".to_owned(),
                |x| format!("all synced after {x:.3} s"),
            );
            let rate = e
                .reconnects_per_s
                .map_or(String::new(), |r| format!(" ({r:.0}/s)"));
            let _ = writeln!(
                t,
                "churn event {} at {:.1} s: {} devices dropped, {synced}{rate}",
                e.event, e.at_s, e.devices
            );
        }
        let interesting = [
            "sends",
            "acked",
            "refused",
            "resent",
            "resent_deliveries",
            "catchup_deliveries",
            "reconnects",
            "skipped_no_device",
            "unanswered_at_end",
        ];
        let counts: Vec<String> = interesting
            .iter()
            .map(|k| format!("{k} {}", self.counts.get(*k).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(t, "counts: {}", counts.join(", "));
        if self.errors.is_empty() {
            let _ = writeln!(t, "errors: none");
        } else {
            let _ = writeln!(t, "errors:");
            for (reason, count) in &self.errors {
                let _ = writeln!(t, "  {count:>8}  {reason}");
            }
        }
    }
}

/// µs as milliseconds with 3 decimals.
#[allow(clippy::cast_precision_loss)] // µs far below 2^52
fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1e3)
}
