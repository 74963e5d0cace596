//! A second implementation of the store's contract, as plain as possible, for the random run
//! to compare every answer against.
//!
//! Owns nothing a backend uses; it must stay independent of [`crate::memory`] (a second
//! implementation on purpose, so one mistake does not hide in both). Shape: vectors scanned
//! linearly; a chat keeps every entry ever written and only moves its floor; a write applies
//! to a clone of the whole model, which replaces the model only if every mutation succeeded.

use std::rc::Rc;

use wire::ids::{ChatId, ChatKind, DeviceId, UserId};

use crate::StoreError;
use crate::model::{
    Change, ChatState, Device, DeviceCursor, Entry, LogPage, Member, Millis, Mutation, ReceiptKind,
    Retention, Role, SentRecord, Seq, SweepReport, SyncChat, Update, WriteBatch,
};

/// The whole store, in vectors.
#[derive(Debug, Clone)]
pub(super) struct Reference {
    retention: Retention,
    chats: Vec<RefChat>,
    devices: Vec<(UserId, Device)>,
    sent: Vec<((UserId, DeviceId, u64), SentRecord)>,
}

#[derive(Debug, Clone)]
struct RefChat {
    id: ChatId,
    name: String,
    history: bool,
    created_ms: Millis,
    /// Every entry ever appended: seq `i + 1` at index `i` (deleted ones stay, below `floor`).
    log: Vec<Rc<Entry>>,
    floor: Seq,
    members: Vec<Member>,
    /// Former members: (user, joined seq, left seq).
    left: Vec<(UserId, Seq, Seq)>,
    cursors: Vec<DeviceCursor>,
}

impl Reference {
    pub(super) fn new(retention: Retention) -> Self {
        Self {
            retention,
            chats: Vec::new(),
            devices: Vec::new(),
            sent: Vec::new(),
        }
    }

    pub(super) fn write(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        let mut next = self.clone();
        for mutation in &batch.mutations {
            next.apply(mutation)?;
        }
        *self = next;
        Ok(())
    }

    pub(super) fn head(&self, chat: ChatId) -> Seq {
        self.find(chat).map_or(0, RefChat::head)
    }

    pub(super) fn members(&self, chat: ChatId) -> Vec<UserId> {
        self.find(chat)
            .map(|c| c.members.iter().map(|m| m.user).collect())
            .unwrap_or_default()
    }

    pub(super) fn former_members(&self, chat: ChatId) -> Vec<UserId> {
        self.find(chat)
            .map(|c| c.left.iter().map(|l| l.0).collect())
            .unwrap_or_default()
    }

    pub(super) fn registered(&self, user: UserId) -> Vec<DeviceId> {
        let own = self.devices.iter().filter(|(u, _)| *u == user);
        own.map(|(_, d)| d.device).collect()
    }

    pub(super) fn chat(&self, chat: ChatId) -> Option<ChatState> {
        let c = self.find(chat)?;
        let mut members = c.members.clone();
        members.sort_by_key(|m| m.user);
        Some(ChatState {
            chat,
            kind: chat.kind(),
            name: c.name.clone(),
            history: c.history,
            created_ms: c.created_ms,
            head: c.head(),
            floor: c.floor,
            members,
        })
    }

    pub(super) fn sent(&self, user: UserId, device: DeviceId, id: u64) -> Option<SentRecord> {
        let key = (user, device, id);
        self.sent.iter().find(|(k, _)| *k == key).map(|(_, r)| *r)
    }

    pub(super) fn sync_plan(&self, user: UserId, device: DeviceId) -> Vec<SyncChat> {
        let mut plan = Vec::new();
        for c in &self.chats {
            let is_member = c.members.iter().any(|m| m.user == user);
            let until_seq = if is_member {
                c.head()
            } else if let Some(&(_, _, left)) = c.left.iter().find(|l| l.0 == user) {
                left
            } else {
                continue;
            };
            let (delivered_seq, read_seq) = c.cursor_of(user, device);
            plan.push(SyncChat {
                chat: c.id,
                delivered_seq,
                read_seq,
                until_seq,
            });
        }
        plan.sort_by_key(|s| s.chat);
        plan
    }

    pub(super) fn read_log(
        &self,
        chat: ChatId,
        after: Seq,
        until: Seq,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        let c = self.find(chat).ok_or(StoreError::UnknownChat(chat))?;
        let until = until.min(c.head());
        if after >= until {
            return Ok(LogPage::default());
        }
        let truncated = if after + 1 < c.floor {
            Some((after + 1, until.min(c.floor - 1)))
        } else {
            None
        };
        let wanted: Vec<(Seq, Entry)> = (after + 1..=until)
            .filter(|&seq| seq >= c.floor)
            .map(|seq| (seq, c.entry(seq)))
            .collect();
        let more = wanted.len() > limit;
        Ok(LogPage {
            truncated,
            entries: wanted.into_iter().take(limit).collect(),
            more,
        })
    }

    pub(super) fn history(
        &self,
        chat: ChatId,
        before: Seq,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        let c = self.find(chat).ok_or(StoreError::UnknownChat(chat))?;
        let mut messages: Vec<(Seq, Entry)> = (c.floor..=c.head())
            .filter(|&seq| before == 0 || seq < before)
            .map(|seq| (seq, c.entry(seq)))
            .filter(|(_, e)| matches!(e, Entry::Message(_)))
            .collect();
        messages.reverse();
        let more = messages.len() > limit;
        messages.truncate(limit);
        Ok(LogPage {
            truncated: None,
            entries: messages,
            more,
        })
    }

    pub(super) fn user_chats(&self, user: UserId) -> Vec<ChatId> {
        let mut chats: Vec<ChatId> = self
            .chats
            .iter()
            .filter(|c| c.members.iter().any(|m| m.user == user))
            .map(|c| c.id)
            .collect();
        chats.sort();
        chats
    }

    pub(super) fn devices(&self, user: UserId) -> Vec<Device> {
        let mut devices: Vec<Device> = self
            .devices
            .iter()
            .filter(|(u, _)| *u == user)
            .map(|(_, d)| *d)
            .collect();
        devices.sort_by_key(|d| d.device);
        devices
    }

    pub(super) fn cursors(&self, chat: ChatId) -> Result<Vec<DeviceCursor>, StoreError> {
        let c = self.find(chat).ok_or(StoreError::UnknownChat(chat))?;
        let mut rows = c.cursors.clone();
        rows.sort_by_key(|r| (r.user, r.device));
        Ok(rows)
    }

    pub(super) fn sweep(&mut self, now: Millis) -> SweepReport {
        let retention = self.retention;
        let old = |ts: Millis, ttl: Millis| now > ts && now - ts > ttl;
        let gone: Vec<(UserId, DeviceId)> = self
            .devices
            .iter()
            .filter(|(_, d)| old(d.last_seen_ms, retention.device_prune_ms))
            .map(|(u, d)| (*u, d.device))
            .collect();
        self.devices
            .retain(|(u, d)| !gone.contains(&(*u, d.device)));
        for c in &mut self.chats {
            c.cursors.retain(|r| !gone.contains(&(r.user, r.device)));
        }
        let mut entries_deleted = 0;
        for i in 0..self.chats.len() {
            let mut floor = self.chats[i].floor;
            let c = &self.chats[i];
            if !c.history {
                floor = floor.max(self.lowest_owed(c) + 1);
            }
            let ttl = if c.history {
                retention.history_ttl_ms
            } else {
                retention.offline_ttl_ms
            };
            while floor <= c.head() && old(c.entry(floor).ts_ms(), ttl) {
                floor += 1;
            }
            let settled: Vec<UserId> = c
                .left
                .iter()
                .filter(|(u, _, left)| {
                    let mut own = self.registered(*u).into_iter();
                    own.all(|d| c.cursor_of(*u, d).0 >= *left)
                })
                .map(|l| l.0)
                .collect();
            let c = &mut self.chats[i];
            entries_deleted += floor - c.floor;
            c.floor = floor;
            c.left.retain(|l| !settled.contains(&l.0));
            c.cursors.retain(|r| !settled.contains(&r.user));
        }
        let before = self.sent.len();
        self.sent
            .retain(|(_, r)| !old(r.ts_ms, retention.offline_ttl_ms));
        SweepReport {
            entries_deleted,
            sent_records_deleted: (before - self.sent.len()) as u64,
            devices_pruned: gone.len() as u64,
        }
    }

    /// The lowest delivered seq over registered devices still owed entries of `c` (the head
    /// when none is).
    fn lowest_owed(&self, c: &RefChat) -> Seq {
        let mut lowest = c.head();
        for m in &c.members {
            for d in self.registered(m.user) {
                lowest = lowest.min(c.cursor_of(m.user, d).0);
            }
        }
        for &(user, _, left) in &c.left {
            for d in self.registered(user) {
                let delivered = c.cursor_of(user, d).0;
                if delivered < left {
                    lowest = lowest.min(delivered);
                }
            }
        }
        lowest
    }

    fn find(&self, chat: ChatId) -> Option<&RefChat> {
        self.chats.iter().find(|c| c.id == chat)
    }

    fn find_mut(&mut self, chat: ChatId) -> Option<&mut RefChat> {
        self.chats.iter_mut().find(|c| c.id == chat)
    }

    fn apply(&mut self, mutation: &Mutation) -> Result<(), StoreError> {
        match mutation {
            // The random run makes no attachments; `conformance::attachments` covers them.
            Mutation::PutAttachment(_) | Mutation::DeleteAttachment(_) => Ok(()),
            Mutation::Append { chat, seq, entry } => self.append(*chat, *seq, entry),
            Mutation::Cursor {
                chat,
                user,
                device,
                kind,
                up_to_seq,
            } => {
                let c = self.find_mut(*chat).ok_or(StoreError::UnknownChat(*chat))?;
                let up_to = (*up_to_seq).min(c.head());
                let (delivered, read) = c.cursor_of(*user, *device);
                let new_read = if *kind == ReceiptKind::Read {
                    read.max(up_to)
                } else {
                    read
                };
                let new = (delivered.max(up_to), new_read);
                if new != (delivered, read) {
                    c.set_cursor(*user, *device, new);
                }
                Ok(())
            }
            Mutation::DeviceSeen {
                user,
                device,
                at_ms,
            } => {
                self.device_seen(*user, *device, *at_ms);
                Ok(())
            }
        }
    }

    fn append(&mut self, chat: ChatId, seq: Seq, entry: &Entry) -> Result<(), StoreError> {
        let head = self.head(chat);
        if head == 0 && seq != 1 {
            return Err(StoreError::UnknownChat(chat));
        }
        if seq != head + 1 {
            let (expected, got) = (head + 1, seq);
            return Err(StoreError::SeqConflict {
                chat,
                expected,
                got,
            });
        }
        let created = match entry {
            Entry::Update(Update {
                change:
                    Change::Created {
                        name,
                        history,
                        members,
                    },
                ..
            }) => Some((name, *history, members)),
            _ => None,
        };
        let is_group = chat.kind() == ChatKind::Group;
        if created.is_some() && (!is_group || seq != 1) {
            return Err(StoreError::Invalid("misplaced Created".into()));
        }
        if is_group && seq == 1 && created.is_none() {
            return Err(StoreError::UnknownChat(chat));
        }
        if seq == 1 {
            let mut c = RefChat {
                id: chat,
                name: String::new(),
                history: false,
                created_ms: entry.ts_ms(),
                log: Vec::new(),
                floor: 1,
                members: Vec::new(),
                left: Vec::new(),
                cursors: Vec::new(),
            };
            if let Some((a, b)) = chat.direct_users() {
                c.join(a, Role::Member, 1);
                c.join(b, Role::Member, 1);
            }
            if let Some((name, history, members)) = created {
                c.name.clone_from(name);
                c.history = history;
                for &(user, role) in members {
                    c.join(user, role, 1);
                }
            }
            self.chats.push(c);
        }
        let c = self
            .find_mut(chat)
            .expect("the chat exists or was just made");
        c.log.push(Rc::new(entry.clone()));
        match entry {
            Entry::Message(m) => {
                let record = SentRecord {
                    chat,
                    seq,
                    server_msg_id: m.server_msg_id,
                    ts_ms: m.ts_ms,
                };
                let key = m.idempotency_key();
                self.sent.retain(|(k, _)| *k != key);
                self.sent.push((key, record));
            }
            Entry::Update(u) => c.change(seq, u),
        }
        Ok(())
    }

    fn device_seen(&mut self, user: UserId, device: DeviceId, at_ms: Millis) {
        let known = self
            .devices
            .iter_mut()
            .find(|(u, d)| *u == user && d.device == device);
        if let Some((_, d)) = known {
            d.last_seen_ms = d.last_seen_ms.max(at_ms);
            return;
        }
        let registered = Device {
            device,
            registered_ms: at_ms,
            last_seen_ms: at_ms,
        };
        self.devices.push((user, registered));
        for c in &mut self.chats {
            if c.members.iter().any(|m| m.user == user) {
                let head = c.head();
                c.set_cursor(user, device, (head, head));
            }
        }
    }
}

impl RefChat {
    fn head(&self) -> Seq {
        self.log.len() as Seq
    }

    fn entry(&self, seq: Seq) -> Entry {
        Entry::clone(&self.log[(seq - 1) as usize])
    }

    /// (delivered, read): the row, or "everything before joining" for the current or last
    /// membership.
    fn cursor_of(&self, user: UserId, device: DeviceId) -> (Seq, Seq) {
        if let Some(r) = self
            .cursors
            .iter()
            .find(|r| r.user == user && r.device == device)
        {
            return (r.delivered_seq, r.read_seq);
        }
        if let Some(m) = self.members.iter().find(|m| m.user == user) {
            return (m.joined_seq - 1, 0);
        }
        if let Some(&(_, joined, _)) = self.left.iter().find(|l| l.0 == user) {
            return (joined - 1, 0);
        }
        (0, 0)
    }

    fn set_cursor(&mut self, user: UserId, device: DeviceId, (delivered, read): (Seq, Seq)) {
        self.cursors
            .retain(|r| !(r.user == user && r.device == device));
        self.cursors.push(DeviceCursor {
            user,
            device,
            delivered_seq: delivered,
            read_seq: read,
        });
    }

    /// Makes `user` a member at `seq` (a role change if it already is one).
    fn join(&mut self, user: UserId, role: Role, seq: Seq) {
        if let Some(m) = self.members.iter_mut().find(|m| m.user == user) {
            m.role = role;
            return;
        }
        self.members.push(Member {
            user,
            role,
            joined_seq: seq,
        });
        self.left.retain(|l| l.0 != user);
        self.cursors.retain(|r| r.user != user);
    }

    fn remove(&mut self, user: UserId, seq: Seq) {
        if let Some(i) = self.members.iter().position(|m| m.user == user) {
            let m = self.members.remove(i);
            self.left.retain(|l| l.0 != user);
            self.left.push((user, m.joined_seq, seq));
        }
    }

    fn change(&mut self, seq: Seq, update: &Update) {
        match &update.change {
            Change::Created { .. } => {}
            Change::Added(users) => {
                for &user in users {
                    if !self.members.iter().any(|m| m.user == user) {
                        self.join(user, Role::Member, seq);
                    }
                }
            }
            Change::Removed(users) => {
                for &user in users {
                    self.remove(user, seq);
                }
            }
            Change::Left => self.remove(update.actor, seq),
            Change::Promoted(users) => {
                for m in &mut self.members {
                    if users.contains(&m.user) {
                        m.role = Role::Admin;
                    }
                }
            }
        }
    }
}
