//! switchboard's wire protocol: the FlatBuffers schema and a sans-IO codec.
//!
//! Layout:
//! - `schema/switchboard.fbs`: the one schema; `docs/PROTOCOL.md` explains it.
//! - [`fb`]: the code flatc generated from it (committed, checked in CI).
//! - [`ids`]: fixed-size ids, zero-copy castable from a frame.
//! - [`enums`]: the protocol's enums, exhaustive, mirrored from the schema.
//! - [`frames`]: every frame as a borrowed Rust value.
//! - [`limits`]: every limit, with DESIGN.md §1's defaults.
//! - [`decode`](decode_client): bytes → verified, typed, within-limits frames.
//! - [`Encoder`]: frames → bytes with one reusable builder, and whole WebSocket frames.
//! - [`ws`]: WebSocket frame headers and close codes.
//!
//! This crate never touches a socket, a clock, a thread or the filesystem, and depends on
//! nothing else of switchboard's. Every decoder path is total: any input yields a frame or a
//! `DecodeError`, never a panic (a property test and a fuzz target hold it to that).

pub mod enums;
pub mod fb;
pub mod frames;
pub mod ids;
pub mod limits;
pub mod ws;

mod decode;
mod encode;
mod error;

pub use decode::{decode_client, decode_server};
pub use encode::Encoder;
pub use enums::{BodyKind, ChatUpdateKind, ErrorCode, ReceiptKind, Role};
pub use error::{DecodeError, EncodeError};
pub use frames::*;
pub use ids::{AttachmentId, ChatId, ChatKind, DeviceId, Id, MessageId, Sha256, UserId};
pub use limits::{Limits, LimitsError};
