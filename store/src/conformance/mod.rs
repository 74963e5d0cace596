//! The conformance suite every [`Store`] backend must pass, generic over a [`Harness`] that
//! opens (and reopens) the backend; [`store_conformance!`](crate::store_conformance) stamps out
//! one `#[test]` per case.
//!
//! Owns the executable form of the contract in [`crate::api`] and [`crate::model`]: every
//! case asserts exact values (whole pages, whole states, exact errors), so a backend that
//! stores something slightly different fails. Cases never sleep or read a clock: time is the
//! `now` passed to [`Store::sweep`] and the timestamps written.
//!
//! Layout: [`writes`] (the log, seqs, batches, idempotency, reads), [`members`] (membership,
//! cursors, sync plans, devices), [`retention`] (sweeps), [`attachments`], [`random`] (a seeded random run
//! checked against the simple second implementation in [`reference`]).

// The suite's whole job is to panic when a backend does not conform; every case would carry
// the same "# Panics" section.
#![allow(clippy::missing_panics_doc)]

mod attachments;
mod members;
mod random;
mod reference;
mod retention;
mod writes;

use std::fmt::Debug;

use futures_lite::future::block_on;
use wire::ids::{ChatId, DeviceId, MessageId, UserId};

pub use self::attachments::{attachment_records, attachment_references};
pub use self::members::{
    cursor_monotonic, devices_seen, membership_changes, rejoin_starts_at_join,
    sync_plan_former_members, sync_plan_members,
};
pub use self::random::randomized_against_model;
pub use self::retention::{
    device_pruning, idempotency_keys_expire, idempotency_keys_expire_within_one_batch,
    retention_delivered_deleted, retention_former_member, retention_history_ttl,
    retention_offline_ttl, retention_user_without_devices, truncation_reported,
};
pub use self::writes::{
    batch_all_or_nothing, history_pages_newest_first, idempotency_answers, invalid_create_refused,
    large_batch, many_chats, ordering_survives_reopen, read_log_limits, seq_duplicate_refused,
    seq_gap_refused, unknown_chat_refused,
};
use crate::model::{
    BodyKind, Change, ChatState, Device, DeviceCursor, Entry, LogPage, Member, Message, Millis,
    Mutation, ReceiptKind, Retention, Role, SentRecord, Seq, SweepReport, SyncChat, Update,
    WriteBatch,
};
use crate::{Store, StoreError, StoreReply};

/// Opens a backend for one case.
pub trait Harness {
    /// The backend.
    type S: Store;

    /// Opens an empty store that sweeps with `retention`.
    fn open(&mut self, retention: Retention) -> Self::S;

    /// Drops `store` and opens the same data again, with the same retention.
    fn reopen(&mut self, store: Self::S) -> Self::S;
}

/// Expands to one `#[test]` per conformance case; `$make` (a [`conformance::Harness`]
/// expression) is evaluated anew for each test.
///
/// [`conformance::Harness`]: crate::conformance::Harness
#[macro_export]
macro_rules! store_conformance {
    (@cases ($make:expr) $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case($make);
            }
        )+
    };
    ($make:expr) => {
        $crate::store_conformance!(@cases ($make)
            ordering_survives_reopen,
            seq_gap_refused,
            seq_duplicate_refused,
            unknown_chat_refused,
            invalid_create_refused,
            batch_all_or_nothing,
            idempotency_answers,
            read_log_limits,
            history_pages_newest_first,
            large_batch,
            many_chats,
            membership_changes,
            cursor_monotonic,
            sync_plan_members,
            sync_plan_former_members,
            rejoin_starts_at_join,
            devices_seen,
            retention_delivered_deleted,
            retention_history_ttl,
            retention_offline_ttl,
            retention_user_without_devices,
            retention_former_member,
            truncation_reported,
            device_pruning,
            idempotency_keys_expire,
            idempotency_keys_expire_within_one_batch,
            attachment_records,
            attachment_references,
            randomized_against_model,
        );
    };
}

/// The time the cases start at (not 0, so "now minus TTL" does not hide behind saturation).
const T0: Millis = 1_000_000;

/// Short retention for the cases: offline TTL 10 s, history TTL 50 s, prune age 20 s.
const RETENTION: Retention = Retention {
    offline_ttl_ms: 10_000,
    history_ttl_ms: 50_000,
    device_prune_ms: 20_000,
};

/// A store under test and the harness that reopens it; every read panics on an error.
struct Subject<H: Harness> {
    harness: H,
    store: Option<H::S>,
}

impl<H: Harness> Subject<H> {
    fn open(mut harness: H, retention: Retention) -> Self {
        let store = harness.open(retention);
        Self {
            harness,
            store: Some(store),
        }
    }

    fn store(&self) -> &H::S {
        self.store
            .as_ref()
            .expect("the store is open between calls")
    }

    fn reopen(&mut self) {
        let store = self.store.take().expect("the store is open between calls");
        self.store = Some(self.harness.reopen(store));
    }

    fn try_write(&self, mutations: Vec<Mutation>) -> Result<(), StoreError> {
        wait(self.store().write(WriteBatch { mutations }))
    }

    fn write(&self, mutations: Vec<Mutation>) {
        let described = format!("{mutations:?}");
        if let Err(e) = self.try_write(mutations) {
            panic!("write refused ({e}): {described}");
        }
    }

    fn chat(&self, chat: ChatId) -> Option<ChatState> {
        must("chat", self.store().chat(chat))
    }

    fn state(&self, chat: ChatId) -> ChatState {
        self.chat(chat)
            .unwrap_or_else(|| panic!("{chat:?} should exist"))
    }

    fn read_log(&self, chat: ChatId, after: Seq, until: Seq, limit: usize) -> LogPage {
        must("read_log", self.store().read_log(chat, after, until, limit))
    }

    fn history(&self, chat: ChatId, before: Seq, limit: usize) -> LogPage {
        must("history", self.store().history(chat, before, limit))
    }

    /// The chats with something to sync (the plan filtered to `delivered < until`).
    fn sync_plan(&self, user: UserId, device: DeviceId) -> Vec<SyncChat> {
        let mut plan = self.sync_plan_all(user, device);
        plan.retain(|c| c.delivered_seq < c.until_seq);
        plan
    }

    /// The whole plan: every chat of the user, synced or not.
    fn sync_plan_all(&self, user: UserId, device: DeviceId) -> Vec<SyncChat> {
        must("sync_plan", self.store().sync_plan(user, device))
    }

    fn user_chats(&self, user: UserId) -> Vec<ChatId> {
        must("user_chats", self.store().user_chats(user))
    }

    fn devices(&self, user: UserId) -> Vec<Device> {
        must("devices", self.store().devices(user))
    }

    fn cursors(&self, chat: ChatId) -> Vec<DeviceCursor> {
        must("cursors", self.store().cursors(chat))
    }

    fn sent(&self, user: UserId, device: DeviceId, client_msg_id: u64) -> Option<SentRecord> {
        must("sent", self.store().sent(user, device, client_msg_id))
    }

    fn sweep(&self, now: Millis) -> SweepReport {
        must("sweep", self.store().sweep(now))
    }

    /// Every read about `chats`, `devices` (and their users) and idempotency `keys`, as text:
    /// equal before and after a refused write.
    fn observe(
        &self,
        chats: &[ChatId],
        devices: &[(UserId, DeviceId)],
        keys: &[(UserId, DeviceId, u64)],
    ) -> String {
        let s = self.store();
        let mut out = Vec::new();
        for &chat in chats {
            out.push(format!("{:?}", wait(s.chat(chat))));
            out.push(format!(
                "{:?}",
                wait(s.read_log(chat, 0, Seq::MAX, usize::MAX))
            ));
            out.push(format!("{:?}", wait(s.cursors(chat))));
        }
        for &(user, device) in devices {
            out.push(format!("{:?}", wait(s.user_chats(user))));
            out.push(format!("{:?}", wait(s.devices(user))));
            out.push(format!("{:?}", wait(s.sync_plan(user, device))));
        }
        for &(user, device, id) in keys {
            out.push(format!("{:?}", wait(s.sent(user, device, id))));
        }
        out.join("\n")
    }
}

/// Awaits a reply on this thread.
fn wait<T: Unpin>(reply: StoreReply<T>) -> Result<T, StoreError> {
    block_on(reply)
}

fn must<T: Unpin>(what: &str, reply: StoreReply<T>) -> T {
    wait(reply).unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// Whether two errors are the same refusal (an `Invalid` message is free text).
fn same_refusal(got: &StoreError, want: &StoreError) -> bool {
    match (got, want) {
        (
            StoreError::SeqConflict {
                chat,
                expected,
                got,
            },
            StoreError::SeqConflict {
                chat: c,
                expected: e,
                got: g,
            },
        ) => (chat, expected, got) == (c, e, g),
        (StoreError::UnknownChat(a), StoreError::UnknownChat(b)) => a == b,
        (StoreError::Invalid(_), StoreError::Invalid(_)) => true,
        _ => false,
    }
}

/// Asserts `result` is the refusal `want`.
#[track_caller]
fn assert_refused<T: Debug>(result: Result<T, StoreError>, want: &StoreError) {
    match result {
        Err(got) if same_refusal(&got, want) => {}
        other => panic!("expected {want:?}, got {other:?}"),
    }
}

fn user(n: u64) -> UserId {
    UserId::new(n).expect("test users are in 1..2^63")
}

fn dev(n: u64) -> DeviceId {
    DeviceId::new(n).expect("test devices are nonzero")
}

fn direct(a: u64, b: u64) -> ChatId {
    ChatId::direct(user(a), user(b))
}

fn group(n: u128) -> ChatId {
    ChatId::group(n)
}

/// A message whose server id is derived from its idempotency key.
fn message(
    sender: UserId,
    device: DeviceId,
    client_msg_id: u64,
    ts_ms: Millis,
    body: &[u8],
) -> Entry {
    let id = (u128::from(sender.get()) << 64) | u128::from(client_msg_id);
    Entry::Message(Message {
        server_msg_id: MessageId::new(id).expect("a nonzero sender makes a nonzero id"),
        sender,
        sender_device: device,
        client_msg_id,
        ts_ms,
        kind: BodyKind::Text,
        body: body.to_vec(),
        attachments: Vec::new(),
    })
}

/// Message number `n` from user `sender`'s device 1 (client id `n`).
fn text(sender: u64, n: u64, ts_ms: Millis) -> Entry {
    message(
        user(sender),
        dev(1),
        n,
        ts_ms,
        format!("message {n}").as_bytes(),
    )
}

fn update(actor: u64, ts_ms: Millis, change: Change) -> Entry {
    Entry::Update(Update {
        ts_ms,
        actor: user(actor),
        change,
    })
}

/// `Created` by `admin`, with `others` as members, named "group".
fn created(admin: u64, ts_ms: Millis, history: bool, others: &[u64]) -> Entry {
    let mut members = vec![(user(admin), Role::Admin)];
    members.extend(others.iter().map(|&u| (user(u), Role::Member)));
    let change = Change::Created {
        name: "group".into(),
        history,
        members,
    };
    update(admin, ts_ms, change)
}

fn users(ids: &[u64]) -> Vec<UserId> {
    ids.iter().map(|&u| user(u)).collect()
}

fn append(chat: ChatId, seq: Seq, entry: Entry) -> Mutation {
    Mutation::Append {
        chat,
        seq,
        entry: entry.into(),
    }
}

fn receipt(chat: ChatId, u: u64, d: u64, kind: ReceiptKind, up_to_seq: Seq) -> Mutation {
    Mutation::Cursor {
        chat,
        user: user(u),
        device: dev(d),
        kind,
        up_to_seq,
    }
}

fn delivered(chat: ChatId, u: u64, d: u64, up_to_seq: Seq) -> Mutation {
    receipt(chat, u, d, ReceiptKind::Delivered, up_to_seq)
}

fn read(chat: ChatId, u: u64, d: u64, up_to_seq: Seq) -> Mutation {
    receipt(chat, u, d, ReceiptKind::Read, up_to_seq)
}

fn seen(u: u64, d: u64, at_ms: Millis) -> Mutation {
    Mutation::DeviceSeen {
        user: user(u),
        device: dev(d),
        at_ms,
    }
}

/// Appends `text` messages `from..=to` (client ids = seqs) from `sender` at `ts_ms`, in one
/// batch, and returns them as the log should hold them.
fn append_texts<H: Harness>(
    s: &Subject<H>,
    chat: ChatId,
    sender: u64,
    seqs: std::ops::RangeInclusive<Seq>,
    ts_ms: Millis,
) -> Vec<(Seq, Entry)> {
    let entries: Vec<(Seq, Entry)> = seqs.map(|seq| (seq, text(sender, seq, ts_ms))).collect();
    let batch = entries
        .iter()
        .map(|(seq, entry)| append(chat, *seq, entry.clone()))
        .collect();
    s.write(batch);
    entries
}

/// The idempotency answer a message `entry` appended at `seq` gets.
fn sent_record(chat: ChatId, seq: Seq, entry: &Entry) -> SentRecord {
    let Entry::Message(m) = entry else {
        panic!("only messages have idempotency keys: {entry:?}")
    };
    SentRecord {
        chat,
        seq,
        server_msg_id: m.server_msg_id,
        ts_ms: m.ts_ms,
    }
}

fn member(u: u64, role: Role, joined_seq: Seq) -> Member {
    Member {
        user: user(u),
        role,
        joined_seq,
    }
}

fn seqs(page: &LogPage) -> Vec<Seq> {
    page.entries.iter().map(|(seq, _)| *seq).collect()
}

fn sync(chat: ChatId, delivered_seq: Seq, read_seq: Seq, until_seq: Seq) -> SyncChat {
    SyncChat {
        chat,
        delivered_seq,
        read_seq,
        until_seq,
    }
}

fn cursor(u: u64, d: u64, delivered_seq: Seq, read_seq: Seq) -> DeviceCursor {
    DeviceCursor {
        user: user(u),
        device: dev(d),
        delivered_seq,
        read_seq,
    }
}

fn report(entries_deleted: u64, sent_records_deleted: u64, devices_pruned: u64) -> SweepReport {
    SweepReport {
        entries_deleted,
        sent_records_deleted,
        devices_pruned,
    }
}
