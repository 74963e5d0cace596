//! The report directory: `summary.txt`, `report.json`, HdrHistogram interval logs,
//! `report.html` (SVG plots), `calibration.json`.
//!
//! Owns file names and formats. The interval logs are HdrHistogram's standard format (one
//! histogram per second of the run, values in µs, `BaseTime` the run's start, max column in
//! ms), readable by `HistogramLogProcessor` and friends; `final.hlog` holds the measured
//! window's histograms, one per metric, tagged by name. `calibration.json` is the input of
//! `loadgen simulate` (a later issue): per-operation service times as measured from outside.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use serde::Serialize;

use crate::live::merge::Merge;
use crate::live::plots;
use crate::live::report::{Report, Summary};

/// The interval logs' max column in ms (values are µs).
const MAX_VALUE_DIVISOR: f64 = 1e3;

/// Writes every file of the report into `dir`.
pub(crate) fn write_all(dir: &Path, report: &Report, merge: &Merge) -> Result<()> {
    write(dir, "summary.txt", report.summary().as_bytes())?;
    write(dir, "report.json", &serde_json::to_vec_pretty(report)?)?;
    let base = UNIX_EPOCH + Duration::from_secs(report.started_unix_s);
    let per_second = |pick: fn(&crate::live::merge::Second) -> &Histogram<u64>| {
        merge
            .timeline
            .iter()
            .map(|(&second, s)| (second, pick(s)))
            .collect::<Vec<_>>()
    };
    interval_log(
        dir,
        "e2e.hlog",
        base,
        "end-to-end delivery",
        &per_second(|s| &s.e2e),
    )?;
    interval_log(
        dir,
        "sent.hlog",
        base,
        "send to Sent",
        &per_second(|s| &s.sent),
    )?;
    final_log(dir, base, merge)?;
    write(dir, "report.html", plots::html(report, merge).as_bytes())?;
    write(
        dir,
        "calibration.json",
        &serde_json::to_vec_pretty(&calibration(report))?,
    )?;
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn interval_log(
    dir: &Path,
    name: &str,
    base: SystemTime,
    what: &str,
    seconds: &[(u64, &Histogram<u64>)],
) -> Result<()> {
    let path = dir.join(name);
    let mut out = BufWriter::new(File::create(&path)?);
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "loadgen live: {what} latency per second, values in µs"
        ))
        .with_start_time(base)
        .with_base_time(base)
        .with_max_value_divisor(MAX_VALUE_DIVISOR)
        .begin_log_with(&mut out, &mut serializer)?;
    for &(second, h) in seconds {
        log.write_histogram(h, Duration::from_secs(second), Duration::from_secs(1), None)
            .map_err(|e| anyhow!("writing {}: {e:?}", path.display()))?;
    }
    drop(log);
    out.flush()?;
    Ok(())
}

fn final_log(dir: &Path, base: SystemTime, merge: &Merge) -> Result<()> {
    let path = dir.join("final.hlog");
    let mut out = BufWriter::new(File::create(&path)?);
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("loadgen live: measured-window histograms, one per metric (tag), in µs")
        .with_start_time(base)
        .with_base_time(base)
        .with_max_value_divisor(MAX_VALUE_DIVISOR)
        .begin_log_with(&mut out, &mut serializer)?;
    for name in ["e2e", "sent", "lateness", "connect", "sync"] {
        let h = merge.hist(name);
        let tag = Tag::new(name);
        log.write_histogram(&h, Duration::ZERO, Duration::ZERO, tag)
            .map_err(|e| anyhow!("writing {}: {e:?}", path.display()))?;
    }
    drop(log);
    out.flush()?;
    Ok(())
}

/// What `loadgen simulate` reads.
#[derive(Debug, Serialize)]
struct Calibration<'a> {
    about: &'static str,
    scenario: &'a str,
    host_cpus: usize,
    workers: u32,
    offered_rate_per_s: f64,
    sends_per_s: f64,
    deliveries_per_s: f64,
    /// Deliveries per message (devices per chat minus the sender's).
    fanout: f64,
    /// Socket to 101: accept + TLS-less upgrade + token check.
    connect_us: &'a Summary,
    /// Socket to `SyncDone`: connect plus the sync of an (almost) empty backlog.
    sync_us: &'a Summary,
    /// Intended send to `Sent`: request path, sequencing, the durable write, the answer.
    send_ack_us: &'a Summary,
    /// Intended send to `NewMessage` at a recipient: the above plus fan-out and delivery.
    delivery_us: &'a Summary,
    /// `delivery` minus `send_ack` at p50: the fan-out and delivery stage alone (estimate).
    fanout_stage_p50_us: u64,
}

fn calibration(r: &Report) -> Calibration<'_> {
    let empty = &r.latency_us["e2e"];
    let get = |name: &str| r.latency_us.get(name).unwrap_or(empty);
    let (e2e, sent) = (get("e2e"), get("sent"));
    Calibration {
        about: "per-operation service times measured from outside by `loadgen live`, for \
                `loadgen simulate`; µs, under the load this run offered on this host",
        scenario: &r.scenario.name,
        host_cpus: r.host.cpus,
        workers: r.workers,
        offered_rate_per_s: r.offered_rate_per_s,
        sends_per_s: r.measured_sends_per_s,
        deliveries_per_s: r.measured_deliveries_per_s,
        fanout: if r.measured_sends_per_s > 0.0 {
            r.measured_deliveries_per_s / r.measured_sends_per_s
        } else {
            0.0
        },
        connect_us: get("connect"),
        sync_us: get("sync"),
        send_ack_us: sent,
        delivery_us: e2e,
        fanout_stage_p50_us: e2e.p50.saturating_sub(sent.p50),
    }
}
