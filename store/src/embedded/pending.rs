//! Idempotency answers of durable records the applier has not applied yet, so that a lookup
//! (`Store::sent`) need not wait for the applier: the owner of every new send asks one, and an
//! applier behind by tens of milliseconds would add that to every send.
//!
//! Owns the map from idempotency key to [`SentRecord`] for records in `applied_next..`. It
//! lives inside [`super::apply_thread::Shared`]'s lock, next to `applied_next`, and:
//! - the writer thread adds a record's answers when its append completes, before the waiter is
//!   told `Ok`, unless the applier has already applied it (then the index has them);
//! - the applier drops the answers of records below `applied_next` when it publishes it, after
//!   its commit.
//!
//! Invariant (read-your-acknowledged-writes for `sent`): an answer acknowledged before a lookup
//! is, when the lookup looks here, either here or committed to the index. So a lookup that
//! looks here first and then reads a fresh index snapshot sees it without waiting.

use std::collections::{HashMap, VecDeque};

use wire::ids::{DeviceId, UserId};

use crate::log::Lsn;
use crate::model::{Entry, Mutation, SentRecord, WriteBatch};

/// An idempotency key: a device's client message id.
pub(crate) type SentKey = (UserId, DeviceId, u64);

/// The answers one write batch gives, in mutation order.
pub(crate) fn answers(batch: &WriteBatch) -> Vec<(SentKey, SentRecord)> {
    batch
        .mutations
        .iter()
        .filter_map(|m| match m {
            Mutation::Append {
                chat,
                seq,
                entry: Entry::Message(message),
            } => Some((message.idempotency_key(), message.sent_record(*chat, *seq))),
            _ => None,
        })
        .collect()
}

/// Answers of durable, not yet applied records (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct PendingSent {
    /// The newest answer per key, with its record's LSN.
    by_key: HashMap<SentKey, (Lsn, SentRecord)>,
    /// Every added record's answers as given, in LSN order (the writer completes appends in
    /// order): what to drop once the record is applied.
    by_lsn: VecDeque<(Lsn, Vec<(SentKey, SentRecord)>)>,
}

impl PendingSent {
    /// Adds record `lsn`'s answers; `applied_next` is the applier's progress (a record below it
    /// is in the index already, and adding it would keep it here forever).
    pub(crate) fn add(&mut self, lsn: Lsn, applied_next: Lsn, answers: Vec<(SentKey, SentRecord)>) {
        if lsn < applied_next {
            return;
        }
        for &(key, record) in &answers {
            self.by_key.insert(key, (lsn, record));
        }
        self.by_lsn.push_back((lsn, answers));
    }

    /// Drops the answers of records below `applied_next` (now in the index).
    pub(crate) fn applied(&mut self, applied_next: Lsn) {
        while self
            .by_lsn
            .front()
            .is_some_and(|(lsn, _)| *lsn < applied_next)
        {
            let Some((lsn, answers)) = self.by_lsn.pop_front() else {
                break;
            };
            for (key, _) in answers {
                // A later record with the same key keeps its own answer.
                if self.by_key.get(&key).is_some_and(|(at, _)| *at == lsn) {
                    self.by_key.remove(&key);
                }
            }
        }
    }

    pub(crate) fn get(&self, key: &SentKey) -> Option<SentRecord> {
        self.by_key.get(key).map(|(_, record)| *record)
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn answers_stay_until_their_record_is_applied() {
        let mut p = PendingSent::default();
        p.add(10, 10, vec![(key(1), record(1)), (key(2), record(2))]);
        p.add(11, 10, vec![(key(3), record(3))]);
        assert_eq!(p.get(&key(2)), Some(record(2)));
        p.applied(11);
        assert_eq!((p.get(&key(1)), p.get(&key(2))), (None, None));
        assert_eq!(p.get(&key(3)), Some(record(3)));
        p.applied(12);
        assert!(p.by_key.is_empty() && p.by_lsn.is_empty());
    }

    #[test]
    fn a_record_already_applied_is_not_added() {
        let mut p = PendingSent::default();
        p.add(4, 5, vec![(key(1), record(1))]);
        assert_eq!(p.get(&key(1)), None);
        assert!(p.by_lsn.is_empty());
    }

    #[test]
    fn a_later_answer_for_the_same_key_outlives_the_earlier_record() {
        let mut p = PendingSent::default();
        p.add(1, 0, vec![(key(1), record(1))]);
        p.add(2, 0, vec![(key(1), record(2))]);
        p.applied(2);
        assert_eq!(p.get(&key(1)), Some(record(2)));
        p.applied(3);
        assert_eq!(p.get(&key(1)), None);
    }
}
