//! Hot paths of the wire codec: encoding a `NewMessage`, verifying and decoding a `SendMessage`,
//! and `encode_ws` of a 100-byte body (what the gateway does once per fan-out).
//!
//! Goals (issue 3): decode+verify of a 100-byte `SendMessage` under 150 ns, encode under 100 ns.
//! Compare figures as ratios within one run; this machine is noisy.
// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use wire::{
    AttachmentId, Body, ChatId, ClientFrame, DeviceId, Encoder, Limits, MessageId, NewMessage,
    Request, SendMessage, ServerFrame, UserId,
};

/// A 100-byte text body (the design's average text message).
const BODY_100: &str = "0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ \
                        0123456789abcdefghijklmnopqrstuvwxyz";

fn new_message(body: &str) -> ServerFrame<'_> {
    let alice = UserId::new(1_001).expect("valid");
    let bob = UserId::new(2_002).expect("valid");
    ServerFrame::NewMessage(NewMessage {
        chat: ChatId::direct(alice, bob),
        seq: 123_456,
        server_msg_id: MessageId::new(0xDEAD_BEEF).expect("valid"),
        sender: alice,
        sender_device: DeviceId::new(1).expect("valid"),
        client_msg_id: 77,
        ts_ms: 1_795_000_000_000,
        body: Body::Text(body),
        attachments: &[],
    })
}

fn send_message_bytes(limits: &Limits) -> Vec<u8> {
    let alice = UserId::new(1_001).expect("valid");
    let bob = UserId::new(2_002).expect("valid");
    let attachments = [AttachmentId::new(5).expect("valid")];
    let frame = ClientFrame {
        request_id: 42,
        request: Request::SendMessage(SendMessage {
            chat: ChatId::direct(alice, bob),
            client_msg_id: 77,
            body: Body::Text(BODY_100),
            attachments: &attachments[..0],
        }),
    };
    Encoder::new(limits)
        .encode_client(&frame)
        .expect("fits")
        .to_vec()
}

fn wire_benches(c: &mut Criterion) {
    assert_eq!(BODY_100.len(), 100, "the benchmark body is 100 bytes");
    let limits = Limits::default();
    let mut encoder = Encoder::new(&limits);
    let frame = new_message(BODY_100);
    let encoded_len = encoder.encode_server(&frame).expect("fits").len();

    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Bytes(encoded_len as u64));
    g.bench_function("encode_new_message_100b", |b| {
        b.iter(|| encoder.encode_server(black_box(&frame)).map(<[u8]>::len));
    });

    let bytes = send_message_bytes(&limits);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("decode_verify_send_message_100b", |b| {
        b.iter(|| wire::decode_client(black_box(&bytes), &limits).map(|f| f.request_id));
    });

    // The FlatBuffers verifier alone: how much of decode is the library's structural check.
    let opts = flatbuffers::VerifierOptions {
        max_depth: limits.verify_depth_max,
        max_tables: limits.verify_tables_max,
        max_apparent_size: limits.frame_bytes_max,
        ignore_missing_null_terminator: false,
    };
    g.bench_function("verify_only_send_message_100b", |b| {
        b.iter(|| {
            flatbuffers::root_with_opts::<wire::fb::ClientFrame>(&opts, black_box(&bytes))
                .map(|f| f.request_id())
        });
    });

    let mut out = Vec::with_capacity(512);
    g.throughput(Throughput::Bytes(encoded_len as u64 + 2));
    g.bench_function("encode_ws_new_message_100b", |b| {
        b.iter(|| {
            out.clear();
            encoder.encode_ws(black_box(&frame), &mut out)
        });
    });
    g.finish();
}

criterion_group!(benches, wire_benches);
criterion_main!(benches);
