//! Applying durable write batches to the index: the one place the index's rows change
//! (with [`super::sweep`], which runs on the same thread).
//!
//! Owns the translation of each [`Mutation`] into rows (see [`super::layout`]). Runs on the
//! applier thread, and at open on the opening thread for the log's tail, in LSN order. The
//! writer thread's gate has already checked seqs and chat existence, so this trusts them.
//!
//! Invariant: applying is deterministic given the index state, so replaying the log from
//! `apply_from` after a crash rebuilds exactly the state the lost applies would have made.

use wire::ids::{ChatId, ChatKind, DeviceId, UserId};

use super::attachments;
use super::codec::{Enc, encode_entry};
use super::engine::Batch;
use super::index::{self, Result, Txn, View};
use super::layout::{self as l, ChatMeta};
use super::pending::SentKey;
use crate::log::Lsn;
use crate::model::{Change, Entry, Millis, Mutation, ReceiptKind, Role, Seq, Update, WriteBatch};

/// Buffers the applier reuses from batch to batch, so applying allocates nothing per message
/// beyond the rows themselves.
#[derive(Default)]
pub(crate) struct Scratch {
    entry: Vec<u8>,
    expiring: Vec<l::Expiring>,
    /// The idempotency keys written since the caller last cleared it (for
    /// [`super::sent_bounds`]).
    sent_keys: Vec<SentKey>,
    /// The row buffer of the applier's transactions, lent to each in turn.
    rows: Batch,
}

impl Scratch {
    /// The row buffer, empty, for a transaction ([`Txn::reusing`]); hand it back with
    /// [`Scratch::return_rows`].
    pub(crate) fn take_rows(&mut self) -> Batch {
        std::mem::take(&mut self.rows)
    }

    /// Keeps `rows` (emptied by a commit) for the next transaction.
    pub(crate) fn return_rows(&mut self, rows: Batch) {
        self.rows = rows;
    }

    /// The idempotency keys applied since the last clear; the caller clears it.
    pub(crate) fn sent_keys(&mut self) -> &mut Vec<SentKey> {
        &mut self.sent_keys
    }
}

/// Applies one batch, log record `lsn`, inside `txn`.
pub(crate) fn apply_batch(
    txn: &mut Txn<'_>,
    lsn: Lsn,
    batch: &WriteBatch,
    scratch: &mut Scratch,
) -> Result<()> {
    scratch.expiring.clear();
    for m in &batch.mutations {
        match m {
            Mutation::Append { chat, seq, entry } => append(txn, *chat, *seq, entry, scratch)?,
            Mutation::Cursor {
                chat,
                user,
                device,
                kind,
                up_to_seq,
            } => {
                let read = *kind == ReceiptKind::Read;
                advance_cursor(txn, *chat, *user, *device, *up_to_seq, read)?;
            }
            Mutation::DeviceSeen {
                user,
                device,
                at_ms,
            } => device_seen(txn, *user, *device, *at_ms)?,
            Mutation::PutAttachment(a) => attachments::put(txn, a),
            Mutation::DeleteAttachment(id) => attachments::delete(txn, *id)?,
        }
    }
    if let Some((key, value)) = l::expiring_row(&scratch.expiring, lsn) {
        txn.put_blind(key, value);
    }
    Ok(())
}

fn append(
    txn: &mut Txn<'_>,
    chat: ChatId,
    seq: Seq,
    entry: &Entry,
    scratch: &mut Scratch,
) -> Result<()> {
    // The writer's gate admitted `seq` as the chat's head + 1: seq 1 creates the chat, and no
    // other append needs to read anything. The head is a row of its own, so an append writes
    // it without reading (and decoding, and rewriting) the chat's row.
    if seq == 1 {
        let meta = create(txn, chat, entry);
        txn.put(l::chat(chat), meta.encode());
    }
    txn.put(l::head(chat), l::vars(&[seq]));
    scratch.entry.clear();
    encode_entry(&mut Enc(&mut scratch.entry), chat, seq, entry);
    txn.put_blind(l::entry(chat, seq), scratch.entry.as_slice());
    match entry {
        Entry::Message(m) => {
            let (user, device, client_msg_id) = m.idempotency_key();
            let record = m.sent_record(chat, seq);
            txn.put_blind(l::sent(user, device, client_msg_id), l::sent_value(&record));
            scratch.sent_keys.push((user, device, client_msg_id));
            scratch.expiring.push(l::Expiring {
                user,
                device,
                client_msg_id,
                ts_ms: m.ts_ms,
            });
            attachments::referenced(txn, chat, seq, &m.attachments);
        }
        Entry::Update(update) => change_members(txn, chat, seq, update)?,
    }
    Ok(())
}

/// The row of a chat created by `first` (its seq-1 entry); founders become members.
fn create(txn: &mut Txn<'_>, chat: ChatId, first: &Entry) -> ChatMeta {
    let mut meta = ChatMeta {
        name: String::new(),
        history: false,
        created_ms: first.ts_ms(),
        head: 1,
    };
    if let (ChatKind::Direct, Some((a, b))) = (chat.kind(), chat.direct_users()) {
        join(txn, chat, a, Role::Member, 1);
        join(txn, chat, b, Role::Member, 1);
    } else if let Entry::Update(Update {
        change:
            Change::Created {
                name,
                history,
                members,
            },
        ..
    }) = first
    {
        meta.name.clone_from(name);
        meta.history = *history;
        for &(user, role) in members {
            join(txn, chat, user, role, 1);
        }
    }
    meta
}

fn join(txn: &mut Txn<'_>, chat: ChatId, user: UserId, role: Role, seq: Seq) {
    txn.put(l::member(chat, user), l::member_value(role, seq));
    txn.delete(l::left(chat, user));
    txn.put(l::user_chat(user, chat), vec![0]);
}

fn leave(txn: &mut Txn<'_>, chat: ChatId, user: UserId, seq: Seq) -> Result<()> {
    if let Some((_, joined)) = index::member(txn, chat, user)? {
        txn.delete(l::member(chat, user));
        txn.put(l::left(chat, user), l::vars(&[joined, seq]));
        txn.put(l::user_chat(user, chat), vec![1]);
    }
    Ok(())
}

fn change_members(txn: &mut Txn<'_>, chat: ChatId, seq: Seq, update: &Update) -> Result<()> {
    match &update.change {
        // Founders were added with the chat.
        Change::Created { .. } => {}
        Change::Added(users) => {
            for &user in users {
                if index::member(txn, chat, user)?.is_none() {
                    // A returning user's devices start at the new join, not where they were:
                    // what was said while it was away is not for it.
                    for (key, _) in txn.scan(l::user_cursors(chat, user).as_ref())? {
                        txn.delete(&key);
                    }
                    join(txn, chat, user, Role::Member, seq);
                }
            }
        }
        Change::Removed(users) => {
            for &user in users {
                leave(txn, chat, user, seq)?;
            }
        }
        Change::Left => leave(txn, chat, update.actor, seq)?,
        Change::Promoted(users) => {
            for &user in users {
                if let Some((_, joined)) = index::member(txn, chat, user)? {
                    txn.put(l::member(chat, user), l::member_value(Role::Admin, joined));
                }
            }
        }
    }
    Ok(())
}

/// Moves a cursor forward (clamped to the head); `read` moves both cursors.
fn advance_cursor(
    txn: &mut Txn<'_>,
    chat: ChatId,
    user: UserId,
    device: DeviceId,
    up_to: Seq,
    read: bool,
) -> Result<()> {
    let Some(head) = index::head(txn, chat)? else {
        // The gate refuses cursors for unknown chats; nothing to do if it is gone.
        return Ok(());
    };
    let up_to = up_to.min(head);
    let (delivered, read_seq) = match index::cursor(txn, chat, user, device)? {
        Some(c) => c,
        None => (default_delivered(txn, chat, user)?, 0),
    };
    let new = (
        delivered.max(up_to),
        if read { read_seq.max(up_to) } else { read_seq },
    );
    if new != (delivered, read_seq) {
        txn.put(l::cursor(chat, user, device), l::vars(&[new.0, new.1]));
    }
    Ok(())
}

/// What a device with no cursor row has delivered: everything before its user joined.
pub(crate) fn default_delivered(v: &impl View, chat: ChatId, user: UserId) -> Result<Seq> {
    if let Some((_, joined)) = index::member(v, chat, user)? {
        return Ok(joined.saturating_sub(1));
    }
    Ok(index::lefts(v, chat)?
        .into_iter()
        .find(|(u, _, _)| *u == user)
        .map_or(0, |(_, joined, _)| joined.saturating_sub(1)))
}

/// Registers a new device (cursors at the heads of its user's chats) or refreshes last-seen.
fn device_seen(txn: &mut Txn<'_>, user: UserId, device: DeviceId, at: Millis) -> Result<()> {
    let key = l::device(user, device);
    if let Some(bytes) = txn.get(key.as_ref())? {
        let [registered, seen] = l::read_vars(&bytes)?;
        if at > seen {
            txn.put(key, l::vars(&[registered, at]));
        }
        return Ok(());
    }
    txn.put(key, l::vars(&[at, at]));
    for (chat, is_member) in index::user_chats(txn, user)? {
        if !is_member {
            continue;
        }
        if let Some(head) = index::head(txn, chat)? {
            let (delivered, read) = index::cursor(txn, chat, user, device)?.unwrap_or((0, 0));
            txn.put(
                l::cursor(chat, user, device),
                l::vars(&[delivered.max(head), read.max(head)]),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use wire::ids::MessageId;

    use super::*;
    use crate::model::{BodyKind, Message};

    pub(crate) fn user(id: u64) -> UserId {
        UserId::new(id).expect("valid user")
    }

    /// Message `seq` of user 1 (device 1) to user 2, client id `seq`.
    pub(crate) fn append(seq: Seq) -> Mutation {
        Mutation::Append {
            chat: ChatId::direct(user(1), user(2)),
            seq,
            entry: Arc::new(Entry::Message(Message {
                server_msg_id: MessageId::new(u128::from(seq)).expect("nonzero"),
                sender: user(1),
                sender_device: DeviceId::new(1).expect("valid device"),
                client_msg_id: seq,
                ts_ms: 1_000 + seq,
                kind: BodyKind::Text,
                body: vec![7; 10],
                attachments: Vec::new(),
            })),
        }
    }

    /// A chat that store format 1 wrote (its head only in its row, at 5) reads its head from
    /// that row; the first append after the upgrade writes a head row, which wins from then on.
    #[test]
    fn a_chat_written_before_head_rows_keeps_its_head_until_an_append_writes_one() {
        let (_dir, tree) = index::temp();
        let chat = ChatId::direct(user(1), user(2));
        let format_1_row = ChatMeta {
            name: "old".to_owned(),
            history: true,
            created_ms: 9,
            head: 5,
        };
        let mut txn = Txn::new(&tree);
        txn.put(l::chat(chat), format_1_row.encode());
        txn.commit().expect("commit");

        assert_eq!(index::head(&txn, chat).expect("head"), Some(5));
        let heads = |tree| super::super::read::heads(tree).expect("heads");
        assert_eq!(heads(&tree).get(&chat), Some(&5));

        let mut scratch = Scratch::default();
        let batch = WriteBatch {
            mutations: vec![
                append(6),
                append(7),
                Mutation::Cursor {
                    chat,
                    user: user(2),
                    device: DeviceId::new(3).expect("valid device"),
                    kind: ReceiptKind::Delivered,
                    up_to_seq: 99,
                },
            ],
        };
        apply_batch(&mut txn, 1, &batch, &mut scratch).expect("apply");
        txn.commit().expect("commit");

        assert_eq!(index::head(&txn, chat).expect("head"), Some(7));
        let meta = index::chat_meta(&txn, chat).expect("meta").expect("a chat");
        assert_eq!(
            (meta.name.as_str(), meta.history, meta.head),
            ("old", true, 7)
        );
        assert_eq!(heads(&tree).get(&chat), Some(&7));
        // The cursor in the same batch saw the new head (clamped to 7, not to 5).
        let cursor = index::cursor(&txn, chat, user(2), DeviceId::new(3).expect("valid"));
        assert_eq!(cursor.expect("cursor"), Some((7, 0)));
    }
}
