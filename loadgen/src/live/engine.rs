//! A worker's engine: every device of its share on one thread, one epoll set, one clock.
//!
//! Owns the event loop and the run's stages as the coordinator's commands move them:
//! connect (ramped) → setup (create groups) → go (the open-loop schedule, churn, ticks) →
//! drained (schedule over, everyone back, every send answered) → finish (final figures) →
//! check (the ledger). The loop sleeps in `epoll_wait` until the earliest of the next
//! intended send, the next timer and a 10 ms cap (to read commands), so a send leaves within
//! the timer slack of its intended time; the lateness it still has is measured and reported.
//! Layout: this file (loop, commands, timers), [`super::lifecycle`] (connections),
//! [`super::inbound`] (server frames), [`super::load`] (sends, churn, acks),
//! [`super::finish`] (final lines, ledger check). Never blocks except in `epoll_wait`; never
//! writes to stdout itself (lines go to the caller's `say`), so tests drive it in-process.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{Receiver, TryRecvError};

use anyhow::{Context, Result, bail};
use rand::{SeedableRng, rngs::StdRng};
use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};
use wire::{Encoder, Limits};

use crate::live::clock::{now_ns, secs_to_ns};
use crate::live::device::Device;
use crate::live::ledger::Expected;
use crate::live::plan::{GroupIds, Plan};
use crate::live::protocol::{Command, WorkerLine};
use crate::live::scenario::Scenario;
use crate::live::schedule::Schedule;
use crate::live::stats::Stats;
use crate::source_ips::SourceIps;
use crate::target::Target;

/// The longest the loop sleeps, so commands are read promptly.
const POLL_CAP_NS: u64 = 10_000_000;
/// Events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;
/// One second, in ns.
pub(crate) const SECOND_NS: u64 = 1_000_000_000;

/// What a worker is told at start: its share and how to reach the gateways.
#[derive(Debug)]
pub(crate) struct Setup {
    pub(crate) scenario: Scenario,
    pub(crate) plan: Plan,
    pub(crate) worker: u32,
    pub(crate) workers: u32,
    /// Global index of this worker's first device.
    pub(crate) first: u32,
    /// One token per local device.
    pub(crate) tokens: Vec<String>,
    /// Device `g` connects to `targets[g % len]`.
    pub(crate) targets: Vec<Target>,
    pub(crate) source_ips: SourceIps,
    /// The gateway's limits (frames are decoded with them).
    pub(crate) limits: Limits,
    /// How long an attempt may take from socket to `SyncDone`.
    pub(crate) connect_timeout_ns: u64,
}

/// Where the run is, as this worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Idle,
    Connecting,
    Connected,
    SettingUp,
    SetUp,
    Running,
    Drained,
    Finished,
}

/// Something to do at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Start connection attempt `attempt` of local device `dev` (if it is still due).
    Connect { dev: u32, attempt: u32 },
    /// Give up on attempt `attempt` of `dev` if it is not live by now.
    Deadline { dev: u32, attempt: u32 },
    /// Churn event `n` of the scenario.
    Churn { n: u32 },
    /// Local device `dev` acks what it has received (`receipt_interval_ms` after its first
    /// unacked delivery).
    Ack { dev: u32 },
}

/// A churn event's devices and when the last of them was synced again.
#[derive(Debug, Clone, Default)]
pub(crate) struct Storm {
    pub(crate) at_ns: u64,
    pub(crate) devices: u64,
    pub(crate) back: u64,
    pub(crate) last_synced_ns: u64,
}

/// The engine; see the module doc.
pub(crate) struct Engine {
    pub(crate) setup: Setup,
    pub(crate) epoll: OwnedFd,
    pub(crate) devices: Vec<Device>,
    /// Local indexes of live devices, and each device's place in it (`usize::MAX`: none).
    pub(crate) live: Vec<u32>,
    pub(crate) live_pos: Vec<usize>,
    pub(crate) enc: Encoder,
    pub(crate) stats: Stats,
    pub(crate) groups: GroupIds,
    pub(crate) expected: Expected,
    pub(crate) rng: StdRng,
    pub(crate) body: Vec<u8>,
    pub(crate) scratch: Vec<u8>,
    /// Local devices with output to write at the end of this turn.
    pub(crate) dirty: Vec<u32>,
    pub(crate) stage: Stage,
    pub(crate) timers: BinaryHeap<Reverse<(u64, Timer)>>,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) churn: Option<Schedule>,
    pub(crate) t0_ns: u64,
    pub(crate) send_end_ns: u64,
    pub(crate) next_tick_ns: u64,
    pub(crate) second: u64,
    pub(crate) storms: Vec<Storm>,
    /// Devices not yet live or failed in the initial connect.
    pub(crate) initial_left: u32,
    pub(crate) creates_left: u32,
    /// Lines produced while handling frames, said at the end of the turn.
    pub(crate) lines: Vec<WorkerLine>,
}

impl Engine {
    /// An engine for `setup`'s devices, nothing connected yet.
    pub(crate) fn new(setup: Setup) -> Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).context("epoll_create")?;
        let n = setup.tokens.len();
        let devices = (0..n as u32)
            .zip(setup.tokens.iter())
            .map(|(i, token)| Device::new(setup.first + i, token.clone()))
            .collect();
        let seed = setup.scenario.seed ^ (u64::from(setup.worker) + 1).wrapping_mul(0x9E37);
        Ok(Self {
            enc: Encoder::new(&setup.limits),
            groups: GroupIds::new(setup.plan.groups.len()),
            epoll,
            devices,
            live: Vec::with_capacity(n),
            live_pos: vec![usize::MAX; n],
            stats: Stats::default(),
            expected: Expected::default(),
            rng: StdRng::seed_from_u64(seed),
            body: Vec::new(),
            scratch: vec![0; 64 * 1024],
            dirty: Vec::new(),
            stage: Stage::Idle,
            timers: BinaryHeap::new(),
            schedule: None,
            churn: None,
            t0_ns: 0,
            send_end_ns: u64::MAX,
            next_tick_ns: u64::MAX,
            second: 0,
            storms: Vec::new(),
            initial_left: n as u32,
            creates_left: 0,
            lines: Vec::new(),
            setup,
        })
    }

    /// Runs until `commands` disconnects (the coordinator closed stdin).
    pub(crate) fn run(
        &mut self,
        commands: &Receiver<Command>,
        say: &mut dyn FnMut(WorkerLine),
    ) -> Result<()> {
        let mut events = Vec::with_capacity(EVENTS_PER_WAIT);
        loop {
            loop {
                match commands.try_recv() {
                    Ok(command) => self.command(command, say)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
            self.turn(say);
            let now = now_ns();
            let wait = self.next_wake().saturating_sub(now).min(POLL_CAP_NS);
            // `wait` ≤ POLL_CAP_NS < 1 s, so it fits `tv_nsec`.
            let timeout = Timespec {
                tv_sec: 0,
                tv_nsec: i64::try_from(wait).unwrap_or(0),
            };
            events.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut events), Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e).context("epoll_wait"),
            }
            for event in &events {
                let flags = event.flags;
                let readable = flags.intersects(
                    epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                );
                let writable = flags.contains(epoll::EventFlags::OUT);
                // Event data is the local device index, registered in `lifecycle`.
                self.service(event.data.u64() as u32, readable, writable);
            }
        }
    }

    /// Everything due now: timers, sends, ticks, acks, stage changes, then writes.
    fn turn(&mut self, say: &mut dyn FnMut(WorkerLine)) {
        let now = now_ns();
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.timer(timer, now);
        }
        self.send_due();
        self.churn_due(now);
        while now >= self.next_tick_ns {
            let line = self.stats.tick(self.second, self.live.len() as u64);
            say(line);
            self.second += 1;
            self.next_tick_ns += SECOND_NS;
        }
        self.flush_dirty();
        for line in self.lines.drain(..) {
            say(line);
        }
        self.advance_stage(now, say);
    }

    /// The earliest time anything is due.
    fn next_wake(&self) -> u64 {
        let timer = self.timers.peek().map_or(u64::MAX, |Reverse((at, _))| *at);
        let send = self
            .schedule
            .as_ref()
            .and_then(Schedule::peek)
            .unwrap_or(u64::MAX);
        let churn = self
            .churn
            .as_ref()
            .and_then(Schedule::peek)
            .unwrap_or(u64::MAX);
        timer.min(send).min(churn).min(self.next_tick_ns)
    }

    fn command(&mut self, command: Command, say: &mut dyn FnMut(WorkerLine)) -> Result<()> {
        match (command, self.stage) {
            (Command::Connect, Stage::Idle) => self.start_connecting(now_ns()),
            (Command::Setup, Stage::Connected) => self.start_setup(),
            (Command::Chat { group, id }, _) => self.groups.set(group, id)?,
            (Command::Go { t0_ns }, Stage::SetUp) => self.go(t0_ns),
            (Command::Finish, Stage::Running | Stage::Drained) => {
                self.stage = Stage::Finished;
                self.finish(say);
            }
            (
                Command::Expect {
                    device,
                    chat,
                    acked,
                    maybe,
                },
                Stage::Finished,
            ) => {
                let sent = crate::live::ledger::SentSet { acked, maybe };
                self.expected.insert(chat, device, sent);
            }
            (Command::Check, Stage::Finished) => self.check(say),
            (command, stage) => bail!("command {command} is not expected in stage {stage:?}"),
        }
        Ok(())
    }

    /// Moves to the next stage when this one's work is done, telling the coordinator.
    fn advance_stage(&mut self, now: u64, say: &mut dyn FnMut(WorkerLine)) {
        match self.stage {
            Stage::Connecting if self.initial_left == 0 => {
                self.stage = Stage::Connected;
                let failed = self
                    .devices
                    .iter()
                    .filter(|d| d.status == crate::live::device::Status::Failed)
                    .count() as u64;
                let ok = self.devices.len() as u64 - failed;
                for (reason, &count) in &self.stats.fails {
                    say(WorkerLine::Fail {
                        count,
                        reason: reason.clone(),
                    });
                }
                say(WorkerLine::Connected { ok, failed });
            }
            Stage::SettingUp if self.creates_left == 0 => {
                self.stage = Stage::SetUp;
                say(WorkerLine::SetupDone);
            }
            Stage::Running if now >= self.send_end_ns => {
                self.bring_everyone_back(now);
                if self.everyone_back() || now >= self.send_end_ns + self.drain_timeout_ns() {
                    self.stage = Stage::Drained;
                    say(WorkerLine::Drained);
                }
            }
            _ => {}
        }
    }

    /// How long after the schedule's end the worker waits for devices and answers.
    fn drain_timeout_ns(&self) -> u64 {
        self.setup.connect_timeout_ns + 10 * SECOND_NS
    }

    fn start_setup(&mut self) {
        self.stage = Stage::SettingUp;
        let plan = &self.setup.plan;
        let first = self.setup.first;
        let mut creates = Vec::new();
        for (n, members) in plan.groups.iter().enumerate() {
            // The creator's first device creates the group.
            let creator_device = plan.devices_of(members[0]).start;
            if let Some(local) = creator_device.checked_sub(first)
                && (local as usize) < self.devices.len()
            {
                let others: Vec<wire::UserId> =
                    members[1..].iter().map(|&m| plan.user_id(m)).collect();
                creates.push((local, n as u32, others));
            }
        }
        self.creates_left = creates.len() as u32;
        for (local, n, others) in creates {
            self.devices[local as usize].create_group(&mut self.enc, n, &others);
            self.dirty.push(local);
        }
    }

    fn go(&mut self, t0_ns: u64) {
        let s = &self.setup.scenario;
        let local = f64::from(self.setup.tokens.len() as u32);
        let share = local / f64::from(self.setup.plan.devices());
        let secs = secs_to_ns;
        let measure_from = t0_ns + secs(s.warmup_s);
        self.send_end_ns = measure_from + secs(s.duration_s);
        self.stats.set_window(measure_from, self.send_end_ns);
        let phase = f64::from(self.setup.worker) / f64::from(self.setup.workers);
        let seed = s.seed.wrapping_add(u64::from(self.setup.worker) << 32);
        let span = (t0_ns, self.send_end_ns);
        self.schedule = Some(Schedule::new(
            s.arrivals,
            s.rate_per_s * share,
            seed,
            phase,
            span,
        ));
        if s.churn.rate_per_s > 0.0 {
            let rate = s.churn.rate_per_s * share;
            let kind = crate::live::scenario::Arrivals::Poisson;
            self.churn = Some(Schedule::new(kind, rate, seed ^ 0xC4, 0.0, span));
        }
        for (n, e) in s.churn.events.iter().enumerate() {
            let at = t0_ns + secs(e.at_s);
            self.timers
                .push(Reverse((at, Timer::Churn { n: n as u32 })));
        }
        self.storms = vec![Storm::default(); s.churn.events.len()];
        self.t0_ns = t0_ns;
        self.next_tick_ns = t0_ns + SECOND_NS;
        self.stage = Stage::Running;
    }

    fn timer(&mut self, timer: Timer, now: u64) {
        match timer {
            Timer::Connect { dev, attempt } => self.connect_due(dev, attempt, now),
            Timer::Deadline { dev, attempt } => self.deadline(dev, attempt, now),
            Timer::Churn { n } => self.churn_event(n, now),
            Timer::Ack { dev } => self.ack_due(dev, now),
        }
    }
}
