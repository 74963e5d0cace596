//! Decoding: bytes of one WebSocket message → a verified, typed frame.
//!
//! Owns verification (the FlatBuffers verifier bounded by our `Limits` on size, depth and table
//! count) and every per-frame check of docs/PROTOCOL.md. Never panics on any input, never
//! allocates, never touches IO. A refused frame comes back as a `DecodeError` carrying the
//! request id (when readable) and the `ErrorCode` to answer with.
//!
//! Invariant: everything returned satisfies the `frames` module's contract (valid ids, known
//! enums, within limits), so no later layer re-checks a decoded frame.
//!
//! Layout: this file holds the entry points and the shared field readers; `client` reads
//! requests, `server` reads server frames.

mod client;
mod server;

pub(crate) use server::history_message;

use crate::enums::{BodyKind, ErrorCode};
use crate::error::DecodeError;
use crate::fb;
use crate::frames::{Body, ClientFrame, ServerFrame};
use crate::ids::{AttachmentId, ChatId, DeviceId, Id, MessageId, Sha256, UserId};
use crate::limits::Limits;
use flatbuffers::{Follow, Vector, Verifiable, VerifierOptions};

/// Decodes and verifies one client frame (the payload of one WebSocket binary message).
///
/// # Errors
/// A `DecodeError` with the code to answer: `Malformed` when the bytes are not a `ClientFrame`
/// (then `request_id` is `None`), otherwise the specific code of docs/PROTOCOL.md.
pub fn decode_client<'a>(buf: &'a [u8], limits: &Limits) -> Result<ClientFrame<'a>, DecodeError> {
    let frame = root::<fb::ClientFrame>(buf, limits)?;
    let request_id = frame.request_id();
    let request = client::request(frame, limits).map_err(|e| e.with_request(request_id))?;
    Ok(ClientFrame {
        request_id,
        request,
    })
}

/// Decodes and verifies one server frame (what clients, tests and `loadgen` receive).
///
/// # Errors
/// `Malformed` when the bytes are not a `ServerFrame`; `Unsupported` for an unknown frame type;
/// the limit's code when the server sent more than `limits` allow.
pub fn decode_server<'a>(buf: &'a [u8], limits: &Limits) -> Result<ServerFrame<'a>, DecodeError> {
    server::frame(root::<fb::ServerFrame>(buf, limits)?, limits)
}

// ---- verification ---------------------------------------------------------------------------

fn root<'a, T>(buf: &'a [u8], limits: &Limits) -> Result<T::Inner, DecodeError>
where
    T: Follow<'a> + Verifiable + 'a,
{
    if buf.len() > limits.frame_bytes_max {
        return Err(DecodeError::malformed("frame over frame_bytes_max"));
    }
    let opts = VerifierOptions {
        max_depth: limits.verify_depth_max,
        max_tables: limits.verify_tables_max,
        max_apparent_size: limits.frame_bytes_max,
        ignore_missing_null_terminator: false,
    };
    flatbuffers::root_with_opts::<T>(&opts, buf)
        .map_err(|_| DecodeError::malformed("not a valid frame"))
}

/// A generated id struct and the id type it holds.
pub(super) trait WireId {
    type Id: Id;
    fn id(&self) -> Option<Self::Id>;
}

macro_rules! wire_id {
    ($($name:ident),*) => {$(
        impl WireId for fb::$name {
            type Id = $name;
            fn id(&self) -> Option<$name> {
                $name::from_bytes(self.0)
            }
        }
    )*};
}
wire_id!(UserId, DeviceId, ChatId, MessageId, AttachmentId, Sha256);

/// A required id field: missing → `Malformed`, invalid → `InvalidArgument`.
pub(super) fn required<W: WireId>(field: Option<&W>) -> Result<W::Id, DecodeError> {
    field
        .ok_or(DecodeError::malformed("missing required id"))?
        .id()
        .ok_or(DecodeError::invalid("invalid id"))
}

/// A vector of ids, borrowed from the frame: at most `max`, each valid.
pub(super) fn ids<'a, T: Id, F: 'a>(
    field: Option<Vector<'a, F>>,
    max: usize,
    too_many: DecodeError,
) -> Result<&'a [T], DecodeError> {
    let bytes = field.map_or(&[][..], |v| v.bytes());
    let ids: &[T] = bytemuck::try_cast_slice(bytes)
        .map_err(|_| DecodeError::malformed("id vector has a partial element"))?;
    if ids.len() > max {
        return Err(too_many);
    }
    if !ids.iter().all(Id::is_valid) {
        return Err(DecodeError::invalid("invalid id in list"));
    }
    Ok(ids)
}

/// A body of a known kind (text bodies are UTF-8); limits are checked by `check_body`.
pub(super) fn body(
    kind: fb::BodyKind,
    bytes: Option<Vector<'_, u8>>,
) -> Result<Body<'_>, DecodeError> {
    let bytes = bytes.map_or(&[][..], |v| v.bytes());
    match BodyKind::from_raw(kind.0) {
        Some(BodyKind::Text) => core::str::from_utf8(bytes)
            .map(Body::Text)
            .map_err(|_| DecodeError::invalid("text body is not UTF-8")),
        Some(BodyKind::Opaque) => Ok(Body::Opaque(bytes)),
        None => Err(DecodeError::new(
            ErrorCode::Unsupported,
            "unknown body kind",
        )),
    }
}

pub(super) fn check_body(body: &Body<'_>, limits: &Limits) -> Result<(), DecodeError> {
    if body.as_bytes().len() > limits.body_bytes_max {
        return Err(DecodeError::new(
            ErrorCode::BodyTooLong,
            "body over body_bytes_max bytes",
        ));
    }
    if let Body::Text(text) = body {
        // A string has at most as many characters as bytes: count only when it could matter.
        let max = limits.body_chars_max;
        if text.len() > max && text.chars().count() > max {
            return Err(DecodeError::new(
                ErrorCode::BodyTooLong,
                "body over body_chars_max characters",
            ));
        }
    }
    Ok(())
}

pub(super) fn seq_at_least_one(seq: u64) -> Result<u64, DecodeError> {
    if seq == 0 {
        Err(DecodeError::invalid("seq must be at least 1"))
    } else {
        Ok(seq)
    }
}

pub(super) fn too_many_members() -> DecodeError {
    DecodeError::new(
        ErrorCode::TooManyMembers,
        "member list over group_members_max",
    )
}
