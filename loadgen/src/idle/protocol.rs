//! The line protocol between `loadgen idle` and its worker processes.
//!
//! Owns the text of every line a worker writes on stdout ([`WorkerLine`]) and the one command
//! the coordinator writes on a worker's stdin ([`GO`]); closing stdin tells a worker to exit.
//! Invariant: `WorkerLine::parse(&line.to_string())` gives back `line` (a test holds it), so
//! the two sides cannot drift apart.

use std::fmt;

use anyhow::{Context, Result, bail, ensure};

/// The coordinator's signal to start connecting (sent once every worker is `ready`).
pub(crate) const GO: &str = "go";

/// One line from a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkerLine {
    /// Tokens minted and limits raised: waiting for [`GO`].
    Ready,
    /// Running totals during the ramp.
    Progress { ok: u64, failed: u64 },
    /// `count` connections failed for `reason` (sent once per reason, before `Done`).
    Fail { count: u64, reason: String },
    /// Connect latency in microseconds as (histogram bucket value, count) pairs, before `Done`.
    Latency(Vec<(u64, u64)>),
    /// The ramp is over: totals, its wall time, and the worker's CPU time during it.
    Done {
        ok: u64,
        failed: u64,
        ramp_us: u64,
        cpu_ms: u64,
    },
    /// The idle keeper's totals: pings answered, data frames seen, connections lost and why.
    Keeper {
        pings: u64,
        frames: u64,
        lost: u64,
        last_loss: String,
    },
}

impl WorkerLine {
    /// Parses one line (without its newline).
    pub(crate) fn parse(line: &str) -> Result<Self> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let mut nums = rest.split(' ');
        let mut num = |what: &str| -> Result<u64> {
            let text = nums
                .next()
                .with_context(|| format!("{word} line lacks {what}"))?;
            text.parse()
                .with_context(|| format!("{word} line: bad {what} {text:?}"))
        };
        let parsed = match word {
            "ready" => Self::Ready,
            "progress" => Self::Progress {
                ok: num("ok")?,
                failed: num("failed")?,
            },
            "fail" => {
                let (count, reason) = rest.split_once(' ').context("fail line lacks reason")?;
                Self::Fail {
                    count: count.parse().context("fail line: bad count")?,
                    reason: reason.into(),
                }
            }
            "latency" => Self::Latency(parse_pairs(rest)?),
            "done" => Self::Done {
                ok: num("ok")?,
                failed: num("failed")?,
                ramp_us: num("ramp_us")?,
                cpu_ms: num("cpu_ms")?,
            },
            "keeper" => {
                let (pings, frames, lost) = (num("pings")?, num("frames")?, num("lost")?);
                let last_loss = nums.collect::<Vec<_>>().join(" ");
                Self::Keeper {
                    pings,
                    frames,
                    lost,
                    last_loss,
                }
            }
            _ => bail!("unknown worker line {line:?}"),
        };
        Ok(parsed)
    }
}

impl fmt::Display for WorkerLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready => f.write_str("ready"),
            Self::Progress { ok, failed } => write!(f, "progress {ok} {failed}"),
            Self::Fail { count, reason } => write!(f, "fail {count} {}", one_line(reason)),
            Self::Latency(pairs) => {
                f.write_str("latency")?;
                pairs
                    .iter()
                    .try_for_each(|(value, count)| write!(f, " {value}:{count}"))
            }
            Self::Done {
                ok,
                failed,
                ramp_us,
                cpu_ms,
            } => {
                write!(f, "done {ok} {failed} {ramp_us} {cpu_ms}")
            }
            Self::Keeper {
                pings,
                frames,
                lost,
                last_loss,
            } => {
                write!(f, "keeper {pings} {frames} {lost} {}", one_line(last_loss))
            }
        }
    }
}

/// Reasons come from error messages; a newline in one would split the line.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn parse_pairs(text: &str) -> Result<Vec<(u64, u64)>> {
    text.split_whitespace()
        .map(|pair| {
            let (value, count) = pair.split_once(':').context("latency pair lacks ':'")?;
            let parsed = (value.parse()?, count.parse()?);
            ensure!(parsed.1 > 0, "latency pair with zero count");
            Ok(parsed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_round_trips() {
        let lines = [
            WorkerLine::Ready,
            WorkerLine::Progress { ok: 10, failed: 2 },
            WorkerLine::Fail {
                count: 3,
                reason: "connect: Connection refused (os error 111)".into(),
            },
            WorkerLine::Latency(vec![(105, 3), (2047, 1)]),
            WorkerLine::Latency(vec![]),
            WorkerLine::Done {
                ok: 5000,
                failed: 0,
                ramp_us: 812,
                cpu_ms: 300,
            },
            WorkerLine::Keeper {
                pings: 1,
                frames: 0,
                lost: 2,
                last_loss: "server close 4000".into(),
            },
            WorkerLine::Keeper {
                pings: 0,
                frames: 0,
                lost: 0,
                last_loss: String::new(),
            },
        ];
        for line in lines {
            let text = line.to_string();
            assert!(!text.contains('\n'));
            assert_eq!(WorkerLine::parse(&text).expect(&text), line, "{text}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "hello",
            "progress 1",
            "done 1 2 3 x",
            "latency 5",
            "latency 5:0",
            "fail x",
        ] {
            assert!(
                WorkerLine::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
