//! Properties over random input: no byte string makes a decoder panic; a decoded frame is always
//! one the encoder can reproduce; encode → decode is the identity on valid frames.

mod common;

use common::{client_bytes, client_samples, leak, server_bytes, server_samples};
use proptest::prelude::*;
use wire::{
    AttachmentId, Body, ChatId, ClientFrame, CreateChat, DeviceId, Limits, MessageId, NewMessage,
    Request, SendMessage, ServerFrame, UserId,
};

fn user() -> impl Strategy<Value = UserId> {
    (1..=UserId::MAX).prop_map(|id| UserId::new(id).expect("in range"))
}

fn chat() -> impl Strategy<Value = ChatId> {
    prop_oneof![
        (user(), user()).prop_map(|(a, b)| ChatId::direct(a, b)),
        any::<u128>().prop_map(ChatId::group),
    ]
}

fn body() -> impl Strategy<Value = Body<'static>> {
    let max = Limits::default().body_bytes_max;
    prop_oneof![
        // 1 to 1,000 characters of any script (at most 4 bytes each, so within 4 KiB): an
        // empty text body without attachments is not a message.
        "\\PC{1,1000}"
            .prop_map(|s| Body::Text(std::str::from_utf8(leak(s.into_bytes())).expect("utf8"))),
        prop::collection::vec(any::<u8>(), 1..=max).prop_map(|b| Body::Opaque(leak(b))),
    ]
}

fn attachments() -> impl Strategy<Value = &'static [AttachmentId]> {
    let max = Limits::default().attachments_per_message_max;
    prop::collection::vec(1..=u128::MAX, 0..=max).prop_map(|ids| {
        leak(
            ids.into_iter()
                .map(|i| AttachmentId::new(i).expect("nonzero"))
                .collect(),
        )
    })
}

/// Flips up to 8 bytes of `bytes` at the given positions and values.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
    if !bytes.is_empty() {
        for &(at, value) in edits {
            let len = bytes.len();
            bytes[at % len] ^= value;
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2_048)) {
        let limits = Limits::default();
        let _ = wire::decode_client(&bytes, &limits);
        let _ = wire::decode_server(&bytes, &limits);
    }

    #[test]
    fn mutated_frames_never_panic_and_what_decodes_re_encodes(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<usize>(), 1..=u8::MAX), 1..8),
    ) {
        let limits = Limits::default();
        let clients = client_samples();
        let client = mutate(client_bytes(&clients[pick.index(clients.len())]), &edits);
        if let Ok(frame) = wire::decode_client(&client, &limits) {
            let again = client_bytes(&frame);
            prop_assert_eq!(wire::decode_client(&again, &limits), Ok(frame));
        }
        let servers = server_samples();
        let server = mutate(server_bytes(&servers[pick.index(servers.len())]), &edits);
        if let Ok(frame) = wire::decode_server(&server, &limits) {
            let again = server_bytes(&frame);
            prop_assert_eq!(wire::decode_server(&again, &limits), Ok(frame));
        }
    }

    #[test]
    fn send_message_round_trips(
        request_id in any::<u64>(),
        chat in chat(),
        client_msg_id in 1..=u64::MAX,
        body in body(),
        attachments in attachments(),
    ) {
        let frame = ClientFrame {
            request_id,
            request: Request::SendMessage(SendMessage { chat, client_msg_id, body, attachments }),
        };
        let bytes = client_bytes(&frame);
        prop_assert_eq!(wire::decode_client(&bytes, &Limits::default()), Ok(frame));
    }

    #[test]
    fn create_chat_round_trips(
        request_id in any::<u64>(),
        name in "\\PC{0,64}",
        members in prop::collection::vec(user(), 0..1_024),
        history in any::<bool>(),
    ) {
        let frame = ClientFrame {
            request_id,
            request: Request::CreateChat(CreateChat {
                name: std::str::from_utf8(leak(name.into_bytes())).expect("utf8"),
                members: leak(members),
                history,
            }),
        };
        let bytes = client_bytes(&frame);
        prop_assert_eq!(wire::decode_client(&bytes, &Limits::default()), Ok(frame));
    }

    #[test]
    fn new_message_round_trips(
        chat in chat(),
        seq in 1..=u64::MAX,
        server_msg_id in 1..=u128::MAX,
        sender in user(),
        device in 1..=u64::MAX,
        client_msg_id in any::<u64>(),
        ts_ms in any::<u64>(),
        body in body(),
        attachments in attachments(),
    ) {
        let frame = ServerFrame::NewMessage(NewMessage {
            chat,
            seq,
            server_msg_id: MessageId::new(server_msg_id).expect("nonzero"),
            sender,
            sender_device: DeviceId::new(device).expect("nonzero"),
            client_msg_id,
            ts_ms,
            body,
            attachments,
        });
        let bytes = server_bytes(&frame);
        prop_assert_eq!(wire::decode_server(&bytes, &Limits::default()), Ok(frame));
    }
}
