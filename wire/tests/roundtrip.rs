//! Every frame survives encode → decode unchanged, on its own and inside a WebSocket frame, and
//! the samples really cover every frame type.

mod common;

use common::{client_bytes, client_samples, server_bytes, server_samples};
use std::collections::HashSet;
use wire::{Encoder, Limits, Payload, Request, ServerFrame, ws};

#[test]
fn every_client_frame_round_trips() {
    let limits = Limits::default();
    for frame in client_samples() {
        let bytes = client_bytes(&frame);
        let decoded =
            wire::decode_client(&bytes, &limits).unwrap_or_else(|e| panic!("{frame:?}: {e}"));
        assert_eq!(decoded, frame);
    }
}

#[test]
fn every_server_frame_round_trips() {
    let limits = Limits::default();
    for frame in server_samples() {
        let bytes = server_bytes(&frame);
        let decoded =
            wire::decode_server(&bytes, &limits).unwrap_or_else(|e| panic!("{frame:?}: {e}"));
        assert_eq!(decoded, frame);
        // A decoded frame (history pages still borrowed from the buffer) re-encodes identically.
        assert_eq!(server_bytes(&decoded), bytes, "{frame:?}");
    }
}

#[test]
fn samples_cover_every_frame_and_payload() {
    let requests: HashSet<_> = client_samples()
        .iter()
        .map(|f| match f.request {
            Request::CreateChat(_) => 0,
            Request::ModifyParticipants(_) => 1,
            Request::SendMessage(_) => 2,
            Request::CreateAttachment(_) => 3,
            Request::GetAttachmentUrl(_) => 4,
            Request::Delivered(_) => 5,
            Request::Read(_) => 6,
            Request::Typing(_) => 7,
            Request::SetPresence(_) => 8,
            Request::SubscribePresence(_) => 9,
            Request::FetchHistory(_) => 10,
        })
        .collect();
    assert_eq!(requests.len(), 11);
    let frames: HashSet<_> = server_samples()
        .iter()
        .map(|f| match f {
            ServerFrame::Result(r) => match r.payload {
                Payload::None => 0,
                Payload::Sent(_) => 1,
                Payload::ChatCreated(_) => 2,
                Payload::AttachmentCreated(_) => 3,
                Payload::AttachmentUrl(_) => 4,
                Payload::HistoryPage(_) => 5,
            },
            ServerFrame::NewMessage(_) => 6,
            ServerFrame::ChatUpdate(_) => 7,
            ServerFrame::Receipt(_) => 8,
            ServerFrame::Presence(_) => 9,
            ServerFrame::Typing(_) => 10,
            ServerFrame::SyncDone(_) => 11,
            ServerFrame::Truncated(_) => 12,
            ServerFrame::GoAway(_) => 13,
        })
        .collect();
    assert_eq!(frames.len(), 14);
}

/// Parses one unfragmented frame as a client would: (opcode, payload unmasked).
fn parse_ws(frame: &[u8]) -> (u8, Vec<u8>) {
    assert_eq!(frame[0] & 0x80, 0x80, "FIN");
    let masked = frame[1] & 0x80 != 0;
    let (len, mut at) = match frame[1] & 0x7F {
        126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
        127 => (
            usize::try_from(u64::from_be_bytes(frame[2..10].try_into().expect("8"))).expect("fits"),
            10,
        ),
        n => (usize::from(n), 2),
    };
    let mut key = [0; 4];
    if masked {
        key.copy_from_slice(&frame[at..at + 4]);
        at += 4;
    }
    assert_eq!(frame.len(), at + len, "header length matches payload");
    let payload = frame[at..]
        .iter()
        .zip(key.iter().cycle())
        .map(|(b, k)| b ^ k)
        .collect();
    (frame[0] & 0x0F, payload)
}

#[test]
fn encode_ws_writes_one_complete_frame_per_call() {
    let limits = Limits::default();
    let mut encoder = Encoder::new(&limits);
    let mut out = Vec::new();
    for frame in server_samples() {
        out.clear();
        encoder.encode_ws(&frame, &mut out).expect("fits");
        let (opcode, payload) = parse_ws(&out);
        assert_eq!(opcode, ws::OPCODE_BINARY);
        assert_eq!(wire::decode_server(&payload, &limits), Ok(frame));
    }
    for frame in client_samples() {
        out.clear();
        encoder
            .encode_ws_client(&frame, [0xA5, 0x5A, 0x0F, 0xF0], &mut out)
            .expect("fits");
        let (opcode, payload) = parse_ws(&out);
        assert_eq!(opcode, ws::OPCODE_BINARY);
        assert_eq!(wire::decode_client(&payload, &limits), Ok(frame));
    }
}

#[test]
fn a_reused_encoder_gives_the_same_bytes_as_a_fresh_one() {
    let mut encoder = Encoder::new(&Limits::default());
    for _ in 0..3 {
        for frame in server_samples() {
            assert_eq!(
                encoder.encode_server(&frame).expect("fits"),
                server_bytes(&frame).as_slice()
            );
        }
        for frame in client_samples() {
            assert_eq!(
                encoder.encode_client(&frame).expect("fits"),
                client_bytes(&frame).as_slice()
            );
        }
    }
}

#[test]
fn frames_borrow_from_the_buffer_without_copying() {
    let limits = Limits::default();
    let frame = client_samples()
        .into_iter()
        .find(|f| matches!(f.request, Request::SendMessage(_)));
    let bytes = client_bytes(&frame.expect("a send sample"));
    let Ok(wire::ClientFrame {
        request: Request::SendMessage(m),
        ..
    }) = wire::decode_client(&bytes, &limits)
    else {
        panic!("decodes as SendMessage");
    };
    let range = bytes.as_ptr_range();
    assert!(
        range.contains(&m.body.as_bytes().as_ptr()),
        "body points into the frame"
    );
    assert!(
        range.contains(&m.attachments.as_ptr().cast()),
        "attachment ids point into the frame"
    );
}
