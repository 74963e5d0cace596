//! The embedded backend's byte encodings: write-ahead-log records and index values.
//!
//! Hand-rolled on purpose: these bytes are the durable format (versioned with the data
//! directory, see `docs/ARCHITECTURE.md`), ids are fixed-size arrays that need no framing, and
//! the writer thread reads a record's *claims* (which chat and seq each mutation touches)
//! without decoding bodies. Integers are LEB128 varints; ids are their raw bytes; byte
//! strings are a varint length then the bytes.
//!
//! A WAL record is one [`WriteBatch`]:
//! `claims_count, claims…, mutations_count, mutations…` where a claim is
//! `tag u8, chat [16], seq varint` (tag 0 append, 1 append of `Created`, 2 cursor).
//!
//! Invariant: `decode(encode(x)) == x` for every value (tested); a decode of bytes that are
//! not an encoding fails with [`CodecError`], never panics (the log's CRC already rejected
//! torn or flipped bytes, so a failure here means a bug or a foreign format).

use wire::ids::{AttachmentId, ChatId, DeviceId, MessageId, Sha256, UserId};

use crate::model::{
    Attachment, BodyKind, Change, Entry, Message, Mutation, ReceiptKind, Role, Seq, Update,
    WriteBatch, message_id,
};

/// Bytes that are not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable store bytes: {0}")]
pub(crate) struct CodecError(pub(crate) &'static str);

type Result<T> = std::result::Result<T, CodecError>;

/// What a mutation claims about a chat's log, checked by the writer thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// An append at `seq`; `creates_group` when the entry is `Change::Created`.
    Append {
        chat: ChatId,
        seq: Seq,
        creates_group: bool,
    },
    /// A cursor move: the chat must exist.
    Cursor { chat: ChatId },
}

/// Appends encodings to a buffer.
pub(crate) struct Enc<'a>(pub(crate) &'a mut Vec<u8>);

impl Enc<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub(crate) fn var(&mut self, mut v: u64) {
        while v >= 0x80 {
            // Truncation keeps the low 7 bits, which is the point.
            #[allow(clippy::cast_possible_truncation)]
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        #[allow(clippy::cast_possible_truncation)]
        self.0.push(v as u8);
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.var(bytes.len() as u64);
        self.raw(bytes);
    }
}

/// Reads encodings from a slice.
pub(crate) struct Dec<'a>(pub(crate) &'a [u8]);

impl<'a> Dec<'a> {
    pub(crate) fn u8(&mut self) -> Result<u8> {
        let (&b, rest) = self.0.split_first().ok_or(CodecError("truncated"))?;
        self.0 = rest;
        Ok(b)
    }

    pub(crate) fn var(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError("varint too long"))
    }

    pub(crate) fn len(&mut self) -> Result<usize> {
        let n = usize::try_from(self.var()?).map_err(|_| CodecError("length"))?;
        if n > self.0.len() {
            return Err(CodecError("length past the end"));
        }
        Ok(n)
    }

    pub(crate) fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(CodecError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.raw(n)
    }

    pub(crate) fn chat(&mut self) -> Result<ChatId> {
        ChatId::from_bytes(self.array()?).ok_or(CodecError("chat id"))
    }

    pub(crate) fn user(&mut self) -> Result<UserId> {
        UserId::from_bytes(self.array()?).ok_or(CodecError("user id"))
    }

    pub(crate) fn attachment(&mut self) -> Result<AttachmentId> {
        AttachmentId::from_bytes(self.array()?).ok_or(CodecError("attachment id"))
    }

    pub(crate) fn device(&mut self) -> Result<DeviceId> {
        DeviceId::from_bytes(self.array()?).ok_or(CodecError("device id"))
    }

    pub(crate) fn end(&self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CodecError("trailing bytes"))
        }
    }

    /// A count of items that each take at least `min_bytes`, checked against what is left so
    /// a corrupt count cannot ask for a huge allocation.
    fn count(&mut self, min_bytes: usize) -> Result<usize> {
        let n = usize::try_from(self.var()?).map_err(|_| CodecError("count"))?;
        if n.saturating_mul(min_bytes) > self.0.len() {
            return Err(CodecError("count past the end"));
        }
        Ok(n)
    }
}

/// Encodes a WAL record for `batch` into `out` (cleared first).
pub(crate) fn encode_batch(batch: &WriteBatch, out: &mut Vec<u8>) {
    out.clear();
    let mut e = Enc(out);
    let claims = batch
        .mutations
        .iter()
        .filter(|m| matches!(m, Mutation::Append { .. } | Mutation::Cursor { .. }))
        .count();
    e.var(claims as u64);
    for m in &batch.mutations {
        match m {
            Mutation::Append { chat, seq, entry } => {
                let creates = matches!(
                    &**entry,
                    Entry::Update(Update {
                        change: Change::Created { .. },
                        ..
                    })
                );
                e.u8(u8::from(creates));
                e.raw(chat.as_bytes());
                e.var(*seq);
            }
            Mutation::Cursor { chat, .. } => {
                e.u8(2);
                e.raw(chat.as_bytes());
                e.var(0);
            }
            Mutation::DeviceSeen { .. }
            | Mutation::PutAttachment(_)
            | Mutation::DeleteAttachment(_) => {}
        }
    }
    e.var(batch.mutations.len() as u64);
    for m in &batch.mutations {
        encode_mutation(&mut e, m);
    }
}

/// Reads the claims at the front of a WAL record.
pub(crate) fn decode_claims(record: &[u8], claims: &mut Vec<Claim>) -> Result<()> {
    claims.clear();
    let mut d = Dec(record);
    let n = d.count(18)?;
    for _ in 0..n {
        let tag = d.u8()?;
        let chat = d.chat()?;
        let seq = d.var()?;
        claims.push(match tag {
            0 | 1 => Claim::Append {
                chat,
                seq,
                creates_group: tag == 1,
            },
            2 => Claim::Cursor { chat },
            _ => return Err(CodecError("claim tag")),
        });
    }
    Ok(())
}

/// Decodes a whole WAL record.
pub(crate) fn decode_batch(record: &[u8]) -> Result<WriteBatch> {
    let mut d = Dec(record);
    let n = d.count(18)?;
    for _ in 0..n {
        d.u8()?;
        d.chat()?;
        d.var()?;
    }
    let n = d.count(1)?;
    let mut mutations = Vec::with_capacity(n);
    for _ in 0..n {
        mutations.push(decode_mutation(&mut d)?);
    }
    d.end()?;
    Ok(WriteBatch { mutations })
}

fn encode_mutation(e: &mut Enc<'_>, m: &Mutation) {
    match m {
        Mutation::Append { chat, seq, entry } => {
            e.u8(0);
            e.raw(chat.as_bytes());
            e.var(*seq);
            encode_entry(e, *chat, *seq, entry);
        }
        Mutation::Cursor {
            chat,
            user,
            device,
            kind,
            up_to_seq,
        } => {
            e.u8(1);
            e.raw(chat.as_bytes());
            e.raw(user.as_bytes());
            e.raw(device.as_bytes());
            e.u8(kind.raw());
            e.var(*up_to_seq);
        }
        Mutation::DeviceSeen {
            user,
            device,
            at_ms,
        } => {
            e.u8(2);
            e.raw(user.as_bytes());
            e.raw(device.as_bytes());
            e.var(*at_ms);
        }
        Mutation::PutAttachment(a) => {
            e.u8(3);
            e.raw(a.id.as_bytes());
            encode_attachment(e, a);
        }
        Mutation::DeleteAttachment(id) => {
            e.u8(4);
            e.raw(id.as_bytes());
        }
    }
}

fn decode_mutation(d: &mut Dec<'_>) -> Result<Mutation> {
    Ok(match d.u8()? {
        0 => {
            let (chat, seq) = (d.chat()?, d.var()?);
            Mutation::Append {
                chat,
                seq,
                entry: decode_entry_from(d, chat, seq)?.into(),
            }
        }
        1 => Mutation::Cursor {
            chat: d.chat()?,
            user: d.user()?,
            device: d.device()?,
            kind: ReceiptKind::from_raw(d.u8()?).ok_or(CodecError("receipt kind"))?,
            up_to_seq: d.var()?,
        },
        2 => Mutation::DeviceSeen {
            user: d.user()?,
            device: d.device()?,
            at_ms: d.var()?,
        },
        3 => {
            let id = d.attachment()?;
            Mutation::PutAttachment(decode_attachment(d, id)?)
        }
        4 => Mutation::DeleteAttachment(d.attachment()?),
        _ => return Err(CodecError("mutation tag")),
    })
}

/// Encodes an attachment record but its id (also the index row's value, keyed by the id).
pub(crate) fn encode_attachment(e: &mut Enc<'_>, a: &Attachment) {
    e.raw(a.user.as_bytes());
    e.raw(a.device.as_bytes());
    e.var(a.size);
    e.raw(a.sha256.as_bytes());
    e.bytes(a.mime.as_bytes());
    e.var(a.created_ms);
    e.u8(u8::from(a.verified));
}

/// Decodes what [`encode_attachment`] wrote, for attachment `id`.
pub(crate) fn decode_attachment(d: &mut Dec<'_>, id: AttachmentId) -> Result<Attachment> {
    Ok(Attachment {
        id,
        user: d.user()?,
        device: d.device()?,
        size: d.var()?,
        sha256: Sha256::new(d.array()?),
        mime: std::str::from_utf8(d.bytes()?)
            .map_err(|_| CodecError("mime"))?
            .to_owned(),
        created_ms: d.var()?,
        verified: d.u8()? != 0,
    })
}

/// Encodes `chat`'s entry `seq` (a log record's, and the value stored under `(chat, seq)` in
/// the index). A message whose id is the one [`message_id`] derives from `(chat, seq)` (every
/// message the router sequences) is tagged 2 and its id left out, 16 bytes less per message
/// in the log and in the index; any other id is kept (tag 0, as format 3 wrote every message).
pub(crate) fn encode_entry(e: &mut Enc<'_>, chat: ChatId, seq: Seq, entry: &Entry) {
    match entry {
        Entry::Message(m) => {
            if m.server_msg_id == message_id(chat, seq) {
                e.u8(2);
            } else {
                e.u8(0);
                e.raw(m.server_msg_id.as_bytes());
            }
            e.raw(m.sender.as_bytes());
            e.raw(m.sender_device.as_bytes());
            e.var(m.client_msg_id);
            e.var(m.ts_ms);
            e.u8(m.kind.raw());
            e.bytes(&m.body);
            e.var(m.attachments.len() as u64);
            for a in &m.attachments {
                e.raw(a.as_bytes());
            }
        }
        Entry::Update(u) => {
            e.u8(1);
            e.var(u.ts_ms);
            e.raw(u.actor.as_bytes());
            match &u.change {
                Change::Created {
                    name,
                    history,
                    members,
                } => {
                    e.u8(0);
                    e.bytes(name.as_bytes());
                    e.u8(u8::from(*history));
                    e.var(members.len() as u64);
                    for (user, role) in members {
                        e.raw(user.as_bytes());
                        e.u8(role.raw());
                    }
                }
                Change::Added(users) => users_change(e, 1, users),
                Change::Removed(users) => users_change(e, 2, users),
                Change::Promoted(users) => users_change(e, 3, users),
                Change::Left => e.u8(4),
            }
        }
    }
}

fn users_change(e: &mut Enc<'_>, tag: u8, users: &[UserId]) {
    e.u8(tag);
    e.var(users.len() as u64);
    for u in users {
        e.raw(u.as_bytes());
    }
}

/// Decodes `chat`'s entry `seq` as stored in the index.
pub(crate) fn decode_entry(bytes: &[u8], chat: ChatId, seq: Seq) -> Result<Entry> {
    let mut d = Dec(bytes);
    let entry = decode_entry_from(&mut d, chat, seq)?;
    d.end()?;
    Ok(entry)
}

fn decode_entry_from(d: &mut Dec<'_>, chat: ChatId, seq: Seq) -> Result<Entry> {
    Ok(match d.u8()? {
        tag @ (0 | 2) => {
            let server_msg_id = if tag == 2 {
                message_id(chat, seq)
            } else {
                MessageId::from_bytes(d.array()?).ok_or(CodecError("msg id"))?
            };
            let sender = d.user()?;
            let sender_device = d.device()?;
            let client_msg_id = d.var()?;
            let ts_ms = d.var()?;
            let kind = BodyKind::from_raw(d.u8()?).ok_or(CodecError("body kind"))?;
            let body = d.bytes()?.to_vec();
            let n = d.count(AttachmentId::SIZE)?;
            let mut attachments = Vec::with_capacity(n);
            for _ in 0..n {
                attachments
                    .push(AttachmentId::from_bytes(d.array()?).ok_or(CodecError("attachment"))?);
            }
            Entry::Message(Message {
                server_msg_id,
                sender,
                sender_device,
                client_msg_id,
                ts_ms,
                kind,
                body,
                attachments,
            })
        }
        1 => {
            let ts_ms = d.var()?;
            let actor = d.user()?;
            let change = match d.u8()? {
                0 => {
                    let name = std::str::from_utf8(d.bytes()?)
                        .map_err(|_| CodecError("name"))?
                        .to_owned();
                    let history = d.u8()? != 0;
                    let n = d.count(UserId::SIZE + 1)?;
                    let mut members = Vec::with_capacity(n);
                    for _ in 0..n {
                        let user = d.user()?;
                        let role = Role::from_raw(d.u8()?).ok_or(CodecError("role"))?;
                        members.push((user, role));
                    }
                    Change::Created {
                        name,
                        history,
                        members,
                    }
                }
                tag @ 1..=3 => {
                    let n = d.count(UserId::SIZE)?;
                    let mut users = Vec::with_capacity(n);
                    for _ in 0..n {
                        users.push(d.user()?);
                    }
                    match tag {
                        1 => Change::Added(users),
                        2 => Change::Removed(users),
                        _ => Change::Promoted(users),
                    }
                }
                4 => Change::Left,
                _ => return Err(CodecError("change tag")),
            };
            Entry::Update(Update {
                ts_ms,
                actor,
                change,
            })
        }
        _ => return Err(CodecError("entry tag")),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn user(n: u64) -> UserId {
        UserId::new(n).expect("valid")
    }

    fn sample() -> WriteBatch {
        let group = ChatId::group(0x8000_0000_0000_0000_0000_0000_0000_0042);
        let direct = ChatId::direct(user(1), user(2));
        let dev = DeviceId::new(7).expect("valid");
        WriteBatch {
            mutations: vec![
                Mutation::Append {
                    chat: group,
                    seq: 1,
                    entry: Arc::new(Entry::Update(Update {
                        ts_ms: 5,
                        actor: user(1),
                        change: Change::Created {
                            name: "team ✓".into(),
                            history: true,
                            members: vec![(user(1), Role::Admin), (user(3), Role::Member)],
                        },
                    })),
                },
                Mutation::Append {
                    chat: direct,
                    seq: 300,
                    entry: Arc::new(Entry::Message(Message {
                        server_msg_id: MessageId::new(9).expect("valid"),
                        sender: user(1),
                        sender_device: dev,
                        client_msg_id: u64::MAX,
                        ts_ms: 1_700_000_000_000,
                        kind: BodyKind::Opaque,
                        body: vec![0, 1, 2, 255],
                        attachments: vec![AttachmentId::new(4).expect("valid")],
                    })),
                },
                Mutation::Append {
                    chat: group,
                    seq: 2,
                    entry: Arc::new(Entry::Update(Update {
                        ts_ms: 6,
                        actor: user(1),
                        change: Change::Removed(vec![user(3)]),
                    })),
                },
                Mutation::Append {
                    chat: group,
                    seq: 3,
                    entry: Arc::new(Entry::Update(Update {
                        ts_ms: 6,
                        actor: user(1),
                        change: Change::Left,
                    })),
                },
                Mutation::Cursor {
                    chat: direct,
                    user: user(2),
                    device: dev,
                    kind: ReceiptKind::Read,
                    up_to_seq: 299,
                },
                Mutation::DeviceSeen {
                    user: user(2),
                    device: dev,
                    at_ms: 77,
                },
                Mutation::PutAttachment(crate::model::Attachment {
                    id: AttachmentId::new(9).expect("valid"),
                    user: user(2),
                    device: dev,
                    size: 100 << 20,
                    sha256: Sha256::new([0xab; 32]),
                    mime: "image/jpeg".into(),
                    created_ms: 78,
                    verified: true,
                }),
                Mutation::DeleteAttachment(AttachmentId::new(u128::MAX).expect("valid")),
            ],
        }
    }

    #[test]
    fn batches_round_trip_and_claims_say_what_they_touch() {
        let batch = sample();
        let mut buf = Vec::new();
        encode_batch(&batch, &mut buf);
        assert_eq!(decode_batch(&buf), Ok(batch.clone()));
        let mut claims = Vec::new();
        decode_claims(&buf, &mut claims).expect("claims");
        let Mutation::Append { chat: group, .. } = batch.mutations[0] else {
            unreachable!()
        };
        let Mutation::Append { chat: direct, .. } = batch.mutations[1] else {
            unreachable!()
        };
        assert_eq!(
            claims,
            vec![
                Claim::Append {
                    chat: group,
                    seq: 1,
                    creates_group: true
                },
                Claim::Append {
                    chat: direct,
                    seq: 300,
                    creates_group: false
                },
                Claim::Append {
                    chat: group,
                    seq: 2,
                    creates_group: false
                },
                Claim::Append {
                    chat: group,
                    seq: 3,
                    creates_group: false
                },
                Claim::Cursor { chat: direct },
            ]
        );
    }

    /// Format 4 leaves out an id it can derive; what format 3 wrote (every id in full) still
    /// decodes to the same entry, and an id it cannot derive is kept.
    #[test]
    fn a_derived_message_id_is_left_out_and_a_full_one_still_reads() {
        let chat = ChatId::direct(user(1), user(2));
        let message = |server_msg_id| {
            Entry::Message(Message {
                server_msg_id,
                sender: user(1),
                sender_device: DeviceId::new(3).expect("valid"),
                client_msg_id: 17,
                ts_ms: 1_700_000_000_000,
                kind: BodyKind::Text,
                body: b"hello".to_vec(),
                attachments: Vec::new(),
            })
        };
        let encoded = |entry: &Entry| {
            let mut out = Vec::new();
            encode_entry(&mut Enc(&mut out), chat, 42, entry);
            out
        };
        let derived = message(message_id(chat, 42));
        let other = message(MessageId::new(9).expect("valid"));
        let (short, full) = (encoded(&derived), encoded(&other));
        assert_eq!(short.len() + MessageId::SIZE, full.len());
        assert_eq!(short[0], 2, "tagged as derived");
        assert_eq!(decode_entry(&short, chat, 42), Ok(derived.clone()));
        assert_eq!(decode_entry(&full, chat, 42), Ok(other));
        // Format 3's bytes for the derived id: tag 0 and the id in full.
        let mut format_3 = vec![0];
        format_3.extend_from_slice(message_id(chat, 42).as_bytes());
        format_3.extend_from_slice(&short[1..]);
        assert_eq!(decode_entry(&format_3, chat, 42), Ok(derived));
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        encode_batch(&sample(), &mut buf);
        for n in 0..buf.len() {
            assert!(decode_batch(&buf[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut bytes = buf.clone();
            let i = usize::try_from(x % bytes.len() as u64).expect("fits");
            bytes[i] ^= u8::try_from(x >> 56).expect("fits") | 1;
            let _ = decode_batch(&bytes);
            let _ = decode_claims(&bytes, &mut Vec::new());
        }
    }
}
