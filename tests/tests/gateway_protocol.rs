//! Proves the gateway speaks RFC 6455 and docs/PROTOCOL.md on an upgraded connection, with raw
//! frames on a real socket: every request gets exactly one `Result` with its `request_id`; a
//! request type it does not handle is `Unsupported` (and an unknown one too); bytes that are not
//! a `ClientFrame` are `Malformed` with `request_id` 0; a request the decoder refuses gets the
//! decoder's code and its id; messages are reassembled from fragments (with a ping between them)
//! and may be exactly `frame_bytes_max` (65,536 bytes) long. It closes with 1003 on text, 1009
//! over the size limit (fragmented or not), and 1002 on an unmasked frame, reserved bits, an
//! unknown opcode, a fragmented control frame or a stray continuation; after its close frame it
//! ends the TCP connection. A ping gets a pong with the same payload, and a client's close is
//! answered. The connection stays open after every per-request error.

use std::time::Duration;

use switchboard_tests::gateway::{Gateway, IO_TIMEOUT};
use switchboard_tests::ws::{self, Closed, Incoming, WsClient, op};
use wire::ws::close;
use wire::{
    AttachmentId, Body, ChatId, ClientFrame, Encoder, ErrorCode, Limits, Request, SendMessage,
    SetPresence, UserId, fb,
};

const ALICE: u64 = 1001;
const BOB: u64 = 1002;
const DEVICE: u64 = 7;
/// `Limits::default().frame_bytes_max`.
const FRAME_BYTES_MAX: usize = 65_536;

fn user(id: u64) -> UserId {
    UserId::new(id).expect("test user ids are valid")
}

fn set_presence(request_id: u64) -> ClientFrame<'static> {
    ClientFrame {
        request_id,
        request: Request::SetPresence(SetPresence { online: true }),
    }
}

fn send_message<'a>(request_id: u64, body: Body<'a>, atts: &'a [AttachmentId]) -> ClientFrame<'a> {
    ClientFrame {
        request_id,
        request: Request::SendMessage(SendMessage {
            chat: ChatId::direct(user(ALICE), user(BOB)),
            client_msg_id: 1,
            body,
            attachments: atts,
        }),
    }
}

/// A `ClientFrame` built by hand: any union type, with an empty table as body or none.
fn raw_client_frame(request_id: u64, body_type: u8, with_body: bool) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let body = with_body.then(|| {
        let start = fbb.start_table();
        fbb.end_table(start).as_union_value()
    });
    let args = fb::ClientFrameArgs {
        request_id,
        body_type: fb::ClientBody(body_type),
        body,
    };
    let root = fb::ClientFrame::create(&mut fbb, &args);
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

fn encode(frame: &ClientFrame<'_>) -> Vec<u8> {
    Encoder::new(&Limits::default())
        .encode_client(frame)
        .expect("fits frame_bytes_max")
        .to_vec()
}

/// The connection still answers requests.
fn assert_open(client: &mut WsClient, request_id: u64) {
    let (id, code, reason) = client.request(&set_presence(request_id), IO_TIMEOUT);
    assert_eq!(
        id, request_id,
        "a Result for another request: {code:?} {reason}"
    );
}

/// The next thing from the server is a close frame with `code`, then the TCP connection ends
/// once we answer it.
fn assert_closed_with(client: &mut WsClient, code: u16, what: &str) {
    let (closed, skipped) = client
        .expect_close(IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(closed.code(), Some(code), "{what}: {closed:?}");
    assert!(
        skipped.is_empty(),
        "{what}: frames before the close: {skipped:?}"
    );
    let _ = client.send_close(code);
    assert_tcp_ends(client, what);
}

fn assert_tcp_ends(client: &mut WsClient, what: &str) {
    match client.recv(IO_TIMEOUT) {
        Ok(Incoming::Eof { .. }) => {}
        Err(e) if e.kind() != std::io::ErrorKind::TimedOut => {} // reset: also ended
        other => panic!("{what}: the TCP connection did not end after the close: {other:?}"),
    }
}

#[test]
fn every_request_gets_exactly_one_result_with_its_id() {
    let gw = Gateway::start();
    let mut client = gw.connect(ALICE, DEVICE);
    let ids: Vec<u64> = (1..=50).map(|i| i * 1_000_003).chain([u64::MAX]).collect();
    let mut batch = Vec::new();
    let mut enc = Encoder::new(&Limits::default());
    for &id in &ids {
        enc.encode_ws_client(&set_presence(id), ws::random_bytes(), &mut batch)
            .expect("fits");
    }
    client.write_raw(&batch).expect("pipelining 51 requests");
    let mut got: Vec<u64> = (0..ids.len())
        .map(|_| client.expect_result(IO_TIMEOUT).0)
        .collect();
    got.sort_unstable();
    assert_eq!(got, ids, "one Result per request, matched by request_id");
    match client.next_message(Duration::from_millis(300)) {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("nothing more was asked, got {other:?}"),
    }
}

#[test]
fn a_request_the_gateway_does_not_handle_is_unsupported() {
    let gw = Gateway::start();
    let mut client = gw.connect(ALICE, DEVICE);
    // A union member unknown to this server (PROTOCOL.md §4.1 check 4, §10): always Unsupported.
    client
        .send_binary(&raw_client_frame(0xFEED, 200, true))
        .expect("send");
    let (id, code, _) = client.expect_result(IO_TIMEOUT);
    assert_eq!((id, code), (0xFEED, ErrorCode::Unsupported));
    // One that it does: SetPresence.
    let (id, code, _) = client.request(&set_presence(0xBEE5), IO_TIMEOUT);
    assert_eq!((id, code), (0xBEE5, ErrorCode::Ok));
    assert_open(&mut client, 3);
}

#[test]
fn bytes_that_are_not_a_client_frame_are_malformed_with_request_id_0() {
    let gw = Gateway::start();
    let mut client = gw.connect(ALICE, DEVICE);
    for (what, payload) in [
        ("text bytes", b"hello, this is not a flatbuffer".to_vec()),
        ("empty message", Vec::new()),
        ("a truncated frame", encode(&set_presence(9))[..10].to_vec()),
    ] {
        client.send_binary(&payload).expect("send");
        let (id, code, reason) = client.expect_result(IO_TIMEOUT);
        assert_eq!((id, code), (0, ErrorCode::Malformed), "{what}: {reason}");
    }
    assert_open(&mut client, 4);
}

#[test]
fn a_request_refused_by_the_decoder_gets_its_code_and_id() {
    let gw = Gateway::start();
    let mut client = gw.connect(ALICE, DEVICE);
    let atts: Vec<AttachmentId> = (1..=11)
        .map(|i| AttachmentId::new(i).expect("nonzero"))
        .collect();
    let long = [0xAB; 4097];
    let cases = [
        (
            "an 11th attachment",
            encode(&send_message(21, Body::Text("hi"), &atts)),
            21,
            ErrorCode::TooManyAttachments,
        ),
        (
            "a 4097-byte body",
            encode(&send_message(22, Body::Opaque(&long), &[])),
            22,
            ErrorCode::BodyTooLong,
        ),
        (
            "no body",
            raw_client_frame(23, 0, false),
            23,
            ErrorCode::Malformed,
        ),
    ];
    for (what, payload, want_id, want_code) in cases {
        client.send_binary(&payload).expect("send");
        let (id, code, reason) = client.expect_result(IO_TIMEOUT);
        assert_eq!((id, code), (want_id, want_code), "{what}: {reason}");
    }
    assert_open(&mut client, 24);
}

#[test]
fn a_message_of_exactly_frame_bytes_max_is_read_whole_or_in_fragments() {
    let gw = Gateway::start();
    let mut client = gw.connect(ALICE, DEVICE);
    // Not a ClientFrame, so its answer is Malformed with request_id 0 (and not a close 1009).
    let payload = vec![0x5A; FRAME_BYTES_MAX];
    client.send_binary(&payload).expect("send");
    let (id, code, reason) = client.expect_result(IO_TIMEOUT);
    assert_eq!((id, code), (0, ErrorCode::Malformed), "one frame: {reason}");

    let quarter = FRAME_BYTES_MAX / 4;
    let mut wire = ws::encode_frame(
        false,
        0,
        op::BINARY,
        Some(ws::random_bytes()),
        &payload[..quarter],
    );
    for (i, chunk) in payload[quarter..].chunks(quarter).enumerate() {
        let fin = i == 2;
        wire.extend(ws::encode_frame(
            fin,
            0,
            op::CONTINUATION,
            Some(ws::random_bytes()),
            chunk,
        ));
    }
    client.write_raw(&wire).expect("send fragments");
    let (id, code, reason) = client.expect_result(IO_TIMEOUT);
    assert_eq!(
        (id, code),
        (0, ErrorCode::Malformed),
        "four fragments: {reason}"
    );
    assert_open(&mut client, 5);
}

#[test]
fn a_fragmented_request_is_reassembled_around_a_ping() {
    let gw = Gateway::start();
    let mut client = gw.connect(ALICE, DEVICE);
    let bytes = encode(&set_presence(0x5EED));
    let (a, rest) = bytes.split_at(bytes.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mask = ws::random_bytes;
    let mut wire = ws::encode_frame(false, 0, op::BINARY, Some(mask()), a);
    wire.extend(ws::encode_frame(
        false,
        0,
        op::CONTINUATION,
        Some(mask()),
        b,
    ));
    // Control frames may come between fragments (RFC 6455 §5.4).
    wire.extend(ws::encode_frame(true, 0, op::PING, Some(mask()), b"mid"));
    wire.extend(ws::encode_frame(true, 0, op::CONTINUATION, Some(mask()), c));
    client.write_raw(&wire).expect("send");
    let mut pong = false;
    let mut result = None;
    while result.is_none() {
        match client.recv(IO_TIMEOUT) {
            Ok(Incoming::Frame(f)) if f.opcode == op::PONG => {
                assert_eq!(f.payload, b"mid", "pong payload");
                pong = true;
            }
            Ok(Incoming::Frame(f)) if f.opcode == op::BINARY => {
                result = Some(ws::decode(&f.payload));
            }
            other => panic!("expected a pong and a Result, got {other:?}"),
        }
    }
    let Some(Ok(ws::ServerMsg::Result { request_id, .. })) = result else {
        panic!("expected a Result, got {result:?}");
    };
    assert_eq!(request_id, 0x5EED);
    assert!(pong, "no pong for the ping between fragments");
}

#[test]
fn a_message_over_frame_bytes_max_closes_1009() {
    let gw = Gateway::start();
    let mut whole = gw.connect(ALICE, DEVICE);
    whole
        .send_binary(&vec![0; FRAME_BYTES_MAX + 1])
        .expect("send");
    assert_closed_with(
        &mut whole,
        close::MESSAGE_TOO_BIG,
        "one frame of 65,537 bytes",
    );

    // Three fragments of 30,000 bytes: each fits, the message does not.
    let mut split = gw.connect(BOB, DEVICE);
    let chunk = vec![0; 30_000];
    let mut wire = ws::encode_frame(false, 0, op::BINARY, Some(ws::random_bytes()), &chunk);
    wire.extend(ws::encode_frame(
        false,
        0,
        op::CONTINUATION,
        Some(ws::random_bytes()),
        &chunk,
    ));
    wire.extend(ws::encode_frame(
        true,
        0,
        op::CONTINUATION,
        Some(ws::random_bytes()),
        &chunk,
    ));
    // The gateway may close before reading it all; a reset on our write is fine.
    let _ = split.write_raw(&wire);
    assert_closed_with(
        &mut split,
        close::MESSAGE_TOO_BIG,
        "90,000 bytes in 3 fragments",
    );
}

#[test]
fn a_text_message_closes_1003() {
    let gw = Gateway::start();
    let mut client = gw.connect(ALICE, DEVICE);
    client
        .send_frame(true, op::TEXT, true, b"hello")
        .expect("send");
    assert_closed_with(&mut client, close::UNSUPPORTED_DATA, "a text frame");
}

/// Each of these is a WebSocket protocol violation: close 1002.
#[test]
fn protocol_violations_close_1002() {
    let gw = Gateway::start();
    let request = encode(&set_presence(1));
    let mask = || Some(ws::random_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an unmasked frame",
            ws::encode_frame(true, 0, op::BINARY, None, &request),
        ),
        (
            "RSV1 set",
            ws::encode_frame(true, 0b100, op::BINARY, mask(), &request),
        ),
        (
            "RSV3 set",
            ws::encode_frame(true, 0b001, op::BINARY, mask(), &request),
        ),
        (
            "data opcode 0x3",
            ws::encode_frame(true, 0, 0x3, mask(), &request),
        ),
        (
            "control opcode 0xB",
            ws::encode_frame(true, 0, 0xB, mask(), b""),
        ),
        (
            "a fragmented ping",
            ws::encode_frame(false, 0, op::PING, mask(), b"x"),
        ),
        (
            "a stray continuation",
            ws::encode_frame(true, 0, op::CONTINUATION, mask(), &request),
        ),
        (
            "a ping over 125 bytes",
            ws::encode_frame(true, 0, op::PING, mask(), &[1; 126]),
        ),
        ("a new message inside a fragmented one", {
            let mut w = ws::encode_frame(false, 0, op::BINARY, mask(), &request[..4]);
            w.extend(ws::encode_frame(true, 0, op::BINARY, mask(), &request));
            w
        }),
    ];
    for (i, (what, wire)) in cases.into_iter().enumerate() {
        let mut client = gw.connect(ALICE + i as u64, DEVICE);
        client.write_raw(&wire).expect("send");
        assert_closed_with(&mut client, close::PROTOCOL_ERROR, what);
    }
}

#[test]
fn a_ping_gets_a_pong_with_the_same_payload() {
    let gw = Gateway::start();
    let mut client = gw.connect(ALICE, DEVICE);
    for payload in [Vec::new(), b"hello".to_vec(), (0..125).collect()] {
        client
            .send_frame(true, op::PING, true, &payload)
            .expect("send");
        match client.recv(IO_TIMEOUT) {
            Ok(Incoming::Frame(f)) => {
                assert_eq!((f.opcode, f.fin), (op::PONG, true), "{f:?}");
                assert_eq!(f.payload, payload, "pong payload");
            }
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    assert_open(&mut client, 6);
}

#[test]
fn a_clients_close_is_answered_and_the_connection_ends() {
    let gw = Gateway::start();
    let mut client = gw.connect(ALICE, DEVICE);
    client.send_close(close::NORMAL).expect("send");
    let (closed, skipped) = client.expect_close(IO_TIMEOUT).expect("a close in reply");
    assert!(matches!(closed, Closed::Frame { .. }), "{closed:?}");
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_tcp_ends(&mut client, "after the close handshake");
}
