//! The result of one `loadgen idle` run: figures, human-readable text, and JSON.
//!
//! Owns what is reported and how it reads; computes nothing from the system itself (the
//! coordinator fills in the readings). Per-connection figures divide by the connections that
//! were established, and are signed: a system-wide reading can shrink between two samples.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Every figure of one run; field names carry their unit.
#[derive(Debug, Serialize)]
pub(crate) struct IdleReport {
    pub(crate) conns_requested: u64,
    pub(crate) conns_ok: u64,
    pub(crate) conns_failed: u64,
    pub(crate) failures: BTreeMap<String, u64>,
    pub(crate) workers: usize,
    pub(crate) threads_per_worker: usize,
    pub(crate) source_ips: usize,
    /// Connections the gateway had accepted before this run (if it exports the counter):
    /// nonzero means memory they freed is reused, so the RSS increase understates.
    pub(crate) gateway_accepts_before: Option<u64>,
    pub(crate) gateway_conns_open_before: u64,
    pub(crate) gateway_conns_open_after: u64,
    pub(crate) gateway_rss_before_bytes: u64,
    pub(crate) gateway_rss_after_bytes: u64,
    pub(crate) gateway_rss_per_conn_bytes: f64,
    pub(crate) gateway_rss_per_conn_kib: f64,
    /// RSS once the gateway counted the connections closed again (allocator retention).
    pub(crate) gateway_rss_after_close_bytes: Option<u64>,
    pub(crate) kernel_tcp_mem_before_pages: u64,
    pub(crate) kernel_tcp_mem_after_pages: u64,
    /// sockstat `TCP mem` delta × page size / connections: socket buffers, both ends.
    pub(crate) kernel_tcp_mem_per_conn_bytes: f64,
    pub(crate) kernel_slab_before_bytes: u64,
    pub(crate) kernel_slab_after_bytes: u64,
    /// `/proc/meminfo` Slab delta / connections: socket structs etc., both ends, system-wide.
    pub(crate) kernel_slab_per_conn_bytes: f64,
    pub(crate) sockets_used_before: u64,
    pub(crate) sockets_used_after: u64,
    pub(crate) ramp_s: f64,
    pub(crate) connect_rate_per_s: f64,
    pub(crate) gateway_cpu_ramp_s: Option<f64>,
    pub(crate) conns_per_gateway_cpu_s: Option<f64>,
    pub(crate) client_cpu_s: f64,
    pub(crate) connect_latency_us: Latency,
    /// From the end of the ramp until the gateway counted every connection open.
    pub(crate) open_wait_s: f64,
    pub(crate) hold_s: f64,
    pub(crate) pings_answered: u64,
    pub(crate) data_frames_received: u64,
    pub(crate) conns_lost: u64,
    pub(crate) last_loss: Option<String>,
}

/// Connect latency percentiles in microseconds.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Latency {
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
}

impl Latency {
    /// Percentiles of `h` (all zero if it is empty).
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        let q = |quantile| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(quantile)
            }
        };
        Self {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max(),
        }
    }
}

/// `(after - before) / n`, signed; zero when `n` is zero.
#[expect(
    clippy::cast_precision_loss,
    reason = "memory sizes and counts are far below 2^52"
)]
pub(crate) fn per_conn(before: u64, after: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        (after as f64 - before as f64) / n as f64
    }
}

/// `a / b` as a float (`None` when `b` is not positive).
#[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
pub(crate) fn rate(count: u64, seconds: f64) -> Option<f64> {
    (seconds > 0.0).then(|| count as f64 / seconds)
}

impl IdleReport {
    /// The report as one JSON object.
    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).expect("a report of plain numbers serializes")
    }

    /// The report as text for a person.
    pub(crate) fn text(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self
            .write_memory(&mut s)
            .and_then(|()| self.write_rate(&mut s));
        s
    }

    /// The header and the memory figures.
    fn write_memory(&self, s: &mut String) -> std::fmt::Result {
        writeln!(
            s,
            "loadgen idle: {} connections requested, {} open, {} failed",
            self.conns_requested, self.conns_ok, self.conns_failed
        )?;
        writeln!(
            s,
            "  clients:        {} workers × {} threads, {} source addresses",
            self.workers, self.threads_per_worker, self.source_ips
        )?;
        writeln!(
            s,
            "  gateway RSS:    {} → {} = {:.0} B ({:.2} KiB) per connection",
            mib(self.gateway_rss_before_bytes),
            mib(self.gateway_rss_after_bytes),
            self.gateway_rss_per_conn_bytes,
            self.gateway_rss_per_conn_kib
        )?;
        if let Some(closed) = self.gateway_rss_after_close_bytes {
            writeln!(
                s,
                "                  {} after the connections closed",
                mib(closed)
            )?;
        }
        writeln!(
            s,
            "  kernel TCP mem: {} → {} pages = {:.1} B per connection \
             (socket buffers; both ends of each loopback pair)",
            self.kernel_tcp_mem_before_pages,
            self.kernel_tcp_mem_after_pages,
            self.kernel_tcp_mem_per_conn_bytes
        )?;
        writeln!(
            s,
            "  kernel slab:    {} → {} = {:.0} B per connection (both ends; system-wide, noisy)",
            mib(self.kernel_slab_before_bytes),
            mib(self.kernel_slab_after_bytes),
            self.kernel_slab_per_conn_bytes
        )?;
        writeln!(
            s,
            "  sockets used:   {} → {}",
            self.sockets_used_before, self.sockets_used_after
        )
    }

    /// The ramp, the hold, and anything that went wrong.
    fn write_rate(&self, s: &mut String) -> std::fmt::Result {
        writeln!(
            s,
            "  ramp:           {:.3} s = {:.0} connections/s; client CPU {:.2} s",
            self.ramp_s, self.connect_rate_per_s, self.client_cpu_s
        )?;
        if let (Some(cpu), Some(per_cpu)) = (self.gateway_cpu_ramp_s, self.conns_per_gateway_cpu_s)
        {
            let busy = 100.0 * cpu / self.ramp_s.max(f64::MIN_POSITIVE);
            writeln!(
                s,
                "  gateway CPU:    {cpu:.2} s during the ramp ({busy:.0}% of one core) = \
                 {per_cpu:.0} connections per CPU-second"
            )?;
        }
        let l = &self.connect_latency_us;
        writeln!(
            s,
            "  connect:        p50 {} p90 {} p99 {} p99.9 {} max {}",
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p999),
            us(l.max)
        )?;
        writeln!(
            s,
            "  idle hold:      {:.1} s (gateway counted all open {:.2} s after the ramp); \
             {} pings answered, {} data frames, {} connections lost",
            self.hold_s,
            self.open_wait_s,
            self.pings_answered,
            self.data_frames_received,
            self.conns_lost
        )?;
        if let Some(loss) = &self.last_loss {
            writeln!(s, "  last loss:      {loss}")?;
        }
        if let Some(accepted) = self.gateway_accepts_before.filter(|&n| n > 0) {
            writeln!(
                s,
                "  WARNING:        the gateway had accepted {accepted} connections before this \
                 run; memory they freed is reused, so the RSS increase understates. Start a \
                 fresh gateway for each memory measurement."
            )?;
        }
        for (reason, count) in &self.failures {
            writeln!(s, "  failed:         {count} × {reason}")?;
        }
        Ok(())
    }
}

#[expect(clippy::cast_precision_loss, reason = "display only")]
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[expect(clippy::cast_precision_loss, reason = "display only")]
fn us(micros: u64) -> String {
    if micros < 1000 {
        format!("{micros} µs")
    } else {
        format!("{:.2} ms", micros as f64 / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_arithmetic() {
        assert!((per_conn(1000, 5000, 4) - 1000.0).abs() < 1e-9);
        assert!((per_conn(5000, 1000, 4) + 1000.0).abs() < 1e-9, "signed");
        assert!(per_conn(1, 2, 0).abs() < 1e-9);
        assert_eq!(rate(10, 0.0), None);
        assert_eq!(rate(10, 2.0), Some(5.0));
    }

    #[test]
    fn latency_of_empty_and_full() {
        let mut h = crate::idle::connect::latency_histogram();
        assert_eq!(
            Latency::of(&h),
            Latency {
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0
            }
        );
        for v in 1..=1000 {
            h.record(v).expect("in range");
        }
        let l = Latency::of(&h);
        assert_eq!((l.p50, l.p99, l.max), (500, 990, 1000));
        assert_eq!(us(1500), "1.50 ms");
    }
}
