//! Reading server frames (for clients: tests, `loadgen`, SDKs).
//!
//! Owns the checks a client applies to what the server sends: the same limits, valid ids, known
//! enums; history pages are validated whole so iterating them later cannot fail.

use super::{body, check_body, ids, required, seq_at_least_one, too_many_members};
use crate::enums::{ChatUpdateKind, ErrorCode, ReceiptKind};
use crate::error::DecodeError;
use crate::fb;
use crate::frames::{
    AttachmentCreated, AttachmentUrl, ChatCreated, ChatUpdate, GoAway, HistoryPage, Member,
    Messages, NewMessage, Payload, Presence, Receipt, RequestResult, Sent, ServerFrame, SyncDone,
    Truncated, TypingNotice,
};
use crate::ids::Id;
use crate::limits::Limits;

/// A verified `ServerFrame` → its typed value.
pub(super) fn frame<'a>(
    frame: fb::ServerFrame<'a>,
    limits: &Limits,
) -> Result<ServerFrame<'a>, DecodeError> {
    use fb::ServerBody as B;
    let missing = || DecodeError::malformed("missing frame body");
    Ok(match frame.body_type() {
        B::NONE => return Err(missing()),
        B::Result => {
            ServerFrame::Result(result(frame.body_as_result().ok_or_else(missing)?, limits)?)
        }
        B::NewMessage => {
            let m = frame.body_as_new_message().ok_or_else(missing)?;
            ServerFrame::NewMessage(new_message(m, limits)?)
        }
        B::ChatUpdate => {
            let u = frame.body_as_chat_update().ok_or_else(missing)?;
            ServerFrame::ChatUpdate(chat_update(u, limits)?)
        }
        B::Receipt => ServerFrame::Receipt(receipt(frame.body_as_receipt().ok_or_else(missing)?)?),
        B::Presence => {
            let p = frame.body_as_presence().ok_or_else(missing)?;
            ServerFrame::Presence(Presence {
                user: required(p.user())?,
                online: p.online(),
                last_seen_ms: p.last_seen_ms(),
            })
        }
        B::Typing => {
            let t = frame.body_as_typing().ok_or_else(missing)?;
            ServerFrame::Typing(TypingNotice {
                chat: required(t.chat())?,
                user: required(t.user())?,
                device: required(t.device())?,
            })
        }
        B::SyncDone => {
            let s = frame.body_as_sync_done().ok_or_else(missing)?;
            ServerFrame::SyncDone(SyncDone {
                chats: s.chats(),
                events: s.events(),
            })
        }
        B::Truncated => {
            let t = frame.body_as_truncated().ok_or_else(missing)?;
            let (from_seq, to_seq) = (t.from_seq(), t.to_seq());
            if from_seq == 0 || from_seq > to_seq {
                return Err(DecodeError::invalid("truncated range is empty"));
            }
            ServerFrame::Truncated(Truncated {
                chat: required(t.chat())?,
                from_seq,
                to_seq,
            })
        }
        B::GoAway => {
            let g = frame.body_as_go_away().ok_or_else(missing)?;
            ServerFrame::GoAway(GoAway {
                reconnect_after_ms: g.reconnect_after_ms(),
            })
        }
        _ => {
            return Err(DecodeError::new(
                ErrorCode::Unsupported,
                "unknown frame type",
            ));
        }
    })
}

/// Reads one history message again from a frame `decode_server` already accepted.
pub(crate) fn history_message(m: fb::NewMessage<'_>) -> NewMessage<'_> {
    read_new_message(m).expect("history messages were validated when the frame was decoded")
}

fn result<'a>(r: fb::RequestResult<'a>, limits: &Limits) -> Result<RequestResult<'a>, DecodeError> {
    use fb::ResultPayload as P;
    let missing = || DecodeError::malformed("missing result payload");
    let payload = match r.payload_type() {
        P::NONE => Payload::None,
        P::Sent => {
            let s = r.payload_as_sent().ok_or_else(missing)?;
            Payload::Sent(Sent {
                server_msg_id: required(s.server_msg_id())?,
                seq: seq_at_least_one(s.seq())?,
                ts_ms: s.ts_ms(),
            })
        }
        P::ChatCreated => {
            let c = r.payload_as_chat_created().ok_or_else(missing)?;
            Payload::ChatCreated(ChatCreated {
                chat: required(c.chat())?,
            })
        }
        P::AttachmentCreated => {
            let a = r.payload_as_attachment_created().ok_or_else(missing)?;
            Payload::AttachmentCreated(AttachmentCreated {
                attachment: required(a.attachment())?,
                upload_url: a.upload_url().unwrap_or_default(),
                expires_at_ms: a.expires_at_ms(),
            })
        }
        P::AttachmentUrl => {
            let a = r.payload_as_attachment_url().ok_or_else(missing)?;
            Payload::AttachmentUrl(AttachmentUrl {
                url: a.url().unwrap_or_default(),
                expires_at_ms: a.expires_at_ms(),
            })
        }
        P::HistoryPage => Payload::HistoryPage(history_page(
            r.payload_as_history_page().ok_or_else(missing)?,
            limits,
        )?),
        _ => {
            return Err(DecodeError::new(
                ErrorCode::Unsupported,
                "unknown result payload",
            ));
        }
    };
    Ok(RequestResult {
        request_id: r.request_id(),
        // A newer server's unknown code reads as Internal, as docs/PROTOCOL.md tells clients to.
        code: ErrorCode::from_raw(r.code().0).unwrap_or(ErrorCode::Internal),
        reason: r.reason().unwrap_or_default(),
        retry_after_ms: r.retry_after_ms(),
        payload,
    })
}

fn history_page<'a>(
    h: fb::HistoryPage<'a>,
    limits: &Limits,
) -> Result<HistoryPage<'a>, DecodeError> {
    let messages = h.messages().unwrap_or_default();
    if messages.len() > limits.history_page_messages_max {
        return Err(DecodeError::invalid("page over history_page_messages_max"));
    }
    for m in messages {
        new_message(m, limits)?;
    }
    Ok(HistoryPage {
        chat: required(h.chat())?,
        messages: Messages::Wire(messages),
        more: h.more(),
    })
}

fn read_new_message(m: fb::NewMessage<'_>) -> Result<NewMessage<'_>, DecodeError> {
    // Limits are checked by `new_message`; here only what makes the value well-formed.
    let no_limit = DecodeError::malformed("unreachable: no attachment limit");
    Ok(NewMessage {
        chat: required(m.chat())?,
        seq: seq_at_least_one(m.seq())?,
        server_msg_id: required(m.server_msg_id())?,
        sender: required(m.sender())?,
        sender_device: required(m.sender_device())?,
        client_msg_id: m.client_msg_id(),
        ts_ms: m.ts_ms(),
        body: body(m.kind(), m.body())?,
        attachments: ids(m.attachments(), usize::MAX, no_limit)?,
    })
}

fn new_message<'a>(m: fb::NewMessage<'a>, limits: &Limits) -> Result<NewMessage<'a>, DecodeError> {
    let message = read_new_message(m)?;
    check_body(&message.body, limits)?;
    if message.attachments.len() > limits.attachments_per_message_max {
        return Err(DecodeError::new(
            ErrorCode::TooManyAttachments,
            "over attachments_per_message_max",
        ));
    }
    Ok(message)
}

fn chat_update<'a>(u: fb::ChatUpdate<'a>, limits: &Limits) -> Result<ChatUpdate<'a>, DecodeError> {
    let bytes = u.members().map_or(&[][..], |v| v.bytes());
    let members: &[Member] = bytemuck::try_cast_slice(bytes)
        .map_err(|_| DecodeError::malformed("member vector has a partial element"))?;
    if members.len() > limits.group_members_max {
        return Err(too_many_members());
    }
    if !members
        .iter()
        .all(|m| m.user().is_valid() && m.role_is_known())
    {
        return Err(DecodeError::invalid("invalid member"));
    }
    Ok(ChatUpdate {
        chat: required(u.chat())?,
        seq: seq_at_least_one(u.seq())?,
        ts_ms: u.ts_ms(),
        kind: ChatUpdateKind::from_raw(u.kind().0).ok_or(DecodeError::new(
            ErrorCode::Unsupported,
            "unknown chat update kind",
        ))?,
        actor: required(u.actor())?,
        name: u.name().unwrap_or_default(),
        history: u.history(),
        members,
    })
}

fn receipt(r: fb::Receipt<'_>) -> Result<Receipt, DecodeError> {
    Ok(Receipt {
        chat: required(r.chat())?,
        user: required(r.user())?,
        device: required(r.device())?,
        kind: ReceiptKind::from_raw(r.kind().0).ok_or(DecodeError::new(
            ErrorCode::Unsupported,
            "unknown receipt kind",
        ))?,
        up_to_seq: seq_at_least_one(r.up_to_seq())?,
    })
}
