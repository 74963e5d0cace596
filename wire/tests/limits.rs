//! Every limit holds at exactly its value and refuses one over it with the documented code;
//! malformed, invalid and unknown input gets its code too, with the request id when readable.

mod common;

use common::{attachment, client_bytes, direct, group, leak, send, server_bytes, users};
use flatbuffers::FlatBufferBuilder;
use wire::{
    Ack, Body, ClientFrame, CreateAttachment, CreateChat, DecodeError, Encoder, ErrorCode,
    FetchHistory, HistoryPage, Limits, Messages, ModifyParticipants, Payload, Request,
    RequestResult, ServerFrame, Sha256, SubscribePresence, fb,
};

const ID: u64 = 31_337;

fn decode(request: Request<'_>) -> Result<ClientFrame<'_>, DecodeError> {
    let bytes = leak(client_bytes(&ClientFrame {
        request_id: ID,
        request,
    }));
    wire::decode_client(bytes, &Limits::default())
}

/// `at_max` decodes; `over` is refused with `code`, and the refusal names the request.
fn assert_limit(at_max: Request<'_>, over: Request<'_>, code: ErrorCode) {
    assert!(decode(at_max).is_ok(), "at the limit: {:?}", decode(at_max));
    let err = decode(over).expect_err("one over the limit is refused");
    assert_eq!((err.code, err.request_id), (code, Some(ID)), "{err}");
}

fn send_body(body: Body<'static>) -> Request<'static> {
    send(ID, body, &[]).request
}

#[test]
fn body_bytes() {
    let l = Limits::default();
    let at = leak(vec![0u8; l.body_bytes_max]);
    let over = leak(vec![0u8; l.body_bytes_max + 1]);
    assert_limit(
        send_body(Body::Opaque(at)),
        send_body(Body::Opaque(over)),
        ErrorCode::BodyTooLong,
    );
    // Text is limited in bytes as well as characters (with a character limit that allows it).
    let wide = Limits {
        body_chars_max: l.body_bytes_max + 1,
        ..Limits::default()
    };
    let long = client_bytes(&send(
        ID,
        Body::Text(text("a".repeat(l.body_bytes_max + 1))),
        &[],
    ));
    let err = wire::decode_client(&long, &wide).expect_err("over body_bytes_max");
    assert_eq!(err.code, ErrorCode::BodyTooLong);
}

fn text(s: String) -> &'static str {
    std::str::from_utf8(leak(s.into_bytes())).expect("built from a str")
}

#[test]
fn body_characters() {
    let max = Limits::default().body_chars_max;
    // Two-byte characters: 1,001 of them are 2,002 bytes, under the byte limit.
    let at = text("é".repeat(max));
    let over = text("é".repeat(max + 1));
    assert_limit(
        send_body(Body::Text(at)),
        send_body(Body::Text(over)),
        ErrorCode::BodyTooLong,
    );
    // The character limit does not apply to opaque bodies of the same bytes.
    assert!(decode(send_body(Body::Opaque(over.as_bytes()))).is_ok());
}

#[test]
fn attachments_per_message() {
    let max = Limits::default().attachments_per_message_max;
    let ids = |n: u128| leak((1..=n).map(attachment).collect());
    let at = send(ID, Body::Text("pics"), ids(max as u128)).request;
    let over = send(ID, Body::Text("pics"), ids(max as u128 + 1)).request;
    assert_limit(at, over, ErrorCode::TooManyAttachments);
}

fn member_ids(n: usize) -> &'static [wire::UserId] {
    users(&(2..2 + n as u64).collect::<Vec<_>>())
}

#[test]
fn group_members_per_request() {
    let max = Limits::default().group_members_max;
    let create = |n| {
        Request::CreateChat(CreateChat {
            name: "g",
            members: member_ids(n),
            history: false,
        })
    };
    // The creator is the group's first member, so the list holds one fewer.
    assert_limit(create(max - 1), create(max), ErrorCode::TooManyMembers);
    let modify = |n| {
        Request::ModifyParticipants(ModifyParticipants {
            chat: group(),
            add: member_ids(n),
            remove: &[],
            promote: &[],
        })
    };
    assert_limit(modify(max), modify(max + 1), ErrorCode::TooManyMembers);
}

#[test]
fn chat_name_and_mime_bytes() {
    let l = Limits::default();
    let create = |n| {
        Request::CreateChat(CreateChat {
            name: text("n".repeat(n)),
            members: &[],
            history: false,
        })
    };
    assert_limit(
        create(l.chat_name_bytes_max),
        create(l.chat_name_bytes_max + 1),
        ErrorCode::NameTooLong,
    );
    let attach = |mime_len, size| {
        Request::CreateAttachment(CreateAttachment {
            size,
            sha256: Sha256::new([1; 32]),
            mime: text("m".repeat(mime_len)),
        })
    };
    assert_limit(
        attach(l.mime_bytes_max, 1),
        attach(l.mime_bytes_max + 1, 1),
        ErrorCode::NameTooLong,
    );
    let max = l.attachment_bytes_max;
    assert_limit(
        attach(5, max),
        attach(5, max + 1),
        ErrorCode::AttachmentTooLarge,
    );
    assert_eq!(
        decode(attach(5, 0)).map_err(|e| e.code),
        Err(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        decode(attach(0, 5)).map_err(|e| e.code),
        Err(ErrorCode::InvalidArgument)
    );
}

#[test]
fn presence_subscriptions() {
    let max = Limits::default().presence_subscriptions_max;
    let sub = |n| {
        Request::SubscribePresence(SubscribePresence {
            users: member_ids(n),
        })
    };
    assert_limit(sub(max), sub(max + 1), ErrorCode::TooManyMembers);
}

#[test]
fn history_page_size() {
    let max = Limits::default().history_page_messages_max as u32;
    let fetch = |limit| {
        Request::FetchHistory(FetchHistory {
            chat: group(),
            before_seq: 9,
            limit,
        })
    };
    assert_limit(fetch(max), fetch(max + 1), ErrorCode::InvalidArgument);
    assert_eq!(
        decode(fetch(0)).map_err(|e| e.code),
        Err(ErrorCode::InvalidArgument)
    );

    // A server page over the limit is refused by the client's decoder as well.
    let l = Limits::default();
    let page = |n: usize| {
        let messages = leak(
            (1..=n as u64)
                .map(|s| common::new_message(s, Body::Text("m")))
                .collect(),
        );
        server_bytes(&ServerFrame::Result(RequestResult {
            request_id: 1,
            code: ErrorCode::Ok,
            reason: "",
            retry_after_ms: 0,
            payload: Payload::HistoryPage(HistoryPage {
                chat: group(),
                messages: Messages::Slice(messages),
                more: false,
            }),
        }))
    };
    assert!(wire::decode_server(&page(l.history_page_messages_max), &l).is_ok());
    let err = wire::decode_server(&page(l.history_page_messages_max + 1), &l).expect_err("over");
    assert_eq!(err.code, ErrorCode::InvalidArgument);
}

#[test]
fn frame_bytes() {
    let bytes = client_bytes(&send(ID, Body::Text("sized"), &[]));
    let exact = Limits {
        frame_bytes_max: bytes.len(),
        ..Limits::default()
    };
    assert!(wire::decode_client(&bytes, &exact).is_ok());
    let under = Limits {
        frame_bytes_max: bytes.len() - 1,
        ..Limits::default()
    };
    let err = wire::decode_client(&bytes, &under).expect_err("over frame_bytes_max");
    assert_eq!((err.code, err.request_id), (ErrorCode::Malformed, None));

    // The encoder refuses to build such a frame and leaves the output untouched.
    let mut encoder = Encoder::new(&under);
    let mut out = vec![1, 2, 3];
    let refused = encoder.encode_ws_client(&send(ID, Body::Text("sized"), &[]), [0; 4], &mut out);
    assert_eq!(
        refused,
        Err(wire::EncodeError::FrameTooLarge {
            bytes: bytes.len(),
            max: bytes.len() - 1
        })
    );
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn verifier_depth_and_table_count() {
    let l = Limits::default();
    let messages = leak(
        (1..=3)
            .map(|s| common::new_message(s, Body::Text("m")))
            .collect(),
    );
    let page = server_bytes(&ServerFrame::Result(RequestResult {
        request_id: 1,
        code: ErrorCode::Ok,
        reason: "",
        retry_after_ms: 0,
        payload: Payload::HistoryPage(HistoryPage {
            chat: group(),
            messages: Messages::Slice(messages),
            more: false,
        }),
    }));
    assert!(wire::decode_server(&page, &l).is_ok());
    // ServerFrame → RequestResult → HistoryPage → NewMessage: 4 levels; 3 tables + 3 messages.
    let shallow = Limits {
        verify_depth_max: 3,
        ..l.clone()
    };
    assert_eq!(
        wire::decode_server(&page, &shallow).map_err(|e| e.code),
        Err(ErrorCode::Malformed)
    );
    let few = Limits {
        verify_tables_max: 5,
        ..l.clone()
    };
    assert_eq!(
        wire::decode_server(&page, &few).map_err(|e| e.code),
        Err(ErrorCode::Malformed)
    );
    let enough = Limits {
        verify_depth_max: 4,
        verify_tables_max: 6,
        ..l
    };
    assert!(wire::decode_server(&page, &enough).is_ok());
}

#[test]
fn invalid_values_are_refused_with_the_request_id() {
    let zero_msg_id = Request::SendMessage(wire::SendMessage {
        chat: direct(),
        client_msg_id: 0,
        body: Body::Text("x"),
        attachments: &[],
    });
    let empty = send_body(Body::Text(""));
    let zero_ack = Request::Delivered(Ack {
        chat: direct(),
        up_to_seq: 0,
    });
    let nothing = Request::ModifyParticipants(ModifyParticipants {
        chat: group(),
        add: &[],
        remove: &[],
        promote: &[],
    });
    for request in [zero_msg_id, empty, zero_ack, nothing] {
        let err = decode(request).expect_err("invalid");
        assert_eq!(
            (err.code, err.request_id),
            (ErrorCode::InvalidArgument, Some(ID)),
            "{request:?}"
        );
    }
}

/// A raw `ClientFrame` built with the generated API, to send what our encoder never would.
fn raw_frame(
    build: impl FnOnce(
        &mut FlatBufferBuilder<'static>,
    ) -> (
        fb::ClientBody,
        flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
    ),
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let (body_type, body) = build(&mut fbb);
    let root = fb::ClientFrame::create(
        &mut fbb,
        &fb::ClientFrameArgs {
            request_id: ID,
            body_type,
            body: Some(body),
        },
    );
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

fn raw_send(
    chat: Option<fb::ChatId>,
    kind: fb::BodyKind,
    body: &[u8],
    attachments: &[fb::AttachmentId],
) -> Vec<u8> {
    raw_frame(|fbb| {
        let body = fbb.create_vector(body);
        let attachments = fbb.create_vector(attachments);
        let args = fb::SendMessageArgs {
            chat: chat.as_ref(),
            client_msg_id: 1,
            kind,
            body: Some(body),
            attachments: Some(attachments),
        };
        (
            fb::ClientBody::SendMessage,
            fb::SendMessage::create(fbb, &args).as_union_value(),
        )
    })
}

fn assert_refused(bytes: &[u8], code: ErrorCode) {
    let err = wire::decode_client(bytes, &Limits::default()).expect_err("refused");
    assert_eq!((err.code, err.request_id), (code, Some(ID)), "{err}");
}

#[test]
fn ids_missing_or_invalid() {
    let chat = fb::ChatId(*direct().as_bytes());
    let text = fb::BodyKind::Text;
    assert!(
        wire::decode_client(&raw_send(Some(chat), text, b"ok", &[]), &Limits::default()).is_ok()
    );
    assert_refused(&raw_send(None, text, b"x", &[]), ErrorCode::Malformed);
    // A direct chat whose users are out of order is not an id any client derives.
    let mut swapped = [0u8; 16];
    swapped[7] = 9;
    swapped[15] = 2;
    assert_refused(
        &raw_send(Some(fb::ChatId(swapped)), text, b"x", &[]),
        ErrorCode::InvalidArgument,
    );
    assert_refused(
        &raw_send(Some(chat), text, b"x", &[fb::AttachmentId([0; 16])]),
        ErrorCode::InvalidArgument,
    );
    let zero_user = raw_frame(|fbb| {
        let members = fbb.create_vector(&[fb::UserId([0; 8])]);
        let args = fb::CreateChatArgs {
            name: None,
            members: Some(members),
            history: false,
        };
        (
            fb::ClientBody::CreateChat,
            fb::CreateChat::create(fbb, &args).as_union_value(),
        )
    });
    assert_refused(&zero_user, ErrorCode::InvalidArgument);
    let reserved_bit = raw_frame(|fbb| {
        let users = fbb.create_vector(&[fb::UserId([0x80, 0, 0, 0, 0, 0, 0, 1])]);
        let args = fb::SubscribePresenceArgs { users: Some(users) };
        (
            fb::ClientBody::SubscribePresence,
            fb::SubscribePresence::create(fbb, &args).as_union_value(),
        )
    });
    assert_refused(&reserved_bit, ErrorCode::InvalidArgument);
}

#[test]
fn bodies_must_match_their_kind() {
    let chat = Some(fb::ChatId(*direct().as_bytes()));
    assert_refused(
        &raw_send(chat, fb::BodyKind::Text, &[0xFF, 0xFE], &[]),
        ErrorCode::InvalidArgument,
    );
    assert!(
        wire::decode_client(
            &raw_send(chat, fb::BodyKind::Opaque, &[0xFF, 0xFE], &[]),
            &Limits::default()
        )
        .is_ok()
    );
    assert_refused(
        &raw_send(chat, fb::BodyKind(9), b"future", &[]),
        ErrorCode::Unsupported,
    );
}

#[test]
fn unknown_or_missing_request_types() {
    // A request type from a newer client: valid FlatBuffers, unknown union member.
    let future = raw_frame(|fbb| {
        let args = fb::SetPresenceArgs { online: true };
        (
            fb::ClientBody(200),
            fb::SetPresence::create(fbb, &args).as_union_value(),
        )
    });
    assert_refused(&future, ErrorCode::Unsupported);
    let mut fbb = FlatBufferBuilder::new();
    let root = fb::ClientFrame::create(
        &mut fbb,
        &fb::ClientFrameArgs {
            request_id: ID,
            body_type: fb::ClientBody::NONE,
            body: None,
        },
    );
    fbb.finish_minimal(root);
    assert_refused(fbb.finished_data(), ErrorCode::Malformed);
}

#[test]
fn garbage_is_malformed_without_a_request_id() {
    for bytes in [
        &[][..],
        &[1, 2, 3],
        &[0xFF; 64],
        &client_bytes(&send(ID, Body::Text("x"), &[]))[..7],
    ] {
        let err = wire::decode_client(bytes, &Limits::default()).expect_err("garbage");
        assert_eq!(
            (err.code, err.request_id),
            (ErrorCode::Malformed, None),
            "{bytes:?}"
        );
        let err = wire::decode_server(bytes, &Limits::default()).expect_err("garbage");
        assert_eq!(err.code, ErrorCode::Malformed);
    }
}
