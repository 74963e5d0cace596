//! Helper process for the store's SIGKILL crash test (`tests/store_crash.rs`): not a tool.
//!
//! `store-crash-harness <dir> <round>` opens the embedded store in `<dir>` (replaying its
//! log), prints `open <replayed> <torn_bytes>`, then sends messages from two threads until
//! killed. Thread `t` owns the direct chats of user `100 + t` with users 1..=5 (so seqs are
//! assigned by one thread per chat, as the router does) and keeps a few write batches of 1–4
//! messages in flight. When a batch's reply resolves it prints `ack <chat> <seq>
//! <client_msg_id>` per message and flushes, so every line the test reads was acknowledged
//! before the process died. Small log segments and frequent checkpoints make the kills land
//! during rollovers, index checkpoints and segment deletions too.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::block_on;
use store::embedded::{EmbeddedOptions, EmbeddedStore};
use store::log::LogOptions;
use store::model::{BodyKind, Entry, Message, Mutation, ReceiptKind, WriteBatch};
use store::{Store, StoreReply};
use wire::ids::{ChatId, DeviceId, MessageId, UserId};

const THREADS: u64 = 2;
const PEERS: u64 = 5;
const IN_FLIGHT_MAX: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(round)) = (args.next(), args.next()) else {
        return Err("usage: store-crash-harness <dir> <round>".into());
    };
    let round: u64 = round.parse()?;
    let options = EmbeddedOptions {
        log: LogOptions {
            segment_bytes_max: 64 * 1024,
            ..LogOptions::default()
        },
        checkpoint_bytes: 32 * 1024,
        checkpoint_interval: Duration::from_millis(20),
        ..EmbeddedOptions::default()
    };
    let store = std::sync::Arc::new(EmbeddedStore::open(&dir, options)?);
    let report = store.open_report();
    println!("open {} {}", report.replayed, report.torn_bytes_dropped);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let store = store.clone();
            scope.spawn(move || produce(&store, round, t));
        }
    });
    Ok(())
}

fn user(n: u64) -> UserId {
    UserId::new(n).expect("a valid user id")
}

/// A write in flight: its reply, its chat, and the `(seq, client_msg_id)` of its messages.
type InFlight = (StoreReply<()>, ChatId, Vec<(u64, u64)>);

/// Sends forever, printing each acknowledged message in order.
fn produce(store: &EmbeddedStore, round: u64, t: u64) {
    let me = user(100 + t);
    let device = DeviceId::new(1).expect("valid");
    let chats: Vec<ChatId> = (1..=PEERS).map(|p| ChatId::direct(me, user(p))).collect();
    let mut heads = Vec::new();
    for &chat in &chats {
        match block_on(store.chat(chat)) {
            Ok(state) => heads.push(state.map_or(0, |s| s.head)),
            Err(error) => {
                println!("err reading {chat:?}: {error}");
                return;
            }
        }
    }
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    for n in 0_u64.. {
        let i = usize::try_from(n % PEERS).expect("small");
        let chat = chats[i];
        let mut mutations = Vec::new();
        let mut sent = Vec::new();
        for k in 0..=(n % 4) {
            heads[i] += 1;
            let client_msg_id = (round << 40) | (t << 32) | (n * 4 + k + 1);
            sent.push((heads[i], client_msg_id));
            mutations.push(Mutation::Append {
                chat,
                seq: heads[i],
                entry: Arc::new(Entry::Message(Message {
                    server_msg_id: MessageId::new(u128::from(client_msg_id)).expect("nonzero"),
                    sender: me,
                    sender_device: device,
                    client_msg_id,
                    ts_ms: 1_000 + n,
                    kind: BodyKind::Text,
                    body: format!("m{client_msg_id}").into_bytes(),
                    attachments: Vec::new(),
                })),
            });
        }
        if n % 7 == 0 {
            mutations.push(Mutation::Cursor {
                chat,
                user: me,
                device,
                kind: ReceiptKind::Delivered,
                up_to_seq: heads[i],
            });
        }
        in_flight.push_back((store.write(WriteBatch { mutations }), chat, sent));
        if in_flight.len() < IN_FLIGHT_MAX {
            continue;
        }
        let (reply, chat, sent) = in_flight.pop_front().expect("the queue is full");
        let mut out = std::io::stdout().lock();
        let hex = hex::encode(chat.as_bytes());
        let written = match block_on(reply) {
            Ok(()) => sent
                .iter()
                .try_for_each(|(seq, id)| writeln!(out, "ack {hex} {seq} {id}")),
            Err(error) => {
                let _ = writeln!(out, "err {hex} {error}");
                return;
            }
        };
        if written.and_then(|()| out.flush()).is_err() {
            return; // The test stopped reading.
        }
    }
}
