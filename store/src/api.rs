//! The `Store` interface every backend implements, and its error type.
//!
//! Owns the contract between the router/gateway and durable storage. Shaped for an embedded
//! engine and for ScyllaDB alike: writes come in batches (one group-commit record, or one
//! unlogged batch per partition), nothing on the hot path needs a cross-partition transaction,
//! and every call returns a [`Reply`] at once, so an executor thread never blocks: the work
//! runs on the backend's own threads.
//!
//! Invariants (checked by [`crate::conformance`]):
//! - [`Store::write`] resolves `Ok` only after the whole batch is durable; after `Ok`, every
//!   read issued later sees it (read-your-acknowledged-writes), also after a reopen.
//! - A refused batch ([`StoreError::SeqConflict`], [`StoreError::UnknownChat`],
//!   [`StoreError::Invalid`]) changes nothing.
//! - After a failed sync the store refuses every later write ([`StoreError::ReadOnly`]) until
//!   it is reopened; no write of the failed batch is acknowledged.

use wire::ids::{AttachmentId, ChatId, ChatKind, DeviceId, UserId};

use crate::model::{
    Attachment, ChatState, Device, DeviceCursor, LogPage, Millis, SentRecord, Seq, SweepReport,
    SyncChat, WriteBatch,
};
use crate::reply::{Closed, Reply};

/// The future every store call returns.
pub type StoreReply<T> = Reply<T, StoreError>;

/// Durable chat storage: the log, cursors, idempotency keys, devices, retention.
pub trait Store: Send + Sync + 'static {
    /// Makes `batch` durable; resolves once it is (or with why not).
    fn write(&self, batch: WriteBatch) -> StoreReply<()>;

    /// A chat's state, or `None` if it does not exist.
    fn chat(&self, chat: ChatId) -> StoreReply<Option<ChatState>>;

    /// The answer a message with this idempotency key got, if it is still kept.
    fn sent(
        &self,
        user: UserId,
        device: DeviceId,
        client_msg_id: u64,
    ) -> StoreReply<Option<SentRecord>>;

    /// [`Store::sent`] for many keys in one call (one round trip), answers in key order.
    fn sent_many(&self, keys: Vec<(UserId, DeviceId, u64)>) -> StoreReply<Vec<Option<SentRecord>>>;

    /// Every chat of `user` with `device`'s cursors, ordered by chat id: the chats it is a
    /// member of (`until_seq` = head) and those it left or was removed from whose leave entry
    /// it has not received yet (`until_seq` = that entry). The device has something to sync
    /// where `delivered_seq < until_seq`; the others are listed so a connection knows what it
    /// already has.
    fn sync_plan(&self, user: UserId, device: DeviceId) -> StoreReply<Vec<SyncChat>>;

    /// Entries of `chat` with `after_seq < seq <= until_seq`, ascending, at most `limit`
    /// (`truncated` reports the part of that range retention removed). An unknown chat is
    /// `UnknownChat`.
    fn read_log(
        &self,
        chat: ChatId,
        after_seq: Seq,
        until_seq: Seq,
        limit: usize,
    ) -> StoreReply<LogPage>;

    /// Messages only (no membership updates) of `chat` with `seq < before_seq` (`0` = from the
    /// head), newest first, at most `limit`; `more` says whether older ones remain.
    fn history(&self, chat: ChatId, before_seq: Seq, limit: usize) -> StoreReply<LogPage>;

    /// Every chat `user` is a member of, ordered by chat id.
    fn user_chats(&self, user: UserId) -> StoreReply<Vec<ChatId>>;

    /// The user's registered devices, ordered by device id.
    fn devices(&self, user: UserId) -> StoreReply<Vec<Device>>;

    /// Every stored cursor of `chat`, ordered by (user, device).
    fn cursors(&self, chat: ChatId) -> StoreReply<Vec<DeviceCursor>>;

    /// An attachment's record, or `None`.
    fn attachment(&self, id: AttachmentId) -> StoreReply<Option<Attachment>>;

    /// Whether a retained message of `chat` references the attachment.
    fn referenced_in(&self, chat: ChatId, id: AttachmentId) -> StoreReply<bool>;

    /// Up to `limit` attachments, ascending by id, created at or before `created_before_ms`
    /// that no retained message references: their blobs may be deleted, then their records
    /// (`Mutation::DeleteAttachment`).
    fn unreferenced_attachments(
        &self,
        created_before_ms: Millis,
        limit: usize,
    ) -> StoreReply<Vec<AttachmentId>>;

    /// Applies retention as of `now_ms`: deletes entries every member device has received
    /// (unless the chat keeps history), entries past their TTL, idempotency keys past the
    /// offline TTL, and devices unseen past the prune age.
    fn sweep(&self, now_ms: Millis) -> StoreReply<SweepReport>;
}

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// An append's seq is not the chat's head + 1: a bug in the caller (the router assigns
    /// seqs). Nothing of the batch was written.
    #[error("seq conflict in {chat:?}: expected seq {expected}, got {got}")]
    SeqConflict {
        /// The chat.
        chat: ChatId,
        /// Head + 1.
        expected: Seq,
        /// What the batch had.
        got: Seq,
    },
    /// The chat does not exist (a cursor or read for an unknown chat, or a group's first
    /// entry is not `Created`). Nothing of the batch was written.
    #[error("unknown chat {0:?}")]
    UnknownChat(ChatId),
    /// The batch is malformed (e.g. `Created` in a direct chat or past seq 1). Nothing was
    /// written.
    #[error("invalid write: {0}")]
    Invalid(String),
    /// A sync failed: the store takes no writes until it is reopened, and that write was not
    /// acknowledged.
    #[error("store is read-only after a failed sync: {0}")]
    ReadOnly(String),
    /// The store is not keeping up (its queue is full); try again later.
    #[error("store overloaded: {0}")]
    Overloaded(String),
    /// The store is unreachable or failed; the message says what happened.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store was closed.
    #[error("store closed")]
    Closed,
}

/// The append rule every backend enforces: `seq` must be the chat's `head + 1` (`head` 0: no
/// such chat, so only seq 1 may create it); a group starts with `Created` at seq 1, and nothing
/// else is `Created`.
///
/// # Errors
/// `UnknownChat` (appending past seq 1 to no chat, or a group whose first entry is not
/// `Created`), `SeqConflict`, or `Invalid` (a misplaced `Created`).
pub fn check_append(
    chat: ChatId,
    head: Seq,
    seq: Seq,
    creates_group: bool,
) -> Result<(), StoreError> {
    if head == 0 && seq != 1 {
        return Err(StoreError::UnknownChat(chat));
    }
    if seq != head + 1 {
        return Err(StoreError::SeqConflict {
            chat,
            expected: head + 1,
            got: seq,
        });
    }
    match (chat.kind(), seq == 1, creates_group) {
        (ChatKind::Group, true, false) => Err(StoreError::UnknownChat(chat)),
        (ChatKind::Direct, _, true) => Err(StoreError::Invalid(format!(
            "Created in direct chat {chat:?}"
        ))),
        (ChatKind::Group, false, true) => Err(StoreError::Invalid(format!(
            "Created at seq {seq} of {chat:?}; only seq 1 creates a group"
        ))),
        _ => Ok(()),
    }
}

impl Closed for StoreError {
    fn closed() -> Self {
        Self::Closed
    }
}
