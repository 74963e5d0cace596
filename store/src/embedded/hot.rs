//! The applier's copy of the index rows it reads back most: chat heads, device cursors,
//! members, devices and chat rows.
//!
//! Every receipt reads its chat's head and the device's cursor before it moves the cursor,
//! and in the index each of those reads is a search of a 64 MiB memtable (about a fifth of the
//! applier's CPU at 14,000 receipts/s, `perf` on the gateway). The applier wrote those rows
//! itself, so it keeps what it wrote: a hit costs one hash lookup.
//!
//! Owns coherence with the committed index. Invariants:
//! - An entry holds a row's committed value, or `None` for a row the applier deleted. It is
//!   filled only after a successful commit, from that commit's own puts and deletes (never
//!   from a read, so nothing read before a commit can go stale behind it).
//! - Every transaction that writes the index while a cache exists carries it: the applier's
//!   batches and its sweeps (the index's only writers once the store is open; replay at open
//!   runs before the cache exists). A miss falls through to the index.
//! - Bounded: two generations of at most `capacity / 2` rows each; when the newer one is
//!   full it becomes the older one and the oldest rows go. A rewritten row moves to the newer
//!   generation, so rows in use (heads, cursors) stay.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use lsm_tree::Slice;

use super::layout::{self as l, Key};

/// Rows kept by default: about 100 bytes each, so ~13 MiB when full.
pub(crate) const DEFAULT_CAPACITY: usize = 131_072;

type Generation = HashMap<Key, Option<Slice>, RandomState>;

/// The cache (see the module doc).
pub(crate) struct HotRows {
    newer: Generation,
    older: Generation,
    generation_max: usize,
}

impl HotRows {
    /// A cache of at most `capacity` rows (at least 2).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            newer: Generation::default(),
            older: Generation::default(),
            generation_max: (capacity / 2).max(1),
        }
    }

    /// Whether rows under `key` are kept (by its table's prefix byte).
    pub(crate) fn keeps(key: &[u8]) -> bool {
        matches!(
            key.first(),
            Some(&(l::HEAD | l::CURSOR | l::MEMBER | l::DEVICE | l::CHAT))
        )
    }

    /// The committed row under `key` if the cache knows it: `Some(None)` for a deleted row,
    /// `None` for "ask the index".
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Option<Slice>> {
        let key = Key::from_bytes(key)?;
        self.newer.get(&key).or_else(|| self.older.get(&key))
    }

    /// Records what a commit wrote under `key` (a kept table's row).
    pub(crate) fn committed(&mut self, key: &[u8], value: Option<Slice>) {
        let Some(key) = Key::from_bytes(key) else {
            return;
        };
        if self.newer.len() >= self.generation_max && !self.newer.contains_key(&key) {
            self.older = std::mem::take(&mut self.newer);
        }
        self.older.remove(&key);
        self.newer.insert(key, value);
    }

    /// Rows held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use wire::ids::{ChatId, ChatKind, DeviceId, MessageId, UserId};

    use super::super::index::{self, Txn};
    use super::super::{apply, sweep};
    use super::*;
    use crate::model::{
        BodyKind, Change, Entry, Message, Millis, Mutation, ReceiptKind, Retention, Role, Seq,
        Update, WriteBatch,
    };

    fn key(prefix: u8, n: u64) -> Key {
        Key::new(prefix).seq(n)
    }

    #[test]
    fn keeps_only_the_tables_the_applier_reads_back() {
        for prefix in [l::HEAD, l::CURSOR, l::MEMBER, l::DEVICE, l::CHAT] {
            assert!(HotRows::keeps(key(prefix, 1).as_ref()));
        }
        for prefix in [l::ENTRY, l::SENT, l::SENT_BY_TIME, l::FLOOR, l::LEFT] {
            assert!(!HotRows::keeps(key(prefix, 1).as_ref()));
        }
        assert!(!HotRows::keeps(&[]));
    }

    #[test]
    fn a_hit_is_the_last_committed_value_and_a_delete_is_remembered() {
        let mut hot = HotRows::new(8);
        let k = key(l::HEAD, 1);
        assert_eq!(hot.get(k.as_ref()), None);
        hot.committed(k.as_ref(), Some(Slice::from(&[1u8][..])));
        hot.committed(k.as_ref(), Some(Slice::from(&[2u8][..])));
        assert_eq!(hot.get(k.as_ref()), Some(&Some(Slice::from(&[2u8][..]))));
        hot.committed(k.as_ref(), None);
        assert_eq!(hot.get(k.as_ref()), Some(&None));
    }

    #[test]
    fn stays_within_its_capacity_and_keeps_rewritten_rows() {
        let mut hot = HotRows::new(8);
        let kept = key(l::CURSOR, 0);
        for n in 1..=100 {
            hot.committed(key(l::CURSOR, n).as_ref(), Some(Slice::from(&[0u8][..])));
            // A row in use is rewritten all the time (a cursor by every receipt).
            hot.committed(kept.as_ref(), Some(Slice::from(&[n as u8][..])));
            assert!(hot.len() <= 8, "{} rows held", hot.len());
        }
        assert_eq!(
            hot.get(kept.as_ref()),
            Some(&Some(Slice::from(&[100u8][..])))
        );
        assert_eq!(hot.get(key(l::CURSOR, 100).as_ref()).map(|_| ()), Some(()));
        assert_eq!(hot.get(key(l::CURSOR, 1).as_ref()), None, "the oldest went");
    }

    /// The same random batches (appends, membership changes, cursors, devices) and sweeps,
    /// applied to one index with the cache and to one without: both must hold the same rows
    /// after every sweep. A cache that kept a stale row (a cursor deleted by a rejoin or a
    /// device prune, say) makes the cached side write a different cursor.
    #[test]
    fn an_index_written_through_the_cache_matches_one_written_without() {
        for (seed, capacity) in [(1, 4), (2, 4), (3, 64), (4, DEFAULT_CAPACITY), (5, 16)] {
            let plain = index::temp();
            let cached = index::temp();
            let mut hot = HotRows::new(capacity);
            let mut run = Run::new(seed);
            for step in 1..=600u64 {
                let batch = run.batch();
                let apply = |txn: &mut Txn<'_>| {
                    apply::apply_batch(txn, step, &batch, &mut apply::Scratch::default())
                        .expect("apply");
                    txn.commit().expect("commit");
                };
                apply(&mut Txn::new(&plain.1));
                apply(&mut Txn::with_hot(&cached.1, &mut hot));
                if step % 40 == 0 {
                    let retention = Retention {
                        offline_ttl_ms: 300,
                        history_ttl_ms: 300,
                        device_prune_ms: 200,
                    };
                    sweep::sweep(&mut Txn::new(&plain.1), &retention, run.now).expect("sweep");
                    sweep::sweep(&mut Txn::with_hot(&cached.1, &mut hot), &retention, run.now)
                        .expect("sweep");
                    assert_eq!(
                        rows(&plain.1),
                        rows(&cached.1),
                        "seed {seed}, step {step}: the cached index differs"
                    );
                }
            }
            assert!(hot.len() <= capacity.max(2));
            assert_eq!(rows(&plain.1), rows(&cached.1), "seed {seed}");
        }
    }

    fn rows(index: &crate::embedded::engine::Index) -> Vec<(Slice, Slice)> {
        use lsm_tree::Guard;
        index
            .prefix([])
            .map(|guard| guard.into_inner().expect("row"))
            .collect()
    }

    /// Valid random batches over three users' direct chats and one group.
    struct Run {
        rng: rand::rngs::StdRng,
        heads: Vec<(ChatId, Seq)>,
        now: Millis,
        client_msg_id: u64,
    }

    impl Run {
        fn new(seed: u64) -> Self {
            use rand::SeedableRng as _;
            Self {
                rng: rand::rngs::StdRng::seed_from_u64(seed),
                heads: vec![
                    (ChatId::direct(user(1), user(2)), 0),
                    (ChatId::direct(user(2), user(3)), 0),
                    (ChatId::group(7), 0),
                ],
                now: 1_000,
                client_msg_id: 0,
            }
        }

        fn batch(&mut self) -> WriteBatch {
            use rand::Rng as _;
            let mut mutations = Vec::new();
            for _ in 0..self.rng.random_range(1..=4) {
                self.now += self.rng.random_range(0..=8);
                let i = self.rng.random_range(0..self.heads.len());
                let (chat, head) = self.heads[i];
                let someone = user(self.rng.random_range(1..=5));
                let device = DeviceId::new(self.rng.random_range(1..=2)).expect("device");
                let m = match self.rng.random_range(0..10) {
                    0..=3 if head > 0 || chat.kind() == ChatKind::Direct => {
                        let entry = if chat.kind() == ChatKind::Group && self.rng.random_bool(0.3) {
                            self.update(someone)
                        } else {
                            self.message(chat, someone, device)
                        };
                        self.heads[i].1 += 1;
                        Mutation::Append {
                            chat,
                            seq: head + 1,
                            entry: Arc::new(entry),
                        }
                    }
                    0..=3 => {
                        self.heads[i].1 += 1;
                        Mutation::Append {
                            chat,
                            seq: 1,
                            entry: Arc::new(Entry::Update(Update {
                                ts_ms: self.now,
                                actor: user(1),
                                change: Change::Created {
                                    name: "g".to_owned(),
                                    history: false,
                                    members: vec![
                                        (user(1), Role::Admin),
                                        (user(2), Role::Member),
                                        (user(3), Role::Member),
                                    ],
                                },
                            })),
                        }
                    }
                    4..=7 if head > 0 => Mutation::Cursor {
                        chat,
                        user: someone,
                        device,
                        kind: if self.rng.random_bool(0.5) {
                            ReceiptKind::Delivered
                        } else {
                            ReceiptKind::Read
                        },
                        up_to_seq: self.rng.random_range(1..=head + 2),
                    },
                    _ => Mutation::DeviceSeen {
                        user: someone,
                        device,
                        at_ms: self.now,
                    },
                };
                mutations.push(m);
            }
            WriteBatch { mutations }
        }

        fn update(&mut self, someone: UserId) -> Entry {
            use rand::Rng as _;
            let change = match self.rng.random_range(0..4) {
                0 => Change::Added(vec![someone]),
                1 => Change::Removed(vec![someone]),
                2 => Change::Promoted(vec![someone]),
                _ => Change::Left,
            };
            Entry::Update(Update {
                ts_ms: self.now,
                actor: someone,
                change,
            })
        }

        fn message(&mut self, chat: ChatId, someone: UserId, device: DeviceId) -> Entry {
            self.client_msg_id += 1;
            let sender = match chat.direct_users() {
                Some((a, b)) if someone != a && someone != b => a,
                _ => someone,
            };
            Entry::Message(Message {
                server_msg_id: MessageId::new(u128::from(self.client_msg_id)).expect("id"),
                sender,
                sender_device: device,
                client_msg_id: self.client_msg_id,
                ts_ms: self.now,
                kind: BodyKind::Text,
                body: vec![1; 10],
                attachments: Vec::new(),
            })
        }
    }

    fn user(id: u64) -> UserId {
        UserId::new(id).expect("user")
    }

    #[test]
    fn a_key_longer_than_any_layout_key_is_never_kept() {
        let mut hot = HotRows::new(8);
        let long = [l::HEAD; 64];
        hot.committed(&long, Some(Slice::from(&[1u8][..])));
        assert_eq!(hot.get(&long), None);
        assert_eq!(hot.len(), 0);
    }
}
