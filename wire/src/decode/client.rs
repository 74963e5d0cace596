//! Reading client requests: one function per request that needs more than a line.
//!
//! Owns the per-request checks of docs/PROTOCOL.md (limits, ids, non-empty changes); shares the
//! field readers of the parent module.

use super::{body, check_body, ids, required, seq_at_least_one, too_many_members};
use crate::enums::ErrorCode;
use crate::error::DecodeError;
use crate::fb;
use crate::frames::{
    Ack, CreateAttachment, CreateChat, FetchHistory, GetAttachmentUrl, ModifyParticipants, Request,
    SendMessage, SetPresence, SubscribePresence, Typing,
};
use crate::limits::Limits;

pub(super) fn request<'a>(
    frame: fb::ClientFrame<'a>,
    limits: &Limits,
) -> Result<Request<'a>, DecodeError> {
    use fb::ClientBody as B;
    let missing = || DecodeError::malformed("missing request body");
    // The union member's table; `None` only if the verifier let a wrong type through.
    macro_rules! table {
        ($accessor:ident) => {
            frame.$accessor().ok_or_else(missing)?
        };
    }
    Ok(match frame.body_type() {
        B::CreateChat => create_chat(table!(body_as_create_chat), limits)?,
        B::ModifyParticipants => modify_participants(table!(body_as_modify_participants), limits)?,
        B::SendMessage => Request::SendMessage(send_message(table!(body_as_send_message), limits)?),
        B::CreateAttachment => Request::CreateAttachment(create_attachment(
            table!(body_as_create_attachment),
            limits,
        )?),
        B::GetAttachmentUrl => {
            let g = table!(body_as_get_attachment_url);
            let (chat, attachment) = (required(g.chat())?, required(g.attachment())?);
            Request::GetAttachmentUrl(GetAttachmentUrl { chat, attachment })
        }
        B::Delivered => {
            let d = table!(body_as_delivered);
            Request::Delivered(ack(d.chat(), d.up_to_seq())?)
        }
        B::Read => {
            let r = table!(body_as_read);
            Request::Read(ack(r.chat(), r.up_to_seq())?)
        }
        B::Typing => Request::Typing(Typing {
            chat: required(table!(body_as_typing).chat())?,
        }),
        B::SetPresence => Request::SetPresence(SetPresence {
            online: table!(body_as_set_presence).online(),
        }),
        B::SubscribePresence => {
            let users = table!(body_as_subscribe_presence).users();
            let too_many = DecodeError::new(
                ErrorCode::TooManyMembers,
                "user list over presence_subscriptions_max",
            );
            let users = ids(users, limits.presence_subscriptions_max, too_many)?;
            Request::SubscribePresence(SubscribePresence { users })
        }
        B::FetchHistory => fetch_history(table!(body_as_fetch_history), limits)?,
        B::NONE => return Err(missing()),
        _ => {
            return Err(DecodeError::new(
                ErrorCode::Unsupported,
                "unknown request type",
            ));
        }
    })
}

fn create_chat<'a>(c: fb::CreateChat<'a>, limits: &Limits) -> Result<Request<'a>, DecodeError> {
    let name = c.name().unwrap_or_default();
    if name.len() > limits.chat_name_bytes_max {
        return Err(DecodeError::new(
            ErrorCode::NameTooLong,
            "name over chat_name_bytes_max",
        ));
    }
    // The creator is a member too, so the list holds at most one fewer than a full group.
    let others_max = limits.group_members_max.saturating_sub(1);
    let members = ids(c.members(), others_max, too_many_members())?;
    Ok(Request::CreateChat(CreateChat {
        name,
        members,
        history: c.history(),
    }))
}

fn modify_participants<'a>(
    m: fb::ModifyParticipants<'a>,
    limits: &Limits,
) -> Result<Request<'a>, DecodeError> {
    let max = limits.group_members_max;
    let modify = ModifyParticipants {
        chat: required(m.chat())?,
        add: ids(m.add(), max, too_many_members())?,
        remove: ids(m.remove(), max, too_many_members())?,
        promote: ids(m.promote(), max, too_many_members())?,
    };
    if modify.add.is_empty() && modify.remove.is_empty() && modify.promote.is_empty() {
        return Err(DecodeError::invalid("nothing to change"));
    }
    Ok(Request::ModifyParticipants(modify))
}

fn ack(chat: Option<&fb::ChatId>, up_to_seq: u64) -> Result<Ack, DecodeError> {
    Ok(Ack {
        chat: required(chat)?,
        up_to_seq: seq_at_least_one(up_to_seq)?,
    })
}

fn fetch_history<'a>(f: fb::FetchHistory<'a>, limits: &Limits) -> Result<Request<'a>, DecodeError> {
    let (chat, before_seq, limit) = (required(f.chat())?, f.before_seq(), f.limit());
    if limit == 0 || limit as usize > limits.history_page_messages_max {
        return Err(DecodeError::invalid(
            "limit must be 1..=history_page_messages_max",
        ));
    }
    Ok(Request::FetchHistory(FetchHistory {
        chat,
        before_seq,
        limit,
    }))
}

fn send_message<'a>(
    m: fb::SendMessage<'a>,
    limits: &Limits,
) -> Result<SendMessage<'a>, DecodeError> {
    let chat = required(m.chat())?;
    let client_msg_id = m.client_msg_id();
    if client_msg_id == 0 {
        return Err(DecodeError::invalid("client_msg_id must be nonzero"));
    }
    let body = body(m.kind(), m.body())?;
    check_body(&body, limits)?;
    let too_many = DecodeError::new(
        ErrorCode::TooManyAttachments,
        "over attachments_per_message_max",
    );
    let attachments = ids(
        m.attachments(),
        limits.attachments_per_message_max,
        too_many,
    )?;
    if body.as_bytes().is_empty() && attachments.is_empty() {
        return Err(DecodeError::invalid("empty message"));
    }
    Ok(SendMessage {
        chat,
        client_msg_id,
        body,
        attachments,
    })
}

fn create_attachment<'a>(
    c: fb::CreateAttachment<'a>,
    limits: &Limits,
) -> Result<CreateAttachment<'a>, DecodeError> {
    let size = c.size();
    if size == 0 {
        return Err(DecodeError::invalid("size must be at least 1"));
    }
    if size > limits.attachment_bytes_max {
        return Err(DecodeError::new(
            ErrorCode::AttachmentTooLarge,
            "size over attachment_bytes_max",
        ));
    }
    let mime = c.mime().unwrap_or_default();
    if mime.is_empty() {
        return Err(DecodeError::invalid("mime is required"));
    }
    if mime.len() > limits.mime_bytes_max {
        return Err(DecodeError::new(
            ErrorCode::NameTooLong,
            "mime over mime_bytes_max",
        ));
    }
    Ok(CreateAttachment {
        size,
        sha256: required(c.sha256())?,
        mime,
    })
}
