//! What durable records the applier has not applied yet leave pending, so that the reads the
//! owner of a chat makes on the send path need not wait for the applier: the idempotency
//! lookup of every new send (`Store::sent`) and the load of a chat (`Store::chat`), which used
//! to wait until everything durable was applied, so an applier behind by tens of milliseconds
//! (seconds while the index flushes on a busy CPU) added that to every send and chat load.
//!
//! Owns, for records in `applied_next..`, each one's idempotency answers ([`SentRecord`] by
//! key) and the chats it appends to (the newest such LSN per chat). It lives inside
//! [`super::apply_thread::Shared`]'s lock, next to `applied_next`, and:
//! - the writer thread adds a record's entry when its append completes, before the waiter is
//!   told `Ok`, unless the applier has already applied it (then the index has it);
//! - the applier drops the entries of records below `applied_next` after it publishes it (after
//!   its commit), a chunk per hold of the lock, so the writer's completion callbacks (every
//!   acknowledgement) never wait long for it. Meanwhile an entry of an applied record does no
//!   harm: its answer is the one the index holds, and a chat's last append below
//!   `applied_next` makes no read wait.
//!
//! Invariant (read-your-acknowledged-writes, per key): a record acknowledged before a read is,
//! when the read looks here, either here or committed to the index. So:
//! - a lookup that asks the answers here first and then reads a fresh index snapshot sees every
//!   acknowledged answer without waiting;
//! - a read of chat `c` that finds no pending append to `c` may read the index at once, and
//!   otherwise need only wait until that append (or everything durable when the read was
//!   issued, if earlier) is applied.
//!
//! Only appends are tracked per chat: the chat rows a chat-scoped read sees (meta, head,
//! members, entries) change only by appends to that chat. Cursors and devices are not (a new
//! device's cursors touch every chat of its user), so reads of those wait for everything.

use std::collections::VecDeque;

use foldhash::HashMap;
use wire::ids::{ChatId, DeviceId, UserId};

use crate::log::Lsn;
use crate::model::{Entry, Mutation, SentRecord, WriteBatch};

/// An idempotency key: a device's client message id.
pub(crate) type SentKey = (UserId, DeviceId, u64);

/// What one write batch leaves pending until it is applied.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Unapplied {
    /// The idempotency answers it gives, in mutation order.
    answers: Vec<(SentKey, SentRecord)>,
    /// The chats it appends to, each once.
    chats: Vec<ChatId>,
}

impl Unapplied {
    /// What `batch` leaves pending (computed before it is written, on the caller's thread).
    pub(crate) fn of(batch: &WriteBatch) -> Self {
        let mut out = Self::default();
        for mutation in &batch.mutations {
            if let Mutation::Append { chat, seq, entry } = mutation {
                if let Entry::Message(message) = &**entry {
                    out.answers
                        .push((message.idempotency_key(), message.sent_record(*chat, *seq)));
                }
                // A batch appends to few chats, usually runs of one: a linear check is enough.
                if !out.chats.contains(chat) {
                    out.chats.push(*chat);
                }
            }
        }
        out
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.answers.is_empty() && self.chats.is_empty()
    }
}

/// Idempotency answers and chat appends of durable, not yet applied records (see the module
/// doc).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The newest answer per key, with its record's LSN.
    answers: HashMap<SentKey, (Lsn, SentRecord)>,
    /// The newest pending append per chat.
    appends: HashMap<ChatId, Lsn>,
    /// Every added record's entry as given, in LSN order (the writer completes appends in
    /// order): what to drop once the record is applied.
    records: VecDeque<(Lsn, Unapplied)>,
}

impl Pending {
    /// Adds record `lsn`'s entry; `applied_next` is the applier's progress (a record below it
    /// is in the index already, and adding it would keep it here forever).
    pub(crate) fn add(&mut self, lsn: Lsn, applied_next: Lsn, unapplied: Unapplied) {
        if lsn < applied_next || unapplied.is_empty() {
            return;
        }
        for &(key, record) in &unapplied.answers {
            self.answers.insert(key, (lsn, record));
        }
        for &chat in &unapplied.chats {
            self.appends.insert(chat, lsn);
        }
        self.records.push_back((lsn, unapplied));
    }

    /// Drops the entries of records below `applied_next` (now in the index), whole records
    /// at a time until about `budget` entries are gone; returns whether more remain to drop.
    pub(crate) fn applied(&mut self, applied_next: Lsn, budget: usize) -> bool {
        let mut dropped = 0;
        while self
            .records
            .front()
            .is_some_and(|(lsn, _)| *lsn < applied_next)
        {
            if dropped >= budget {
                return true;
            }
            let Some((lsn, unapplied)) = self.records.pop_front() else {
                break;
            };
            dropped += unapplied.answers.len() + unapplied.chats.len();
            // A later record with the same key or chat keeps its own entry.
            for (key, _) in unapplied.answers {
                if self.answers.get(&key).is_some_and(|(at, _)| *at == lsn) {
                    self.answers.remove(&key);
                }
            }
            for chat in unapplied.chats {
                if self.appends.get(&chat) == Some(&lsn) {
                    self.appends.remove(&chat);
                }
            }
        }
        false
    }

    /// The pending answer for `key`.
    pub(crate) fn sent(&self, key: &SentKey) -> Option<SentRecord> {
        self.answers.get(key).map(|(_, record)| *record)
    }

    /// The LSN of the newest pending append to `chat`.
    pub(crate) fn last_append(&self, chat: ChatId) -> Option<Lsn> {
        self.appends.get(&chat).copied()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use wire::ids::{ChatId, MessageId};

    fn key(n: u64) -> SentKey {
        (
            UserId::new(n).expect("id"),
            DeviceId::new(1).expect("id"),
            n,
        )
    }

    fn record(seq: u64) -> SentRecord {
        SentRecord {
            chat: ChatId::direct(UserId::new(1).expect("id"), UserId::new(2).expect("id")),
            seq,
            server_msg_id: MessageId::new(u128::from(seq)).expect("id"),
            ts_ms: 5,
        }
    }

    fn chat(n: u64) -> ChatId {
        ChatId::direct(UserId::new(1).expect("id"), UserId::new(n).expect("id"))
    }

    fn unapplied(answers: &[(u64, u64)], chats: &[u64]) -> Unapplied {
        Unapplied {
            answers: answers.iter().map(|&(k, s)| (key(k), record(s))).collect(),
            chats: chats.iter().map(|&c| chat(c)).collect(),
        }
    }

    #[test]
    fn entries_stay_until_their_record_is_applied() {
        let mut p = Pending::default();
        p.add(10, 10, unapplied(&[(1, 1), (2, 2)], &[2]));
        p.add(11, 10, unapplied(&[(3, 3)], &[3]));
        assert_eq!(p.sent(&key(2)), Some(record(2)));
        assert_eq!(
            (p.last_append(chat(2)), p.last_append(chat(3))),
            (Some(10), Some(11))
        );
        p.applied(11, usize::MAX);
        assert_eq!((p.sent(&key(1)), p.sent(&key(2))), (None, None));
        assert_eq!(p.last_append(chat(2)), None);
        assert_eq!(p.sent(&key(3)), Some(record(3)));
        assert_eq!(p.last_append(chat(3)), Some(11));
        p.applied(12, usize::MAX);
        assert!(p.answers.is_empty() && p.appends.is_empty() && p.records.is_empty());
    }

    #[test]
    fn entries_are_dropped_a_budget_at_a_time_whole_records_first() {
        let mut p = Pending::default();
        p.add(1, 0, unapplied(&[(1, 1), (2, 2)], &[2]));
        p.add(2, 0, unapplied(&[(3, 3)], &[3]));
        p.add(3, 0, unapplied(&[(4, 4)], &[4]));
        assert!(
            p.applied(3, 2),
            "the first record (3 entries) uses the budget up"
        );
        assert_eq!(p.sent(&key(1)), None);
        assert_eq!(
            p.sent(&key(3)),
            Some(record(3)),
            "still here, and still right"
        );
        assert!(!p.applied(3, 2));
        assert_eq!(p.last_append(chat(3)), None);
        assert_eq!(p.sent(&key(4)), Some(record(4)), "record 3 is not applied");
    }

    #[test]
    fn a_record_already_applied_or_empty_is_not_added() {
        let mut p = Pending::default();
        p.add(4, 5, unapplied(&[(1, 1)], &[2]));
        p.add(6, 5, Unapplied::default());
        assert_eq!(p.sent(&key(1)), None);
        assert_eq!(p.last_append(chat(2)), None);
        assert!(p.records.is_empty());
    }

    #[test]
    fn a_later_entry_for_the_same_key_or_chat_outlives_the_earlier_record() {
        let mut p = Pending::default();
        p.add(1, 0, unapplied(&[(1, 1)], &[2]));
        p.add(2, 0, unapplied(&[(1, 2)], &[2]));
        p.applied(2, usize::MAX);
        assert_eq!(p.sent(&key(1)), Some(record(2)));
        assert_eq!(p.last_append(chat(2)), Some(2));
        p.applied(3, usize::MAX);
        assert_eq!(p.sent(&key(1)), None);
        assert_eq!(p.last_append(chat(2)), None);
    }

    #[test]
    fn a_batch_lists_each_chat_it_appends_to_once_and_the_answers_of_its_messages() {
        let message = |n: u64| {
            Entry::Message(crate::model::Message {
                server_msg_id: MessageId::new(u128::from(n)).expect("id"),
                sender: UserId::new(1).expect("id"),
                sender_device: DeviceId::new(1).expect("id"),
                client_msg_id: n,
                ts_ms: 5,
                kind: crate::model::BodyKind::Text,
                body: Vec::new(),
                attachments: Vec::new(),
            })
        };
        let append = |c: u64, seq: u64| Mutation::Append {
            chat: chat(c),
            seq,
            entry: Arc::new(message(seq)),
        };
        let batch = WriteBatch {
            mutations: vec![append(2, 1), append(2, 2), append(3, 1)],
        };
        let got = Unapplied::of(&batch);
        assert_eq!(got.chats, vec![chat(2), chat(3)]);
        assert_eq!(got.answers.len(), 3);
        assert_eq!(got.answers[1].1.seq, 2);
    }
}
