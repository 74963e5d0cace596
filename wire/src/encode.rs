//! Encoding: typed frames → FlatBuffers bytes, and complete WebSocket frames.
//!
//! Owns the one reusable `FlatBufferBuilder` per encoder: after the first frames have grown its
//! buffer, encoding allocates nothing (the builder and scratch space are reset, not freed).
//! `encode_ws` writes header and payload into one caller buffer, so a `NewMessage` is encoded
//! once and that buffer shared by every recipient (zero-copy fan-out).
//!
//! Invariant: every frame an `Encoder` returns is at most `frame_bytes_max` bytes; a larger one
//! is an `EncodeError` and leaves the caller's buffer untouched.

use crate::error::EncodeError;
use crate::fb;
use crate::frames::{
    Body, ChatUpdate, ClientFrame, HistoryPage, Member, NewMessage, Payload, Request,
    RequestResult, ServerFrame,
};
use crate::ids::{AttachmentId, ChatId, DeviceId, MessageId, Sha256, UserId};
use crate::limits::Limits;
use crate::ws;
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

/// Builder capacity to start with: a typical frame fits without growing.
const INITIAL_CAPACITY_BYTES: usize = 1024;

/// A reusable encoder; one per thread (it is not `Sync`, and needs no lock).
pub struct Encoder {
    fbb: FlatBufferBuilder<'static>,
    /// Offsets of history messages while a page is built; kept to avoid allocating per page.
    history: Vec<WIPOffset<fb::NewMessage<'static>>>,
    frame_bytes_max: usize,
}

impl Encoder {
    /// An encoder that refuses frames over `limits.frame_bytes_max`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            fbb: FlatBufferBuilder::with_capacity(INITIAL_CAPACITY_BYTES),
            history: Vec::new(),
            frame_bytes_max: limits.frame_bytes_max,
        }
    }

    /// Encodes a client request; the bytes stay valid until the next call.
    ///
    /// # Errors
    /// `FrameTooLarge` when the frame exceeds `frame_bytes_max`.
    pub fn encode_client(&mut self, frame: &ClientFrame<'_>) -> Result<&[u8], EncodeError> {
        self.fbb.reset();
        let (body_type, body) = request(&mut self.fbb, &frame.request);
        let root = fb::ClientFrame::create(
            &mut self.fbb,
            &fb::ClientFrameArgs {
                request_id: frame.request_id,
                body_type,
                body: Some(body),
            },
        );
        self.fbb.finish_minimal(root);
        self.finished()
    }

    /// Encodes a server frame; the bytes stay valid until the next call.
    ///
    /// # Errors
    /// `FrameTooLarge` when the frame exceeds `frame_bytes_max`.
    pub fn encode_server(&mut self, frame: &ServerFrame<'_>) -> Result<&[u8], EncodeError> {
        self.fbb.reset();
        let (body_type, body) = server_body(&mut self.fbb, &mut self.history, frame);
        let root = fb::ServerFrame::create(
            &mut self.fbb,
            &fb::ServerFrameArgs {
                body_type,
                body: Some(body),
            },
        );
        self.fbb.finish_minimal(root);
        self.finished()
    }

    /// Appends a server frame to `out` as one complete WebSocket binary frame (header included),
    /// ready to be shared by every recipient.
    ///
    /// # Errors
    /// `FrameTooLarge`; `out` is then unchanged.
    pub fn encode_ws(
        &mut self,
        frame: &ServerFrame<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let payload = self.encode_server(frame)?;
        ws::write_frame(out, ws::OPCODE_BINARY, payload, None);
        Ok(())
    }

    /// Appends a client request to `out` as one masked WebSocket binary frame; the caller
    /// chooses the mask (RFC 6455 wants it unpredictable: pass random bytes).
    ///
    /// # Errors
    /// `FrameTooLarge`; `out` is then unchanged.
    pub fn encode_ws_client(
        &mut self,
        frame: &ClientFrame<'_>,
        mask: [u8; 4],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let payload = self.encode_client(frame)?;
        ws::write_frame(out, ws::OPCODE_BINARY, payload, Some(mask));
        Ok(())
    }

    fn finished(&self) -> Result<&[u8], EncodeError> {
        let bytes = self.fbb.finished_data();
        if bytes.len() > self.frame_bytes_max {
            return Err(EncodeError::FrameTooLarge {
                bytes: bytes.len(),
                max: self.frame_bytes_max,
            });
        }
        Ok(bytes)
    }
}

type Fbb = FlatBufferBuilder<'static>;
type Union = WIPOffset<UnionWIPOffset>;

macro_rules! to_fb {
    ($($name:ident),*) => {$(
        impl ToFb for $name {
            type Fb = fb::$name;
            fn fb(&self) -> fb::$name {
                fb::$name(*self.as_bytes())
            }
        }
    )*};
}

/// An id as its generated struct (same bytes, the builder's type).
trait ToFb {
    type Fb: flatbuffers::Push<Output = Self::Fb> + Copy;
    fn fb(&self) -> Self::Fb;
}
to_fb!(UserId, DeviceId, ChatId, MessageId, AttachmentId, Sha256);

/// A vector of ids, omitted when empty (decoding reads a missing vector as empty).
fn ids<T: ToFb>(
    fbb: &mut Fbb,
    list: &[T],
) -> Option<WIPOffset<flatbuffers::Vector<'static, T::Fb>>> {
    (!list.is_empty()).then(|| fbb.create_vector_from_iter(list.iter().map(ToFb::fb)))
}

fn string(fbb: &mut Fbb, s: &str) -> Option<WIPOffset<&'static str>> {
    (!s.is_empty()).then(|| fbb.create_string(s))
}

fn body(
    fbb: &mut Fbb,
    body: &Body<'_>,
) -> (
    fb::BodyKind,
    Option<WIPOffset<flatbuffers::Vector<'static, u8>>>,
) {
    let bytes = body.as_bytes();
    (
        fb::BodyKind(body.kind().raw()),
        (!bytes.is_empty()).then(|| fbb.create_vector(bytes)),
    )
}

/// Creates table `$table` from its args as a union value.
macro_rules! member {
    ($fbb:expr, $table:ident, $args:expr) => {
        fb::$table::create($fbb, &$args).as_union_value()
    };
}

fn request(fbb: &mut Fbb, request: &Request<'_>) -> (fb::ClientBody, Union) {
    use fb::ClientBody as B;
    match request {
        Request::CreateChat(c) => {
            let (name, members) = (string(fbb, c.name), ids(fbb, c.members));
            let args = fb::CreateChatArgs {
                name,
                members,
                history: c.history,
            };
            (B::CreateChat, member!(fbb, CreateChat, args))
        }
        Request::ModifyParticipants(m) => {
            let args = fb::ModifyParticipantsArgs {
                chat: Some(&m.chat.fb()),
                add: ids(fbb, m.add),
                remove: ids(fbb, m.remove),
                promote: ids(fbb, m.promote),
            };
            (
                B::ModifyParticipants,
                member!(fbb, ModifyParticipants, args),
            )
        }
        Request::SendMessage(m) => {
            let (kind, body) = body(fbb, &m.body);
            let args = fb::SendMessageArgs {
                chat: Some(&m.chat.fb()),
                client_msg_id: m.client_msg_id,
                kind,
                body,
                attachments: ids(fbb, m.attachments),
            };
            (B::SendMessage, member!(fbb, SendMessage, args))
        }
        Request::CreateAttachment(c) => {
            let (sha256, mime) = (Some(&c.sha256.fb()), string(fbb, c.mime));
            let args = fb::CreateAttachmentArgs {
                size: c.size,
                sha256,
                mime,
            };
            (B::CreateAttachment, member!(fbb, CreateAttachment, args))
        }
        Request::GetAttachmentUrl(g) => {
            let (chat, attachment) = (Some(&g.chat.fb()), Some(&g.attachment.fb()));
            let args = fb::GetAttachmentUrlArgs { chat, attachment };
            (B::GetAttachmentUrl, member!(fbb, GetAttachmentUrl, args))
        }
        Request::Delivered(a) => {
            let args = fb::DeliveredArgs {
                chat: Some(&a.chat.fb()),
                up_to_seq: a.up_to_seq,
            };
            (B::Delivered, member!(fbb, Delivered, args))
        }
        Request::Read(a) => {
            let args = fb::ReadArgs {
                chat: Some(&a.chat.fb()),
                up_to_seq: a.up_to_seq,
            };
            (B::Read, member!(fbb, Read, args))
        }
        Request::Typing(t) => {
            let args = fb::TypingRequestArgs {
                chat: Some(&t.chat.fb()),
            };
            (B::Typing, member!(fbb, TypingRequest, args))
        }
        Request::SetPresence(p) => {
            let args = fb::SetPresenceArgs { online: p.online };
            (B::SetPresence, member!(fbb, SetPresence, args))
        }
        Request::SubscribePresence(s) => {
            let args = fb::SubscribePresenceArgs {
                users: ids(fbb, s.users),
            };
            (B::SubscribePresence, member!(fbb, SubscribePresence, args))
        }
        Request::FetchHistory(f) => {
            let (chat, before_seq) = (Some(&f.chat.fb()), f.before_seq);
            let args = fb::FetchHistoryArgs {
                chat,
                before_seq,
                limit: f.limit,
            };
            (B::FetchHistory, member!(fbb, FetchHistory, args))
        }
    }
}

fn server_body(
    fbb: &mut Fbb,
    history: &mut Vec<WIPOffset<fb::NewMessage<'static>>>,
    frame: &ServerFrame<'_>,
) -> (fb::ServerBody, Union) {
    use fb::ServerBody as B;
    match frame {
        ServerFrame::Result(r) => (B::Result, result(fbb, history, r).as_union_value()),
        ServerFrame::NewMessage(m) => (B::NewMessage, new_message(fbb, m).as_union_value()),
        ServerFrame::ChatUpdate(u) => (B::ChatUpdate, chat_update(fbb, u).as_union_value()),
        ServerFrame::Receipt(r) => {
            let args = fb::ReceiptArgs {
                chat: Some(&r.chat.fb()),
                user: Some(&r.user.fb()),
                device: Some(&r.device.fb()),
                kind: fb::ReceiptKind(r.kind.raw()),
                up_to_seq: r.up_to_seq,
            };
            (B::Receipt, fb::Receipt::create(fbb, &args).as_union_value())
        }
        ServerFrame::Presence(p) => {
            let args = fb::PresenceArgs {
                user: Some(&p.user.fb()),
                online: p.online,
                last_seen_ms: p.last_seen_ms,
            };
            (
                B::Presence,
                fb::Presence::create(fbb, &args).as_union_value(),
            )
        }
        ServerFrame::Typing(t) => {
            let args = fb::TypingNoticeArgs {
                chat: Some(&t.chat.fb()),
                user: Some(&t.user.fb()),
                device: Some(&t.device.fb()),
            };
            (
                B::Typing,
                fb::TypingNotice::create(fbb, &args).as_union_value(),
            )
        }
        ServerFrame::SyncDone(s) => (
            B::SyncDone,
            fb::SyncDone::create(
                fbb,
                &fb::SyncDoneArgs {
                    chats: s.chats,
                    events: s.events,
                },
            )
            .as_union_value(),
        ),
        ServerFrame::Truncated(t) => {
            let args = fb::TruncatedArgs {
                chat: Some(&t.chat.fb()),
                from_seq: t.from_seq,
                to_seq: t.to_seq,
            };
            (
                B::Truncated,
                fb::Truncated::create(fbb, &args).as_union_value(),
            )
        }
        ServerFrame::GoAway(g) => {
            let args = fb::GoAwayArgs {
                reconnect_after_ms: g.reconnect_after_ms,
            };
            (B::GoAway, fb::GoAway::create(fbb, &args).as_union_value())
        }
    }
}

fn result(
    fbb: &mut Fbb,
    history: &mut Vec<WIPOffset<fb::NewMessage<'static>>>,
    r: &RequestResult<'_>,
) -> WIPOffset<fb::RequestResult<'static>> {
    use fb::ResultPayload as P;
    let (payload_type, payload) = match &r.payload {
        Payload::None => (P::NONE, None),
        Payload::Sent(s) => {
            let args = fb::SentArgs {
                server_msg_id: Some(&s.server_msg_id.fb()),
                seq: s.seq,
                ts_ms: s.ts_ms,
            };
            (P::Sent, Some(fb::Sent::create(fbb, &args).as_union_value()))
        }
        Payload::ChatCreated(c) => {
            let args = fb::ChatCreatedArgs {
                chat: Some(&c.chat.fb()),
            };
            (
                P::ChatCreated,
                Some(fb::ChatCreated::create(fbb, &args).as_union_value()),
            )
        }
        Payload::AttachmentCreated(a) => {
            let args = fb::AttachmentCreatedArgs {
                attachment: Some(&a.attachment.fb()),
                upload_url: string(fbb, a.upload_url),
                expires_at_ms: a.expires_at_ms,
            };
            (
                P::AttachmentCreated,
                Some(fb::AttachmentCreated::create(fbb, &args).as_union_value()),
            )
        }
        Payload::AttachmentUrl(a) => {
            let args = fb::AttachmentUrlArgs {
                url: string(fbb, a.url),
                expires_at_ms: a.expires_at_ms,
            };
            (
                P::AttachmentUrl,
                Some(fb::AttachmentUrl::create(fbb, &args).as_union_value()),
            )
        }
        Payload::HistoryPage(h) => (
            P::HistoryPage,
            Some(history_page(fbb, history, h).as_union_value()),
        ),
    };
    let args = fb::RequestResultArgs {
        request_id: r.request_id,
        code: fb::ErrorCode(r.code.raw()),
        reason: string(fbb, r.reason),
        retry_after_ms: r.retry_after_ms,
        payload_type,
        payload,
    };
    fb::RequestResult::create(fbb, &args)
}

fn history_page(
    fbb: &mut Fbb,
    scratch: &mut Vec<WIPOffset<fb::NewMessage<'static>>>,
    h: &HistoryPage<'_>,
) -> WIPOffset<fb::HistoryPage<'static>> {
    scratch.clear();
    for m in &h.messages {
        scratch.push(new_message(fbb, &m));
    }
    let messages = (!scratch.is_empty()).then(|| fbb.create_vector(scratch));
    fb::HistoryPage::create(
        fbb,
        &fb::HistoryPageArgs {
            chat: Some(&h.chat.fb()),
            messages,
            more: h.more,
        },
    )
}

fn new_message(fbb: &mut Fbb, m: &NewMessage<'_>) -> WIPOffset<fb::NewMessage<'static>> {
    let (kind, body) = body(fbb, &m.body);
    let args = fb::NewMessageArgs {
        chat: Some(&m.chat.fb()),
        seq: m.seq,
        server_msg_id: Some(&m.server_msg_id.fb()),
        sender: Some(&m.sender.fb()),
        sender_device: Some(&m.sender_device.fb()),
        client_msg_id: m.client_msg_id,
        ts_ms: m.ts_ms,
        kind,
        body,
        attachments: ids(fbb, m.attachments),
    };
    fb::NewMessage::create(fbb, &args)
}

fn chat_update(fbb: &mut Fbb, u: &ChatUpdate<'_>) -> WIPOffset<fb::ChatUpdate<'static>> {
    let members = (!u.members.is_empty()).then(|| {
        fbb.create_vector_from_iter(
            u.members
                .iter()
                .map(|m: &Member| fb::Member(bytemuck::cast(*m))),
        )
    });
    let args = fb::ChatUpdateArgs {
        chat: Some(&u.chat.fb()),
        seq: u.seq,
        ts_ms: u.ts_ms,
        kind: fb::ChatUpdateKind(u.kind.raw()),
        actor: Some(&u.actor.fb()),
        name: string(fbb, u.name),
        history: u.history,
        members,
    };
    fb::ChatUpdate::create(fbb, &args)
}
