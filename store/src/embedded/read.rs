//! Reads: a small pool of reader threads serving [`crate::Store`] queries from index
//! snapshots, so executor threads never touch the disk.
//!
//! Owns the read side of read-your-acknowledged-writes: a query is tagged with the
//! `durable_next` LSN at submission and waits (on its reader thread) until the applier has
//! applied that far. Each query reads one consistent snapshot. Idempotency lookups do not
//! wait: they ask the answers of durable records not yet applied first; reads of one chat's
//! meta, members or entries wait only for pending appends to that chat (see
//! [`super::pending`]).

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use lsm_tree::Guard;
use wire::ids::{ChatId, DeviceId, UserId};

use super::apply::default_delivered;
use super::apply_thread::{SentLookup, Shared};
use super::codec::decode_entry;
use super::engine::Index;
use super::index::{self, IndexError, Snap, View};
use super::layout::{self as l, KeyParts};
use super::pending::SentKey;
use super::sent_bounds::Verdict;
use crate::StoreError;
use crate::log::Lsn;
use crate::model::{ChatState, Device, DeviceCursor, Entry, LogPage, SentRecord, Seq, SyncChat};
use crate::reply::Reply;

/// A query, run on a reader thread.
pub(crate) type Job = Box<dyn FnOnce(&Reader) + Send>;

/// What a reader thread holds.
pub(crate) struct Reader {
    pub(crate) index: Index,
}

/// Submits queries to the reader threads.
pub(crate) struct Readers {
    tx: Option<Sender<Job>>,
    shared: Arc<Shared>,
}

impl Readers {
    pub(crate) fn new(tx: Sender<Job>, shared: Arc<Shared>) -> Self {
        Self {
            tx: Some(tx),
            shared,
        }
    }

    /// Stops taking queries; the reader threads end after the queued ones.
    pub(crate) fn close(&mut self) {
        self.tx = None;
    }

    /// Runs `query` on a reader thread once every write acknowledged so far is applied.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Snap) -> Result<T, StoreError> + Send + 'static,
    ) -> Reply<T, StoreError> {
        self.run_after(Shared::wait_applied, query)
    }

    /// Runs `query`, which reads only `chat`'s meta, members and entries (rows only appends to
    /// `chat` change), once every append to `chat` acknowledged so far is applied; with none
    /// pending (the usual case), at once (see [`super::pending`]).
    pub(crate) fn run_chat<T: Send + 'static>(
        &self,
        chat: ChatId,
        query: impl FnOnce(&Snap) -> Result<T, StoreError> + Send + 'static,
    ) -> Reply<T, StoreError> {
        self.run_after(
            move |shared, target| shared.wait_chat_applied(chat, target),
            query,
        )
    }

    /// Runs `query` on a reader thread after `wait`, given the `durable_next` LSN seen now.
    fn run_after<T: Send + 'static>(
        &self,
        wait: impl FnOnce(&Shared, Lsn) -> Result<(), StoreError> + Send + 'static,
        query: impl FnOnce(&Snap) -> Result<T, StoreError> + Send + 'static,
    ) -> Reply<T, StoreError> {
        let target = self
            .shared
            .durable_next
            .load(std::sync::atomic::Ordering::Acquire);
        let shared = self.shared.clone();
        self.submit(move |reader: &Reader| {
            wait(&shared, target)?;
            query(&Snap::new(&reader.index))
        })
    }

    /// Looks up idempotency keys on a reader thread without waiting for the applier: each
    /// key is asked of the pending answers first, and only then is the index snapshot taken
    /// (the order [`super::pending`]'s invariant needs). `finish` shapes the answers.
    pub(crate) fn run_sent<T: Send + 'static>(
        &self,
        keys: Vec<SentKey>,
        finish: fn(Vec<Option<SentRecord>>) -> T,
    ) -> Reply<T, StoreError> {
        let shared = self.shared.clone();
        self.submit(move |reader: &Reader| {
            let mut lookups = Vec::with_capacity(keys.len());
            for key in &keys {
                lookups.push(shared.pending_sent(key)?);
            }
            // After every `pending_sent`: what is neither pending nor in this snapshot was not
            // acknowledged before the lookup.
            let snap = Snap::new(&reader.index);
            let mut answers = Vec::with_capacity(keys.len());
            let mut scans = Vec::new();
            for (lookup, &(user, device, id)) in lookups.into_iter().zip(&keys) {
                answers.push(match lookup {
                    SentLookup::Pending(record) => Some(record),
                    SentLookup::Index(Verdict::Absent) => None,
                    SentLookup::Index(Verdict::Search) => sent(&snap, user, device, id)?,
                    SentLookup::Index(Verdict::SearchAndLearn(epoch)) => {
                        let max = highest_sent(&snap, user, device)?;
                        scans.push((user, device, epoch, max));
                        if id > max {
                            None
                        } else {
                            sent(&snap, user, device, id)?
                        }
                    }
                });
            }
            if !scans.is_empty() {
                shared.learned(&scans);
            }
            Ok(finish(answers))
        })
    }

    /// Queues `job` for a reader thread; a full queue is `Overloaded`, a closed one `Closed`.
    fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Reader) -> Result<T, StoreError> + Send + 'static,
    ) -> Reply<T, StoreError> {
        let Some(tx) = &self.tx else {
            return Reply::ready(Err(StoreError::Closed));
        };
        let (replier, reply) = Reply::channel();
        let job: Job = Box::new(move |reader: &Reader| replier.send(job(reader)));
        match tx.try_send(job) {
            Ok(()) => reply,
            Err(TrySendError::Full(_)) => {
                Reply::ready(Err(StoreError::Overloaded("the read queue is full".into())))
            }
            Err(TrySendError::Disconnected(_)) => Reply::ready(Err(StoreError::Closed)),
        }
    }
}

/// A reader thread's loop.
pub(crate) fn serve(reader: &Reader, rx: &Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        job(reader);
    }
}

pub(crate) fn chat(v: &impl View, chat: ChatId) -> Result<Option<ChatState>, IndexError> {
    let Some(meta) = index::chat_meta(v, chat)? else {
        return Ok(None);
    };
    Ok(Some(ChatState {
        chat,
        kind: chat.kind(),
        name: meta.name,
        history: meta.history,
        created_ms: meta.created_ms,
        head: meta.head,
        floor: index::floor(v, chat)?.min(meta.head + 1),
        members: index::members(v, chat)?,
    }))
}

pub(crate) fn sent(
    v: &impl View,
    user: UserId,
    device: DeviceId,
    client_msg_id: u64,
) -> Result<Option<SentRecord>, IndexError> {
    Ok(
        match v.get(l::sent(user, device, client_msg_id).as_ref())? {
            Some(bytes) => Some(l::read_sent(&bytes)?),
            None => None,
        },
    )
}

/// The highest client message id of `device` in the index (0 if none): its last `s` row.
fn highest_sent(snap: &Snap, user: UserId, device: DeviceId) -> Result<u64, IndexError> {
    let prefix = l::device_sent(user, device);
    let Some(guard) = snap.snapshot.prefix(prefix).next_back() else {
        return Ok(0);
    };
    let key = guard.key()?;
    let mut parts = KeyParts::new(&key, UserId::SIZE + DeviceId::SIZE)?;
    Ok(parts.u64()?)
}

pub(crate) fn sync_plan(
    v: &impl View,
    user: UserId,
    device: DeviceId,
) -> Result<Vec<SyncChat>, IndexError> {
    let mut out = Vec::new();
    for (chat, is_member) in index::user_chats(v, user)? {
        let Some(head) = index::head(v, chat)? else {
            continue;
        };
        let until_seq = if is_member {
            head
        } else {
            match index::lefts(v, chat)?
                .into_iter()
                .find(|(u, _, _)| *u == user)
            {
                Some((_, _, left)) => left,
                None => continue,
            }
        };
        let (delivered_seq, read_seq) = match index::cursor(v, chat, user, device)? {
            Some(c) => c,
            None => (default_delivered(v, chat, user)?, 0),
        };
        out.push(SyncChat {
            chat,
            delivered_seq,
            read_seq,
            until_seq,
        });
    }
    Ok(out)
}

/// `Ok(None)` for an unknown chat.
pub(crate) fn read_log(
    snap: &Snap,
    chat: ChatId,
    after: Seq,
    until: Seq,
    limit: usize,
) -> Result<Option<LogPage>, IndexError> {
    let Some(head) = index::head(snap, chat)? else {
        return Ok(None);
    };
    let until = until.min(head);
    let floor = index::floor(snap, chat)?;
    let mut page = LogPage::default();
    if after >= until {
        return Ok(Some(page));
    }
    if after + 1 < floor {
        page.truncated = Some((after + 1, (floor - 1).min(until)));
    }
    let from = (after + 1).max(floor);
    if from > until {
        return Ok(Some(page));
    }
    let range = l::entry(chat, from)..=l::entry(chat, until);
    for guard in snap.snapshot.range(range) {
        if page.entries.len() == limit {
            page.more = true;
            break;
        }
        let (key, value) = guard.into_inner()?;
        let seq = KeyParts::new(&key, ChatId::SIZE)?.u64()?;
        page.entries.push((seq, decode_entry(&value, chat, seq)?));
    }
    Ok(Some(page))
}

/// `Ok(None)` for an unknown chat.
pub(crate) fn history(
    snap: &Snap,
    chat: ChatId,
    before: Seq,
    limit: usize,
) -> Result<Option<LogPage>, IndexError> {
    let Some(head) = index::head(snap, chat)? else {
        return Ok(None);
    };
    let end = if before == 0 { head + 1 } else { before };
    let floor = index::floor(snap, chat)?;
    let mut page = LogPage::default();
    if end <= floor {
        return Ok(Some(page));
    }
    let range = l::entry(chat, floor)..l::entry(chat, end);
    for guard in snap.snapshot.range(range).rev() {
        let (key, value) = guard.into_inner()?;
        let seq = KeyParts::new(&key, ChatId::SIZE)?.u64()?;
        let entry = decode_entry(&value, chat, seq)?;
        if !matches!(entry, Entry::Message(_)) {
            continue;
        }
        if page.entries.len() == limit {
            page.more = true;
            break;
        }
        page.entries.push((seq, entry));
    }
    Ok(Some(page))
}

pub(crate) fn user_chats(v: &impl View, user: UserId) -> Result<Vec<ChatId>, IndexError> {
    Ok(index::user_chats(v, user)?
        .into_iter()
        .filter_map(|(chat, member)| member.then_some(chat))
        .collect())
}

pub(crate) fn devices(v: &impl View, user: UserId) -> Result<Vec<Device>, IndexError> {
    Ok(index::devices(v, user)?
        .into_iter()
        .map(|(device, registered_ms, last_seen_ms)| Device {
            device,
            registered_ms,
            last_seen_ms,
        })
        .collect())
}

/// `Ok(None)` for an unknown chat.
pub(crate) fn cursors(
    v: &impl View,
    chat: ChatId,
) -> Result<Option<Vec<DeviceCursor>>, IndexError> {
    if index::head(v, chat)?.is_none() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for (key, value) in v.scan(l::cursors(chat).as_ref())? {
        let mut parts = KeyParts::new(&key, ChatId::SIZE)?;
        let (user, device) = (parts.user()?, parts.device()?);
        let [delivered_seq, read_seq] = l::read_vars(&value)?;
        out.push(DeviceCursor {
            user,
            device,
            delivered_seq,
            read_seq,
        });
    }
    Ok(Some(out))
}

/// Every chat's head, for the writer's gate at open: its head row, or for a chat last written
/// before head rows existed, its meta row's.
pub(crate) fn heads(index: &Index) -> Result<foldhash::HashMap<ChatId, Seq>, IndexError> {
    let mut heads = foldhash::HashMap::default();
    for guard in index.prefix([l::CHAT]) {
        let (key, value) = guard.into_inner()?;
        let chat = KeyParts::new(&key, 0)?.chat()?;
        heads.insert(chat, l::ChatMeta::decode(&value)?.head);
    }
    for guard in index.prefix([l::HEAD]) {
        let (key, value) = guard.into_inner()?;
        let chat = KeyParts::new(&key, 0)?.chat()?;
        heads.insert(chat, l::read_vars::<1>(&value)?[0]);
    }
    Ok(heads)
}
