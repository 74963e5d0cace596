//! Encoding what the router and the store produce into server frames.
//!
//! Owns the mapping from store entries, router answers and session events to `wire` frames.
//! Invariant: a text body that is not UTF-8 (impossible for what the gateway accepted, but the
//! store holds bytes) is sent as opaque, never dropped.

use router::session::Event;
use router::types::{Answer, ReceiptNotice, TypingNotice};
use store::model::{BodyKind, Change, Entry, Message, Role, Seq, Update};
use wire::{ChatId, ChatUpdateKind, ErrorCode, Payload, RequestResult, ServerFrame};

/// Encodes with `encode` one frame built from `entry`.
pub(crate) fn entry_frame<R>(
    chat: ChatId,
    seq: Seq,
    entry: &Entry,
    encode: impl FnOnce(&ServerFrame<'_>) -> R,
) -> R {
    match entry {
        Entry::Message(m) => encode(&ServerFrame::NewMessage(new_message(chat, seq, m))),
        Entry::Update(u) => {
            let members = update_members(u);
            let (name, history) = match &u.change {
                Change::Created { name, history, .. } => (name.as_str(), *history),
                _ => ("", false),
            };
            encode(&ServerFrame::ChatUpdate(wire::ChatUpdate {
                chat,
                seq,
                ts_ms: u.ts_ms,
                kind: update_kind(&u.change),
                actor: u.actor,
                name,
                history,
                members: &members,
            }))
        }
    }
}

/// A stored message as a `NewMessage`.
pub(crate) fn new_message(chat: ChatId, seq: Seq, m: &Message) -> wire::NewMessage<'_> {
    let body = match (m.kind, std::str::from_utf8(&m.body)) {
        (BodyKind::Text, Ok(text)) => wire::Body::Text(text),
        _ => wire::Body::Opaque(&m.body),
    };
    wire::NewMessage {
        chat,
        seq,
        server_msg_id: m.server_msg_id,
        sender: m.sender,
        sender_device: m.sender_device,
        client_msg_id: m.client_msg_id,
        ts_ms: m.ts_ms,
        body,
        attachments: &m.attachments,
    }
}

fn update_kind(change: &Change) -> ChatUpdateKind {
    match change {
        Change::Created { .. } => ChatUpdateKind::Created,
        Change::Added(_) => ChatUpdateKind::MembersAdded,
        Change::Removed(_) => ChatUpdateKind::MembersRemoved,
        Change::Promoted(_) => ChatUpdateKind::MembersPromoted,
        Change::Left => ChatUpdateKind::MemberLeft,
    }
}

/// The members an update is about, with their role after it.
fn update_members(u: &Update) -> Vec<wire::Member> {
    match &u.change {
        Change::Created { members, .. } => members
            .iter()
            .map(|(user, role)| wire::Member::new(*user, *role))
            .collect(),
        Change::Added(users) | Change::Removed(users) => users
            .iter()
            .map(|user| wire::Member::new(*user, Role::Member))
            .collect(),
        Change::Promoted(users) => users
            .iter()
            .map(|user| wire::Member::new(*user, Role::Admin))
            .collect(),
        Change::Left => vec![wire::Member::new(u.actor, Role::Member)],
    }
}

/// The `Result` for `answer`.
pub(crate) fn result<R>(
    request_id: u64,
    answer: &Answer,
    encode: impl FnOnce(&ServerFrame<'_>) -> R,
) -> R {
    let (code, reason, retry_after_ms, payload) = match answer {
        Answer::Ok => (ErrorCode::Ok, "", 0, Payload::None),
        Answer::Sent(r) => (
            ErrorCode::Ok,
            "",
            0,
            Payload::Sent(wire::Sent {
                server_msg_id: r.server_msg_id,
                seq: r.seq,
                ts_ms: r.ts_ms,
            }),
        ),
        Answer::ChatCreated(chat) => (
            ErrorCode::Ok,
            "",
            0,
            Payload::ChatCreated(wire::ChatCreated { chat: *chat }),
        ),
        Answer::AttachmentCreated {
            attachment,
            upload_url,
            expires_at_ms,
        } => (
            ErrorCode::Ok,
            "",
            0,
            Payload::AttachmentCreated(wire::AttachmentCreated {
                attachment: *attachment,
                upload_url,
                expires_at_ms: *expires_at_ms,
            }),
        ),
        Answer::AttachmentUrl { url, expires_at_ms } => (
            ErrorCode::Ok,
            "",
            0,
            Payload::AttachmentUrl(wire::AttachmentUrl {
                url,
                expires_at_ms: *expires_at_ms,
            }),
        ),
        Answer::Error {
            code,
            reason,
            retry_after_ms,
        } => (*code, *reason, *retry_after_ms, Payload::None),
    };
    encode(&ServerFrame::Result(RequestResult {
        request_id,
        code,
        reason,
        retry_after_ms,
        payload,
    }))
}

/// A session event's frame.
pub(crate) fn event<R>(event: &Event, encode: impl FnOnce(&ServerFrame<'_>) -> R) -> R {
    match event {
        Event::Entry { chat, seq, entry } => entry_frame(*chat, *seq, entry, encode),
        Event::Truncated {
            chat,
            from_seq,
            to_seq,
        } => encode(&ServerFrame::Truncated(wire::Truncated {
            chat: *chat,
            from_seq: *from_seq,
            to_seq: *to_seq,
        })),
        Event::SyncDone { chats, events } => encode(&ServerFrame::SyncDone(wire::SyncDone {
            chats: *chats,
            events: *events,
        })),
    }
}

/// A receipt's frame.
pub(crate) fn receipt(r: &ReceiptNotice) -> ServerFrame<'static> {
    ServerFrame::Receipt(wire::Receipt {
        chat: r.chat,
        user: r.user,
        device: r.device,
        kind: r.kind,
        up_to_seq: r.up_to_seq,
    })
}

/// A typing notice's frame.
pub(crate) fn typing(t: &TypingNotice) -> ServerFrame<'static> {
    ServerFrame::Typing(wire::TypingNotice {
        chat: t.chat,
        user: t.user,
        device: t.device,
    })
}
