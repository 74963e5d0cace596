//! What the gateway does with one decoded client request.
//!
//! Owns the rule that every request gets exactly one `Result` (DESIGN.md F12). This issue's
//! gateway is the connection tier only: a valid request is answered `Unsupported` until the
//! messaging layer (router, store) handles it; a refused one gets the decoder's code.

use crate::core::{Conn, Core};
use wire::{ErrorCode, Payload, Request, RequestResult, ServerFrame};

/// Answers one binary message (a `ClientFrame`) from `conn`.
pub fn handle(core: &Core, conn: &Conn, payload: &[u8]) {
    if conn.closing.get().is_some() {
        // Requests behind a close (e.g. a slow consumer's backlog) are not answered.
        return;
    }
    let (request_id, error_code, reason) = match wire::decode_client(payload, &core.config.limits) {
        Ok(frame) => (
            frame.request_id,
            ErrorCode::Unsupported,
            not_yet(&frame.request),
        ),
        // A frame too broken to carry a readable id is answered with id 0 (docs/PROTOCOL.md).
        Err(e) => (e.request_id.unwrap_or(0), e.code, e.reason),
    };
    let result = ServerFrame::Result(RequestResult {
        request_id,
        code: error_code,
        reason,
        retry_after_ms: 0,
        payload: Payload::None,
    });
    if let Some(frame) = core.encode(&result) {
        core.send(conn, frame);
    }
}

/// The reason given for a request this gateway does not handle yet.
fn not_yet(request: &Request<'_>) -> &'static str {
    match request {
        Request::CreateChat(_) => "CreateChat is not implemented yet",
        Request::ModifyParticipants(_) => "ModifyParticipants is not implemented yet",
        Request::SendMessage(_) => "SendMessage is not implemented yet",
        Request::CreateAttachment(_) => "CreateAttachment is not implemented yet",
        Request::GetAttachmentUrl(_) => "GetAttachmentUrl is not implemented yet",
        Request::Delivered(_) => "Delivered is not implemented yet",
        Request::Read(_) => "Read is not implemented yet",
        Request::Typing(_) => "Typing is not implemented yet",
        Request::SetPresence(_) => "SetPresence is not implemented yet",
        Request::SubscribePresence(_) => "SubscribePresence is not implemented yet",
        Request::FetchHistory(_) => "FetchHistory is not implemented yet",
    }
}
