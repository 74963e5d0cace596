//! A seeded random run: a few thousand writes (right and wrong seqs, creations, membership
//! changes, cursors, devices, mixed batches), sweeps on an advancing clock and reopens,
//! with every answer compared against [`Reference`].
//!
//! The operations stay within what the router does (cursors only from registered devices of
//! members and former members, timestamps that never go back), so a difference is a bug in
//! the backend or in the reference, never a question the contract leaves open. A failure
//! names the seed and the step; the same seed replays the same run.

use std::collections::BTreeMap;
use std::fmt::Debug;

use wire::ids::{ChatId, ChatKind, DeviceId, UserId};

use super::reference::Reference;
use super::{Harness, Subject, T0, append, dev, direct, group, message, same_refusal, user};
use crate::model::{
    BodyKind, Change, Entry, Millis, Mutation, ReceiptKind, Retention, Role, Seq, Update,
    WriteBatch,
};
use crate::{Store, StoreError};

/// The run's seed; change it to explore, keep it fixed in the suite.
const SEED: u64 = 0x5EED_C4A7_2024_0F0F;

/// Operations per run.
const STEPS: usize = 3_000;

/// Short enough that entries, keys and devices expire many times during a run.
const RANDOM_RETENTION: Retention = Retention {
    offline_ttl_ms: 2_000,
    history_ttl_ms: 6_000,
    device_prune_ms: 4_000,
};

const USERS: u64 = 6;
const DEVICES_PER_USER: u64 = 3;

/// Runs [`STEPS`] seeded random operations against the store and the reference model,
/// comparing the outcome of every write and sweep and a sample of reads after each step,
/// and every read of everything every 100 steps and at the end.
pub fn randomized_against_model<H: Harness>(h: H) {
    let mut run = Run {
        subject: Subject::open(h, RANDOM_RETENTION),
        model: Reference::new(RANDOM_RETENTION),
        rng: XorShift(SEED),
        now: T0,
        next_client_id: 1,
        keys: Vec::new(),
        step: 0,
        last: String::new(),
    };
    for step in 0..STEPS {
        run.step = step;
        run.one_step();
        run.compare_sample();
        if step % 100 == 99 {
            run.compare_everything();
        }
    }
    run.compare_everything();
}

/// xorshift64: a tiny deterministic generator (no dependency, same numbers everywhere).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`0` when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The chats the run writes to: a few direct chats and a few groups.
fn chats() -> Vec<ChatId> {
    vec![
        direct(1, 2),
        direct(1, 3),
        direct(2, 4),
        direct(3, 5),
        direct(5, 6),
        group(1),
        group(2),
        group(3),
        group(4),
    ]
}

struct Run<H: Harness> {
    subject: Subject<H>,
    model: Reference,
    rng: XorShift,
    now: Millis,
    next_client_id: u64,
    /// Every idempotency key written (refused ones too).
    keys: Vec<(UserId, DeviceId, u64)>,
    step: usize,
    /// The last operation, for failure messages.
    last: String,
}

impl<H: Harness> Run<H> {
    fn one_step(&mut self) {
        self.now += self.rng.below(40);
        match self.rng.below(100) {
            0..30 => {
                let mut staged = BTreeMap::new();
                let n = 1 + self.rng.below(3);
                let batch = (0..n).map(|_| self.gen_append(&mut staged)).collect();
                self.write(batch);
            }
            30..37 => {
                let create = self.gen_create();
                self.write(vec![create]);
            }
            37..50 => {
                let change = self.gen_membership();
                self.write(vec![change]);
            }
            50..68 => {
                let cursor = self.gen_cursor();
                self.write(vec![cursor]);
            }
            68..78 => {
                let seen = self.gen_seen();
                self.write(vec![seen]);
            }
            78..87 => {
                let batch = self.gen_mixed();
                self.write(batch);
            }
            87..96 => self.sweep(),
            96..98 => {
                self.last = "reopen".into();
                self.subject.reopen();
            }
            _ => self.last = "reads only".into(),
        }
    }

    fn write(&mut self, mutations: Vec<Mutation>) {
        let batch = WriteBatch { mutations };
        self.last = format!("write {batch:?}");
        let want = self.model.write(&batch);
        let got = super::wait(self.subject.store().write(batch));
        self.same("write", &got, &want);
    }

    fn sweep(&mut self) {
        if self.rng.percent(30) {
            self.now += self.rng.below(3 * RANDOM_RETENTION.history_ttl_ms / 2);
        }
        self.last = format!("sweep at {}", self.now);
        let want = Ok(self.model.sweep(self.now));
        let got = super::wait(self.subject.store().sweep(self.now));
        self.same("sweep", &got, &want);
    }

    /// One append: usually at head + 1 (as `staged` by this batch), sometimes a wrong seq.
    fn gen_append(&mut self, staged: &mut BTreeMap<ChatId, Seq>) -> Mutation {
        let chat = self.rng.pick(&chats());
        let head = staged
            .get(&chat)
            .copied()
            .unwrap_or_else(|| self.model.head(chat));
        let seq = match self.rng.below(14) {
            0 => head,
            1 => head + 2,
            2 => 1,
            _ => head + 1,
        };
        let entry = if chat.kind() == ChatKind::Group && seq == 1 && self.rng.percent(85) {
            self.created_entry(chat)
        } else {
            self.message_in(chat)
        };
        if seq == head + 1 {
            staged.insert(chat, seq);
        }
        append(chat, seq, entry)
    }

    /// A `Created`: usually at seq 1 of a group, sometimes misplaced.
    fn gen_create(&mut self) -> Mutation {
        let (chat, seq) = match self.rng.below(10) {
            0 => {
                let chat = self.rng.pick(&chats()[..5]);
                (chat, self.model.head(chat) + 1)
            }
            1 => {
                let chat = self.rng.pick(&chats()[5..]);
                (chat, self.model.head(chat) + 1)
            }
            _ => (self.rng.pick(&chats()[5..]), 1),
        };
        append(chat, seq, self.created_entry(chat))
    }

    /// A membership change at the head + 1 of a group (existing or not).
    fn gen_membership(&mut self) -> Mutation {
        let chat = self.rng.pick(&chats()[5..]);
        let members = self.model.members(chat);
        let actor = if members.is_empty() || self.rng.percent(10) {
            self.random_user()
        } else {
            self.rng.pick(&members)
        };
        let change = match self.rng.below(4) {
            0 => Change::Added(self.some_users(3)),
            1 => Change::Removed(self.some_users(2)),
            2 => Change::Promoted(self.some_users(2)),
            _ => Change::Left,
        };
        let entry = Entry::Update(Update {
            ts_ms: self.now,
            actor,
            change,
        });
        let seq = self.model.head(chat) + if self.rng.percent(5) { 2 } else { 1 };
        append(chat, seq, entry)
    }

    /// A receipt from a registered device of a member or former member (or, rarely, for a
    /// chat that does not exist).
    fn gen_cursor(&mut self) -> Mutation {
        let mut candidates = Vec::new();
        for chat in chats() {
            let users = self.model.members(chat).into_iter();
            for u in users.chain(self.model.former_members(chat)) {
                for d in self.model.registered(u) {
                    candidates.push((chat, u, d));
                }
            }
        }
        let kind = if self.rng.percent(40) {
            ReceiptKind::Read
        } else {
            ReceiptKind::Delivered
        };
        if candidates.is_empty() || self.rng.percent(4) {
            let chat = self.rng.pick(&chats());
            let (user, device) = (self.random_user(), self.random_device());
            return Mutation::Cursor {
                chat: if self.model.head(chat) == 0 {
                    chat
                } else {
                    group(99)
                },
                user,
                device,
                kind,
                up_to_seq: 1,
            };
        }
        let (chat, user, device) = self.rng.pick(&candidates);
        let up_to_seq = self.rng.below(self.model.head(chat) + 3);
        Mutation::Cursor {
            chat,
            user,
            device,
            kind,
            up_to_seq,
        }
    }

    /// A device seen now (sometimes with an older time, which must not move last-seen back).
    fn gen_seen(&mut self) -> Mutation {
        let back = if self.rng.percent(20) {
            self.rng.below(300)
        } else {
            0
        };
        Mutation::DeviceSeen {
            user: self.random_user(),
            device: self.random_device(),
            at_ms: self.now.saturating_sub(back).max(T0),
        }
    }

    /// Two to four mutations of different kinds in one batch.
    fn gen_mixed(&mut self) -> Vec<Mutation> {
        let mut staged = BTreeMap::new();
        let n = 2 + self.rng.below(3);
        (0..n)
            .map(|_| match self.rng.below(5) {
                0 | 1 => self.gen_append(&mut staged),
                2 => self.gen_cursor(),
                3 => self.gen_seen(),
                _ => self.gen_membership(),
            })
            .collect()
    }

    /// A `Created` for `chat`; groups with an odd id keep history, so a run always has both.
    fn created_entry(&mut self, chat: ChatId) -> Entry {
        let mut members = Vec::new();
        for u in self.some_users(4) {
            let role = if members.is_empty() {
                Role::Admin
            } else {
                Role::Member
            };
            members.push((u, role));
        }
        Entry::Update(Update {
            ts_ms: self.now,
            actor: members[0].0,
            change: Change::Created {
                name: format!("g{}", self.rng.below(100)),
                history: chat.get() % 2 == 1,
                members,
            },
        })
    }

    /// A message from a member of `chat` (or one of a direct chat's users), or anyone.
    fn message_in(&mut self, chat: ChatId) -> Entry {
        let mut senders = self.model.members(chat);
        if let Some((a, b)) = chat.direct_users() {
            senders.extend([a, b]);
        }
        let sender = if senders.is_empty() || self.rng.percent(5) {
            self.random_user()
        } else {
            self.rng.pick(&senders)
        };
        let device = self.random_device();
        let id = self.next_client_id;
        self.next_client_id += 1;
        self.keys.push((sender, device, id));
        let len = self.rng.below(12);
        let body: Vec<u8> = (0..len).map(|_| self.rng.below(256) as u8).collect();
        let Entry::Message(mut m) = message(sender, device, id, self.now, &body) else {
            unreachable!("message() builds a message")
        };
        if self.rng.percent(50) {
            m.kind = BodyKind::Opaque;
        }
        Entry::Message(m)
    }

    fn random_user(&mut self) -> UserId {
        user(1 + self.rng.below(USERS))
    }

    fn random_device(&mut self) -> DeviceId {
        dev(1 + self.rng.below(DEVICES_PER_USER))
    }

    /// One to `max` distinct users.
    fn some_users(&mut self, max: u64) -> Vec<UserId> {
        let mut out = Vec::new();
        for _ in 0..=self.rng.below(max) {
            let u = self.random_user();
            if !out.contains(&u) {
                out.push(u);
            }
        }
        out
    }

    /// A few random reads, compared.
    fn compare_sample(&mut self) {
        let chat = self.rng.pick(&chats());
        let head = self.model.head(chat);
        self.compare_chat(chat);
        let after = self.rng.below(head + 2);
        let until = if self.rng.percent(30) {
            Seq::MAX
        } else {
            after + self.rng.below(head + 2)
        };
        let limit = self.rng.below(6) as usize;
        self.compare_read_log(chat, after, until, limit);
        let before = if self.rng.percent(30) {
            0
        } else {
            self.rng.below(head + 3)
        };
        let limit = self.rng.below(5) as usize;
        let got = super::wait(self.subject.store().history(chat, before, limit));
        let want = self.model.history(chat, before, limit);
        self.same(
            &format!("history({chat:?}, {before}, {limit})"),
            &got,
            &want,
        );
        let (u, d) = (self.random_user(), self.random_device());
        self.compare_user(u, &[d]);
        if !self.keys.is_empty() {
            let key = self.keys[self.rng.below(self.keys.len() as u64) as usize];
            self.compare_sent(key);
        }
    }

    /// Every read of every chat, user, device and key.
    fn compare_everything(&mut self) {
        let mut all = chats();
        all.push(group(99));
        for chat in all {
            self.compare_chat(chat);
            self.compare_read_log(chat, 0, Seq::MAX, usize::MAX);
            let got = super::wait(self.subject.store().history(chat, 0, usize::MAX));
            let want = self.model.history(chat, 0, usize::MAX);
            self.same(&format!("history({chat:?}) in full"), &got, &want);
        }
        let devices: Vec<DeviceId> = (1..=DEVICES_PER_USER).map(dev).collect();
        for u in 1..=USERS {
            self.compare_user(user(u), &devices);
        }
        for key in self.keys.clone() {
            self.compare_sent(key);
        }
    }

    fn compare_chat(&self, chat: ChatId) {
        let store = self.subject.store();
        let got = super::wait(store.chat(chat));
        self.same(&format!("chat({chat:?})"), &got, &Ok(self.model.chat(chat)));
        let got = super::wait(store.cursors(chat));
        self.same(
            &format!("cursors({chat:?})"),
            &got,
            &self.model.cursors(chat),
        );
    }

    fn compare_read_log(&self, chat: ChatId, after: Seq, until: Seq, limit: usize) {
        let got = super::wait(self.subject.store().read_log(chat, after, until, limit));
        let want = self.model.read_log(chat, after, until, limit);
        let what = format!("read_log({chat:?}, {after}, {until}, {limit})");
        self.same(&what, &got, &want);
    }

    fn compare_user(&self, u: UserId, devices: &[DeviceId]) {
        let store = self.subject.store();
        let got = super::wait(store.user_chats(u));
        self.same(
            &format!("user_chats({u:?})"),
            &got,
            &Ok(self.model.user_chats(u)),
        );
        let got = super::wait(store.devices(u));
        self.same(&format!("devices({u:?})"), &got, &Ok(self.model.devices(u)));
        for &d in devices {
            let got = super::wait(store.sync_plan(u, d));
            let want = Ok(self.model.sync_plan(u, d));
            self.same(&format!("sync_plan({u:?}, {d:?})"), &got, &want);
        }
    }

    fn compare_sent(&self, (u, d, id): (UserId, DeviceId, u64)) {
        let got = super::wait(self.subject.store().sent(u, d, id));
        let want = Ok(self.model.sent(u, d, id));
        self.same(&format!("sent({u:?}, {d:?}, {id})"), &got, &want);
    }

    /// Panics, naming the seed, step and last operation, unless `got` matches `want`.
    fn same<T: Debug + PartialEq>(
        &self,
        what: &str,
        got: &Result<T, StoreError>,
        want: &Result<T, StoreError>,
    ) {
        let equal = match (got, want) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => same_refusal(a, b),
            _ => false,
        };
        assert!(
            equal,
            "seed {SEED:#x}, step {} (now {}), after {}:\n{what}\n  store:     {got:?}\n  \
             reference: {want:?}",
            self.step, self.now, self.last
        );
    }
}
