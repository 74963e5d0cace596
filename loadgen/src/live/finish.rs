//! The end of a worker's run: its final figures, the sender side of the ledger, and the
//! ledger check of its devices once every worker's sender side is known.
//!
//! Owns what a worker reports after the grace period and the per-chat ledger totals. Sends
//! still unanswered at the end are reported as "maybe" (they may or may not have been
//! stored), never as acknowledged. Ledger lines go out only for chats with a fault (at most
//! [`FAULTY_CHATS_REPORTED_MAX`]), then one total.

use std::collections::BTreeMap;

use wire::ChatId;

use crate::live::device::Status;
use crate::live::engine::Engine;
use crate::live::ledger::Faults;
use crate::live::protocol::WorkerLine;

/// Per-chat ledger lines a worker sends at most (the total always covers every chat).
const FAULTY_CHATS_REPORTED_MAX: usize = 1000;

impl Engine {
    /// After the grace period: final figures and the sender side of the ledger.
    pub(crate) fn finish(&mut self, say: &mut dyn FnMut(WorkerLine)) {
        self.next_tick_ns = u64::MAX;
        for d in &mut self.devices {
            if !d.is_live() && d.status != Status::Failed {
                self.stats.counts.devices_offline_at_end += 1;
            }
            self.stats.counts.unanswered_at_end += d.pending.len() as u64;
            for p in std::mem::take(&mut d.pending).into_values() {
                d.outbox.unanswered(p.chat, p.stamp.chat_msg);
            }
        }
        for line in self.stats.final_lines() {
            say(line);
        }
        for d in &self.devices {
            for (&chat, sent) in &d.outbox.chats {
                say(WorkerLine::Acked {
                    device: d.g,
                    chat,
                    acked: sent.acked.clone(),
                    maybe: sent.maybe.clone(),
                });
            }
        }
        for (n, storm) in self.storms.iter().enumerate() {
            let all_back = storm.back == storm.devices && storm.devices > 0;
            say(WorkerLine::Storm {
                event: n as u32,
                devices: storm.devices,
                synced_us: if all_back {
                    crate::live::clock::us_between(storm.at_ns, storm.last_synced_ns)
                } else {
                    0
                },
            });
        }
        say(WorkerLine::Final);
    }

    /// Checks every device's inbox against what every worker says was sent.
    pub(crate) fn check(&mut self, say: &mut dyn FnMut(WorkerLine)) {
        let mut per_chat: BTreeMap<ChatId, Faults> = BTreeMap::new();
        let mut lost_reconnected = 0;
        for d in &self.devices {
            let chats = self.chats_of(d.g);
            for (chat, faults) in d.inbox.check(d.g, chats, &self.expected) {
                if d.reconnected {
                    lost_reconnected += faults.lost;
                }
                per_chat.entry(chat).or_default().add(&faults);
            }
        }
        let mut total = Faults::default();
        let mut reported = 0;
        for (chat, faults) in &per_chat {
            total.add(faults);
            if faults.any() && reported < FAULTY_CHATS_REPORTED_MAX {
                reported += 1;
                say(WorkerLine::Ledger {
                    chat: Some(*chat),
                    faults: *faults,
                });
            }
        }
        say(WorkerLine::Count {
            name: "lost_on_reconnected_devices".into(),
            value: lost_reconnected,
        });
        say(WorkerLine::Ledger {
            chat: None,
            faults: total,
        });
        say(WorkerLine::Checked);
    }

    /// Every chat global device `g` is a member of, by the plan and the announced group ids.
    fn chats_of(&self, g: u32) -> Vec<ChatId> {
        let plan = &self.setup.plan;
        let user = plan.user_of(g);
        let direct = plan.peers[user as usize]
            .iter()
            .map(|&peer| plan.direct_chat(user, peer));
        let groups = plan.user_groups[user as usize]
            .iter()
            .filter_map(|&n| self.groups.get(n));
        direct.chain(groups).collect()
    }
}
