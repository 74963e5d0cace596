//! One direct chat's messages, for the embedded store's integration tests.

use futures_lite::future::block_on;
use std::sync::Arc;
use store::Store;
use store::embedded::EmbeddedStore;
use store::model::{BodyKind, Entry, Message, Mutation, WriteBatch};
use wire::ids::{ChatId, DeviceId, MessageId, UserId};

pub fn user(n: u64) -> UserId {
    UserId::new(n).expect("valid user")
}

pub fn device() -> DeviceId {
    DeviceId::new(1).expect("valid device")
}

pub fn chat() -> ChatId {
    ChatId::direct(user(1), user(2))
}

pub fn message(seq: u64) -> WriteBatch {
    WriteBatch {
        mutations: vec![Mutation::Append {
            chat: chat(),
            seq,
            entry: Arc::new(Entry::Message(Message {
                server_msg_id: MessageId::new(u128::from(seq)).expect("nonzero"),
                sender: user(1),
                sender_device: device(),
                client_msg_id: seq,
                ts_ms: 1_000 + seq,
                kind: BodyKind::Text,
                body: vec![u8::try_from(seq % 251).expect("small"); 100],
                attachments: Vec::new(),
            })),
        }],
    }
}

/// `n` messages to `chat()` after `seq`, which ends at the last.
pub fn messages(seq: &mut u64, n: u64) -> WriteBatch {
    let mut batch = WriteBatch::default();
    for _ in 0..n {
        *seq += 1;
        batch.mutations.extend(message(*seq).mutations);
    }
    batch
}

pub fn head(store: &EmbeddedStore) -> u64 {
    block_on(store.chat(chat()))
        .expect("read")
        .map_or(0, |c| c.head)
}
