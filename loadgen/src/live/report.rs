//! The result of one `loadgen live` run: every figure, the verdict, and its text form.
//!
//! Owns the judgement (invalid beats failed beats passed: a run whose load generator fell
//! behind, or whose devices could not connect, says nothing about the target) and what the
//! report holds. Computes nothing from the system except host facts; the figures come from
//! [`Merge`]. Field names carry their unit.

// Counts and µs become f64 only for rates and display; they stay far below 2^52.
#![allow(clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::live::clock::to_u64;
use crate::live::hist;
use crate::live::ledger::Faults;
use crate::live::merge::Merge;
use crate::live::protocol::chat_hex;
use crate::live::scenario::Scenario;
use crate::live::slo::{Check, Metric, Observed, Slo};

/// Why a run is invalid (exit 2).
#[derive(Debug, Clone)]
pub(crate) enum Invalid {
    /// Devices could not connect at the start.
    Unreachable {
        failed: u64,
        reasons: BTreeMap<String, u64>,
    },
    /// Groups could not be created.
    Setup,
}

/// What the coordinator knows at the end.
pub(crate) struct Run<'a> {
    pub(crate) scenario: &'a Scenario,
    pub(crate) slo: &'a Slo,
    pub(crate) targets: &'a [String],
    pub(crate) workers: u32,
    pub(crate) source_ips: usize,
    pub(crate) started: SystemTime,
    pub(crate) merge: &'a Merge,
    pub(crate) invalid: Vec<Invalid>,
}

/// Percentiles of one histogram, µs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) min: u64,
    pub(crate) mean: f64,
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) p9999: u64,
    pub(crate) max: u64,
}

impl Summary {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        let q = |x| hist::quantile(h, x).unwrap_or(0);
        Self {
            count: h.len(),
            min: if h.is_empty() { 0 } else { h.min() },
            mean: if h.is_empty() { 0.0 } else { h.mean() },
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: q(1.0),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SecondReport {
    pub(crate) second: u64,
    pub(crate) conns: u64,
    pub(crate) sends: u64,
    pub(crate) deliveries: u64,
    pub(crate) errors: u64,
    pub(crate) e2e_p50_us: u64,
    pub(crate) e2e_p99_us: u64,
    pub(crate) e2e_max_us: u64,
    pub(crate) sent_p99_us: u64,
}

/// A churn event's outcome.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StormReport {
    pub(crate) event: u32,
    pub(crate) at_s: f64,
    pub(crate) devices: u64,
    /// From the event until the last of its devices was synced again.
    pub(crate) all_synced_s: Option<f64>,
    pub(crate) reconnects_per_s: Option<f64>,
}

/// The ledger's outcome.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LedgerReport {
    pub(crate) total: Faults,
    pub(crate) lost_on_reconnected_devices: u64,
    /// Chats with a fault (at most 1,000 per worker), hex id → faults.
    pub(crate) faulty_chats: BTreeMap<String, Faults>,
}

/// Host facts, so figures from different machines are not compared blindly.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Host {
    pub(crate) hostname: String,
    pub(crate) kernel: String,
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) mem_total_bytes: u64,
}

/// Everything `report.json` holds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) verdict: &'static str,
    pub(crate) exit_code: u8,
    pub(crate) invalid_reasons: Vec<String>,
    pub(crate) slo: String,
    pub(crate) checks: Vec<Check>,
    pub(crate) loadgen_version: &'static str,
    pub(crate) host: Host,
    pub(crate) started_unix_s: u64,
    pub(crate) targets: Vec<String>,
    pub(crate) workers: u32,
    pub(crate) source_ips: usize,
    pub(crate) scenario: Scenario,
    pub(crate) devices: u64,
    pub(crate) devices_connected: u64,
    pub(crate) offered_rate_per_s: f64,
    pub(crate) measured_s: f64,
    pub(crate) measured_sends_per_s: f64,
    pub(crate) measured_deliveries_per_s: f64,
    pub(crate) latency_us: BTreeMap<&'static str, Summary>,
    pub(crate) lateness_p99_max_us: u64,
    pub(crate) counts: BTreeMap<String, u64>,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) ledger: LedgerReport,
    pub(crate) churn_events: Vec<StormReport>,
    pub(crate) timeline: Vec<SecondReport>,
}

struct Figures<'a> {
    e2e: &'a Histogram<u64>,
    sent: &'a Histogram<u64>,
    ledger: &'a Faults,
    errors: u64,
}

impl Observed for Figures<'_> {
    fn value(&self, metric: Metric) -> Option<u64> {
        match metric {
            Metric::Delivery(q) => hist::quantile(self.e2e, q.fraction()),
            Metric::Sent(q) => hist::quantile(self.sent, q.fraction()),
            Metric::Loss => Some(self.ledger.lost),
            Metric::Dup => Some(self.ledger.dup),
            // A phantom (delivered but never sent) breaks order as much as anything.
            Metric::Order => Some(self.ledger.order + self.ledger.phantom),
            Metric::Errors => Some(self.errors),
        }
    }
}

/// Judges the run and gathers every figure.
pub(crate) fn build(run: &Run<'_>) -> Report {
    let m = run.merge;
    let s = run.scenario;
    let (e2e, sent, lateness) = (m.hist("e2e"), m.hist("sent"), m.hist("lateness"));
    let errors: u64 = m.fails.values().sum();
    let figures = Figures {
        e2e: &e2e,
        sent: &sent,
        ledger: &m.ledger,
        errors,
    };
    let checks = run.slo.check(&figures);
    let lateness_max_us = to_u64(s.lateness_p99_max_ms * 1e3);
    let mut invalid: Vec<String> = run.invalid.iter().map(describe).collect();
    if let Some(p99) = hist::quantile(&lateness, 0.99).filter(|&p| p > lateness_max_us) {
        invalid.push(format!(
            "loadgen saturated: sends left {p99} µs late at p99 (limit {lateness_max_us} µs); \
             use more --workers or a lower rate"
        ));
    }
    let offline = m.count("devices_offline_at_end");
    if offline > 0 {
        invalid.push(format!("{offline} devices could not reconnect by the end"));
    }
    let (verdict, exit_code) = if !invalid.is_empty() {
        ("invalid", 2)
    } else if checks.iter().all(|c| c.pass) {
        ("pass", 0)
    } else {
        ("fail", 1)
    };
    let latency_us = [
        ("e2e", &e2e),
        ("sent", &sent),
        ("lateness", &lateness),
        ("connect", &m.hist("connect")),
        ("sync", &m.hist("sync")),
    ]
    .into_iter()
    .map(|(name, h)| (name, Summary::of(h)))
    .collect();
    let (measured_sends, measured_deliveries) = measured(m, s);
    Report {
        verdict,
        exit_code,
        invalid_reasons: invalid,
        slo: run.slo.to_string(),
        checks,
        loadgen_version: env!("CARGO_PKG_VERSION"),
        host: host(),
        started_unix_s: run
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        targets: run.targets.to_vec(),
        workers: run.workers,
        source_ips: run.source_ips,
        scenario: s.clone(),
        devices: s.devices(),
        devices_connected: m.connected_ok,
        offered_rate_per_s: s.rate_per_s,
        measured_s: s.duration_s,
        measured_sends_per_s: measured_sends / s.duration_s,
        measured_deliveries_per_s: measured_deliveries / s.duration_s,
        latency_us,
        lateness_p99_max_us: lateness_max_us,
        counts: m.counts.clone(),
        errors: m.fails.clone(),
        ledger: LedgerReport {
            total: m.ledger,
            lost_on_reconnected_devices: m.count("lost_on_reconnected_devices"),
            faulty_chats: m
                .faulty_chats
                .iter()
                .map(|(c, f)| (chat_hex(*c), *f))
                .collect(),
        },
        churn_events: storms(m, s),
        timeline: timeline(m),
    }
}

fn describe(invalid: &Invalid) -> String {
    match invalid {
        Invalid::Unreachable { failed, reasons } => {
            let mut text = format!("target unreachable: {failed} devices could not connect");
            for (reason, count) in reasons.iter().take(5) {
                let _ = write!(text, "; {count}× {reason}");
            }
            text
        }
        Invalid::Setup => "setup failed: not every group could be created".into(),
    }
}

/// Sends and deliveries in the seconds of the measured window.
fn measured(m: &Merge, s: &Scenario) -> (f64, f64) {
    let from = to_u64(s.warmup_s.ceil());
    let to = to_u64((s.warmup_s + s.duration_s).floor());
    let window = m.timeline.range(from..to.max(from + 1));
    let (sends, deliveries) = window.fold((0, 0), |(a, b), (_, x)| (a + x.sends, b + x.deliveries));
    // Scale whole seconds to the window's length so a fractional warm-up does not skew it.
    let secs = (to.max(from + 1) - from) as f64;
    let scale = s.duration_s / secs;
    (sends as f64 * scale, deliveries as f64 * scale)
}

fn storms(m: &Merge, s: &Scenario) -> Vec<StormReport> {
    m.storms
        .iter()
        .map(|(&event, total)| {
            let secs = total.synced_us.map(|us| us as f64 / 1e6);
            StormReport {
                event,
                at_s: s.churn.events.get(event as usize).map_or(0.0, |e| e.at_s),
                devices: total.devices,
                all_synced_s: secs,
                reconnects_per_s: secs.filter(|&x| x > 0.0).map(|x| total.devices as f64 / x),
            }
        })
        .collect()
}

fn timeline(m: &Merge) -> Vec<SecondReport> {
    m.timeline
        .iter()
        .map(|(&second, x)| SecondReport {
            second,
            conns: x.conns,
            sends: x.sends,
            deliveries: x.deliveries,
            errors: x.errors,
            e2e_p50_us: hist::quantile(&x.e2e, 0.5).unwrap_or(0),
            e2e_p99_us: hist::quantile(&x.e2e, 0.99).unwrap_or(0),
            e2e_max_us: hist::quantile(&x.e2e, 1.0).unwrap_or(0),
            sent_p99_us: hist::quantile(&x.sent, 0.99).unwrap_or(0),
        })
        .collect()
}

fn host() -> Host {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    Host {
        hostname: read("/proc/sys/kernel/hostname"),
        kernel: read("/proc/sys/kernel/osrelease"),
        cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default(),
        mem_total_bytes: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024),
    }
}
