//! The coordinator's running totals over every worker's lines.
//!
//! Owns aggregation only: which workers reached which stage, the per-second timeline (summed
//! counters and merged interval histograms), the final histograms, counters and failures,
//! the ledger's sender side (to send back out) and its results, group ids and churn events.
//! Pure: fed lines, asked questions; tested without processes.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail, ensure};
use hdrhistogram::Histogram;
use wire::ChatId;

use crate::live::hist;
use crate::live::ledger::Faults;
use crate::live::plan::GroupIds;
use crate::live::protocol::{Command, WorkerLine};

/// One second of the run over all workers.
#[derive(Debug)]
pub(crate) struct Second {
    /// Workers that reported this second.
    pub(crate) reports: usize,
    pub(crate) conns: u64,
    pub(crate) sends: u64,
    pub(crate) deliveries: u64,
    pub(crate) errors: u64,
    pub(crate) e2e: Histogram<u64>,
    pub(crate) sent: Histogram<u64>,
}

/// A churn event over all workers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StormTotal {
    pub(crate) devices: u64,
    /// The slowest worker's time from the event to its last device synced (µs); `None` when
    /// a worker's devices did not all come back.
    pub(crate) synced_us: Option<u64>,
}

/// Which stages a worker reached (one flag each: they are independent facts, not a state).
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Default, Clone, Copy)]
struct Stages {
    ready: bool,
    connected: bool,
    setup: bool,
    drained: bool,
    finals: bool,
    checked: bool,
}

/// Totals over all workers.
#[derive(Debug)]
pub(crate) struct Merge {
    stages: Vec<Stages>,
    pub(crate) connected_ok: u64,
    pub(crate) connected_failed: u64,
    pub(crate) groups: GroupIds,
    pub(crate) timeline: BTreeMap<u64, Second>,
    pub(crate) hists: BTreeMap<String, Histogram<u64>>,
    pub(crate) counts: BTreeMap<String, u64>,
    /// Failures by reason: during connect (cumulative per worker, replaced) and final.
    pub(crate) fails: BTreeMap<String, u64>,
    connect_fails: Vec<BTreeMap<String, u64>>,
    /// The sender side of the ledger, as commands for every worker.
    pub(crate) expect: Vec<Command>,
    pub(crate) storms: BTreeMap<u32, StormTotal>,
    pub(crate) faulty_chats: BTreeMap<ChatId, Faults>,
    pub(crate) ledger: Faults,
    /// Every tick's end-to-end histogram merged (the live view's "p99 so far").
    pub(crate) e2e_so_far: Histogram<u64>,
    /// Every tick's errors added up.
    pub(crate) errors_so_far: u64,
}

impl Merge {
    /// Totals for `workers` workers and `groups` groups.
    pub(crate) fn new(workers: usize, groups: usize) -> Self {
        Self {
            stages: vec![Stages::default(); workers],
            connected_ok: 0,
            connected_failed: 0,
            groups: GroupIds::new(groups),
            timeline: BTreeMap::new(),
            hists: BTreeMap::new(),
            counts: BTreeMap::new(),
            fails: BTreeMap::new(),
            connect_fails: vec![BTreeMap::new(); workers],
            expect: Vec::new(),
            storms: BTreeMap::new(),
            faulty_chats: BTreeMap::new(),
            ledger: Faults::default(),
            e2e_so_far: hist::new(),
            errors_so_far: 0,
        }
    }

    /// Takes in one line from worker `w`.
    pub(crate) fn apply(&mut self, w: usize, line: WorkerLine) -> Result<()> {
        let finals = self
            .stages
            .get(w)
            .ok_or_else(|| anyhow!("no worker {w}"))?
            .finals;
        let stage = &mut self.stages[w];
        match line {
            WorkerLine::Ready => stage.ready = true,
            WorkerLine::Connected { ok, failed } => {
                ensure!(!stage.connected, "worker {w} connected twice");
                stage.connected = true;
                self.connected_ok += ok;
                self.connected_failed += failed;
            }
            WorkerLine::Fail { count, reason } if !finals && !stage.connected => {
                self.connect_fails[w].insert(reason, count);
            }
            WorkerLine::Fail { count, reason } => *self.fails.entry(reason).or_default() += count,
            WorkerLine::Chat { group, id } => self.groups.set(group, id)?,
            WorkerLine::SetupDone => stage.setup = true,
            WorkerLine::Tick(t) => {
                let second = self.timeline.entry(t.second).or_insert_with(|| Second {
                    reports: 0,
                    conns: 0,
                    sends: 0,
                    deliveries: 0,
                    errors: 0,
                    e2e: hist::new(),
                    sent: hist::new(),
                });
                second.reports += 1;
                second.conns += t.conns;
                second.sends += t.sends;
                second.deliveries += t.deliveries;
                second.errors += t.errors;
                self.errors_so_far += t.errors;
                let e2e = hist::decode(&t.e2e)?;
                hist::merge(&mut self.e2e_so_far, &e2e);
                hist::merge(&mut second.e2e, &e2e);
                hist::merge(&mut second.sent, &hist::decode(&t.sent)?);
            }
            WorkerLine::Drained => stage.drained = true,
            WorkerLine::Hist { name, hist: text } => {
                let h = hist::decode(&text)?;
                hist::merge(self.hists.entry(name).or_insert_with(hist::new), &h);
            }
            WorkerLine::Count { name, value } => *self.counts.entry(name).or_default() += value,
            WorkerLine::Acked {
                device,
                chat,
                acked,
                maybe,
            } => self.expect.push(Command::Expect {
                device,
                chat,
                acked,
                maybe,
            }),
            WorkerLine::Storm {
                event,
                devices,
                synced_us,
            } => {
                let s = self.storms.entry(event).or_insert(StormTotal {
                    devices: 0,
                    synced_us: Some(0),
                });
                s.devices += devices;
                s.synced_us = match (s.synced_us, devices) {
                    (prev, 0) => prev,
                    (Some(prev), _) if synced_us > 0 => Some(prev.max(synced_us)),
                    _ => None,
                };
            }
            WorkerLine::Final => stage.finals = true,
            WorkerLine::Ledger {
                chat: Some(c),
                faults,
            } => {
                self.faulty_chats.entry(c).or_default().add(&faults);
            }
            WorkerLine::Ledger { chat: None, faults } => self.ledger.add(&faults),
            WorkerLine::Checked => {
                if stage.checked {
                    bail!("worker {w} checked twice");
                }
                stage.checked = true;
            }
        }
        Ok(())
    }

    /// Whether every worker reached a stage (`ready`, `connected`, …).
    pub(crate) fn all(&self, stage: &str) -> bool {
        self.stages.iter().all(|s| match stage {
            "ready" => s.ready,
            "connected" => s.connected,
            "setup" => s.setup,
            "drained" => s.drained,
            "final" => s.finals,
            "checked" => s.checked,
            _ => false,
        })
    }

    /// Connection failures during the initial connect, by reason.
    pub(crate) fn connect_failures(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for per_worker in &self.connect_fails {
            for (reason, count) in per_worker {
                *out.entry(reason.clone()).or_default() += count;
            }
        }
        out
    }

    /// A final histogram by name (empty if no worker sent it).
    pub(crate) fn hist(&self, name: &str) -> Histogram<u64> {
        self.hists.get(name).cloned().unwrap_or_else(hist::new)
    }

    /// A counter by name (zero if no worker sent it).
    pub(crate) fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::protocol::Tick;
    use crate::live::ranges::RangeSet;

    #[test]
    fn merges_two_workers() {
        let mut m = Merge::new(2, 1);
        let apply = |m: &mut Merge, w, line| m.apply(w, line).expect("valid");
        apply(&mut m, 0, WorkerLine::Ready);
        assert!(!m.all("ready"));
        apply(&mut m, 1, WorkerLine::Ready);
        assert!(m.all("ready"));
        let fail = |count| WorkerLine::Fail {
            count,
            reason: "connect: refused".into(),
        };
        apply(&mut m, 0, fail(1));
        apply(&mut m, 0, fail(2)); // cumulative: replaces
        apply(&mut m, 0, WorkerLine::Connected { ok: 9, failed: 2 });
        apply(&mut m, 1, WorkerLine::Connected { ok: 10, failed: 0 });
        assert!(
            m.apply(1, WorkerLine::Connected { ok: 1, failed: 0 })
                .is_err()
        );
        assert_eq!(m.connect_failures().get("connect: refused"), Some(&2));
        assert_eq!((m.connected_ok, m.connected_failed), (19, 2));
        let mut h = hist::new();
        h.record(1_000).expect("in range");
        for w in 0..2 {
            apply(
                &mut m,
                w,
                WorkerLine::Tick(Tick {
                    second: 0,
                    conns: 5,
                    sends: 10,
                    deliveries: 20,
                    errors: 0,
                    e2e: hist::encode(&h),
                    sent: "-".into(),
                }),
            );
        }
        let s = &m.timeline[&0];
        assert_eq!((s.reports, s.conns, s.sends, s.e2e.len()), (2, 10, 20, 2));
        apply(
            &mut m,
            0,
            WorkerLine::Storm {
                event: 0,
                devices: 3,
                synced_us: 5,
            },
        );
        apply(
            &mut m,
            1,
            WorkerLine::Storm {
                event: 0,
                devices: 2,
                synced_us: 9,
            },
        );
        assert_eq!(m.storms[&0].devices, 5);
        assert_eq!(m.storms[&0].synced_us, Some(9));
        apply(
            &mut m,
            1,
            WorkerLine::Storm {
                event: 0,
                devices: 1,
                synced_us: 0,
            },
        );
        assert_eq!(m.storms[&0].synced_us, None, "one device never came back");
        apply(
            &mut m,
            0,
            WorkerLine::Acked {
                device: 1,
                chat: ChatId::group(5),
                acked: RangeSet::parse("1-3").expect("set"),
                maybe: RangeSet::default(),
            },
        );
        assert_eq!(m.expect.len(), 1);
        apply(
            &mut m,
            0,
            WorkerLine::Count {
                name: "sends".into(),
                value: 4,
            },
        );
        apply(
            &mut m,
            1,
            WorkerLine::Count {
                name: "sends".into(),
                value: 5,
            },
        );
        assert_eq!(m.count("sends"), 9);
    }
}
