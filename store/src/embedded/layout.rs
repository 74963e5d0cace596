//! The embedded index's key space: one LSM tree, one prefix byte per table.
//!
//! Owns every key and value shape in the index (`docs/ARCHITECTURE.md` lists them). Keys are
//! big-endian fixed-size ids, so a prefix scan returns rows in id order and a chat's entries
//! in seq order. Values use [`super::codec`].
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `c` | chat | [`ChatMeta`] (written when the chat is created; its `head` is read only when `h` has no row) |
//! | `h` | chat | head: the chat's last seq, rewritten by every append without reading anything |
//! | `f` | chat | floor: the lowest retained seq (absent = 1) |
//! | `e` | chat, seq | an encoded [`crate::model::Entry`] (a derived message id left out: [`super::codec::encode_entry`]) |
//! | `m` | chat, user | current member: role, joined seq |
//! | `l` | chat, user | former member: joined seq, left seq (until its devices have it) |
//! | `u` | user, chat | the user's chats: 0 member, 1 former member |
//! | `k` | chat, user, device | cursor: delivered, read |
//! | `d` | user, device | device: registered, last seen |
//! | `s` | user, device, client_msg_id | idempotency answer: chat, seq, msg id (unless derived), ts |
//! | `t` | oldest ts, LSN | expiry index of `s`: (user, device, client_msg_id, ts) of each message of that log record |
//! | `a` | attachment | [`crate::model::Attachment`] (see [`super::attachments`]) |
//! | `r` | attachment, chat, seq | nothing: that message references the attachment |
//! | `z` | name | store metadata (`apply_from`: the next LSN to apply) |

use wire::ids::{ChatId, DeviceId, MessageId, UserId};

use super::codec::{CodecError, Dec, Enc};
use crate::log::Lsn;
use crate::model::{Millis, Role, SentRecord, Seq, message_id};

pub(crate) const CHAT: u8 = b'c';
pub(crate) const HEAD: u8 = b'h';
pub(crate) const FLOOR: u8 = b'f';
pub(crate) const ENTRY: u8 = b'e';
pub(crate) const MEMBER: u8 = b'm';
pub(crate) const LEFT: u8 = b'l';
pub(crate) const USER_CHAT: u8 = b'u';
pub(crate) const CURSOR: u8 = b'k';
pub(crate) const DEVICE: u8 = b'd';
pub(crate) const SENT: u8 = b's';
pub(crate) const SENT_BY_TIME: u8 = b't';
pub(crate) const ATTACHMENT: u8 = b'a';
pub(crate) const ATTACHMENT_REF: u8 = b'r';

/// The metadata key holding the next LSN to apply.
pub(crate) const APPLY_FROM: &[u8] = b"zapply_from";

/// A key built on the stack (the longest is 41 bytes).
#[derive(Clone, Copy)]
pub(crate) struct Key {
    buf: [u8; 48],
    len: usize,
}

impl Key {
    pub(crate) fn new(prefix: u8) -> Self {
        let mut buf = [0; 48];
        buf[0] = prefix;
        Self { buf, len: 1 }
    }

    pub(crate) fn with(mut self, part: &[u8]) -> Self {
        self.buf[self.len..self.len + part.len()].copy_from_slice(part);
        self.len += part.len();
        self
    }

    pub(crate) fn seq(self, seq: Seq) -> Self {
        self.with(&seq.to_be_bytes())
    }

    /// A copy of `bytes` as a key; `None` if longer than any key this layout builds.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut buf = [0; 48];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Self {
            buf,
            len: bytes.len(),
        })
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_ref() == other.as_ref()
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

pub(crate) fn chat(c: ChatId) -> Key {
    Key::new(CHAT).with(c.as_bytes())
}

pub(crate) fn head(c: ChatId) -> Key {
    Key::new(HEAD).with(c.as_bytes())
}

pub(crate) fn floor(c: ChatId) -> Key {
    Key::new(FLOOR).with(c.as_bytes())
}

pub(crate) fn entry(c: ChatId, seq: Seq) -> Key {
    Key::new(ENTRY).with(c.as_bytes()).seq(seq)
}

pub(crate) fn member(c: ChatId, u: UserId) -> Key {
    Key::new(MEMBER).with(c.as_bytes()).with(u.as_bytes())
}

pub(crate) fn members(c: ChatId) -> Key {
    Key::new(MEMBER).with(c.as_bytes())
}

pub(crate) fn left(c: ChatId, u: UserId) -> Key {
    Key::new(LEFT).with(c.as_bytes()).with(u.as_bytes())
}

pub(crate) fn lefts(c: ChatId) -> Key {
    Key::new(LEFT).with(c.as_bytes())
}

pub(crate) fn user_chat(u: UserId, c: ChatId) -> Key {
    Key::new(USER_CHAT).with(u.as_bytes()).with(c.as_bytes())
}

pub(crate) fn user_chats(u: UserId) -> Key {
    Key::new(USER_CHAT).with(u.as_bytes())
}

pub(crate) fn cursor(c: ChatId, u: UserId, d: DeviceId) -> Key {
    Key::new(CURSOR)
        .with(c.as_bytes())
        .with(u.as_bytes())
        .with(d.as_bytes())
}

pub(crate) fn user_cursors(c: ChatId, u: UserId) -> Key {
    Key::new(CURSOR).with(c.as_bytes()).with(u.as_bytes())
}

pub(crate) fn cursors(c: ChatId) -> Key {
    Key::new(CURSOR).with(c.as_bytes())
}

pub(crate) fn device(u: UserId, d: DeviceId) -> Key {
    Key::new(DEVICE).with(u.as_bytes()).with(d.as_bytes())
}

pub(crate) fn devices(u: UserId) -> Key {
    Key::new(DEVICE).with(u.as_bytes())
}

/// The prefix of one device's idempotency rows (in `client_msg_id` order).
pub(crate) fn device_sent(u: UserId, d: DeviceId) -> Key {
    Key::new(SENT).with(u.as_bytes()).with(d.as_bytes())
}

pub(crate) fn sent(u: UserId, d: DeviceId, client_msg_id: u64) -> Key {
    device_sent(u, d).with(&client_msg_id.to_be_bytes())
}

/// The key of an expiry row: `t`, the oldest message's time, the log record's LSN. One row
/// per record rather than per message (a fjall insert per message was ~15% of the gateway's
/// CPU at 100k messages/s), and a sweep reaches it as soon as any of its messages may expire.
fn expiring_key(oldest_ts: Millis, lsn: Lsn) -> Key {
    Key::new(SENT_BY_TIME)
        .with(&oldest_ts.to_be_bytes())
        .with(&lsn.to_be_bytes())
}

/// The expiry row (key, value) of `items`, the messages of log record `lsn`; `None` if there
/// are none. The value holds each message as user, device, `client_msg_id` and its time after
/// the key's (the oldest).
pub(crate) fn expiring_row(items: &[Expiring], lsn: Lsn) -> Option<(Key, Vec<u8>)> {
    let oldest = items.iter().map(|e| e.ts_ms).min()?;
    let mut out = Vec::with_capacity(items.len() * (UserId::SIZE + DeviceId::SIZE + 4));
    let mut e = Enc(&mut out);
    for item in items {
        e.raw(item.user.as_bytes());
        e.raw(item.device.as_bytes());
        e.var(item.client_msg_id);
        e.var(item.ts_ms - oldest);
    }
    Some((expiring_key(oldest, lsn), out))
}

/// The length of an expiry key written before rows were per record: `t`, ts, user, device,
/// `client_msg_id`, one message per row, empty value. Sweeps still expire such rows.
pub(crate) const LEGACY_EXPIRING_KEY_LEN: usize = 1 + 8 + UserId::SIZE + DeviceId::SIZE + 8;

/// One idempotency row to expire: whose it is, and when its message was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expiring {
    pub(crate) user: UserId,
    pub(crate) device: DeviceId,
    pub(crate) client_msg_id: u64,
    pub(crate) ts_ms: Millis,
}

/// Decodes an [`expiring_row`] value whose key holds `oldest_ts` (appending to `out`).
pub(crate) fn read_expiring(
    bytes: &[u8],
    oldest_ts: Millis,
    out: &mut Vec<Expiring>,
) -> Result<(), CodecError> {
    let mut d = Dec(bytes);
    while !d.0.is_empty() {
        let (user, device, client_msg_id) = (d.user()?, d.device()?, d.var()?);
        let ts_ms = oldest_ts
            .checked_add(d.var()?)
            .ok_or(CodecError("expiry time"))?;
        out.push(Expiring {
            user,
            device,
            client_msg_id,
            ts_ms,
        });
    }
    Ok(())
}

/// Splits a key after its prefix byte into fixed parts.
pub(crate) struct KeyParts<'a>(Dec<'a>);

impl<'a> KeyParts<'a> {
    /// Parts of `key` after its prefix byte and `skip` more bytes.
    pub(crate) fn new(key: &'a [u8], skip: usize) -> Result<Self, CodecError> {
        let rest = key.get(1 + skip..).ok_or(CodecError("short key"))?;
        Ok(Self(Dec(rest)))
    }

    pub(crate) fn chat(&mut self) -> Result<ChatId, CodecError> {
        self.0.chat()
    }

    pub(crate) fn user(&mut self) -> Result<UserId, CodecError> {
        self.0.user()
    }

    pub(crate) fn device(&mut self) -> Result<DeviceId, CodecError> {
        self.0.device()
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.0.array()?))
    }
}

/// A chat's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatMeta {
    pub(crate) name: String,
    pub(crate) history: bool,
    pub(crate) created_ms: Millis,
    pub(crate) head: Seq,
}

impl ChatMeta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.name.len());
        let mut e = Enc(&mut out);
        e.bytes(self.name.as_bytes());
        e.u8(u8::from(self.history));
        e.var(self.created_ms);
        e.var(self.head);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut d = Dec(bytes);
        let name = std::str::from_utf8(d.bytes()?)
            .map_err(|_| CodecError("chat name"))?
            .to_owned();
        let meta = Self {
            name,
            history: d.u8()? != 0,
            created_ms: d.var()?,
            head: d.var()?,
        };
        d.end()?;
        Ok(meta)
    }
}

/// Encodes a sequence of varints (floors, cursors, devices, member rows).
pub(crate) fn vars(values: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    let mut e = Enc(&mut out);
    for &v in values {
        e.var(v);
    }
    out
}

/// Decodes exactly `N` varints.
pub(crate) fn read_vars<const N: usize>(bytes: &[u8]) -> Result<[u64; N], CodecError> {
    let mut d = Dec(bytes);
    let mut out = [0; N];
    for v in &mut out {
        *v = d.var()?;
    }
    d.end()?;
    Ok(out)
}

/// A member row: role, joined seq.
pub(crate) fn member_value(role: Role, joined: Seq) -> Vec<u8> {
    vars(&[u64::from(role.raw()), joined])
}

pub(crate) fn read_member(bytes: &[u8]) -> Result<(Role, Seq), CodecError> {
    let [role, joined] = read_vars(bytes)?;
    let role = u8::try_from(role)
        .ok()
        .and_then(Role::from_raw)
        .ok_or(CodecError("role"))?;
    Ok((role, joined))
}

/// An idempotency answer: `chat, seq, [msg id], ts`. The id is left out when it is the one
/// [`message_id`] derives from `(chat, seq)` (as for entries, see
/// [`super::codec::encode_entry`]); [`read_sent`] tells the two apart by what follows the
/// seq: a varint alone (at most 10 bytes) or an id and a varint (at least 17).
pub(crate) fn sent_value(r: &SentRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    let mut e = Enc(&mut out);
    e.raw(r.chat.as_bytes());
    e.var(r.seq);
    if r.server_msg_id != message_id(r.chat, r.seq) {
        e.raw(r.server_msg_id.as_bytes());
    }
    e.var(r.ts_ms);
    out
}

pub(crate) fn read_sent(bytes: &[u8]) -> Result<SentRecord, CodecError> {
    /// The longest varint (a `u64`).
    const VAR_MAX: usize = 10;
    let mut d = Dec(bytes);
    let (chat, seq) = (d.chat()?, d.var()?);
    let server_msg_id = if d.0.len() > VAR_MAX {
        MessageId::from_bytes(d.array()?).ok_or(CodecError("msg id"))?
    } else {
        message_id(chat, seq)
    };
    let record = SentRecord {
        chat,
        seq,
        server_msg_id,
        ts_ms: d.var()?,
    };
    d.end()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idempotency answer leaves out an id it can derive; one written in full (format 3,
    /// or an id that is not derived) reads back as written.
    #[test]
    fn sent_values_leave_out_a_derived_id_and_read_both_shapes() {
        let chat = ChatId::direct(
            UserId::new(1).expect("valid"),
            UserId::new(2).expect("valid"),
        );
        let record = |server_msg_id, seq, ts_ms| SentRecord {
            chat,
            seq,
            server_msg_id,
            ts_ms,
        };
        for (seq, ts_ms) in [(1, 0), (300, 1_700_000_000_000), (u64::MAX, u64::MAX)] {
            let derived = record(message_id(chat, seq), seq, ts_ms);
            let other = record(MessageId::new(9).expect("valid"), seq, ts_ms);
            let (short, full) = (sent_value(&derived), sent_value(&other));
            assert_eq!(short.len() + MessageId::SIZE, full.len());
            assert_eq!(read_sent(&short), Ok(derived));
            assert_eq!(read_sent(&full), Ok(other));
            // Format 3 kept every id.
            let mut format_3 = Vec::new();
            let mut e = Enc(&mut format_3);
            e.raw(chat.as_bytes());
            e.var(seq);
            e.raw(derived.server_msg_id.as_bytes());
            e.var(ts_ms);
            assert_eq!(read_sent(&format_3), Ok(derived));
        }
    }
}
