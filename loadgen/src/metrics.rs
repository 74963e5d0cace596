//! The gateway's operations endpoint as loadgen reads it: one blocking HTTP GET of `/metrics`
//! and the few Prometheus samples the benchmarks need.
//!
//! Owns the GET (`ureq`, plain HTTP, bounded by [`HTTP_TIMEOUT`] and [`RESPONSE_BYTES_MAX`])
//! and a Prometheus text parser that sums every series of a name over its labels.

use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::target::Target;

/// One metrics request must finish within this.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// A metrics page larger than this is a bug on one side or the other.
const RESPONSE_BYTES_MAX: u64 = 16 << 20;

/// The samples loadgen reads from the gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GatewaySample {
    /// `process_resident_memory_bytes`.
    pub(crate) rss_bytes: u64,
    /// `switchboard_connections_open`, summed over cores.
    pub(crate) connections_open: u64,
    /// `process_cpu_seconds_total`, when the gateway exports it.
    pub(crate) cpu_s: Option<f64>,
    /// `switchboard_accepts_total` summed over cores, when the gateway exports it.
    pub(crate) accepts_total: Option<u64>,
}

impl GatewaySample {
    /// Fetches and parses the gateway's metrics page.
    pub(crate) fn fetch(ops: &Target) -> Result<Self> {
        let text = http_get(ops).with_context(|| format!("reading metrics from {}", ops.host))?;
        Self::parse(&text).with_context(|| format!("parsing metrics from {}", ops.host))
    }

    /// Picks the samples out of Prometheus text.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let rss = sum(text, "process_resident_memory_bytes")
            .context("no process_resident_memory_bytes sample")?;
        let open = sum(text, "switchboard_connections_open")
            .context("no switchboard_connections_open sample")?;
        ensure!(
            rss >= 0.0 && open >= 0.0,
            "negative memory or connection count"
        );
        // Both are integral gauges well below 2^53, so the float round trip is exact.
        #[expect(clippy::cast_sign_loss, reason = "checked non-negative above")]
        Ok(Self {
            rss_bytes: rss as u64,
            connections_open: open as u64,
            cpu_s: sum(text, "process_cpu_seconds_total"),
            // A counter: integral and non-negative, so the cast is exact.
            accepts_total: sum(text, "switchboard_accepts_total").map(|n| n.max(0.0) as u64),
        })
    }
}

/// The sum of every sample of metric `name` (any labels), or `None` if it has none.
pub(crate) fn sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value_part = if let Some(labels) = rest.strip_prefix('{') {
            match labels.find('}') {
                Some(end) => &labels[end + 1..],
                None => continue,
            }
        } else if rest.starts_with([' ', '\t']) {
            rest
        } else {
            continue; // a longer name that shares the prefix
        };
        // A sample may carry a timestamp after the value.
        if let Some(Ok(value)) = value_part.split_whitespace().next().map(str::parse::<f64>) {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// GETs `target.path` and returns the body of a 200 response (with `ureq`, no TLS).
fn http_get(target: &Target) -> Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into();
    let url = format!("http://{}{}", target.host, target.path);
    let mut response = agent.get(&url).call()?;
    let body = response
        .body_mut()
        .with_config()
        .limit(RESPONSE_BYTES_MAX)
        .read_to_string()?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 12345678
process_resident_memory_bytes_peak 99999999
switchboard_connections_open{core=\"0\"} 7000
switchboard_connections_open{core=\"1\"} 3000 1700000000000
switchboard_connections_opened_total{core=\"0\"} 5
process_cpu_seconds_total 1.5
switchboard_accepts_total{core=\"0\"} 5
switchboard_accepts_total{core=\"1\"} 7
";

    #[test]
    fn sums_over_labels_and_ignores_prefixed_names() {
        let s = GatewaySample::parse(PAGE).expect("parses");
        assert_eq!(s.rss_bytes, 12_345_678);
        assert_eq!(s.connections_open, 10_000);
        assert_eq!(s.cpu_s, Some(1.5));
        assert_eq!(s.accepts_total, Some(12));
        assert_eq!(sum(PAGE, "nothing_here"), None);
    }

    #[test]
    fn missing_samples_are_errors() {
        let err = GatewaySample::parse("process_resident_memory_bytes 1\n").expect_err("no conns");
        assert!(err.to_string().contains("switchboard_connections_open"));
        let no_cpu = GatewaySample::parse(
            "process_resident_memory_bytes 1\nswitchboard_connections_open{core=\"0\"} 0\n",
        )
        .expect("cpu is optional");
        assert_eq!(no_cpu.cpu_s, None);
    }
}
