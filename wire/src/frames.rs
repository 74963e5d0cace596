//! The frames as Rust values: what `decode` returns and what `Encoder` takes.
//!
//! Owns the shape of every frame of docs/PROTOCOL.md, borrowed from the buffer it came from
//! (`&'a str`, `&'a [u8]`, `&'a [UserId]`), so decoding copies nothing.
//!
//! Invariant: a frame returned by `decode_client`/`decode_server` satisfies the `Limits` it was
//! decoded with and holds only valid ids and known enum values ("parse, don't validate"); later
//! code does not re-check. A frame built by hand for encoding is trusted as given.

use crate::enums::{BodyKind, ChatUpdateKind, ErrorCode, ReceiptKind, Role};
use crate::fb;
use crate::ids::{AttachmentId, ChatId, DeviceId, MessageId, Sha256, UserId};

/// A message body, typed by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// UTF-8 text.
    Text(&'a str),
    /// Opaque bytes (e.g. end-to-end encrypted).
    Opaque(&'a [u8]),
}

impl<'a> Body<'a> {
    /// The body's bytes as on the wire.
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Body::Text(s) => s.as_bytes(),
            Body::Opaque(b) => b,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> BodyKind {
        match self {
            Body::Text(_) => BodyKind::Text,
            Body::Opaque(_) => BodyKind::Opaque,
        }
    }
}

/// A chat member and its role, laid out exactly like the schema's `Member` struct.
#[derive(Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Member {
    user: UserId,
    role: u8,
}

impl Member {
    /// A member with a role.
    pub fn new(user: UserId, role: Role) -> Self {
        Self {
            user,
            role: role.raw(),
        }
    }

    /// The user.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// The role. Members in a decoded frame always hold a known role.
    pub fn role(&self) -> Role {
        Role::from_raw(self.role).unwrap_or(Role::Member)
    }

    pub(crate) fn role_is_known(&self) -> bool {
        Role::from_raw(self.role).is_some()
    }
}

impl core::fmt::Debug for Member {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Member({:?}, {:?})", self.user, self.role())
    }
}

// ---- Client → server ----------------------------------------------------------------------

/// One request from a client: its id and what it asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientFrame<'a> {
    /// Chosen by the client; echoed in the one `Result` that answers this request.
    pub request_id: u64,
    /// The request itself.
    pub request: Request<'a>,
}

/// Every client request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // Each variant is its payload type, documented there.
pub enum Request<'a> {
    CreateChat(CreateChat<'a>),
    ModifyParticipants(ModifyParticipants<'a>),
    SendMessage(SendMessage<'a>),
    CreateAttachment(CreateAttachment<'a>),
    GetAttachmentUrl(GetAttachmentUrl),
    Delivered(Ack),
    Read(Ack),
    Typing(Typing),
    SetPresence(SetPresence),
    SubscribePresence(SubscribePresence<'a>),
    FetchHistory(FetchHistory),
}

/// Create a group chat; the sender becomes admin. `members` excludes the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateChat<'a> {
    /// Group name, at most `chat_name_bytes_max` bytes.
    pub name: &'a str,
    /// Other members, at most `group_members_max`.
    pub members: &'a [UserId],
    /// Keep server history (`FetchHistory`) for this chat.
    pub history: bool,
}

/// Add, remove or promote members; a member may remove itself (leave).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ModifyParticipants<'a> {
    pub chat: ChatId,
    pub add: &'a [UserId],
    pub remove: &'a [UserId],
    pub promote: &'a [UserId],
}

/// Send a message; idempotent by `(device, client_msg_id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendMessage<'a> {
    /// Target chat (a direct chat's id is derived from the two users).
    pub chat: ChatId,
    /// Nonzero, unique per device; a retry reuses it.
    pub client_msg_id: u64,
    /// The body.
    pub body: Body<'a>,
    /// Verified uploads of this device, at most `attachments_per_message_max`.
    pub attachments: &'a [AttachmentId],
}

/// Ask for an attachment id and an upload URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateAttachment<'a> {
    /// Exact blob size in bytes, `1 ..= attachment_bytes_max`.
    pub size: u64,
    /// SHA-256 of the blob; the upload is refused if it differs.
    pub sha256: Sha256,
    /// MIME type, sent back as the download's `Content-Type`.
    pub mime: &'a str,
}

/// Ask for a download URL of an attachment referenced in a chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct GetAttachmentUrl {
    pub chat: ChatId,
    pub attachment: AttachmentId,
}

/// `Delivered` or `Read`: everything in `chat` up to `up_to_seq` (≥ 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Ack {
    pub chat: ChatId,
    pub up_to_seq: u64,
}

/// The user is typing in `chat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Typing {
    pub chat: ChatId,
}

/// Appear online or offline to presence subscribers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SetPresence {
    pub online: bool,
}

/// Follow these users' presence (replaces the previous list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SubscribePresence<'a> {
    pub users: &'a [UserId],
}

/// A page of a history-enabled chat, older than `before_seq` (0: from the newest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FetchHistory {
    pub chat: ChatId,
    pub before_seq: u64,
    /// `1 ..= history_page_messages_max`.
    pub limit: u32,
}

// ---- Server → client ----------------------------------------------------------------------

/// Every frame the server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // Each variant is its payload type, documented there.
pub enum ServerFrame<'a> {
    Result(RequestResult<'a>),
    NewMessage(NewMessage<'a>),
    ChatUpdate(ChatUpdate<'a>),
    Receipt(Receipt),
    Presence(Presence),
    Typing(TypingNotice),
    SyncDone(SyncDone),
    Truncated(Truncated),
    GoAway(GoAway),
}

/// The one answer to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestResult<'a> {
    /// The request's id.
    pub request_id: u64,
    /// `Ok` or the error.
    pub code: ErrorCode,
    /// A short human-readable reason (empty on success).
    pub reason: &'a str,
    /// With `RateLimited`/`Unavailable`: when to retry.
    pub retry_after_ms: u32,
    /// What a successful request returns.
    pub payload: Payload<'a>,
}

/// What a successful request returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Payload<'a> {
    None,
    Sent(Sent),
    ChatCreated(ChatCreated),
    AttachmentCreated(AttachmentCreated<'a>),
    AttachmentUrl(AttachmentUrl<'a>),
    HistoryPage(HistoryPage<'a>),
}

/// `SendMessage` is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Sent {
    pub server_msg_id: MessageId,
    pub seq: u64,
    pub ts_ms: u64,
}

/// `CreateChat` succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ChatCreated {
    pub chat: ChatId,
}

/// `CreateAttachment` succeeded: upload the blob to `upload_url` before `expires_at_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct AttachmentCreated<'a> {
    pub attachment: AttachmentId,
    pub upload_url: &'a str,
    pub expires_at_ms: u64,
}

/// `GetAttachmentUrl` succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct AttachmentUrl<'a> {
    pub url: &'a str,
    pub expires_at_ms: u64,
}

/// A page of history, oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct HistoryPage<'a> {
    pub chat: ChatId,
    pub messages: Messages<'a>,
    pub more: bool,
}

/// The messages of a `HistoryPage`: a slice when encoding, still in the frame when decoded.
#[derive(Clone, Copy)]
pub enum Messages<'a> {
    /// Messages to encode.
    Slice(&'a [NewMessage<'a>]),
    /// Messages in a decoded frame, each already validated.
    Wire(flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fb::NewMessage<'a>>>),
}

/// A message in a chat, as every recipient device gets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewMessage<'a> {
    pub chat: ChatId,
    pub seq: u64,
    pub server_msg_id: MessageId,
    pub sender: UserId,
    pub sender_device: DeviceId,
    pub client_msg_id: u64,
    pub ts_ms: u64,
    pub body: Body<'a>,
    pub attachments: &'a [AttachmentId],
}

/// A membership change at `seq` in the chat's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ChatUpdate<'a> {
    pub chat: ChatId,
    pub seq: u64,
    pub ts_ms: u64,
    pub kind: ChatUpdateKind,
    pub actor: UserId,
    pub name: &'a str,
    pub history: bool,
    pub members: &'a [Member],
}

/// A device received or read `chat` up to `up_to_seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Receipt {
    pub chat: ChatId,
    pub user: UserId,
    pub device: DeviceId,
    pub kind: ReceiptKind,
    pub up_to_seq: u64,
}

/// A subscribed user's presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Presence {
    pub user: UserId,
    pub online: bool,
    pub last_seen_ms: u64,
}

/// A member is typing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TypingNotice {
    pub chat: ChatId,
    pub user: UserId,
    pub device: DeviceId,
}

/// Sync after connect is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SyncDone {
    pub chats: u32,
    pub events: u64,
}

/// Retention removed `from_seq ..= to_seq` of `chat` before this device received them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Truncated {
    pub chat: ChatId,
    pub from_seq: u64,
    pub to_seq: u64,
}

/// Reconnect (anywhere) after `reconnect_after_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct GoAway {
    pub reconnect_after_ms: u32,
}

impl<'a> Messages<'a> {
    /// How many messages.
    pub fn len(&self) -> usize {
        match self {
            Messages::Slice(s) => s.len(),
            Messages::Wire(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The messages, oldest first.
    pub fn iter(&self) -> MessagesIter<'a> {
        MessagesIter {
            messages: *self,
            next: 0,
            end: self.len(),
        }
    }
}

/// Iterator over [`Messages`].
#[derive(Clone)]
pub struct MessagesIter<'a> {
    messages: Messages<'a>,
    next: usize,
    end: usize,
}

impl<'a> MessagesIter<'a> {
    fn at(&self, i: usize) -> NewMessage<'a> {
        match self.messages {
            Messages::Slice(s) => s[i],
            Messages::Wire(v) => crate::decode::history_message(v.get(i)),
        }
    }
}

impl<'a> Iterator for MessagesIter<'a> {
    type Item = NewMessage<'a>;

    fn next(&mut self) -> Option<NewMessage<'a>> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.at(self.next - 1)
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.end - self.next, Some(self.end - self.next))
    }
}

impl DoubleEndedIterator for MessagesIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        (self.next < self.end).then(|| {
            self.end -= 1;
            self.at(self.end)
        })
    }
}

impl ExactSizeIterator for MessagesIter<'_> {}

impl<'a> IntoIterator for &Messages<'a> {
    type Item = NewMessage<'a>;
    type IntoIter = MessagesIter<'a>;

    fn into_iter(self) -> MessagesIter<'a> {
        self.iter()
    }
}

impl PartialEq for Messages<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Messages<'_> {}

impl core::fmt::Debug for Messages<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
