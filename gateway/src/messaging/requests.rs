//! One decoded client request: the per-device send rate limit, the mapping to a router
//! [`Op`] (through the user's rate limits, `super::limits`), and the requests answered here
//! without an owner (`FetchHistory`, presence).
//!
//! Owns DESIGN.md F12 at the gateway edge: every request gets exactly one `Result`, either
//! here (decode errors, rate limits, not-yet-built features, history pages) or from the chat's
//! owner. Invariant: a request that reaches an owner is valid and within its `Limits`.

use std::rc::Rc;

use router::types::{Answer, Op, Origin};
use store::model::{BodyKind, Entry, ReceiptKind};
use wire::{ChatId, ErrorCode, Payload, Request, RequestResult, ServerFrame};

use super::limits::{LimitKind, Rate};
use super::{Hub, Then, frames, media};
use crate::core::{Conn, Core};

/// Answers one binary message (a `ClientFrame`) from `conn`.
pub fn handle_request(core: &Core, conn: &Conn, payload: &[u8]) {
    if conn.closing.get().is_some() {
        // Requests behind a close (e.g. a slow consumer's backlog) are not answered.
        return;
    }
    let frame = match wire::decode_client(payload, &core.config.limits) {
        Ok(frame) => frame,
        // A frame too broken to carry a readable id is answered with id 0 (docs/PROTOCOL.md).
        Err(e) => {
            let answer = Answer::error(e.code, e.reason);
            return reply(core, conn, e.request_id.unwrap_or(0), &answer);
        }
    };
    let Some(hub) = core.hub.get() else {
        let answer = Answer::error(ErrorCode::Unavailable, "messaging is starting");
        return reply(core, conn, frame.request_id, &answer);
    };
    let origin = Origin {
        user: conn.identity.user,
        device: conn.identity.device,
        request_id: frame.request_id,
        reply_to: conn.id.get(),
    };
    let (kind, op) = match frame.request {
        Request::SendMessage(send) => match send_op(core, conn, &send) {
            Ok(op) if send.attachments.is_empty() => (Some(LimitKind::Send), op),
            Ok(op) => {
                let then = Then::SendWithAttachments(op);
                return hub.submit_limited(core, origin, LimitKind::Send, then);
            }
            Err(answer) => return reply(core, conn, frame.request_id, &answer),
        },
        Request::CreateChat(create) => {
            let op = Op::CreateChat {
                chat: ChatId::group(rand::random()),
                name: create.name.to_owned(),
                members: create.members.to_vec(),
                history: create.history,
            };
            (Some(LimitKind::Create), op)
        }
        Request::ModifyParticipants(m) => {
            let op = Op::Modify {
                chat: m.chat,
                add: m.add.to_vec(),
                remove: m.remove.to_vec(),
                promote: m.promote.to_vec(),
            };
            (Some(LimitKind::Create), op)
        }
        Request::Delivered(ack) => {
            let op = Op::Cursor {
                chat: ack.chat,
                kind: ReceiptKind::Delivered,
                up_to_seq: ack.up_to_seq,
            };
            (None, op)
        }
        Request::Read(ack) => {
            let op = Op::Cursor {
                chat: ack.chat,
                kind: ReceiptKind::Read,
                up_to_seq: ack.up_to_seq,
            };
            (None, op)
        }
        // Throttled by the chat's owner, per user per chat.
        Request::Typing(t) => (None, Op::Typing { chat: t.chat }),
        Request::FetchHistory(f) => return spawn_history(hub, conn, f, frame.request_id),
        Request::SetPresence(p) => {
            let change = super::presence::DeviceChange::Shown(p.online);
            hub.presence_device(conn.identity.user, conn.identity.device, change);
            return reply(core, conn, frame.request_id, &Answer::Ok);
        }
        Request::SubscribePresence(p) => {
            hub.subscribe_presence(core, conn, p.users);
            return reply(core, conn, frame.request_id, &Answer::Ok);
        }
        Request::CreateAttachment(a) => {
            let declared = media::Declared {
                size: a.size,
                sha256: a.sha256,
                mime: a.mime.to_owned(),
            };
            let then = Then::CreateAttachment(declared);
            return hub.submit_limited(core, origin, LimitKind::Upload, then);
        }
        Request::GetAttachmentUrl(g) => return spawn_attachment_url(hub, conn, origin, g),
    };
    match kind {
        Some(kind) => hub.submit_limited(core, origin, kind, Then::Submit(op)),
        None => hub.submit(origin, op),
    }
}

/// A `SendMessage` past the device's send bucket, as an `Op`; or the answer that refuses it.
fn send_op(core: &Core, conn: &Conn, send: &wire::SendMessage<'_>) -> Result<Op, Answer> {
    let limits = &core.config.limits;
    let mut bucket = conn.send_bucket.get();
    let taken = bucket.take(
        core.now_ms(),
        Rate::per_s(limits.send_burst, limits.send_per_s),
    );
    conn.send_bucket.set(bucket);
    if let Err(retry_after_ms) = taken {
        return Err(Answer::Error {
            code: ErrorCode::RateLimited,
            reason: "over the device's send limit (send_burst / send_per_s)",
            retry_after_ms,
        });
    }
    let (kind, body) = match send.body {
        wire::Body::Text(text) => (BodyKind::Text, text.as_bytes().to_vec()),
        wire::Body::Opaque(bytes) => (BodyKind::Opaque, bytes.to_vec()),
    };
    Ok(Op::Send {
        chat: send.chat,
        client_msg_id: send.client_msg_id,
        kind,
        body,
        attachments: send.attachments.to_vec(),
    })
}

/// Answers `FetchHistory` from a task (store reads).
fn spawn_history(hub: &Rc<Hub>, conn: &Conn, f: wire::FetchHistory, request_id: u64) {
    let (Some(core), Some(conn)) = (hub.core(), hub.conn(conn)) else {
        return;
    };
    let hub = hub.clone();
    glommio::spawn_local(async move {
        if let Err(answer) = history(&hub, &core, &conn, f, request_id).await {
            reply(&core, &conn, request_id, &answer);
        }
    })
    .detach();
}

/// Answers `GetAttachmentUrl` from a task (store reads).
fn spawn_attachment_url(hub: &Rc<Hub>, conn: &Conn, origin: Origin, g: wire::GetAttachmentUrl) {
    let (Some(core), Some(conn)) = (hub.core(), hub.conn(conn)) else {
        return;
    };
    let hub = hub.clone();
    glommio::spawn_local(async move {
        let answer =
            media::download_url(hub.store(), hub.blobs(), &origin, g.chat, g.attachment).await;
        reply(&core, &conn, origin.request_id, &answer);
    })
    .detach();
}

/// Sends `answer` as the `Result` of `request_id`.
fn reply(core: &Core, conn: &Conn, request_id: u64, answer: &Answer) {
    if let Some(frame) = frames::result(request_id, answer, |f| core.encode(f)) {
        core.send(conn, frame);
    }
}

/// Answers `FetchHistory` with a page (oldest first) that fits in one frame.
async fn history(
    hub: &Hub,
    core: &Core,
    conn: &Conn,
    f: wire::FetchHistory,
    request_id: u64,
) -> Result<(), Answer> {
    let origin = Origin {
        user: conn.identity.user,
        device: conn.identity.device,
        request_id,
        reply_to: conn.id.get(),
    };
    let unavailable = |error| router::owner::store_failure(&error, &origin);
    let store = hub.store();
    let state = store
        .chat(f.chat)
        .await
        .map_err(unavailable)?
        .ok_or(Answer::error(ErrorCode::NotFound, "no such chat"))?;
    if !state.members.iter().any(|m| m.user == conn.identity.user) {
        return Err(Answer::error(
            ErrorCode::NotMember,
            "not a member of the chat",
        ));
    }
    if !state.history {
        return Err(Answer::error(
            ErrorCode::HistoryDisabled,
            "the chat keeps no server history",
        ));
    }
    let limit = usize::try_from(f.limit).unwrap_or(usize::MAX);
    let page = store
        .history(f.chat, f.before_seq, limit)
        .await
        .map_err(unavailable)?;
    // Keep the newest messages that fit in one frame (a generous estimate per message).
    let budget = core.config.limits.frame_bytes_max.saturating_sub(1024);
    let mut used = 0;
    let mut kept = 0;
    for (_, entry) in &page.entries {
        if let Entry::Message(m) = entry {
            let cost = m.body.len() + 16 * m.attachments.len() + 160;
            if used + cost > budget {
                break;
            }
            used += cost;
            kept += 1;
        }
    }
    let more = page.more || kept < page.entries.len();
    let mut messages: Vec<wire::NewMessage<'_>> = page.entries[..kept]
        .iter()
        .filter_map(|(seq, entry)| match entry {
            Entry::Message(m) => Some(frames::new_message(f.chat, *seq, m)),
            Entry::Update(_) => None,
        })
        .collect();
    messages.reverse();
    let result = ServerFrame::Result(RequestResult {
        request_id,
        code: ErrorCode::Ok,
        reason: "",
        retry_after_ms: 0,
        payload: Payload::HistoryPage(wire::HistoryPage {
            chat: f.chat,
            messages: wire::Messages::Slice(&messages),
            more,
        }),
    });
    match core.encode(&result) {
        Some(frame) => {
            core.send(conn, frame);
            Ok(())
        }
        None => Err(Answer::error(ErrorCode::Internal, "history page too large")),
    }
}
