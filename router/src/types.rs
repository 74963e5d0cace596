//! What flows into and out of the router's state machines: requests with their origin, the
//! answers they get, and the deliveries they cause.
//!
//! Owns the vocabulary shared by the owner, the planner, the gateway driver and the
//! simulation. Plain data, no behaviour; `Rc`/`Arc` sharing is the driver's business.

use std::sync::Arc;

use store::model::{Entry, ReceiptKind, SentRecord, Seq, WriteBatch};
use wire::enums::ErrorCode;
use wire::ids::{AttachmentId, ChatId, DeviceId, UserId};

pub use store::model::BodyKind;

/// Who asked, and where the answer goes (an opaque token the driver maps to a connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The authenticated user.
    pub user: UserId,
    /// The authenticated device.
    pub device: DeviceId,
    /// The request's id, echoed in its `Result`.
    pub request_id: u64,
    /// The driver's handle for the connection (e.g. core and connection index).
    pub reply_to: u64,
}

/// A request the owner of `op.chat()` handles. The gateway has decoded and limit-checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a group (`chat` is a fresh group id chosen by the driver).
    CreateChat {
        /// The new group's id.
        chat: ChatId,
        /// Its name.
        name: String,
        /// Members besides the creator.
        members: Vec<UserId>,
        /// Whether it keeps server history.
        history: bool,
    },
    /// Add, remove, promote (removing oneself = leaving).
    Modify {
        /// The group.
        chat: ChatId,
        /// Users to add.
        add: Vec<UserId>,
        /// Users to remove.
        remove: Vec<UserId>,
        /// Members to promote.
        promote: Vec<UserId>,
    },
    /// Send a message.
    Send {
        /// The chat.
        chat: ChatId,
        /// The device's idempotency key.
        client_msg_id: u64,
        /// Text or opaque.
        kind: BodyKind,
        /// The body.
        body: Vec<u8>,
        /// Attachments (already checked as verified uploads of this device).
        attachments: Vec<AttachmentId>,
    },
    /// `Delivered` or `Read` up to a seq.
    Cursor {
        /// The chat.
        chat: ChatId,
        /// Which cursor.
        kind: ReceiptKind,
        /// Everything up to and including.
        up_to_seq: Seq,
    },
    /// The user is typing.
    Typing {
        /// The chat.
        chat: ChatId,
    },
}

impl Op {
    /// The chat whose owner handles this.
    pub fn chat(&self) -> ChatId {
        match self {
            Self::CreateChat { chat, .. }
            | Self::Modify { chat, .. }
            | Self::Send { chat, .. }
            | Self::Cursor { chat, .. }
            | Self::Typing { chat } => *chat,
        }
    }
}

/// The one `Result` a request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Success with no payload.
    Ok,
    /// A message is durable (or was already, for a retry).
    Sent(SentRecord),
    /// A group was created.
    ChatCreated(ChatId),
    /// An attachment was reserved: where to upload it, until when.
    AttachmentCreated {
        /// The new attachment.
        attachment: AttachmentId,
        /// The pre-signed upload URL.
        upload_url: String,
        /// When the URL expires (ms since the epoch).
        expires_at_ms: u64,
    },
    /// A pre-signed download URL.
    AttachmentUrl {
        /// The URL.
        url: String,
        /// When it expires (ms since the epoch).
        expires_at_ms: u64,
    },
    /// Refused.
    Error {
        /// The code.
        code: ErrorCode,
        /// A short reason.
        reason: &'static str,
        /// For `RateLimited`.
        retry_after_ms: u32,
    },
}

impl Answer {
    /// An error answer.
    pub fn error(code: ErrorCode, reason: &'static str) -> Self {
        Self::Error {
            code,
            reason,
            retry_after_ms: 0,
        }
    }
}

/// Who receives an event: the devices of these users that are connected, except one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// The users, sorted.
    pub users: Arc<[UserId]>,
    /// A device that must not get it (the sender's own sending device).
    pub except: Option<(UserId, DeviceId)>,
}

/// A durable log entry to deliver live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The chat.
    pub chat: ChatId,
    /// Its seq.
    pub seq: Seq,
    /// The entry (a message or a membership update).
    pub entry: Arc<Entry>,
    /// Who gets it.
    pub audience: Audience,
}

/// A receipt for the devices of a message's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptNotice {
    /// The chat.
    pub chat: ChatId,
    /// The user whose device acknowledged.
    pub user: UserId,
    /// That device.
    pub device: DeviceId,
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// Up to and including.
    pub up_to_seq: Seq,
    /// The sender whose devices get it.
    pub to: UserId,
}

/// A typing notice for online members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypingNotice {
    /// The chat.
    pub chat: ChatId,
    /// Who types.
    pub user: UserId,
    /// On which device.
    pub device: DeviceId,
    /// Who gets it.
    pub audience: Audience,
}

/// An idempotency key.
pub type SendKey = (UserId, DeviceId, u64);

/// Identifies one write the owner asked for.
pub type WriteId = u64;

/// What the owner asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Read the chat's state from the store and feed back `Input::Loaded`.
    Load(ChatId),
    /// Look up an idempotency key and feed back `Input::LookedUp`.
    Lookup(SendKey),
    /// Write durably and feed back `Input::Written`.
    Write(WriteId, WriteBatch),
    /// Answer a request.
    Answer(Origin, Answer),
    /// Deliver a durable entry live.
    Deliver(Delivery),
    /// Send a receipt to a sender's devices.
    Receipt(ReceiptNotice),
    /// Send a typing notice.
    Typing(TypingNotice),
}
