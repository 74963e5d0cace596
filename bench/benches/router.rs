//! The router's state machines per message: the chat owner sequencing a send (request in,
//! batch out, durability in, answer and delivery out) and a device session taking a live
//! entry (what each recipient connection costs before its frame is queued).
//!
//! Goals (issue 6): owner work per message well under 1 µs (a core must sequence ≥ 150,000
//! messages/s beside its other work); per-recipient session work in the tens of ns, so a
//! group of 1,024 costs one encoding plus ~1,024 cheap pushes. Compare figures as ratios within
//! one run; this machine is noisy.
// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use router::owner::{Input, Owner, OwnerLimits};
use router::session::Session;
use router::types::{Action, Op, Origin};
use store::model::{BodyKind, Entry, Message, SyncChat};
use wire::{ChatId, DeviceId, MessageId, UserId};

const BODY_100: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ \
                          0123456789abcdefghijklmnopqrstuvwxyz";

fn user(n: u64) -> UserId {
    UserId::new(n).expect("valid")
}

fn device(n: u64) -> DeviceId {
    DeviceId::new(n).expect("valid")
}

/// An owner with `chats` direct chats loaded (empty), ready to sequence.
fn warm_owner(chats: u64) -> Owner {
    let mut owner = Owner::new(OwnerLimits::default());
    let mut out = Vec::new();
    for c in 0..chats {
        let chat = ChatId::direct(user(1 + 2 * c), user(2 + 2 * c));
        let origin = Origin {
            user: user(1 + 2 * c),
            device: device(1),
            request_id: 0,
            reply_to: 0,
        };
        owner.handle(Input::Request(origin, Op::Typing { chat }), 1_000, &mut out);
        owner.handle(Input::Loaded(chat, Ok(None)), 1_000, &mut out);
        out.clear();
    }
    owner
}

/// One tick of `n` sends spread over the owner's chats: requests, lookups answered "absent",
/// flush, durability. Returns the actions of the last step (answers and deliveries).
fn tick(owner: &mut Owner, chats: u64, n: u64, next_id: &mut u64, out: &mut Vec<Action>) {
    for i in 0..n {
        let c = i % chats;
        *next_id += 1;
        let origin = Origin {
            user: user(1 + 2 * c),
            device: device(1),
            request_id: *next_id,
            reply_to: 0,
        };
        let op = Op::Send {
            chat: ChatId::direct(user(1 + 2 * c), user(2 + 2 * c)),
            client_msg_id: *next_id,
            kind: BodyKind::Text,
            body: BODY_100.to_vec(),
            attachments: Vec::new(),
        };
        owner.handle(Input::Request(origin, op), 2_000, out);
        let key = (origin.user, origin.device, *next_id);
        owner.handle(Input::LookedUp(key, Ok(None)), 2_000, out);
    }
    out.clear();
    owner.handle(Input::Flush, 2_000, out);
    let Some(Action::Write(id, _)) = out.pop() else {
        panic!("a flush with pending sends writes");
    };
    out.clear();
    owner.handle(Input::Written(id, Ok(())), 2_000, out);
}

fn owner_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("router/owner");
    for batch in [1_u64, 64] {
        g.throughput(Throughput::Elements(batch));
        g.bench_function(
            format!("send_sequenced_durable_delivered/batch_{batch}"),
            |b| {
                let chats = 100;
                let mut owner = warm_owner(chats);
                let mut next_id = 0;
                let mut out = Vec::new();
                b.iter(|| {
                    tick(&mut owner, chats, batch, &mut next_id, &mut out);
                    black_box(out.len());
                });
            },
        );
    }
    g.finish();
}

fn session_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("router/session");
    let chat = ChatId::direct(user(1), user(2));
    let entry = Arc::new(Entry::Message(Message {
        server_msg_id: MessageId::new(9).expect("valid"),
        sender: user(1),
        sender_device: device(1),
        client_msg_id: 1,
        ts_ms: 1,
        kind: BodyKind::Text,
        body: BODY_100.to_vec(),
        attachments: Vec::new(),
    }));
    // One iteration is 1,000 entries, so the throughput reads as entries per second.
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("live_entry_per_recipient", |b| {
        b.iter_batched_ref(
            || {
                let mut s = Session::new(user(2), device(1));
                let plan = [SyncChat {
                    chat,
                    delivered_seq: 0,
                    read_seq: 0,
                    until_seq: 0,
                }];
                s.plan(&plan, &mut Vec::new());
                (s, Vec::with_capacity(4), 0_u64)
            },
            |(s, out, seq)| {
                for _ in 0..1_000 {
                    *seq += 1;
                    s.live(chat, *seq, &entry, out);
                    out.clear();
                }
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, owner_benches, session_benches);
criterion_main!(benches);
