//! The coordinator's running totals over every worker's lines.
//!
//! Owns aggregation only: which workers are ready or done, connection and failure counts,
//! the merged connect-latency histogram, client CPU, and the keepers' ping and loss counts.
//! Pure: time comes in as an argument, so it is tested without processes.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use hdrhistogram::Histogram;

use crate::idle::connect::latency_histogram;
use crate::idle::protocol::WorkerLine;

/// One worker's state as its lines describe it.
#[derive(Default, Clone)]
struct Worker {
    ready: bool,
    ok: u64,
    failed: u64,
    done: bool,
    cpu_ms: u64,
    pings: u64,
    frames: u64,
    lost: u64,
    last_loss: String,
}

/// Totals over all workers.
pub(crate) struct Tally {
    workers: Vec<Worker>,
    pub(crate) failures: BTreeMap<String, u64>,
    pub(crate) latency_us: Histogram<u64>,
    /// The longest ramp any worker reported (they start within microseconds of each other).
    pub(crate) ramp: Duration,
}

impl Tally {
    /// Totals for `workers` workers, none ready yet.
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            workers: vec![Worker::default(); workers],
            failures: BTreeMap::new(),
            latency_us: latency_histogram(),
            ramp: Duration::ZERO,
        }
    }

    /// Takes in one line from worker `index`.
    pub(crate) fn apply(&mut self, index: usize, line: WorkerLine) -> Result<()> {
        let worker = self
            .workers
            .get_mut(index)
            .ok_or_else(|| anyhow!("no worker {index}"))?;
        match line {
            WorkerLine::Ready => worker.ready = true,
            WorkerLine::Progress { ok, failed } => (worker.ok, worker.failed) = (ok, failed),
            WorkerLine::Fail { count, reason } => {
                *self.failures.entry(reason).or_default() += count;
            }
            WorkerLine::Latency(pairs) => {
                for (value, count) in pairs {
                    self.latency_us.record_n(value, count).map_err(|e| {
                        anyhow!("worker {index} sent latency {value} µs out of range: {e:?}")
                    })?;
                }
            }
            WorkerLine::Done {
                ok,
                failed,
                ramp_us,
                cpu_ms,
            } => {
                ensure!(!worker.done, "worker {index} reported done twice");
                (worker.ok, worker.failed, worker.cpu_ms, worker.done) = (ok, failed, cpu_ms, true);
                self.ramp = self.ramp.max(Duration::from_micros(ramp_us));
            }
            WorkerLine::Keeper {
                pings,
                frames,
                lost,
                last_loss,
            } => {
                (worker.pings, worker.frames, worker.lost) = (pings, frames, lost);
                if !last_loss.is_empty() {
                    worker.last_loss = last_loss;
                }
            }
        }
        Ok(())
    }

    /// Every worker has minted its tokens and waits for `go`.
    pub(crate) fn all_ready(&self) -> bool {
        self.workers.iter().all(|w| w.ready)
    }

    /// Every worker has finished its ramp.
    pub(crate) fn all_done(&self) -> bool {
        self.workers.iter().all(|w| w.done)
    }

    /// Connections established so far.
    pub(crate) fn ok(&self) -> u64 {
        self.workers.iter().map(|w| w.ok).sum()
    }

    /// Connections that failed so far.
    pub(crate) fn failed(&self) -> u64 {
        self.workers.iter().map(|w| w.failed).sum()
    }

    /// Worker CPU time during their ramps (from `go`; token minting is not counted).
    pub(crate) fn client_cpu_ms(&self) -> u64 {
        self.workers.iter().map(|w| w.cpu_ms).sum()
    }

    /// Pings answered, data frames seen, and connections lost since the ramp, over all workers.
    pub(crate) fn keeper_totals(&self) -> (u64, u64, u64) {
        self.workers.iter().fold((0, 0, 0), |(p, f, l), w| {
            (p + w.pings, f + w.frames, l + w.lost)
        })
    }

    /// The most recent reason a worker gave for a lost connection, if any.
    pub(crate) fn last_loss(&self) -> Option<&str> {
        self.workers
            .iter()
            .map(|w| w.last_loss.as_str())
            .find(|r| !r.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_two_workers() {
        let mut tally = Tally::new(2);
        let apply = |tally: &mut Tally, index, line| tally.apply(index, line).expect("valid");
        apply(&mut tally, 0, WorkerLine::Ready);
        assert!(!tally.all_ready());
        apply(&mut tally, 1, WorkerLine::Ready);
        assert!(tally.all_ready());
        apply(&mut tally, 0, WorkerLine::Progress { ok: 4, failed: 1 });
        apply(&mut tally, 1, WorkerLine::Progress { ok: 6, failed: 0 });
        assert_eq!((tally.ok(), tally.failed()), (10, 1));
        let fail = |count| WorkerLine::Fail {
            count,
            reason: "connect: refused".into(),
        };
        apply(&mut tally, 0, fail(1));
        apply(&mut tally, 1, fail(2));
        apply(&mut tally, 0, WorkerLine::Latency(vec![(100, 4), (200, 1)]));
        apply(&mut tally, 1, WorkerLine::Latency(vec![(100, 6)]));
        let done = |ok, failed, ramp_us| WorkerLine::Done {
            ok,
            failed,
            ramp_us,
            cpu_ms: 7,
        };
        apply(&mut tally, 0, done(5, 1, 9_000));
        assert!(!tally.all_done());
        apply(&mut tally, 1, done(6, 2, 8_000));
        assert!(tally.all_done());
        assert!(tally.apply(1, done(6, 2, 1)).is_err(), "done twice");
        assert_eq!(
            (tally.ok(), tally.failed(), tally.client_cpu_ms()),
            (11, 3, 14)
        );
        assert_eq!(tally.ramp, Duration::from_millis(9), "the longest ramp");
        assert_eq!(tally.failures.get("connect: refused"), Some(&3));
        assert_eq!(tally.latency_us.len(), 11);
        assert_eq!(tally.latency_us.value_at_quantile(0.5), 100);
        let keeper = WorkerLine::Keeper {
            pings: 3,
            frames: 0,
            lost: 1,
            last_loss: "x".into(),
        };
        apply(&mut tally, 1, keeper);
        assert_eq!(tally.keeper_totals(), (3, 0, 1));
        assert_eq!(tally.last_loss(), Some("x"));
        assert!(tally.apply(2, WorkerLine::Ready).is_err(), "no such worker");
    }
}
