//! Attachments in the embedded index: their records, the references messages make to them,
//! and the queries over both (DESIGN.md F8).
//!
//! Owns two tables (see [`super::layout`]): `a` (attachment → its [`Attachment`] record) and
//! `r` (attachment, chat, seq → nothing: the message at `(chat, seq)` references it). A
//! reference counts while its message is retained (`floor <= seq <= head`); references to
//! removed messages stay until the attachment is deleted, and are ignored meanwhile, so
//! retention never has to decode the entries it removes.
//!
//! Invariant: an attachment's rows are deleted together (`Mutation::DeleteAttachment`), after
//! its blob.

use wire::ids::{AttachmentId, ChatId};

use super::codec::{CodecError, Dec, Enc, decode_attachment, encode_attachment};
use super::index::{self, Result, Txn, View};
use super::layout::{ATTACHMENT, ATTACHMENT_REF, Key, KeyParts};
use crate::model::{Attachment, Millis, Seq};

fn key(id: AttachmentId) -> Key {
    Key::new(ATTACHMENT).with(id.as_bytes())
}

fn reference(id: AttachmentId, chat: ChatId, seq: Seq) -> Key {
    Key::new(ATTACHMENT_REF)
        .with(id.as_bytes())
        .with(chat.as_bytes())
        .seq(seq)
}

fn references(id: AttachmentId) -> Key {
    Key::new(ATTACHMENT_REF).with(id.as_bytes())
}

fn encode(a: &Attachment) -> Vec<u8> {
    let mut out = Vec::with_capacity(80 + a.mime.len());
    encode_attachment(&mut Enc(&mut out), a);
    out
}

fn decode(id: AttachmentId, bytes: &[u8]) -> std::result::Result<Attachment, CodecError> {
    let mut d = Dec(bytes);
    let a = decode_attachment(&mut d, id)?;
    d.end()?;
    Ok(a)
}

/// `Mutation::PutAttachment`.
pub(crate) fn put(txn: &mut Txn<'_>, a: &Attachment) {
    txn.put(key(a.id), encode(a));
}

/// `Mutation::DeleteAttachment`: the record and every reference.
pub(crate) fn delete(txn: &mut Txn<'_>, id: AttachmentId) -> Result<()> {
    txn.delete(key(id));
    for (k, _) in txn.scan(references(id).as_ref())? {
        txn.delete(&k);
    }
    Ok(())
}

/// The message at `(chat, seq)` references `ids`.
pub(crate) fn referenced(txn: &mut Txn<'_>, chat: ChatId, seq: Seq, ids: &[AttachmentId]) {
    for &id in ids {
        txn.put_blind(reference(id, chat, seq), Vec::new());
    }
}

/// An attachment's record.
pub(crate) fn get(v: &impl View, id: AttachmentId) -> Result<Option<Attachment>> {
    Ok(match v.get(key(id).as_ref())? {
        Some(bytes) => Some(decode(id, &bytes)?),
        None => None,
    })
}

/// Whether a retained message references `id` (in `chat` only, when given).
pub(crate) fn is_referenced(v: &impl View, id: AttachmentId, chat: Option<ChatId>) -> Result<bool> {
    let prefix = match chat {
        Some(chat) => references(id).with(chat.as_bytes()),
        None => references(id),
    };
    for (k, _) in v.scan(prefix.as_ref())? {
        let mut parts = KeyParts::new(&k, AttachmentId::SIZE)?;
        let (chat, seq) = (parts.chat()?, parts.u64()?);
        // A reference is written with its message, in the batch that makes `seq` the chat's
        // head, and heads never go down: only the floor decides whether it is retained.
        if seq >= index::floor(v, chat)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Up to `limit` attachments created at or before `created_before` that no retained message
/// references, ascending by id. Scans every attachment record: the sweep runs it rarely, and
/// its cost grows with the attachments kept.
pub(crate) fn unreferenced(
    v: &impl View,
    created_before: Millis,
    limit: usize,
) -> Result<Vec<AttachmentId>> {
    let mut out = Vec::new();
    for (k, value) in v.scan(&[ATTACHMENT])? {
        if out.len() >= limit {
            break;
        }
        let bytes: [u8; AttachmentId::SIZE] = k
            .get(1..)
            .and_then(|b| b.try_into().ok())
            .ok_or(CodecError("attachment key"))?;
        let id = AttachmentId::from_bytes(bytes).ok_or(CodecError("attachment id"))?;
        let a = decode(id, &value)?;
        if a.created_ms <= created_before && !is_referenced(v, id, None)? {
            out.push(id);
        }
    }
    Ok(out)
}
