//! Devices' connections over their life: the ramp, attempts and their deadlines, reading and
//! writing on epoll events, disconnects and reconnects with backoff.
//!
//! Owns the transitions of [`Status`] and the live set (`Engine::live`). Invariants: a
//! device is in `live` exactly while its status is `Live`; a device's socket is in the epoll
//! set exactly while `conn` is `Some` (dropping the socket removes it); every attempt has a
//! deadline timer, and a timer for an older attempt does nothing.

use std::cmp::Reverse;

use rand::Rng;
use rustix::event::epoll;

use crate::live::clock::{now_ns, secs_to_ns, to_f64, to_u64, us_between};
use crate::live::conn::{Conn, Readable, mix16};
use crate::live::device::Status;
use crate::live::engine::{Engine, Stage, Timer};

/// Attempts of the initial connection before a device is given up on.
const INITIAL_ATTEMPTS_MAX: u32 = 3;
/// Backoff after the first failure; doubles per failure up to [`BACKOFF_MAX_NS`].
const BACKOFF_BASE_NS: u64 = 100_000_000;
const BACKOFF_MAX_NS: u64 = 5_000_000_000;
/// Bytes read from one socket per event, so one busy connection cannot starve the rest.
const READ_BUDGET_BYTES: usize = 1 << 20;

impl Engine {
    /// The ramp: every device gets its first attempt, evenly over `ramp_up_s`.
    pub(crate) fn start_connecting(&mut self, now: u64) {
        self.stage = Stage::Connecting;
        let n = self.devices.len() as u64;
        let ramp_ns = secs_to_ns(self.setup.scenario.ramp_up_s);
        for dev in 0..n {
            let at = now + ramp_ns * dev / n.max(1);
            let timer = Timer::Connect {
                dev: dev as u32,
                attempt: 0,
            };
            self.timers.push(Reverse((at, timer)));
        }
    }

    /// A connect timer fired: start the attempt if the device is still waiting for it.
    pub(crate) fn connect_due(&mut self, dev: u32, attempt: u32, now: u64) {
        let d = &self.devices[dev as usize];
        let waiting = matches!(d.status, Status::New | Status::Offline { .. });
        if !waiting || d.attempt != attempt || self.stage == Stage::Finished {
            return;
        }
        self.open(dev, now);
    }

    fn open(&mut self, dev: u32, now: u64) {
        let g = self.devices[dev as usize].g;
        let targets = &self.setup.targets;
        let target = &targets[g as usize % targets.len()];
        let source = self.setup.source_ips.pick(u64::from(g));
        let frame_max = self.setup.limits.frame_bytes_max;
        let d = &mut self.devices[dev as usize];
        d.attempt += 1;
        d.conn_started_ns = now;
        // Messages meant to be sent before this attempt began were missed while away: they
        // arrive through sync (or not at all, if this attempt fails).
        d.online_since_ns = now;
        d.inbox.on_connect();
        let nonce = mix16(now ^ u64::from(g) << 20);
        let deadline = Timer::Deadline {
            dev,
            attempt: d.attempt,
        };
        self.timers
            .push(Reverse((now + self.setup.connect_timeout_ns, deadline)));
        let conn = match Conn::open(target, source, &d.token, nonce, frame_max) {
            Ok(conn) => conn,
            Err(e) => return self.attempt_failed(dev, &format!("connect: {e}"), now),
        };
        let flags = epoll::EventFlags::IN | epoll::EventFlags::OUT | epoll::EventFlags::RDHUP;
        let data = epoll::EventData::new_u64(u64::from(dev));
        if let Err(e) = epoll::add(&self.epoll, conn.stream(), data, flags) {
            return self.attempt_failed(dev, &format!("epoll: {e}"), now);
        }
        d.conn = Some(conn);
        d.status = Status::Connecting;
    }

    /// The attempt's time is up: give up on it unless it made it.
    pub(crate) fn deadline(&mut self, dev: u32, attempt: u32, now: u64) {
        let d = &self.devices[dev as usize];
        if d.attempt == attempt && matches!(d.status, Status::Connecting | Status::Syncing) {
            self.attempt_failed(dev, "timed out before SyncDone", now);
        }
    }

    /// An epoll event for local device `dev`.
    pub(crate) fn service(&mut self, dev: u32, readable: bool, writable: bool) {
        let Some(d) = self.devices.get_mut(dev as usize) else {
            return;
        };
        let Some(conn) = d.conn.as_mut() else {
            return;
        };
        if writable && let Err(e) = conn.flush() {
            return self.lost(dev, &format!("write: {e}"), now_ns());
        }
        if readable {
            let outcome = conn.read(&mut self.scratch, READ_BUDGET_BYTES);
            let now = now_ns();
            match outcome {
                Ok(Readable::Eof) => {
                    self.frames(dev, now);
                    return self.lost(dev, "closed by server", now);
                }
                Ok(Readable::Upgraded) => self.upgraded(dev, now),
                Ok(Readable::More) => {}
                Err(e) => return self.lost(dev, &format!("read: {e}"), now),
            }
            self.frames(dev, now);
        }
        self.rearm(dev);
    }

    fn upgraded(&mut self, dev: u32, now: u64) {
        let d = &mut self.devices[dev as usize];
        d.status = Status::Syncing;
        self.stats
            .connect
            .saturating_record(us_between(d.conn_started_ns, now));
    }

    /// `SyncDone` arrived: the device is live; unanswered sends go out again.
    pub(crate) fn synced(&mut self, dev: u32, now: u64) {
        let d = &mut self.devices[dev as usize];
        if d.status != Status::Syncing {
            return;
        }
        let first = !d.ever_live;
        d.ever_live = true;
        d.status = Status::Live;
        d.failures = 0;
        self.stats
            .sync
            .saturating_record(us_between(d.conn_started_ns, now));
        self.stats.counts.resent += d.resend_pending(&mut self.enc, &mut self.body);
        if !first {
            d.reconnected = true;
            self.stats.counts.reconnects += 1;
        }
        if let Some(n) = d.storm.take()
            && let Some(storm) = self.storms.get_mut(n as usize)
        {
            storm.back += 1;
            storm.last_synced_ns = storm.last_synced_ns.max(now);
        }
        if self.stage == Stage::Connecting && first {
            self.initial_left -= 1;
        }
        self.live_pos[dev as usize] = self.live.len();
        self.live.push(dev);
        self.dirty.push(dev);
    }

    /// The connection broke (or the server closed it): offline, reconnect after a backoff.
    pub(crate) fn lost(&mut self, dev: u32, reason: &str, now: u64) {
        if self.devices[dev as usize].status == Status::Live {
            self.stats.counts.disconnects += 1;
        }
        self.attempt_failed(dev, reason, now);
    }

    /// Drops the connection, tallies why (unless the server asked us to go), and decides
    /// when to try again, or to give up.
    fn attempt_failed(&mut self, dev: u32, reason: &str, now: u64) {
        self.unlive(dev);
        let initial = self.stage == Stage::Connecting;
        let jitter = self.rng.random_range(0.5..1.5);
        let d = &mut self.devices[dev as usize];
        if d.go_away_ms.is_none() {
            self.stats.fail(reason);
        }
        if d.status != Status::Live {
            d.failures += 1;
        }
        d.conn = None;
        let permanent = reason.contains("close 4001") || reason.contains("close 4002");
        if permanent || (initial && !d.ever_live && d.failures >= INITIAL_ATTEMPTS_MAX) {
            d.status = Status::Failed;
            if initial && !d.ever_live {
                self.initial_left -= 1;
            }
            return;
        }
        let backoff = match d.go_away_ms.take() {
            Some(ms) => u64::from(ms) * 1_000_000,
            None if d.failures == 0 => 0,
            None => {
                let doubled = BACKOFF_BASE_NS << d.failures.min(6);
                to_u64(to_f64(doubled.min(BACKOFF_MAX_NS)) * jitter)
            }
        };
        self.reconnect_at(dev, now + backoff);
    }

    /// Schedules the device's next attempt (it is offline until then).
    pub(crate) fn reconnect_at(&mut self, dev: u32, at: u64) {
        let d = &mut self.devices[dev as usize];
        d.status = Status::Offline { until_ns: at };
        let timer = Timer::Connect {
            dev,
            attempt: d.attempt,
        };
        self.timers.push(Reverse((at, timer)));
    }

    /// Takes a live device off the network on purpose until `until_ns` (churn).
    pub(crate) fn take_offline(&mut self, dev: u32, until_ns: u64) {
        self.unlive(dev);
        self.devices[dev as usize].conn = None;
        self.reconnect_at(dev, until_ns);
    }

    fn unlive(&mut self, dev: u32) {
        let at = std::mem::replace(&mut self.live_pos[dev as usize], usize::MAX);
        if at != usize::MAX {
            self.live.swap_remove(at);
            if let Some(&moved) = self.live.get(at) {
                self.live_pos[moved as usize] = at;
            }
        }
    }

    /// After the schedule: every offline device reconnects now.
    pub(crate) fn bring_everyone_back(&mut self, now: u64) {
        for dev in 0..self.devices.len() as u32 {
            if let Status::Offline { until_ns } = self.devices[dev as usize].status
                && until_ns > now
            {
                self.reconnect_at(dev, now);
            }
        }
    }

    /// Every device that is not failed is live, and every send was answered.
    pub(crate) fn everyone_back(&self) -> bool {
        self.devices
            .iter()
            .all(|d| d.status == Status::Failed || (d.is_live() && d.pending.is_empty()))
    }

    /// Writes what each dirty device has queued, and watches for writability if needed.
    pub(crate) fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &dev in &dirty {
            let Some(conn) = self.devices[dev as usize].conn.as_mut() else {
                continue;
            };
            if conn.phase == crate::live::conn::Phase::Connecting {
                continue; // the writable event will flush it
            }
            if let Err(e) = conn.flush() {
                self.lost(dev, &format!("write: {e}"), now_ns());
                continue;
            }
            self.rearm(dev);
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// Watches for writability exactly while there is something to write.
    fn rearm(&mut self, dev: u32) {
        let Some(conn) = self.devices[dev as usize].conn.as_ref() else {
            return;
        };
        let mut flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
        if conn.wants_write() {
            flags |= epoll::EventFlags::OUT;
        }
        let data = epoll::EventData::new_u64(u64::from(dev));
        // Modifying a registered socket only fails if it is not registered, which the
        // invariant rules out; a failure would show up as a stalled connection's deadline.
        let _ = epoll::modify(&self.epoll, conn.stream(), data, flags);
    }
}
