//! The store's data model: what a write says and what a read returns (DESIGN.md §3, "log plus
//! cursors, not copies"). Backend-neutral plain data; no I/O here.
//!
//! Owns the meaning of every stored fact. Invariants every backend keeps (the conformance
//! suite checks each):
//! - A chat's log is gap-free: entries `1..=head`, each a [`Message`] or a membership
//!   [`Update`], in one sequence. A group's entry 1 is [`Change::Created`]; a direct chat is
//!   created implicitly by its first entry (its two members come from its id).
//! - Retention removes a prefix of the log: what remains is `floor..=head`, and `floor - 1`
//!   is the last removed seq (`floor == 1` when nothing was removed).
//! - A device's cursors only move forward; `Read` up to `n` also means delivered up to `n`;
//!   a cursor past the head is clamped to the head.
//! - A device that has no cursor row for a chat has delivered everything before its user
//!   joined (`joined_seq - 1`); a device registered after the user joined starts at the
//!   chat's head at registration (a new device does not receive old messages).

use std::sync::Arc;

use wire::ids::{AttachmentId, ChatId, ChatKind, DeviceId, MessageId, Sha256, UserId};

pub use wire::enums::{BodyKind, ReceiptKind, Role};

/// A chat's position in its log.
pub type Seq = u64;

/// Milliseconds since the Unix epoch (server time; the caller supplies it, so tests control
/// the clock).
pub type Millis = u64;

/// One durable write: mutations that become durable together (one group-commit record).
/// They are applied in order; if any is refused, none is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The mutations, applied in order.
    pub mutations: Vec<Mutation>,
}

/// One change to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Appends `entry` to `chat`'s log at `seq`, which must be the chat's head + 1 (the router
    /// assigns seqs; anything else is refused as a bug: [`crate::StoreError::SeqConflict`]).
    /// A [`Message`] also records its idempotency key `(sender, sender_device,
    /// client_msg_id)`.
    Append {
        /// The chat.
        chat: ChatId,
        /// Its position: head + 1.
        seq: Seq,
        /// What is appended (shared: the router keeps the same entry to deliver it once
        /// durable, so a send is not copied for its write).
        entry: Arc<Entry>,
    },
    /// Moves one device's cursor forward in one chat (a lower value is ignored).
    Cursor {
        /// The chat (must exist).
        chat: ChatId,
        /// The device's user.
        user: UserId,
        /// The device.
        device: DeviceId,
        /// `Delivered` or `Read` (which also counts as delivered).
        kind: ReceiptKind,
        /// Everything up to and including this seq.
        up_to_seq: Seq,
    },
    /// A device connected (or is still connected) at `at_ms`: registers it if new (its
    /// cursors start at the current heads of its user's chats) and updates its last-seen time.
    DeviceSeen {
        /// The device's user.
        user: UserId,
        /// The device.
        device: DeviceId,
        /// When it was seen.
        at_ms: Millis,
    },
    /// Creates or replaces an attachment's record (e.g. once its upload is verified).
    PutAttachment(Attachment),
    /// Deletes an attachment's record and its references (its blob is already gone).
    DeleteAttachment(AttachmentId),
}

/// An attachment (DESIGN.md F8): what its creating device declared, and whether the upload
/// was verified. Messages that reference it are its references; while a retained message
/// references it, it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Its id (random, nonzero).
    pub id: AttachmentId,
    /// The creating user.
    pub user: UserId,
    /// The creating device: the only one that may reference it in a message.
    pub device: DeviceId,
    /// The declared size in bytes.
    pub size: u64,
    /// The declared SHA-256 of the blob.
    pub sha256: Sha256,
    /// The declared MIME type (a download's `Content-Type`).
    pub mime: String,
    /// When it was created.
    pub created_ms: Millis,
    /// Whether the blob was uploaded and checked against `size` and `sha256`.
    pub verified: bool,
}

/// An entry in a chat's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A message.
    Message(Message),
    /// A membership change.
    Update(Update),
}

/// A message as stored (and as delivered in `NewMessage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Assigned by the server with the seq.
    pub server_msg_id: MessageId,
    /// The sending user.
    pub sender: UserId,
    /// The sending device.
    pub sender_device: DeviceId,
    /// The sender's idempotency key (nonzero, unique per device).
    pub client_msg_id: u64,
    /// Server time the message was sequenced; non-decreasing along a chat's log.
    pub ts_ms: Millis,
    /// Text or opaque.
    pub kind: BodyKind,
    /// The body, opaque to the store.
    pub body: Vec<u8>,
    /// Referenced attachments.
    pub attachments: Vec<AttachmentId>,
}

/// A membership change (a `ChatUpdate` in the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Server time of the change.
    pub ts_ms: Millis,
    /// Who made it.
    pub actor: UserId,
    /// What changed.
    pub change: Change,
}

/// What a membership change does. The router has checked who may do what; the store applies
/// it (adding a present member or removing an absent one changes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A group is created (only at seq 1 of a group id): every member with its role.
    Created {
        /// The group's name.
        name: String,
        /// Whether the chat keeps server history (F7).
        history: bool,
        /// Every member, the creator as `Admin`.
        members: Vec<(UserId, Role)>,
    },
    /// Users join as `Member`.
    Added(Vec<UserId>),
    /// Users are removed by an admin.
    Removed(Vec<UserId>),
    /// Members become `Admin`.
    Promoted(Vec<UserId>),
    /// The actor leaves.
    Left,
}

/// A chat's state now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatState {
    /// The chat.
    pub chat: ChatId,
    /// Direct or group.
    pub kind: ChatKind,
    /// The group's name (empty for a direct chat).
    pub name: String,
    /// Whether the chat keeps server history.
    pub history: bool,
    /// Time of its first entry.
    pub created_ms: Millis,
    /// The last seq in its log (≥ 1).
    pub head: Seq,
    /// The lowest seq still stored (`head + 1` when retention removed everything).
    pub floor: Seq,
    /// Current members, by user id.
    pub members: Vec<Member>,
}

/// A current member of a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The user.
    pub user: UserId,
    /// Its role.
    pub role: Role,
    /// The seq of the entry that made it a member (1 for founders and direct chats).
    pub joined_seq: Seq,
}

/// The answer a `SendMessage` got, kept for retries (at least the offline TTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentRecord {
    /// The chat it went to.
    pub chat: ChatId,
    /// Its seq.
    pub seq: Seq,
    /// Its server id.
    pub server_msg_id: MessageId,
    /// Its server time.
    pub ts_ms: Millis,
}

/// One chat of a user, with one device's cursors in it (see `Store::sync_plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncChat {
    /// The chat.
    pub chat: ChatId,
    /// The device's delivered cursor: sync starts after it.
    pub delivered_seq: Seq,
    /// The device's read cursor.
    pub read_seq: Seq,
    /// The last seq this device should get: the head, or for a user who left or was removed,
    /// the seq of that change (its devices get it and nothing later).
    pub until_seq: Seq,
}

/// One device's cursors in one chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCursor {
    /// The user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
    /// Delivered up to and including.
    pub delivered_seq: Seq,
    /// Read up to and including.
    pub read_seq: Seq,
}

/// A registered device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    /// The device.
    pub device: DeviceId,
    /// When it was first seen.
    pub registered_ms: Millis,
    /// When it was last seen.
    pub last_seen_ms: Millis,
}

/// A range of a chat's log, in seq order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    /// Retention removed `from..=to` of the requested range (reported before the entries).
    pub truncated: Option<(Seq, Seq)>,
    /// The entries, ascending by seq.
    pub entries: Vec<(Seq, Entry)>,
    /// Whether the requested range holds more entries past the last one returned.
    pub more: bool,
}

/// What one retention sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Log entries deleted (delivered everywhere, or past a TTL).
    pub entries_deleted: u64,
    /// Idempotency keys past the offline TTL deleted.
    pub sent_records_deleted: u64,
    /// Devices unseen for longer than the prune age removed (with their cursors).
    pub devices_pruned: u64,
}

/// How long things are kept (DESIGN.md F6, F7, F9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Undelivered entries (and idempotency keys) are deleted after this long. Default 30 days,
    /// at most 1 year.
    pub offline_ttl_ms: Millis,
    /// A chat with history on keeps entries this long, delivered or not. Default and maximum
    /// 90 days.
    pub history_ttl_ms: Millis,
    /// A device unseen this long is removed (its cursors stop holding back retention).
    /// Default 30 days.
    pub device_prune_ms: Millis,
}

/// One day in milliseconds.
pub const DAY_MS: Millis = 24 * 60 * 60 * 1000;

impl Default for Retention {
    fn default() -> Self {
        Self {
            offline_ttl_ms: 30 * DAY_MS,
            history_ttl_ms: 90 * DAY_MS,
            device_prune_ms: 30 * DAY_MS,
        }
    }
}

impl Retention {
    /// Checks the ceilings: offline TTL ≤ 1 year, history TTL ≤ 90 days, all nonzero.
    ///
    /// # Errors
    /// Names the first field out of range.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.offline_ttl_ms == 0 || self.offline_ttl_ms > 365 * DAY_MS {
            return Err("offline_ttl_ms must be in 1 ms ..= 365 days");
        }
        if self.history_ttl_ms == 0 || self.history_ttl_ms > 90 * DAY_MS {
            return Err("history_ttl_ms must be in 1 ms ..= 90 days");
        }
        if self.device_prune_ms == 0 {
            return Err("device_prune_ms must be nonzero");
        }
        Ok(())
    }
}

/// The server message id of `chat`'s entry `seq`: a 128-bit mix of the two, so it is unique
/// without coordination and the same if the same entry is ever sequenced again. The router
/// assigns exactly this id to every message, so the embedded store derives it from the key
/// rather than keeping 16 bytes of it per message (it still keeps any other id it is given).
///
/// # Panics
/// Never: the mix is made nonzero before it becomes an id.
#[must_use]
pub fn message_id(chat: ChatId, seq: Seq) -> MessageId {
    let c = chat.get();
    let mut hi = (c >> 64) as u64 ^ seq.rotate_left(32);
    let mut lo = c as u64 ^ seq;
    for _ in 0..2 {
        hi = splitmix(hi ^ lo);
        lo = splitmix(lo ^ hi.rotate_left(17));
    }
    let id = (u128::from(hi) << 64) | u128::from(lo);
    MessageId::new(id.max(1)).expect("nonzero")
}

/// `SplitMix64`'s step: a cheap, well-spread mix of 64 bits (ids, jitter).
#[must_use]
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether something stamped `ts_ms` is past `ttl_ms` at `now` (the one TTL rule of every
/// backend: strictly older than the TTL).
pub fn expired(now: Millis, ts_ms: Millis, ttl_ms: Millis) -> bool {
    now.saturating_sub(ts_ms) > ttl_ms
}

impl Message {
    /// The idempotency key this message answers.
    pub fn idempotency_key(&self) -> (UserId, DeviceId, u64) {
        (self.sender, self.sender_device, self.client_msg_id)
    }

    /// The answer a retry of this message gets once it is stored at `seq` of `chat`.
    pub fn sent_record(&self, chat: ChatId, seq: Seq) -> SentRecord {
        SentRecord {
            chat,
            seq,
            server_msg_id: self.server_msg_id,
            ts_ms: self.ts_ms,
        }
    }
}

impl Entry {
    /// The entry's server time.
    pub fn ts_ms(&self) -> Millis {
        match self {
            Self::Message(m) => m.ts_ms,
            Self::Update(u) => u.ts_ms,
        }
    }
}
