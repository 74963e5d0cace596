//! Sample frames shared by the wire tests: at least one of every client and server frame, with
//! every optional part present somewhere (lists, strings, both body kinds, every payload).
#![allow(dead_code, unreachable_pub)] // Each test binary uses part of this.

use wire::{
    Ack, AttachmentCreated, AttachmentId, AttachmentUrl, Body, ChatCreated, ChatId, ChatUpdate,
    ChatUpdateKind, ClientFrame, CreateAttachment, CreateChat, DeviceId, ErrorCode, FetchHistory,
    GetAttachmentUrl, GoAway, HistoryPage, Member, MessageId, Messages, ModifyParticipants,
    NewMessage, Payload, Presence, Receipt, ReceiptKind, Request, RequestResult, Role, SendMessage,
    Sent, ServerFrame, SetPresence, Sha256, SubscribePresence, SyncDone, Truncated, Typing,
    TypingNotice, UserId,
};

pub fn user(id: u64) -> UserId {
    UserId::new(id).expect("valid test user")
}

pub fn device(id: u64) -> DeviceId {
    DeviceId::new(id).expect("valid test device")
}

pub fn attachment(id: u128) -> AttachmentId {
    AttachmentId::new(id).expect("valid test attachment")
}

pub fn direct() -> ChatId {
    ChatId::direct(user(1), user(2))
}

pub fn group() -> ChatId {
    ChatId::group(0x1234_5678_9abc_def0_1122_3344_5566_7788)
}

/// Test data lives for the whole test binary.
pub fn leak<T>(items: Vec<T>) -> &'static [T] {
    Box::leak(items.into_boxed_slice())
}

pub fn users(ids: &[u64]) -> &'static [UserId] {
    leak(ids.iter().map(|&i| user(i)).collect())
}

pub fn send(
    request_id: u64,
    body: Body<'static>,
    attachments: &'static [AttachmentId],
) -> ClientFrame<'static> {
    ClientFrame {
        request_id,
        request: Request::SendMessage(SendMessage {
            chat: direct(),
            client_msg_id: 9,
            body,
            attachments,
        }),
    }
}

/// One of every client request.
pub fn client_samples() -> Vec<ClientFrame<'static>> {
    let requests = [
        Request::CreateChat(CreateChat {
            name: "ski trip ⛷",
            members: users(&[2, 3, 4]),
            history: true,
        }),
        Request::CreateChat(CreateChat {
            name: "",
            members: &[],
            history: false,
        }),
        Request::ModifyParticipants(ModifyParticipants {
            chat: group(),
            add: users(&[5, 6]),
            remove: users(&[3]),
            promote: users(&[4]),
        }),
        Request::SendMessage(SendMessage {
            chat: direct(),
            client_msg_id: u64::MAX,
            body: Body::Text("héllo wörld"),
            attachments: leak(vec![attachment(1), attachment(u128::MAX)]),
        }),
        Request::SendMessage(SendMessage {
            chat: group(),
            client_msg_id: 1,
            body: Body::Opaque(&[0, 255, 1, 254]),
            attachments: &[],
        }),
        Request::CreateAttachment(CreateAttachment {
            size: 1 << 20,
            sha256: Sha256::new([7; 32]),
            mime: "image/jpeg",
        }),
        Request::GetAttachmentUrl(GetAttachmentUrl {
            chat: group(),
            attachment: attachment(42),
        }),
        Request::Delivered(Ack {
            chat: direct(),
            up_to_seq: 10,
        }),
        Request::Read(Ack {
            chat: group(),
            up_to_seq: u64::MAX,
        }),
        Request::Typing(Typing { chat: direct() }),
        Request::SetPresence(SetPresence { online: false }),
        Request::SetPresence(SetPresence { online: true }),
        Request::SubscribePresence(SubscribePresence {
            users: users(&[2, 3]),
        }),
        Request::FetchHistory(FetchHistory {
            chat: group(),
            before_seq: 0,
            limit: 50,
        }),
    ];
    requests
        .into_iter()
        .zip(1..)
        .map(|(request, id)| ClientFrame {
            request_id: id * 1_000,
            request,
        })
        .collect()
}

pub fn new_message(seq: u64, body: Body<'static>) -> NewMessage<'static> {
    NewMessage {
        chat: group(),
        seq,
        server_msg_id: MessageId::new(u128::from(seq) << 64 | 5).expect("nonzero"),
        sender: user(3),
        sender_device: device(2),
        client_msg_id: seq + 100,
        ts_ms: 1_795_000_000_000 + seq,
        body,
        attachments: if seq.is_multiple_of(2) {
            leak(vec![attachment(u128::from(seq))])
        } else {
            &[]
        },
    }
}

fn ok(request_id: u64, payload: Payload<'static>) -> ServerFrame<'static> {
    ServerFrame::Result(RequestResult {
        request_id,
        code: ErrorCode::Ok,
        reason: "",
        retry_after_ms: 0,
        payload,
    })
}

/// One of every server frame and every result payload.
pub fn server_samples() -> Vec<ServerFrame<'static>> {
    let page = leak(vec![
        new_message(7, Body::Text("older")),
        new_message(8, Body::Opaque(&[1, 2, 3])),
    ]);
    vec![
        ok(1, Payload::None),
        ok(
            2,
            Payload::Sent(Sent {
                server_msg_id: MessageId::new(99).expect("nonzero"),
                seq: 12,
                ts_ms: 5,
            }),
        ),
        ok(3, Payload::ChatCreated(ChatCreated { chat: group() })),
        ok(
            4,
            Payload::AttachmentCreated(AttachmentCreated {
                attachment: attachment(77),
                upload_url: "http://127.0.0.1:8081/blob/77?sig=abc",
                expires_at_ms: 1_795_000_900_000,
            }),
        ),
        ok(
            5,
            Payload::AttachmentUrl(AttachmentUrl {
                url: "http://127.0.0.1:8081/blob/77",
                expires_at_ms: 9,
            }),
        ),
        ok(
            6,
            Payload::HistoryPage(HistoryPage {
                chat: group(),
                messages: Messages::Slice(page),
                more: true,
            }),
        ),
        ServerFrame::Result(RequestResult {
            request_id: 7,
            code: ErrorCode::RateLimited,
            reason: "send rate over 10/s",
            retry_after_ms: 1_500,
            payload: Payload::None,
        }),
        ServerFrame::NewMessage(new_message(1, Body::Text("hi 👋"))),
        ServerFrame::NewMessage(new_message(2, Body::Opaque(&[9; 64]))),
        ServerFrame::ChatUpdate(ChatUpdate {
            chat: group(),
            seq: 3,
            ts_ms: 11,
            kind: ChatUpdateKind::Created,
            actor: user(1),
            name: "ski trip ⛷",
            history: true,
            members: leak(vec![
                Member::new(user(1), Role::Admin),
                Member::new(user(2), Role::Member),
            ]),
        }),
        ServerFrame::ChatUpdate(ChatUpdate {
            chat: group(),
            seq: 4,
            ts_ms: 12,
            kind: ChatUpdateKind::MemberLeft,
            actor: user(2),
            name: "",
            history: false,
            members: &[],
        }),
        ServerFrame::Receipt(Receipt {
            chat: direct(),
            user: user(2),
            device: device(1),
            kind: ReceiptKind::Read,
            up_to_seq: 4,
        }),
        ServerFrame::Presence(Presence {
            user: user(2),
            online: true,
            last_seen_ms: 123,
        }),
        ServerFrame::Typing(TypingNotice {
            chat: direct(),
            user: user(1),
            device: device(3),
        }),
        ServerFrame::SyncDone(SyncDone {
            chats: 3,
            events: 1_000,
        }),
        ServerFrame::Truncated(Truncated {
            chat: group(),
            from_seq: 1,
            to_seq: 99,
        }),
        ServerFrame::GoAway(GoAway {
            reconnect_after_ms: 7_300,
        }),
    ]
}

/// Encodes a client frame with default limits.
pub fn client_bytes(frame: &ClientFrame<'_>) -> Vec<u8> {
    wire::Encoder::new(&wire::Limits::default())
        .encode_client(frame)
        .expect("sample fits")
        .to_vec()
}

/// Encodes a server frame with default limits.
pub fn server_bytes(frame: &ServerFrame<'_>) -> Vec<u8> {
    wire::Encoder::new(&wire::Limits::default())
        .encode_server(frame)
        .expect("sample fits")
        .to_vec()
}
