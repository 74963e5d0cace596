//! The exactly-once ledger: what each device received, checked against what was sent.
//!
//! Owns the recipient side ([`Inbox`], one per device: every event's seq per chat and every
//! message's (sender, per-chat counter) from its body), the sender side ([`Outbox`]: which
//! per-chat counters the gateway acknowledged with `Sent`, and which were still unanswered at
//! the end), and the final check of one against the other ([`Inbox::check`]). Pure: no
//! clock, no IO, so it is tested against a faulty peer by feeding it events.
//!
//! Rules (PROTOCOL.md §6.1–6.2):
//! - within one connection each event arrives once: a seq seen twice on one connection is a
//!   duplicate; after a reconnect, seqs at or below what the device already has may come
//!   again (it did not ack them) and are skipped as redelivered, not counted as faults;
//! - the same message (sender, counter) at two different seqs is a duplicate: stored twice;
//! - within a connection seqs ascend, and one sender's messages ascend in its counter: a seq
//!   below one already seen on the connection, or a counter below the sender's last, is out
//!   of order;
//! - every message acknowledged with `Sent` must reach every member device but the sender's:
//!   one that never arrived is lost; one that arrived but was neither acknowledged nor left
//!   unanswered (so was refused, or never sent) is a phantom.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use wire::ChatId;

use crate::live::body::Stamp;
use crate::live::ranges::RangeSet;

/// Faults and deliveries, per chat or in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Faults {
    /// Messages applied (first arrival of each).
    pub(crate) delivered: u64,
    /// Acknowledged messages a member device never got.
    pub(crate) lost: u64,
    /// Messages or events a device got twice.
    pub(crate) dup: u64,
    /// Events or messages that arrived out of order.
    pub(crate) order: u64,
    /// Messages that arrived but were never acknowledged or left unanswered.
    pub(crate) phantom: u64,
    /// Events sent again after a reconnect (allowed by the protocol; not a fault).
    pub(crate) redelivered: u64,
}

impl Faults {
    /// Adds `other` in.
    pub(crate) fn add(&mut self, other: &Self) {
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.dup += other.dup;
        self.order += other.order;
        self.phantom += other.phantom;
        self.redelivered += other.redelivered;
    }

    /// Whether any fault (not counting deliveries and redeliveries) is nonzero.
    pub(crate) fn any(&self) -> bool {
        self.lost + self.dup + self.order + self.phantom > 0
    }
}

/// What one arriving event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// New: applied (latency should be recorded).
    New,
    /// Already applied on an earlier connection: skipped.
    Redelivered,
    /// A fault (duplicate); counted.
    Duplicate,
}

/// One device's view of its chats.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// Bumped on each connection, so per-connection state resets lazily.
    conn: u32,
    chats: HashMap<ChatId, ChatLog>,
}

#[derive(Debug, Default)]
struct ChatLog {
    /// Every seq applied, on any connection.
    seqs: RangeSet,
    /// Seqs seen on the current connection (`conn`).
    conn_seqs: RangeSet,
    conn: u32,
    from: HashMap<u32, FromSender>,
    faults: Faults,
}

#[derive(Debug, Default)]
struct FromSender {
    got: RangeSet,
    last: u64,
}

impl Inbox {
    /// A new connection starts: what it delivers is checked afresh against what came before.
    pub(crate) fn on_connect(&mut self) {
        self.conn += 1;
    }

    /// An event of `chat` at `seq`: a message (with its body's stamp) or a membership change.
    pub(crate) fn on_event(&mut self, chat: ChatId, seq: u64, stamp: Option<&Stamp>) -> Arrival {
        let log = self.chats.entry(chat).or_default();
        if log.conn != self.conn {
            log.conn = self.conn;
            log.conn_seqs = RangeSet::default();
        }
        let conn_max = log.conn_seqs.max().unwrap_or(0);
        if !log.conn_seqs.insert(seq) {
            log.faults.dup += 1;
            return Arrival::Duplicate;
        }
        if log.seqs.contains(seq) {
            log.faults.redelivered += 1;
            return Arrival::Redelivered;
        }
        log.seqs.insert(seq);
        let mut out_of_order = seq < conn_max;
        if let Some(stamp) = stamp {
            let from = log.from.entry(stamp.sender).or_default();
            if !from.got.insert(stamp.chat_msg) {
                log.faults.dup += 1;
                return Arrival::Duplicate;
            }
            out_of_order |= stamp.chat_msg < from.last;
            from.last = from.last.max(stamp.chat_msg);
            log.faults.delivered += 1;
        }
        if out_of_order {
            log.faults.order += 1;
        }
        Arrival::New
    }

    /// The highest seq applied in `chat` (what a `Delivered` ack covers).
    pub(crate) fn applied_max(&self, chat: ChatId) -> Option<u64> {
        self.chats.get(&chat).and_then(|log| log.seqs.max())
    }

    /// Checks device `me`, a member of `chats`, against what was sent: faults per chat.
    pub(crate) fn check(
        &self,
        me: u32,
        chats: impl IntoIterator<Item = ChatId>,
        expected: &Expected,
    ) -> BTreeMap<ChatId, Faults> {
        let none = RangeSet::default();
        let mut out = BTreeMap::new();
        for chat in chats {
            let log = self.chats.get(&chat);
            let mut faults = log.map(|l| l.faults).unwrap_or_default();
            let senders = expected.0.get(&chat);
            for (&sender, sent) in senders.into_iter().flatten() {
                if sender == me {
                    continue;
                }
                let got = log
                    .and_then(|l| l.from.get(&sender))
                    .map_or(&none, |f| &f.got);
                faults.lost += sent.acked.count_not_in(got);
                faults.phantom += got.count_not_in_either(&sent.acked, &sent.maybe);
            }
            // Messages from a sender that sent nothing the ledger knows of are all phantoms.
            for (sender, from) in log.into_iter().flat_map(|l| &l.from) {
                if senders.is_none_or(|s| !s.contains_key(sender)) {
                    faults.phantom += from.got.len();
                }
            }
            out.insert(chat, faults);
        }
        out
    }
}

/// One sender device's messages to one chat, by per-chat counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SentSet {
    /// Answered `Sent`: every member device must get these.
    pub(crate) acked: RangeSet,
    /// Sent but never answered: may or may not have been stored.
    pub(crate) maybe: RangeSet,
}

/// One device's sends, per chat.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) chats: HashMap<ChatId, SentSet>,
}

impl Outbox {
    /// The gateway acknowledged `chat_msg` in `chat`.
    pub(crate) fn acked(&mut self, chat: ChatId, chat_msg: u64) {
        self.chats.entry(chat).or_default().acked.insert(chat_msg);
    }

    /// `chat_msg` in `chat` was never answered.
    pub(crate) fn unanswered(&mut self, chat: ChatId, chat_msg: u64) {
        self.chats.entry(chat).or_default().maybe.insert(chat_msg);
    }
}

/// Every sender's [`SentSet`] per chat, as merged from all workers.
#[derive(Debug, Default)]
pub(crate) struct Expected(HashMap<ChatId, HashMap<u32, SentSet>>);

impl Expected {
    /// Records sender device `sender`'s messages to `chat`.
    pub(crate) fn insert(&mut self, chat: ChatId, sender: u32, sent: SentSet) {
        self.0.entry(chat).or_default().insert(sender, sent);
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
