//! The service-level objective a run is judged by: `p99<=500ms,p999<=1s,loss=0,dup=0,order=0`.
//!
//! Owns the grammar and the judgement, nothing else. Terms, comma-separated:
//! - latency: `p50`, `p90`, `p99`, `p999`, `p9999`, `max` (end-to-end delivery, from the
//!   intended send time) or the same with `sent_` (send → `Sent`), then `<=` and a duration
//!   (`250us`, `50ms`, `1s`, `1.5s`);
//! - counts: `loss`, `dup`, `order`, `errors`, then `=` or `<=` and a whole number (`=N`
//!   means at most N: a run is never failed for doing better).
//!
//! Pure; invariant: a parsed `Slo` has at least one term and no term twice.

use std::fmt;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

/// What a term limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Metric {
    /// A quantile (`0.99`) of end-to-end latency, or the maximum (`1.0`), in µs.
    Delivery(Quantile),
    /// A quantile of send → `Sent` latency, in µs.
    Sent(Quantile),
    /// Messages acknowledged with `Sent` that some member device never received.
    Loss,
    /// Messages a device received twice.
    Dup,
    /// Messages a device received out of order.
    Order,
    /// Requests answered with an error (`RateLimited` included) and frames that failed.
    Errors,
}

/// A quantile in millionths (`990_000` = p99), so it compares and prints exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Quantile(pub(crate) u32);

impl Quantile {
    /// As a fraction for `Histogram::value_at_quantile`.
    pub(crate) fn fraction(self) -> f64 {
        f64::from(self.0) / 1e6
    }
}

/// One `metric <= limit` term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Term {
    /// The text as written.
    pub(crate) text: String,
    pub(crate) metric: Metric,
    /// µs for latencies, a count otherwise.
    pub(crate) limit: u64,
}

/// Every term of an objective.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Slo {
    pub(crate) terms: Vec<Term>,
}

/// What a run measured, as the terms need it.
pub(crate) trait Observed {
    /// The value of `metric` (µs or a count); `None` when there is nothing to measure (e.g.
    /// no message was delivered), which fails the term.
    fn value(&self, metric: Metric) -> Option<u64>;
}

/// One term judged.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) term: String,
    pub(crate) observed: Option<u64>,
    pub(crate) limit: u64,
    pub(crate) unit: &'static str,
    pub(crate) pass: bool,
}

impl Slo {
    /// Parses the grammar in the module doc.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut terms: Vec<Term> = Vec::new();
        for part in text.split(',').map(str::trim) {
            ensure!(!part.is_empty(), "empty term in SLO {text:?}");
            let term = term(part).with_context(|| format!("SLO term {part:?}"))?;
            ensure!(
                terms.iter().all(|t| t.metric != term.metric),
                "SLO {text:?} limits the same thing twice"
            );
            terms.push(term);
        }
        Ok(Self { terms })
    }

    /// Judges every term.
    pub(crate) fn check(&self, observed: &impl Observed) -> Vec<Check> {
        self.terms
            .iter()
            .map(|t| {
                let value = observed.value(t.metric);
                Check {
                    term: t.text.clone(),
                    observed: value,
                    limit: t.limit,
                    unit: match t.metric {
                        Metric::Delivery(_) | Metric::Sent(_) => "us",
                        _ => "count",
                    },
                    pass: value.is_some_and(|v| v <= t.limit),
                }
            })
            .collect()
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<&str> = self.terms.iter().map(|t| t.text.as_str()).collect();
        f.write_str(&texts.join(","))
    }
}

fn term(part: &str) -> Result<Term> {
    let (name, value) = match part.split_once("<=") {
        Some(pair) => pair,
        None => part.split_once('=').context("needs <= or =")?,
    };
    let (name, value) = (name.trim(), value.trim());
    let metric = match name {
        "loss" => Metric::Loss,
        "dup" => Metric::Dup,
        "order" => Metric::Order,
        "errors" => Metric::Errors,
        _ => match name.strip_prefix("sent_") {
            Some(q) => Metric::Sent(quantile(q)?),
            None => Metric::Delivery(quantile(name)?),
        },
    };
    let limit = match metric {
        Metric::Delivery(_) | Metric::Sent(_) => {
            ensure!(part.contains("<="), "a latency limit is written with <=");
            duration_us(value)?
        }
        _ => value.parse().context("a count limit is a whole number")?,
    };
    Ok(Term {
        text: part.to_owned(),
        metric,
        limit,
    })
}

/// `p99` → 990,000; `p999` → 999,000; `p50` → 500,000; `max` → 1,000,000.
fn quantile(name: &str) -> Result<Quantile> {
    if name == "max" {
        return Ok(Quantile(1_000_000));
    }
    let digits = name
        .strip_prefix('p')
        .filter(|d| !d.is_empty() && d.len() <= 6 && d.bytes().all(|b| b.is_ascii_digit()))
        .with_context(|| format!("unknown metric {name:?} (p50, p99, p999, max, loss, …)"))?;
    // "99" is 0.99 and "999" is 0.999: the digits are the fraction's decimals.
    let scaled: u32 = format!("{digits:0<6}").parse()?;
    ensure!(
        scaled > 0 && scaled < 1_000_000,
        "quantile {name:?} out of range"
    );
    Ok(Quantile(scaled))
}

/// `250us`, `50ms`, `1s`, `1.5s` → µs.
fn duration_us(text: &str) -> Result<u64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        bail!("duration {text:?} needs a unit: us, ms or s");
    };
    let value: f64 = number.trim().parse().context("not a number")?;
    ensure!(
        value.is_finite() && value >= 0.0,
        "duration {text:?} out of range"
    );
    Ok(crate::live::clock::to_u64((value * scale).round()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Observed for Fixed {
        fn value(&self, metric: Metric) -> Option<u64> {
            match metric {
                Metric::Delivery(Quantile(990_000)) => Some(400_000),
                Metric::Delivery(_) => Some(1_200_000),
                Metric::Sent(_) => None,
                Metric::Dup => Some(2),
                Metric::Loss | Metric::Order | Metric::Errors => Some(0),
            }
        }
    }

    #[test]
    fn the_issue_example() {
        let slo = Slo::parse("p99<=500ms,p999<=1s,loss=0,dup=0,order=0").expect("valid");
        let metrics: Vec<Metric> = slo.terms.iter().map(|t| t.metric).collect();
        assert_eq!(
            metrics,
            [
                Metric::Delivery(Quantile(990_000)),
                Metric::Delivery(Quantile(999_000)),
                Metric::Loss,
                Metric::Dup,
                Metric::Order
            ]
        );
        assert_eq!(slo.terms[0].limit, 500_000);
        assert_eq!(slo.terms[1].limit, 1_000_000);
        let checks = slo.check(&Fixed);
        let passed: Vec<bool> = checks.iter().map(|c| c.pass).collect();
        assert_eq!(passed, [true, false, true, false, true]);
        assert_eq!(slo.to_string(), "p99<=500ms,p999<=1s,loss=0,dup=0,order=0");
    }

    #[test]
    fn other_forms() {
        let slo = Slo::parse("p50 <= 250us, sent_p99<=1.5s, max<=2s, errors<=3").expect("ok");
        let limits: Vec<u64> = slo.terms.iter().map(|t| t.limit).collect();
        assert_eq!(limits, [250, 1_500_000, 2_000_000, 3]);
        assert_eq!(slo.terms[2].metric, Metric::Delivery(Quantile(1_000_000)));
        assert!(
            !slo.check(&Fixed)[1].pass,
            "nothing measured fails the term"
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "p99",
            "p99<=5",
            "p99=5ms",
            "p0<=1ms",
            "p1000000<=1ms",
            "q99<=1ms",
            "loss=-1",
            "loss=x",
            "p99<=1ms,p99<=2ms",
            "p99<=1ms,",
            "p99<=-1ms",
        ] {
            assert!(Slo::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
