//! The bytes of every message `loadgen live` sends: who sent it, its counters, and when it
//! was meant to leave.
//!
//! Owns the layout (an `Opaque` body, little-endian): `LG1` magic, a flags byte (bit 0: this
//! is a resend after a reconnect), sender device (its global index in the plan, u32), the sender's per-device counter (its `client_msg_id`, u64), the
//! sender's counter within this chat (u64, 1, 2, 3, …: what the ledger checks), the intended
//! send time (ns on the host's monotonic clock, u64), then padding up to the body size the
//! scenario drew. Pure; invariant: `parse(&encode(m, n))` gives back `m` for any `n` ≥
//! [`HEADER_BYTES`].

/// Bytes before the padding.
pub(crate) const HEADER_BYTES: usize = 32;
const MAGIC: &[u8; 3] = b"LG1";
/// Flags bit: sent again after the sender reconnected (its first attempt got no answer).
const FLAG_RESENT: u8 = 1;

/// What a body says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The sender's global device index.
    pub(crate) sender: u32,
    /// The sender's per-device counter (also its `client_msg_id`).
    pub(crate) msg: u64,
    /// The sender's counter in this chat, from 1 without gaps.
    pub(crate) chat_msg: u64,
    /// When the message was meant to be sent (host monotonic clock, ns).
    pub(crate) intended_ns: u64,
    /// Sent again after the sender reconnected: its latency includes the sender's own time
    /// offline, so it is counted apart from the end-to-end figures.
    pub(crate) resent: bool,
}

impl Stamp {
    /// Writes the body into `out` (cleared first): the header, then padding to `len` bytes.
    pub(crate) fn encode(&self, len: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(MAGIC);
        out.push(if self.resent { FLAG_RESENT } else { 0 });
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&self.msg.to_le_bytes());
        out.extend_from_slice(&self.chat_msg.to_le_bytes());
        out.extend_from_slice(&self.intended_ns.to_le_bytes());
        debug_assert_eq!(out.len(), HEADER_BYTES);
        out.resize(len.max(HEADER_BYTES), b'.');
    }

    /// Reads a body `encode` wrote; `None` for anything else (another client's message, or
    /// a corrupted one).
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        let header = body.get(..HEADER_BYTES)?;
        if &header[..3] != MAGIC || header[3] & !FLAG_RESENT != 0 {
            return None;
        }
        let u64_at = |at: usize| {
            let mut le = [0; 8];
            le.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(le)
        };
        let mut sender = [0; 4];
        sender.copy_from_slice(&header[4..8]);
        Some(Self {
            sender: u32::from_le_bytes(sender),
            msg: u64_at(8),
            chat_msg: u64_at(16),
            intended_ns: u64_at(24),
            resent: header[3] & FLAG_RESENT != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_any_size() {
        let stamp = Stamp {
            sender: 77,
            msg: 1 << 40,
            chat_msg: 3,
            intended_ns: 123_456_789,
            resent: false,
        };
        let mut out = Vec::new();
        for len in [0, HEADER_BYTES, 100, 4096] {
            for resent in [false, true] {
                let stamp = Stamp { resent, ..stamp };
                stamp.encode(len, &mut out);
                assert_eq!(out.len(), len.max(HEADER_BYTES));
                assert_eq!(Stamp::parse(&out), Some(stamp));
            }
        }
        assert_eq!(Stamp::parse(&out[..HEADER_BYTES - 1]), None);
        out[0] = b'X';
        assert_eq!(Stamp::parse(&out), None);
    }
}
