//! The server's frames as owned values: what [`super::ChatClient`] hands a test.
//!
//! Owns the conversion from `wire`'s borrowed frames (valid only while their buffer lives) to
//! plain owned data a test can keep, compare with `assert_eq!` and print. Adds no checks: the
//! decoder has already validated every frame.

use std::fmt;

use wire::{
    AttachmentId, BodyKind, ChatId, ChatUpdateKind, DeviceId, ErrorCode, Member, MessageId, Role,
    ServerFrame, UserId,
};

/// Everything the server can send, decoded and owned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // Each variant is the frame of the same name (docs/PROTOCOL.md §5).
pub enum Event {
    Result(Reply),
    NewMessage(Message),
    ChatUpdate(Update),
    Receipt(wire::Receipt),
    Presence(wire::Presence),
    Typing(wire::TypingNotice),
    SyncDone(wire::SyncDone),
    Truncated(wire::Truncated),
    GoAway(wire::GoAway),
    /// The connection ended: the close frame's code, or `None` (no code, EOF or a reset).
    Close(Option<u16>),
}

/// A `Result`, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // The fields of `RequestResult` (docs/PROTOCOL.md §5.1).
pub struct Reply {
    pub request_id: u64,
    pub code: ErrorCode,
    pub reason: String,
    pub retry_after_ms: u32,
    pub payload: Payload,
}

/// A `Result`'s payload, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // The attachment payloads' fields are those of docs/PROTOCOL.md §5.1.
pub enum Payload {
    /// No payload.
    None,
    /// Answers `SendMessage`.
    Sent(wire::Sent),
    /// Answers `CreateChat`: the new group.
    ChatCreated(ChatId),
    /// Answers `FetchHistory`.
    HistoryPage(Page),
    /// Answers `CreateAttachment`.
    AttachmentCreated {
        attachment: AttachmentId,
        upload_url: String,
        expires_at_ms: u64,
    },
    /// Answers `GetAttachmentUrl`.
    AttachmentUrl { url: String, expires_at_ms: u64 },
}

/// A `HistoryPage`, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Page {
    pub chat: ChatId,
    /// In the order the server sent them (PROTOCOL.md §5.2: oldest first).
    pub messages: Vec<Message>,
    pub more: bool,
}

/// A `NewMessage`, owned.
#[derive(Clone, PartialEq, Eq)]
#[allow(missing_docs)] // The fields of `NewMessage` (docs/PROTOCOL.md §5.3).
pub struct Message {
    pub chat: ChatId,
    pub seq: u64,
    pub server_msg_id: MessageId,
    pub sender: UserId,
    pub sender_device: DeviceId,
    pub client_msg_id: u64,
    pub ts_ms: u64,
    pub kind: BodyKind,
    pub body: Vec<u8>,
    pub attachments: Vec<AttachmentId>,
}

/// A `ChatUpdate`, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // The fields of `ChatUpdate` (docs/PROTOCOL.md §5.4).
pub struct Update {
    pub chat: ChatId,
    pub seq: u64,
    pub ts_ms: u64,
    pub kind: ChatUpdateKind,
    pub actor: UserId,
    pub name: String,
    pub history: bool,
    pub members: Vec<Member>,
}

impl Event {
    /// The chat and seq of a chat log entry (`NewMessage`, `ChatUpdate`), else `None`.
    pub fn entry(&self) -> Option<(ChatId, u64)> {
        match self {
            Self::NewMessage(m) => Some((m.chat, m.seq)),
            Self::ChatUpdate(u) => Some((u.chat, u.seq)),
            _ => None,
        }
    }

    pub(super) fn from_frame(frame: ServerFrame<'_>) -> Self {
        match frame {
            ServerFrame::Result(r) => Self::Result(Reply {
                request_id: r.request_id,
                code: r.code,
                reason: r.reason.to_owned(),
                retry_after_ms: r.retry_after_ms,
                payload: Payload::from_wire(r.payload),
            }),
            ServerFrame::NewMessage(m) => Self::NewMessage(Message::from_wire(&m)),
            ServerFrame::ChatUpdate(u) => Self::ChatUpdate(Update {
                chat: u.chat,
                seq: u.seq,
                ts_ms: u.ts_ms,
                kind: u.kind,
                actor: u.actor,
                name: u.name.to_owned(),
                history: u.history,
                members: u.members.to_vec(),
            }),
            ServerFrame::Receipt(r) => Self::Receipt(r),
            ServerFrame::Presence(p) => Self::Presence(p),
            ServerFrame::Typing(t) => Self::Typing(t),
            ServerFrame::SyncDone(s) => Self::SyncDone(s),
            ServerFrame::Truncated(t) => Self::Truncated(t),
            ServerFrame::GoAway(g) => Self::GoAway(g),
        }
    }
}

impl Payload {
    fn from_wire(payload: wire::Payload<'_>) -> Self {
        match payload {
            wire::Payload::None => Self::None,
            wire::Payload::Sent(s) => Self::Sent(s),
            wire::Payload::ChatCreated(c) => Self::ChatCreated(c.chat),
            wire::Payload::HistoryPage(p) => Self::HistoryPage(Page {
                chat: p.chat,
                messages: p.messages.iter().map(|m| Message::from_wire(&m)).collect(),
                more: p.more,
            }),
            wire::Payload::AttachmentCreated(a) => Self::AttachmentCreated {
                attachment: a.attachment,
                upload_url: a.upload_url.to_owned(),
                expires_at_ms: a.expires_at_ms,
            },
            wire::Payload::AttachmentUrl(u) => Self::AttachmentUrl {
                url: u.url.to_owned(),
                expires_at_ms: u.expires_at_ms,
            },
        }
    }
}

impl Reply {
    /// Asserts the code, naming `what` on failure.
    ///
    /// # Panics
    /// When the code differs.
    pub fn assert_code(&self, code: ErrorCode, what: &str) {
        assert_eq!(self.code, code, "{what}: {self:?}");
    }

    /// The `Sent` of a successful `SendMessage`.
    ///
    /// # Panics
    /// When this is not `Ok` with a `Sent`.
    pub fn sent(&self) -> wire::Sent {
        match (&self.code, &self.payload) {
            (ErrorCode::Ok, Payload::Sent(s)) => *s,
            _ => panic!("expected Ok with Sent, got {self:?}"),
        }
    }

    /// The new group of a successful `CreateChat`.
    ///
    /// # Panics
    /// When this is not `Ok` with `ChatCreated`.
    pub fn chat_created(&self) -> ChatId {
        match (&self.code, &self.payload) {
            (ErrorCode::Ok, Payload::ChatCreated(chat)) => *chat,
            _ => panic!("expected Ok with ChatCreated, got {self:?}"),
        }
    }

    /// The attachment and upload URL of a successful `CreateAttachment`.
    ///
    /// # Panics
    /// When this is not `Ok` with `AttachmentCreated`.
    pub fn attachment_created(&self) -> (AttachmentId, String) {
        match (&self.code, &self.payload) {
            (
                ErrorCode::Ok,
                Payload::AttachmentCreated {
                    attachment,
                    upload_url,
                    ..
                },
            ) => (*attachment, upload_url.clone()),
            _ => panic!("expected Ok with AttachmentCreated, got {self:?}"),
        }
    }

    /// The URL of a successful `GetAttachmentUrl`.
    ///
    /// # Panics
    /// When this is not `Ok` with `AttachmentUrl`.
    pub fn attachment_url(&self) -> String {
        match (&self.code, &self.payload) {
            (ErrorCode::Ok, Payload::AttachmentUrl { url, .. }) => url.clone(),
            _ => panic!("expected Ok with AttachmentUrl, got {self:?}"),
        }
    }

    /// The page of a successful `FetchHistory`.
    ///
    /// # Panics
    /// When this is not `Ok` with a `HistoryPage`.
    pub fn page(&self) -> &Page {
        match (&self.code, &self.payload) {
            (ErrorCode::Ok, Payload::HistoryPage(page)) => page,
            _ => panic!("expected Ok with HistoryPage, got {self:?}"),
        }
    }
}

impl Message {
    fn from_wire(m: &wire::NewMessage<'_>) -> Self {
        Self {
            chat: m.chat,
            seq: m.seq,
            server_msg_id: m.server_msg_id,
            sender: m.sender,
            sender_device: m.sender_device,
            client_msg_id: m.client_msg_id,
            ts_ms: m.ts_ms,
            kind: m.body.kind(),
            body: m.body.as_bytes().to_vec(),
            attachments: m.attachments.to_vec(),
        }
    }

    /// The body as text (lossy: for assertions on `Text` bodies).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A 4 KiB body as a byte list would bury the fields a failing test needs to see.
        const SHOWN_BYTES: usize = 48;
        let shown = &self.body[..self.body.len().min(SHOWN_BYTES)];
        f.debug_struct("Message")
            .field("chat", &self.chat)
            .field("seq", &self.seq)
            .field("server_msg_id", &self.server_msg_id)
            .field("sender", &self.sender.get())
            .field("sender_device", &self.sender_device.get())
            .field("client_msg_id", &self.client_msg_id)
            .field("ts_ms", &self.ts_ms)
            .field("kind", &self.kind)
            .field("body_len", &self.body.len())
            .field("body", &String::from_utf8_lossy(shown))
            .field("attachments", &self.attachments.len())
            .finish()
    }
}

impl Update {
    /// `(user, role)` of every member listed, sorted by user.
    pub fn member_roles(&self) -> Vec<(u64, Role)> {
        let mut out: Vec<(u64, Role)> = self
            .members
            .iter()
            .map(|m| (m.user().get(), m.role()))
            .collect();
        out.sort_unstable_by_key(|&(u, _)| u);
        out
    }

    /// The users listed, sorted.
    pub fn member_users(&self) -> Vec<u64> {
        self.member_roles().into_iter().map(|(u, _)| u).collect()
    }

    /// `(chat, seq, kind, actor, users listed sorted)`: what most assertions compare.
    pub fn summary(&self) -> (ChatId, u64, ChatUpdateKind, u64, Vec<u64>) {
        (
            self.chat,
            self.seq,
            self.kind,
            self.actor.get(),
            self.member_users(),
        )
    }
}
