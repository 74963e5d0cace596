//! An in-memory [`Store`]: for tests and the router's simulation only. Nothing is durable: the
//! state lives in this process and is gone when the last clone is dropped.
//!
//! Owns a plain-data copy of everything the [`Store`] contract describes, behind one
//! [`Mutex`] shared by every clone (so a clone is this backend's "reopen"). Every call takes
//! the lock, does its work and answers with an already-decided [`Reply`]; nothing waits on
//! another thread. It must never be used where a write has to survive a crash.
//!
//! Invariants:
//! - A batch is checked in full (seqs, chat existence, creations) before any of it is applied,
//!   so a refused batch changes nothing and applying never fails.
//! - A chat stores exactly `floor..=head`; `entries[i]` is seq `floor + i`.
//! - `user_chats` holds, per user, every chat where the user is a member or has a left record.
//! - A user's cursor rows in a chat belong to its current stint: rejoining clears the old ones,
//!   so a device never receives what was sent while its user was away.

use crate::model::expired;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use wire::ids::{AttachmentId, ChatId, ChatKind, DeviceId, UserId};

use crate::model::{
    Attachment, Change, ChatState, Device, DeviceCursor, Entry, LogPage, Member, Millis, Mutation,
    ReceiptKind, Retention, Role, SentRecord, Seq, SweepReport, SyncChat, Update, WriteBatch,
};
use crate::reply::Reply;
use crate::{Store, StoreError, StoreReply};

/// The in-memory backend; clones share one state.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    /// An empty store that applies `retention` when swept.
    pub fn new(retention: Retention) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::new(retention))),
        }
    }

    /// Runs `f` under the lock and answers at once.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> Result<T, StoreError>) -> StoreReply<T> {
        let result = match self.state.lock() {
            Ok(mut state) => f(&mut state),
            // Only a bug in this module can poison the lock; the state may be half-changed.
            Err(_) => Err(StoreError::Unavailable(
                "the memory store panicked while changing its state".into(),
            )),
        };
        Reply::ready(result)
    }
}

impl Store for MemoryStore {
    fn write(&self, batch: WriteBatch) -> StoreReply<()> {
        self.with(|s| {
            s.check(&batch)?;
            s.apply(batch);
            Ok(())
        })
    }

    fn chat(&self, chat: ChatId) -> StoreReply<Option<ChatState>> {
        self.with(|s| Ok(s.chats.get(&chat).map(|c| c.state(chat))))
    }

    fn sent(
        &self,
        user: UserId,
        device: DeviceId,
        client_msg_id: u64,
    ) -> StoreReply<Option<SentRecord>> {
        self.with(|s| Ok(s.sent.get(&(user, device, client_msg_id)).copied()))
    }

    fn sent_many(&self, keys: Vec<(UserId, DeviceId, u64)>) -> StoreReply<Vec<Option<SentRecord>>> {
        self.with(|s| Ok(keys.iter().map(|k| s.sent.get(k).copied()).collect()))
    }

    fn sync_plan(&self, user: UserId, device: DeviceId) -> StoreReply<Vec<SyncChat>> {
        self.with(|s| Ok(s.sync_plan(user, device)))
    }

    fn read_log(
        &self,
        chat: ChatId,
        after_seq: Seq,
        until_seq: Seq,
        limit: usize,
    ) -> StoreReply<LogPage> {
        self.with(|s| Ok(s.known(chat)?.read_log(after_seq, until_seq, limit)))
    }

    fn history(&self, chat: ChatId, before_seq: Seq, limit: usize) -> StoreReply<LogPage> {
        self.with(|s| Ok(s.known(chat)?.history(before_seq, limit)))
    }

    fn user_chats(&self, user: UserId) -> StoreReply<Vec<ChatId>> {
        self.with(|s| {
            let chats = s.user_chats.get(&user).into_iter().flatten();
            Ok(chats
                .filter(|id| {
                    s.chats
                        .get(id)
                        .is_some_and(|c| c.members.contains_key(&user))
                })
                .copied()
                .collect())
        })
    }

    fn devices(&self, user: UserId) -> StoreReply<Vec<Device>> {
        self.with(|s| {
            let devices = s.devices.get(&user).into_iter().flat_map(BTreeMap::values);
            Ok(devices.copied().collect())
        })
    }

    fn cursors(&self, chat: ChatId) -> StoreReply<Vec<DeviceCursor>> {
        self.with(|s| {
            let rows = s.known(chat)?.cursors.iter();
            Ok(rows
                .map(|(&(user, device), c)| DeviceCursor {
                    user,
                    device,
                    delivered_seq: c.delivered,
                    read_seq: c.read,
                })
                .collect())
        })
    }

    fn attachment(&self, id: AttachmentId) -> StoreReply<Option<Attachment>> {
        self.with(|s| Ok(s.attachments.get(&id).cloned()))
    }

    fn referenced_in(&self, chat: ChatId, id: AttachmentId) -> StoreReply<bool> {
        self.with(|s| Ok(s.referenced(id, Some(chat))))
    }

    fn unreferenced_attachments(
        &self,
        created_before_ms: Millis,
        limit: usize,
    ) -> StoreReply<Vec<AttachmentId>> {
        self.with(|s| {
            Ok(s.attachments
                .values()
                .filter(|a| a.created_ms <= created_before_ms && !s.referenced(a.id, None))
                .map(|a| a.id)
                .take(limit)
                .collect())
        })
    }

    fn sweep(&self, now_ms: Millis) -> StoreReply<SweepReport> {
        self.with(|s| Ok(s.sweep(now_ms)))
    }
}

/// Everything the store holds.
#[derive(Debug)]
struct State {
    retention: Retention,
    chats: BTreeMap<ChatId, Chat>,
    /// Per user: chats where it is a member or has a left record.
    user_chats: BTreeMap<UserId, BTreeSet<ChatId>>,
    devices: BTreeMap<UserId, BTreeMap<DeviceId, Device>>,
    sent: BTreeMap<(UserId, DeviceId, u64), SentRecord>,
    attachments: BTreeMap<AttachmentId, Attachment>,
    /// Per attachment, the messages that reference it (also ones retention removed since).
    refs: BTreeMap<AttachmentId, BTreeSet<(ChatId, Seq)>>,
}

/// One chat: its metadata, retained log, members and cursors.
#[derive(Debug)]
struct Chat {
    kind: ChatKind,
    name: String,
    history: bool,
    created_ms: Millis,
    head: Seq,
    floor: Seq,
    /// `entries[i]` is seq `floor + i`.
    entries: VecDeque<Entry>,
    members: BTreeMap<UserId, Member>,
    /// Users who left or were removed, until their devices have everything up to it.
    left: BTreeMap<UserId, Stint>,
    cursors: BTreeMap<(UserId, DeviceId), Cursor>,
}

/// A former member's last membership: joined at `joined_seq`, gone at `left_seq`.
#[derive(Debug, Clone, Copy)]
struct Stint {
    joined_seq: Seq,
    left_seq: Seq,
}

/// One device's cursor row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    delivered: Seq,
    read: Seq,
}

impl State {
    fn new(retention: Retention) -> Self {
        Self {
            retention,
            chats: BTreeMap::new(),
            user_chats: BTreeMap::new(),
            devices: BTreeMap::new(),
            sent: BTreeMap::new(),
            attachments: BTreeMap::new(),
            refs: BTreeMap::new(),
        }
    }

    /// Whether a retained message references attachment `id` (in `chat` only, when given).
    fn referenced(&self, id: AttachmentId, chat: Option<ChatId>) -> bool {
        let refs = self.refs.get(&id).into_iter().flatten();
        refs.filter(|(c, _)| chat.is_none_or(|want| *c == want))
            .any(|(c, seq)| {
                // Written with its message (so `seq <= head`): the floor alone decides.
                self.chats.get(c).is_some_and(|kept| *seq >= kept.floor)
            })
    }

    fn known(&self, chat: ChatId) -> Result<&Chat, StoreError> {
        self.chats.get(&chat).ok_or(StoreError::UnknownChat(chat))
    }

    fn head(&self, chat: ChatId) -> Seq {
        self.chats.get(&chat).map_or(0, |c| c.head)
    }

    /// Refuses the batch if any mutation would be refused after the ones before it.
    fn check(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        // Heads as this batch's own earlier appends leave them.
        let mut staged: HashMap<ChatId, Seq> = HashMap::new();
        for mutation in &batch.mutations {
            match mutation {
                Mutation::Append { chat, seq, entry } => {
                    let head = staged
                        .get(chat)
                        .copied()
                        .unwrap_or_else(|| self.head(*chat));
                    check_append(*chat, head, *seq, entry)?;
                    staged.insert(*chat, *seq);
                }
                Mutation::Cursor { chat, .. } => {
                    let head = staged
                        .get(chat)
                        .copied()
                        .unwrap_or_else(|| self.head(*chat));
                    if head == 0 {
                        return Err(StoreError::UnknownChat(*chat));
                    }
                }
                Mutation::DeviceSeen { .. }
                | Mutation::PutAttachment(_)
                | Mutation::DeleteAttachment(_) => {}
            }
        }
        Ok(())
    }

    /// Applies a batch [`State::check`] accepted.
    fn apply(&mut self, batch: WriteBatch) {
        for mutation in batch.mutations {
            match mutation {
                Mutation::Append { chat, seq, entry } => {
                    self.append(chat, seq, Arc::unwrap_or_clone(entry));
                }
                Mutation::Cursor {
                    chat,
                    user,
                    device,
                    kind,
                    up_to_seq,
                } => {
                    let chat = self
                        .chats
                        .get_mut(&chat)
                        .expect("check() saw the chat exist");
                    chat.advance(user, device, kind == ReceiptKind::Read, up_to_seq);
                }
                Mutation::DeviceSeen {
                    user,
                    device,
                    at_ms,
                } => self.device_seen(user, device, at_ms),
                Mutation::PutAttachment(a) => {
                    self.attachments.insert(a.id, a);
                }
                Mutation::DeleteAttachment(id) => {
                    self.attachments.remove(&id);
                    self.refs.remove(&id);
                }
            }
        }
    }

    fn append(&mut self, id: ChatId, seq: Seq, entry: Entry) {
        let Self {
            chats, user_chats, ..
        } = self;
        let chat = chats.entry(id).or_insert_with(|| Chat::create(id, &entry));
        if seq == 1 {
            for &user in chat.members.keys() {
                user_chats.entry(user).or_default().insert(id);
            }
        }
        assert_eq!(
            seq,
            chat.head + 1,
            "gap in {id:?} after check(): {seq} after {}",
            chat.head
        );
        chat.head = seq;
        match &entry {
            Entry::Message(m) => {
                self.sent
                    .insert(m.idempotency_key(), m.sent_record(id, seq));
                for attachment in &m.attachments {
                    self.refs.entry(*attachment).or_default().insert((id, seq));
                }
            }
            Entry::Update(update) => chat.change_members(id, seq, update, user_chats),
        }
        chat.entries.push_back(entry);
    }

    /// Registers a new device (cursors at the heads of its user's chats) or refreshes it.
    fn device_seen(&mut self, user: UserId, device: DeviceId, at_ms: Millis) {
        let devices = self.devices.entry(user).or_default();
        if let Some(known) = devices.get_mut(&device) {
            known.last_seen_ms = known.last_seen_ms.max(at_ms);
            return;
        }
        devices.insert(
            device,
            Device {
                device,
                registered_ms: at_ms,
                last_seen_ms: at_ms,
            },
        );
        for id in self.user_chats.get(&user).into_iter().flatten() {
            let chat = self
                .chats
                .get_mut(id)
                .expect("user_chats names existing chats");
            if chat.members.contains_key(&user) {
                let at_head = Cursor {
                    delivered: chat.head,
                    read: chat.head,
                };
                chat.cursors.insert((user, device), at_head);
            }
        }
    }

    fn sync_plan(&self, user: UserId, device: DeviceId) -> Vec<SyncChat> {
        let mut plan = Vec::new();
        for id in self.user_chats.get(&user).into_iter().flatten() {
            let chat = self.chats.get(id).expect("user_chats names existing chats");
            let until_seq = match (chat.members.contains_key(&user), chat.left.get(&user)) {
                (true, _) => chat.head,
                (false, Some(stint)) => stint.left_seq,
                (false, None) => continue,
            };
            let cursor = chat.cursor(user, device);
            plan.push(SyncChat {
                chat: *id,
                delivered_seq: cursor.delivered,
                read_seq: cursor.read,
                until_seq,
            });
        }
        plan
    }

    fn sweep(&mut self, now: Millis) -> SweepReport {
        let mut report = SweepReport::default();
        let retention = self.retention;
        self.prune_devices(now, &mut report);
        let Self {
            chats,
            user_chats,
            devices,
            ..
        } = self;
        for (&id, chat) in chats.iter_mut() {
            report.entries_deleted += chat.apply_retention(&retention, now, devices);
            for user in chat.drop_settled_lefts(devices) {
                if let Some(chats) = user_chats.get_mut(&user) {
                    chats.remove(&id);
                }
            }
        }
        let before = self.sent.len();
        self.sent
            .retain(|_, r| !expired(now, r.ts_ms, retention.offline_ttl_ms));
        report.sent_records_deleted = (before - self.sent.len()) as u64;
        report
    }

    /// Removes devices unseen past the prune age, with every cursor row they had.
    fn prune_devices(&mut self, now: Millis, report: &mut SweepReport) {
        let prune_ms = self.retention.device_prune_ms;
        let mut pruned = BTreeSet::new();
        for (&user, devices) in &mut self.devices {
            devices.retain(|&device, d| {
                let keep = !expired(now, d.last_seen_ms, prune_ms);
                if !keep {
                    pruned.insert((user, device));
                }
                keep
            });
        }
        self.devices.retain(|_, devices| !devices.is_empty());
        if pruned.is_empty() {
            return;
        }
        report.devices_pruned = pruned.len() as u64;
        for chat in self.chats.values_mut() {
            chat.cursors.retain(|key, _| !pruned.contains(key));
        }
    }
}

/// Whether `seq` may append `entry` to a chat whose head is `head` (0: no such chat).
fn check_append(chat: ChatId, head: Seq, seq: Seq, entry: &Entry) -> Result<(), StoreError> {
    let creates = matches!(
        entry,
        Entry::Update(Update {
            change: Change::Created { .. },
            ..
        })
    );
    crate::api::check_append(chat, head, seq, creates)
}

impl Chat {
    /// An empty chat created by `first`: a direct chat's two users, or a group's founders.
    fn create(id: ChatId, first: &Entry) -> Self {
        let mut chat = Self {
            kind: id.kind(),
            name: String::new(),
            history: false,
            created_ms: first.ts_ms(),
            head: 0,
            floor: 1,
            entries: VecDeque::new(),
            members: BTreeMap::new(),
            left: BTreeMap::new(),
            cursors: BTreeMap::new(),
        };
        let founders: Vec<(UserId, Role)> = match (id.direct_users(), first) {
            (Some((a, b)), _) => vec![(a, Role::Member), (b, Role::Member)],
            (
                None,
                Entry::Update(Update {
                    change:
                        Change::Created {
                            name,
                            history,
                            members,
                        },
                    ..
                }),
            ) => {
                chat.name.clone_from(name);
                chat.history = *history;
                members.clone()
            }
            // check() lets a group start only with `Created`.
            (None, _) => Vec::new(),
        };
        for (user, role) in founders {
            chat.members.insert(
                user,
                Member {
                    user,
                    role,
                    joined_seq: 1,
                },
            );
        }
        chat
    }

    fn state(&self, chat: ChatId) -> ChatState {
        ChatState {
            chat,
            kind: self.kind,
            name: self.name.clone(),
            history: self.history,
            created_ms: self.created_ms,
            head: self.head,
            floor: self.floor,
            members: self.members.values().copied().collect(),
        }
    }

    fn entry(&self, seq: Seq) -> &Entry {
        let index = seq
            .checked_sub(self.floor)
            .expect("callers ask only for retained seqs");
        self.entries
            .get(index as usize)
            .expect("floor..=head is stored")
    }

    /// Applies a membership change at `seq` (`Created` was applied by [`Chat::create`]).
    fn change_members(
        &mut self,
        id: ChatId,
        seq: Seq,
        update: &Update,
        user_chats: &mut BTreeMap<UserId, BTreeSet<ChatId>>,
    ) {
        match &update.change {
            Change::Created { .. } => {}
            Change::Added(users) => {
                for &user in users {
                    if self.members.contains_key(&user) {
                        continue;
                    }
                    let member = Member {
                        user,
                        role: Role::Member,
                        joined_seq: seq,
                    };
                    self.members.insert(user, member);
                    // A new stint: what its devices had of the old one says nothing now.
                    self.left.remove(&user);
                    self.cursors.retain(|&(u, _), _| u != user);
                    user_chats.entry(user).or_default().insert(id);
                }
            }
            Change::Removed(users) => {
                for &user in users {
                    self.leave(user, seq);
                }
            }
            Change::Left => self.leave(update.actor, seq),
            Change::Promoted(users) => {
                for user in users {
                    if let Some(member) = self.members.get_mut(user) {
                        member.role = Role::Admin;
                    }
                }
            }
        }
    }

    fn leave(&mut self, user: UserId, seq: Seq) {
        if let Some(member) = self.members.remove(&user) {
            let stint = Stint {
                joined_seq: member.joined_seq,
                left_seq: seq,
            };
            self.left.insert(user, stint);
        }
    }

    /// The device's cursors, or what a device without a row has: everything before its user
    /// joined (for its current or last stint).
    fn cursor(&self, user: UserId, device: DeviceId) -> Cursor {
        if let Some(cursor) = self.cursors.get(&(user, device)) {
            return *cursor;
        }
        let joined = match (self.members.get(&user), self.left.get(&user)) {
            (Some(member), _) => member.joined_seq,
            (None, Some(stint)) => stint.joined_seq,
            (None, None) => 1,
        };
        Cursor {
            delivered: joined - 1,
            read: 0,
        }
    }

    /// Moves a cursor forward (clamped to the head); `read` moves both.
    fn advance(&mut self, user: UserId, device: DeviceId, read: bool, up_to: Seq) {
        let up_to = up_to.min(self.head);
        let current = self.cursor(user, device);
        let next = Cursor {
            delivered: current.delivered.max(up_to),
            read: if read {
                current.read.max(up_to)
            } else {
                current.read
            },
        };
        if next != current {
            self.cursors.insert((user, device), next);
        }
    }

    fn read_log(&self, after: Seq, until: Seq, limit: usize) -> LogPage {
        let until = until.min(self.head);
        let mut page = LogPage::default();
        if after >= until {
            return page;
        }
        // `after < until <= head`, so this does not overflow.
        let first = after + 1;
        if first < self.floor {
            page.truncated = Some((first, (self.floor - 1).min(until)));
        }
        let from = first.max(self.floor);
        if from > until {
            return page;
        }
        let available = until - from + 1;
        let taken = available.min(u64::try_from(limit).unwrap_or(u64::MAX));
        page.entries = (from..from + taken)
            .map(|seq| (seq, self.entry(seq).clone()))
            .collect();
        page.more = available > taken;
        page
    }

    fn history(&self, before: Seq, limit: usize) -> LogPage {
        let end = if before == 0 { self.head + 1 } else { before };
        let end = end.min(self.head + 1);
        let mut page = LogPage::default();
        for seq in (self.floor..end).rev() {
            let entry = self.entry(seq);
            if !matches!(entry, Entry::Message(_)) {
                continue;
            }
            if page.entries.len() == limit {
                page.more = true;
                break;
            }
            page.entries.push((seq, entry.clone()));
        }
        page
    }

    /// Raises the floor by the cursor rule (unless history is on) and the TTL rule, and
    /// deletes what falls below it; returns how many entries were deleted.
    fn apply_retention(
        &mut self,
        retention: &Retention,
        now: Millis,
        devices: &BTreeMap<UserId, BTreeMap<DeviceId, Device>>,
    ) -> u64 {
        let end = self.head + 1;
        let mut floor = self.floor;
        if !self.history {
            floor = floor.max(self.lowest_owed(devices).map_or(end, |d| d + 1));
        }
        let ttl = if self.history {
            retention.history_ttl_ms
        } else {
            retention.offline_ttl_ms
        };
        // Timestamps do not decrease along the log, so the expired entries are a prefix.
        while floor < end && expired(now, self.entry(floor).ts_ms(), ttl) {
            floor += 1;
        }
        let floor = floor.min(end);
        let deleted = floor - self.floor;
        self.entries.drain(..deleted as usize);
        self.floor = floor;
        deleted
    }

    /// The lowest delivered cursor of every registered device still owed entries: current
    /// members' devices, and former members' devices below their left seq.
    fn lowest_owed(&self, devices: &BTreeMap<UserId, BTreeMap<DeviceId, Device>>) -> Option<Seq> {
        let members = self.members.keys().map(|&u| (u, self.head));
        let left = self.left.iter().map(|(&u, stint)| (u, stint.left_seq));
        members
            .chain(left)
            .flat_map(|(user, until)| {
                let own = devices.get(&user).into_iter().flat_map(BTreeMap::keys);
                own.map(move |&device| (user, device, until))
            })
            .map(|(user, device, until)| (self.cursor(user, device).delivered, until))
            .filter(|&(delivered, until)| delivered < until)
            .map(|(delivered, _)| delivered)
            .min()
    }

    /// Forgets former members whose every registered device has everything up to their left
    /// seq, with their cursor rows; returns them.
    fn drop_settled_lefts(
        &mut self,
        devices: &BTreeMap<UserId, BTreeMap<DeviceId, Device>>,
    ) -> Vec<UserId> {
        let settled: Vec<UserId> = self
            .left
            .iter()
            .filter(|&(&user, stint)| {
                let mut own = devices.get(&user).into_iter().flat_map(BTreeMap::keys);
                own.all(|&device| self.cursor(user, device).delivered >= stint.left_seq)
            })
            .map(|(&user, _)| user)
            .collect();
        for user in &settled {
            self.left.remove(user);
            self.cursors.retain(|(u, _), _| u != user);
        }
        settled
    }
}
