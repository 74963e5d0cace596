//! One connected device's event stream: sync on connect merged with live deliveries, so the
//! device sees each chat's entries once per connection, in seq order, with nothing skipped.
//!
//! Owns the merge rule (docs/PROTOCOL.md §6, "sync on connect"). The driver registers the
//! session for live deliveries *before* it reads the sync plan from the store, so every entry
//! is either in the plan's range or arrives live (or both). The plan lists every chat of the
//! user with the device's delivered cursor. Then, per chat:
//! - until the plan arrives, live entries are held back (their chat's cursor is not known);
//! - while a chat's sync is running, its live entries are held back;
//! - an entry is emitted only if its seq is above the last one emitted for that chat on this
//!   connection (dropping the overlap between the store read and live delivery);
//! - when the chat's sync has read up to its `until_seq`, the held-back entries follow.
//!
//! A device's own messages are never sent back to it (it got `Sent` for them).
//!
//! Invariants: per chat, emitted seqs strictly increase; `SyncDone` is emitted once, after every
//! planned chat finished. Memory: an idle session holds an empty map; a chat's slot exists once
//! something was delivered in it.

use std::collections::BTreeMap;
use std::sync::Arc;

use foldhash::HashMap;
use store::model::{Entry, LogPage, Seq, SyncChat};
use wire::ids::{ChatId, DeviceId, UserId};

/// What the session asks the driver to send to the device, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A log entry (`NewMessage` or `ChatUpdate`).
    Entry {
        /// The chat.
        chat: ChatId,
        /// Its seq.
        seq: Seq,
        /// The entry.
        entry: Arc<Entry>,
    },
    /// Retention removed `from..=to` of what the device was owed.
    Truncated {
        /// The chat.
        chat: ChatId,
        /// First removed seq.
        from_seq: Seq,
        /// Last removed seq.
        to_seq: Seq,
    },
    /// The sync finished.
    SyncDone {
        /// Chats synced.
        chats: u32,
        /// Entries sent by the sync.
        events: u64,
    },
}

/// A chat whose sync is running.
#[derive(Debug)]
struct Syncing {
    until: Seq,
    held: Vec<(Seq, Arc<Entry>)>,
}

/// One connection's stream state.
#[derive(Debug)]
pub struct Session {
    user: UserId,
    device: DeviceId,
    /// `None` until the plan arrives; then the chats still syncing.
    syncing: Option<BTreeMap<ChatId, Syncing>>,
    planned: u32,
    synced_events: u64,
    done: bool,
    /// The last seq emitted per chat on this connection (or the cursor the sync started at).
    last: HashMap<ChatId, Seq>,
    /// Live entries that arrived before the plan.
    early: Vec<(ChatId, Seq, Arc<Entry>)>,
}

impl Session {
    /// A session registered for live deliveries, waiting for its sync plan.
    pub fn new(user: UserId, device: DeviceId) -> Self {
        Self {
            user,
            device,
            syncing: None,
            planned: 0,
            synced_events: 0,
            done: false,
            last: HashMap::default(),
            early: Vec::new(),
        }
    }

    /// The device's user.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// The device.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// Whether `SyncDone` was emitted.
    pub fn is_live(&self) -> bool {
        self.done
    }

    /// The store's sync plan (read after the session was registered): every chat of the user
    /// with this device's cursors. Emits `SyncDone` at once when nothing is owed.
    pub fn plan(&mut self, plan: &[SyncChat], out: &mut Vec<Event>) {
        let mut syncing = BTreeMap::new();
        for chat in plan {
            self.last.insert(chat.chat, chat.delivered_seq);
            if chat.delivered_seq < chat.until_seq {
                syncing.insert(
                    chat.chat,
                    Syncing {
                        until: chat.until_seq,
                        held: Vec::new(),
                    },
                );
            }
        }
        self.planned = u32::try_from(syncing.len()).unwrap_or(u32::MAX);
        self.syncing = Some(syncing);
        for (chat, seq, entry) in std::mem::take(&mut self.early) {
            self.live(chat, seq, &entry, out);
        }
        self.finish_if_done(out);
    }

    /// The chats whose sync still needs reading, with the seq to read after and up to.
    pub fn wanted(&self) -> Vec<(ChatId, Seq, Seq)> {
        self.syncing.as_ref().map_or_else(Vec::new, |s| {
            s.iter()
                .map(|(chat, sync)| (*chat, self.last.get(chat).copied().unwrap_or(0), sync.until))
                .collect()
        })
    }

    /// A page the driver read for `chat` (after [`Session::wanted`]'s seq). A page that ends
    /// the chat's range (`more == false` or its last seq reaches `until`) finishes that chat.
    pub fn synced(&mut self, chat: ChatId, page: LogPage, out: &mut Vec<Event>) {
        let Some(sync) = self.syncing.as_mut().and_then(|s| s.get_mut(&chat)) else {
            return;
        };
        let until = sync.until;
        let last = self.last.entry(chat).or_insert(0);
        if let Some((from, to)) = page.truncated
            && to > *last
        {
            out.push(Event::Truncated {
                chat,
                from_seq: from.max(*last + 1),
                to_seq: to,
            });
            *last = to;
        }
        for (seq, entry) in page.entries {
            if seq > *last && seq <= until {
                *last = seq;
                // The device's own messages were answered with `Sent`, not delivered.
                if let Entry::Message(m) = &entry
                    && (m.sender, m.sender_device) == (self.user, self.device)
                {
                    continue;
                }
                self.synced_events += 1;
                out.push(Event::Entry {
                    chat,
                    seq,
                    entry: Arc::new(entry),
                });
            }
        }
        if *last >= until || !page.more {
            let last = *last;
            if let Some(sync) = self.syncing.as_mut().and_then(|s| s.remove(&chat)) {
                let mut emitted = last;
                for (seq, entry) in sync.held {
                    if seq > emitted {
                        emitted = seq;
                        out.push(Event::Entry { chat, seq, entry });
                    }
                }
                self.last.insert(chat, emitted);
            }
            self.finish_if_done(out);
        }
    }

    /// A live entry (the driver routed it here because this device's user is in its audience).
    pub fn live(&mut self, chat: ChatId, seq: Seq, entry: &Arc<Entry>, out: &mut Vec<Event>) {
        let Some(syncing) = self.syncing.as_mut() else {
            self.early.push((chat, seq, entry.clone()));
            return;
        };
        if let Some(sync) = syncing.get_mut(&chat) {
            sync.held.push((seq, entry.clone()));
            return;
        }
        let last = self.last.entry(chat).or_insert(0);
        if seq > *last {
            *last = seq;
            out.push(Event::Entry {
                chat,
                seq,
                entry: entry.clone(),
            });
        }
    }

    fn finish_if_done(&mut self, out: &mut Vec<Event>) {
        if !self.done && self.syncing.as_ref().is_some_and(BTreeMap::is_empty) {
            self.done = true;
            out.push(Event::SyncDone {
                chats: self.planned,
                events: self.synced_events,
            });
        }
    }
}
