//! WebSocket framing (RFC 6455 §5.2) for frames we send, and the close codes we use.
//!
//! Owns the byte layout of a frame header and client masking; nothing else of the WebSocket
//! protocol (the gateway parses inbound headers with tungstenite). No IO, no allocation beyond
//! the caller's buffer.
//!
//! Invariant: `write_frame` writes exactly `header_len(len, masked) + len` bytes: a header that
//! says the truth about the payload that follows, FIN set (we never fragment).

/// Opcode of a binary data frame (every switchboard frame is one).
pub const OPCODE_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OPCODE_CLOSE: u8 = 0x8;
/// Opcode of a ping.
pub const OPCODE_PING: u8 = 0x9;
/// Opcode of a pong.
pub const OPCODE_PONG: u8 = 0xA;

const FIN: u8 = 0x80;
const MASK_BIT: u8 = 0x80;
/// The longest header: 2 bytes, an 8-byte extended length, a 4-byte mask.
pub const HEADER_BYTES_MAX: usize = 14;

/// Close codes the gateway sends (docs/PROTOCOL.md explains each).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is draining (after `GoAway`); reconnect elsewhere.
    pub const GOING_AWAY: u16 = 1001;
    /// A WebSocket protocol violation (e.g. an unmasked client frame, a bad opcode).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame: switchboard speaks binary frames only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Policy violation: the client did not read fast enough ("slow consumer").
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message over `frame_bytes_max`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// A server bug.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server is overloaded (e.g. `connections_max`); retry later, elsewhere.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// No traffic (not even a pong) within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// The user already has `devices_per_user_max` other devices connected or registered.
    pub const TOO_MANY_DEVICES: u16 = 4001;
    /// The same device connected again; this older connection is replaced.
    pub const REPLACED: u16 = 4002;
    /// The token expired while connected; reconnect with a fresh token.
    pub const TOKEN_EXPIRED: u16 = 4003;
}

/// Length of the header for a payload of `len` bytes.
pub const fn header_len(len: usize, masked: bool) -> usize {
    let base = if len < 126 {
        2
    } else if len <= 0xFFFF {
        4
    } else {
        10
    };
    if masked { base + 4 } else { base }
}

/// Appends one complete, unfragmented frame to `out`; `mask` is required from clients only.
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let len = payload.len();
    out.reserve(header_len(len, mask.is_some()) + len);
    out.push(FIN | (opcode & 0x0F));
    let mask_bit = if mask.is_some() { MASK_BIT } else { 0 };
    // Each branch's range makes its cast lossless.
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 0x7E);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 0x7F);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        None => out.extend_from_slice(payload),
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        }
    }
}

/// A close frame's payload: the code, then a UTF-8 reason of at most 123 bytes (truncated).
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str, mask: Option<[u8; 4]>) {
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    write_frame(out, OPCODE_CLOSE, &payload[..2 + cut], mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_follow_rfc6455() {
        for (len, want) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            assert_eq!(header_len(len, false), want, "len {len}");
            assert_eq!(header_len(len, true), want + 4, "masked len {len}");
            let mut out = Vec::new();
            write_frame(&mut out, OPCODE_BINARY, &vec![7; len], None);
            assert_eq!(out.len(), want + len);
            assert_eq!(out[0], 0x82, "FIN + binary");
        }
    }

    #[test]
    fn extended_lengths_are_big_endian() {
        let mut out = Vec::new();
        write_frame(&mut out, OPCODE_BINARY, &vec![0; 300], None);
        assert_eq!(&out[..4], &[0x82, 126, 0x01, 0x2C]);
        out.clear();
        write_frame(&mut out, OPCODE_BINARY, &vec![0; 70_000], None);
        assert_eq!(&out[..10], &[0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
    }

    #[test]
    fn masking_is_reversible() {
        let key = [1, 2, 3, 4];
        let mut out = Vec::new();
        write_frame(&mut out, OPCODE_BINARY, b"hello", Some(key));
        assert_eq!(out[1], MASK_BIT | 5);
        assert_eq!(&out[2..6], &key);
        let unmasked: Vec<u8> = out[6..]
            .iter()
            .zip(key.iter().cycle())
            .map(|(b, k)| b ^ k)
            .collect();
        assert_eq!(unmasked, b"hello");
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        let mut out = Vec::new();
        write_close(&mut out, close::POLICY_VIOLATION, &"é".repeat(100), None);
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        assert_eq!(&out[2..4], &1008u16.to_be_bytes());
        assert!(core::str::from_utf8(&out[4..]).is_ok());
    }
}
