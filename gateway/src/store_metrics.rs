//! The store's metrics, read at scrape time: how long the log's syncs take, and whether its
//! segments were prepared ahead of use, and how far the index lags the log.
//!
//! Owns the `switchboard_store_log_*`, `switchboard_store_index_*` and
//! `switchboard_store_failed` names. Every
//! acknowledgement waits for a log sync, so the log's metrics are the disk's share of send
//! latency: `sync_stalled_seconds_total` grows by the time spent in syncs longer than
//! `store::log::STALL` (10 ms); its rate is the fraction of time during which sends could not
//! be acknowledged within 10 ms.
//!
//! `switchboard_store_failed` is 1 once the store takes no more writes (its log read-only
//! after a failed write or sync, or its index failed) until a restart; `/readyz` answers 503
//! then too.
//!
//! `index_backlog_bytes` is the applier's backlog: reads other than idempotency lookups and
//! reads of chats with nothing pending wait for it, and at `apply_backlog_bytes_max` the
//! acknowledgements wait too.
//!
//! Invariant: scraping only loads the store's atomics (no lock, nothing on the writer thread).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use store::embedded::{IndexLag, StoreHealth};
use store::log::SyncStats;

/// Exposes a log's [`SyncStats`] and the index's [`IndexLag`] as Prometheus metrics.
#[derive(Debug)]
pub struct StoreCollector {
    stats: Arc<SyncStats>,
    lag: IndexLag,
    health: StoreHealth,
}

impl StoreCollector {
    /// Reads `stats`, `lag` and `health` at every scrape.
    pub fn new(stats: Arc<SyncStats>, lag: IndexLag, health: StoreHealth) -> Self {
        Self { stats, lag, health }
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.stats.snapshot();
        let counts = [
            (
                "switchboard_store_log_syncs",
                "Syncs of the store's log (each acknowledges a batch of writes)",
                s.syncs,
            ),
            (
                "switchboard_store_log_segments",
                "Log segments the writer rolled into since start",
                s.segments,
            ),
            (
                "switchboard_store_log_segments_unprepared",
                "Log segments rolled into without a prepared (zero-filled) file ready: their \
                 syncs also write the inode, about twice the time",
                s.segments_unprepared,
            ),
        ];
        for (name, help, value) in counts {
            encode_counter(&mut encoder, name, help, &ConstCounter::new(value))?;
        }
        let seconds = [
            (
                "switchboard_store_log_sync_seconds",
                "Time spent in syncs of the store's log",
                s.total,
            ),
            (
                "switchboard_store_log_sync_stalled_seconds",
                "Time spent in syncs of the store's log that took longer than 10 ms",
                s.stalled,
            ),
        ];
        for (name, help, value) in seconds {
            let counter = ConstCounter::new(value.as_secs_f64());
            encode_counter(&mut encoder, name, help, &counter)?;
        }
        let max = ConstGauge::new(s.max.as_secs_f64());
        max.encode(encoder.encode_descriptor(
            "switchboard_store_log_sync_max_seconds",
            "The longest sync of the store's log since start",
            None,
            max.metric_type(),
        )?)?;
        let failed = ConstGauge::new(i64::from(self.health.failure().is_some()));
        failed.encode(encoder.encode_descriptor(
            "switchboard_store_failed",
            "1 once the store takes no more writes (log read-only or index failed) until a restart",
            None,
            failed.metric_type(),
        )?)?;
        let backlog = ConstGauge::new(i64::try_from(self.lag.backlog_bytes()).unwrap_or(i64::MAX));
        backlog.encode(encoder.encode_descriptor(
            "switchboard_store_index_backlog_bytes",
            "Bytes of durable log records not yet applied to the index",
            None,
            backlog.metric_type(),
        )?)
    }
}

fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counter: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}
