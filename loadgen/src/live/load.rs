//! The load itself: sends at their intended times, churn, and receipts.
//!
//! Owns the choice of each send (a random live device of this worker, then a direct chat with
//! one of its user's peers or one of its user's groups by the scenario's share, a body size
//! from its distribution), churn (devices taken offline at random times or in mass events)
//! and each device's acks (on per-device timers). A send is written as soon as it is due; how
//! late it left versus its intended time is recorded, and its latency is later measured from
//! the intended time.
//! When no device of this worker is live at a send's time, the send is counted as skipped.

use std::cmp::Reverse;

use rand::Rng;
use rand::seq::IndexedRandom;
use wire::ChatId;

use crate::live::clock::{now_ns, secs_to_ns, to_f64, to_u64, us_between};
use crate::live::device::Status;
use crate::live::engine::{Engine, Stage, Timer};
use crate::live::scenario::Receipts;

impl Engine {
    /// Writes every send whose intended time has come.
    pub(crate) fn send_due(&mut self) {
        loop {
            let now = now_ns();
            let Some(intended) = self.schedule.as_mut().and_then(|s| s.due(now)) else {
                return;
            };
            self.send_one(intended);
        }
    }

    fn send_one(&mut self, intended: u64) {
        let Some(&dev) = self.live.choose(&mut self.rng) else {
            self.stats.counts.skipped_no_device += 1;
            return;
        };
        let g = self.devices[dev as usize].g;
        let Some(chat) = self.pick_chat(g) else {
            self.stats.counts.skipped_no_device += 1;
            self.stats.fail("no chat id for a group (setup incomplete)");
            return;
        };
        let len = self.setup.scenario.body_bytes.sample(&mut self.rng) as usize;
        let d = &mut self.devices[dev as usize];
        d.send(&mut self.enc, chat, intended, len, &mut self.body);
        self.dirty.push(dev);
        self.stats.on_send(intended, us_between(intended, now_ns()));
    }

    /// A chat for a message from global device `g`.
    fn pick_chat(&mut self, g: u32) -> Option<ChatId> {
        let plan = &self.setup.plan;
        let user = plan.user_of(g);
        let groups = &plan.user_groups[user as usize];
        let direct = groups.is_empty() || self.rng.random_bool(self.setup.scenario.direct_share);
        if direct {
            let &peer = plan.peers[user as usize].choose(&mut self.rng)?;
            Some(plan.direct_chat(user, peer))
        } else {
            let &n = groups.choose(&mut self.rng)?;
            self.groups.get(n)
        }
    }

    /// Random churn: each due moment takes one live device offline for `offline_s`.
    pub(crate) fn churn_due(&mut self, now: u64) {
        let offline_ns = secs_to_ns(self.setup.scenario.churn.offline_s);
        while self.churn.as_mut().and_then(|c| c.due(now)).is_some() {
            if let Some(&dev) = self.live.choose(&mut self.rng) {
                self.take_offline(dev, now + offline_ns);
            }
        }
    }

    /// Churn event `n`: a share of this worker's live devices drops at once.
    pub(crate) fn churn_event(&mut self, n: u32, now: u64) {
        if self.stage != Stage::Running || now >= self.send_end_ns {
            return;
        }
        let Some(event) = self.setup.scenario.churn.events.get(n as usize) else {
            return;
        };
        let until = now + secs_to_ns(event.offline_s);
        let live = to_f64(self.live.len() as u64);
        let count = usize::try_from(to_u64((live * event.fraction).round())).unwrap_or(0);
        let chosen: Vec<u32> = self
            .live
            .choose_multiple(&mut self.rng, count)
            .copied()
            .collect();
        for &dev in &chosen {
            self.take_offline(dev, until);
            self.devices[dev as usize].storm = Some(n);
        }
        if let Some(storm) = self.storms.get_mut(n as usize) {
            storm.at_ns = now;
            storm.devices = chosen.len() as u64;
        }
    }

    /// `dev`'s ack timer: a live device acks every chat with new deliveries (`Delivered`, and
    /// `Read` with `receipts = "read"`). Each device keeps its own timer, armed by its first
    /// unacked delivery, as real clients batch their acks; they are not synchronized across
    /// devices (one instant for every device made every `receipt_interval_ms` a burst of acks
    /// that measured the burst, not the gateway).
    pub(crate) fn ack_due(&mut self, dev: u32, now: u64) {
        let read = self.setup.scenario.receipts == Receipts::Read;
        let acking = matches!(self.stage, Stage::Running | Stage::Drained);
        let d = &mut self.devices[dev as usize];
        d.ack_armed = false;
        if d.unacked.is_empty() || self.stage == Stage::Finished {
            return;
        }
        if acking && d.status == Status::Live {
            self.stats.counts.acks_sent += d.ack(&mut self.enc, read);
            self.dirty.push(dev);
        } else {
            // Not yet (before the load starts) or not now (offline): ask again later.
            self.arm_ack(dev, now);
        }
    }

    /// Sets `dev`'s ack timer to go off `receipt_interval_ms` after `now`.
    pub(crate) fn arm_ack(&mut self, dev: u32, now: u64) {
        self.devices[dev as usize].ack_armed = true;
        let at = now + self.setup.scenario.receipt_interval_ms * 1_000_000;
        self.timers.push(Reverse((at, Timer::Ack { dev })));
    }
}
