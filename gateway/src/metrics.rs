//! Prometheus metrics: one registry for the process, one set of handles per core.
//!
//! Owns every metric name. Invariant: the hot path touches only its own core's handles (each an
//! atomic that no other core writes), created once at start; the registry's locks are taken only
//! at start and when `/metrics` is scraped, never per event.

use crate::auth::AuthFailure;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use wire::ws::close;

type Labels = Vec<(&'static str, String)>;

/// Close codes counted by `switchboard_closes_total{code}`.
pub const CLOSE_CODES: [u16; 12] = [
    close::NORMAL,
    close::GOING_AWAY,
    close::PROTOCOL_ERROR,
    close::UNSUPPORTED_DATA,
    close::POLICY_VIOLATION,
    close::MESSAGE_TOO_BIG,
    close::INTERNAL_ERROR,
    close::TRY_AGAIN_LATER,
    close::IDLE_TIMEOUT,
    close::TOO_MANY_DEVICES,
    close::REPLACED,
    close::TOKEN_EXPIRED,
];

/// Why an accept failed (`switchboard_accept_errors_total{kind}`).
#[derive(Clone, Copy, Debug)]
pub enum AcceptError {
    /// The process is out of file descriptors.
    Emfile,
    /// The system is out of file descriptors.
    Enfile,
    /// Anything else (`ENOBUFS`, `ENOMEM`, …).
    Other,
}

/// Why a connection was turned away before the upgrade (`switchboard_connections_refused_total`).
#[derive(Clone, Copy, Debug)]
pub enum Refusal {
    /// Over `connections_max`: HTTP 503.
    ConnectionsMax,
    /// The upgrade request did not arrive within `handshake_timeout_ms`.
    HandshakeTimeout,
    /// Not a valid WebSocket upgrade request: HTTP 400.
    BadRequest,
    /// Another path: HTTP 404.
    NotFound,
    /// Draining: HTTP 503.
    Draining,
}

impl Refusal {
    const ALL: [Self; 5] = [
        Self::ConnectionsMax,
        Self::HandshakeTimeout,
        Self::BadRequest,
        Self::NotFound,
        Self::Draining,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::ConnectionsMax => "connections_max",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::Draining => "draining",
        }
    }
}

/// The process's metrics registry.
pub struct Metrics {
    registry: Registry,
    rss: Gauge,
    connections_open: Family<Labels, Gauge>,
    accepts: Family<Labels, Counter>,
    auth_failures: Family<Labels, Counter>,
    frames_in: Family<Labels, Counter>,
    frames_out: Family<Labels, Counter>,
    bytes_in: Family<Labels, Counter>,
    bytes_out: Family<Labels, Counter>,
    queue_drops: Family<Labels, Counter>,
    queue_write_aheads: Family<Labels, Counter>,
    closes: Family<Labels, Counter>,
    accept_errors: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
}

/// One core's handles. Increment freely: each is an atomic only this core writes.
pub struct CoreMetrics {
    /// Connections upgraded and not yet closed.
    pub connections_open: Gauge,
    /// TCP connections accepted.
    pub accepts: Counter,
    /// WebSocket data messages received.
    pub frames_in: Counter,
    /// Frames queued to clients.
    pub frames_out: Counter,
    /// Bytes read from clients.
    pub bytes_in: Counter,
    /// Bytes written to clients.
    pub bytes_out: Counter,
    /// Connections closed because their outbound queue was full (slow consumers).
    pub queue_drops: Counter,
    /// Full outbound queues written out at once on a push, before judging the peer slow.
    pub queue_write_aheads: Counter,
    auth_failures: [Counter; 4],
    closes: Vec<(u16, Counter)>,
    accept_errors: [Counter; 3],
    refused: [Counter; 5],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut family = |name: &str, help: &str| {
            let f = Family::<Labels, Counter>::default();
            registry.register(name, help, f.clone());
            f
        };
        let accepts = family("switchboard_accepts", "TCP connections accepted");
        let auth_failures = family(
            "switchboard_auth_failures",
            "Upgrades refused with 401, by reason",
        );
        let frames_in = family("switchboard_frames_in", "WebSocket data messages received");
        let frames_out = family("switchboard_frames_out", "Frames queued to clients");
        let bytes_in = family("switchboard_bytes_in", "Bytes read from clients");
        let bytes_out = family("switchboard_bytes_out", "Bytes written to clients");
        let queue_drops = family(
            "switchboard_queue_drops",
            "Connections closed as slow consumers",
        );
        let queue_write_aheads = family(
            "switchboard_queue_write_aheads",
            "Full outbound queues written out at once on a push, before judging the peer slow",
        );
        let closes = family("switchboard_closes", "WebSocket closes sent, by close code");
        let accept_errors = family("switchboard_accept_errors", "Failed accepts, by errno kind");
        let refused = family(
            "switchboard_connections_refused",
            "Connections turned away before upgrade",
        );
        let connections_open = Family::<Labels, Gauge>::default();
        registry.register(
            "switchboard_connections_open",
            "Open WebSocket connections",
            connections_open.clone(),
        );
        let rss = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident set size of the process",
            rss.clone(),
        );
        Self {
            registry,
            rss,
            connections_open,
            accepts,
            auth_failures,
            frames_in,
            frames_out,
            bytes_in,
            bytes_out,
            queue_drops,
            queue_write_aheads,
            closes,
            accept_errors,
            refused,
        }
    }

    /// Reads the store log's sync counters, the index's lag and the store's health at every
    /// scrape (see [`crate::store_metrics`]).
    pub fn watch_store(
        &mut self,
        syncs: std::sync::Arc<store::log::SyncStats>,
        lag: store::embedded::IndexLag,
        health: store::embedded::StoreHealth,
    ) {
        self.registry
            .register_collector(Box::new(crate::store_metrics::StoreCollector::new(
                syncs, lag, health,
            )));
    }

    /// The handles of core `core`, every label pre-created so the hot path never locks.
    pub fn core(&self, core: usize) -> CoreMetrics {
        let base = || vec![("core", core.to_string())];
        let with = |extra: (&'static str, String)| {
            let mut labels = base();
            labels.push(extra);
            labels
        };
        let counter = |family: &Family<Labels, Counter>| family.get_or_create(&base()).clone();
        CoreMetrics {
            connections_open: self.connections_open.get_or_create(&base()).clone(),
            accepts: counter(&self.accepts),
            frames_in: counter(&self.frames_in),
            frames_out: counter(&self.frames_out),
            bytes_in: counter(&self.bytes_in),
            bytes_out: counter(&self.bytes_out),
            queue_drops: counter(&self.queue_drops),
            queue_write_aheads: counter(&self.queue_write_aheads),
            auth_failures: AuthFailure::ALL.map(|r| {
                self.auth_failures
                    .get_or_create(&with(("reason", r.label().into())))
                    .clone()
            }),
            closes: CLOSE_CODES
                .iter()
                .map(|&code| {
                    (
                        code,
                        self.closes
                            .get_or_create(&with(("code", code.to_string())))
                            .clone(),
                    )
                })
                .collect(),
            accept_errors: ["emfile", "enfile", "other"].map(|k| {
                self.accept_errors
                    .get_or_create(&with(("kind", k.into())))
                    .clone()
            }),
            refused: Refusal::ALL.map(|r| {
                self.refused
                    .get_or_create(&with(("reason", r.label().into())))
                    .clone()
            }),
        }
    }

    /// The text exposition, with the process's RSS read now.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_bytes() {
            self.rss.set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl CoreMetrics {
    /// Counts a refused token.
    pub fn auth_failure(&self, reason: AuthFailure) {
        let i = AuthFailure::ALL
            .iter()
            .position(|&r| r == reason)
            .unwrap_or(0);
        self.auth_failures[i].inc();
    }

    /// Counts a close frame sent with `code`.
    pub fn close(&self, code: u16) {
        if let Some((_, counter)) = self.closes.iter().find(|(c, _)| *c == code) {
            counter.inc();
        }
    }

    /// Counts a failed accept.
    pub fn accept_error(&self, kind: AcceptError) {
        self.accept_errors[kind as usize].inc();
    }

    /// Counts a connection turned away before the upgrade.
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].inc();
    }
}

/// Resident set size from `/proc/self/statm` (pages × page size).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_handles_show_up_in_the_exposition() {
        let metrics = Metrics::new();
        let core = metrics.core(1);
        core.accepts.inc();
        core.connections_open.inc();
        core.auth_failure(AuthFailure::Expired);
        core.close(close::POLICY_VIOLATION);
        core.accept_error(AcceptError::Emfile);
        let text = metrics.render();
        for line in [
            "switchboard_accepts_total{core=\"1\"} 1",
            "switchboard_connections_open{core=\"1\"} 1",
            "switchboard_auth_failures_total{core=\"1\",reason=\"expired\"} 1",
            "switchboard_closes_total{core=\"1\",code=\"1008\"} 1",
            "switchboard_accept_errors_total{core=\"1\",kind=\"emfile\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }
}
