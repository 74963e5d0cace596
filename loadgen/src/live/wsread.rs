//! Splitting a server's byte stream into whole WebSocket frames (RFC 6455 §5.2), sans IO.
//!
//! Owns one connection's receive buffer. The caller appends what it read and takes whole
//! frames out; a partial frame stays buffered. Unlike [`crate::frame`] (which skips data for
//! idle clients), this hands out every payload, because `live` reads every server frame.
//! Invariants: a partial frame is never an error; the buffer never holds more than one frame
//! of at most `payload_bytes_max` plus what one read brought; the server's frames are
//! unmasked and never fragmented (PROTOCOL.md §1), so anything else is an error.

use std::fmt;

/// The largest frame header (2 + 8 length bytes; servers never mask).
const HEADER_BYTES_MAX: usize = 10;

/// One whole frame, borrowed from the reader's buffer until the next call.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct WsFrame<'a> {
    pub(crate) opcode: u8,
    pub(crate) payload: &'a [u8],
}

/// The server broke the framing rules; the connection cannot continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WsError {
    /// Reserved bits set (no extensions are negotiated).
    Reserved,
    /// A masked server frame.
    Masked,
    /// A fragment (FIN clear or a continuation): the gateway never fragments.
    Fragmented,
    /// A payload over the limit.
    TooLarge(u64),
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reserved => f.write_str("frame with reserved bits set"),
            Self::Masked => f.write_str("masked frame from server"),
            Self::Fragmented => f.write_str("fragmented frame from server"),
            Self::TooLarge(n) => write!(f, "frame of {n} bytes over the limit"),
        }
    }
}

/// One connection's receive side.
#[derive(Debug)]
pub(crate) struct WsReader {
    buf: Vec<u8>,
    /// Where the next unread frame starts in `buf`.
    at: usize,
    payload_bytes_max: usize,
}

impl WsReader {
    /// A reader that refuses payloads over `payload_bytes_max`.
    pub(crate) fn new(payload_bytes_max: usize) -> Self {
        Self {
            buf: Vec::new(),
            at: 0,
            payload_bytes_max,
        }
    }

    /// Appends bytes read from the socket.
    pub(crate) fn extend(&mut self, data: &[u8]) {
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.at > self.buf.len() / 2 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, `Ok(None)` until one is buffered.
    pub(crate) fn next_frame(&mut self) -> Result<Option<WsFrame<'_>>, WsError> {
        let rest = &self.buf[self.at..];
        let Some((opcode, header, len)) = head(rest)? else {
            return Ok(None);
        };
        if len > self.payload_bytes_max as u64 {
            return Err(WsError::TooLarge(len));
        }
        let end = header + len as usize;
        if rest.len() < end {
            return Ok(None);
        }
        let start = self.at + header;
        self.at += end;
        Ok(Some(WsFrame {
            opcode,
            payload: &self.buf[start..start + len as usize],
        }))
    }

    /// Bytes buffered and not yet returned.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() - self.at
    }
}

/// `(opcode, header bytes, payload length)` once the header is complete.
fn head(buf: &[u8]) -> Result<Option<(u8, usize, u64)>, WsError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(WsError::Reserved);
    }
    if b1 & 0x80 != 0 {
        return Err(WsError::Masked);
    }
    let opcode = b0 & 0x0F;
    if b0 & 0x80 == 0 || opcode == 0 {
        return Err(WsError::Fragmented);
    }
    let (header, len) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (4, u64::from(u16::from_be_bytes([buf[2], buf[3]]))),
        127 if buf.len() >= HEADER_BYTES_MAX => {
            let mut be = [0_u8; 8];
            be.copy_from_slice(&buf[2..10]);
            (10, u64::from_be_bytes(be))
        }
        126 | 127 => return Ok(None),
        short => (2, u64::from(short)),
    };
    Ok(Some((opcode, header, len)))
}

#[cfg(test)]
mod tests {
    use wire::ws::{OPCODE_BINARY, OPCODE_PING, write_frame};

    use super::*;

    #[test]
    fn any_split_gives_the_same_frames() {
        let mut stream = Vec::new();
        write_frame(&mut stream, OPCODE_BINARY, b"one", None);
        write_frame(&mut stream, OPCODE_BINARY, &vec![7; 70_000], None);
        write_frame(&mut stream, OPCODE_PING, b"p", None);
        write_frame(&mut stream, OPCODE_BINARY, &vec![1; 300], None);
        for piece in [1, 2, 3, 100, 4096, stream.len()] {
            let mut reader = WsReader::new(80_000);
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                reader.extend(chunk);
                while let Some(frame) = reader.next_frame().expect("valid") {
                    got.push((
                        frame.opcode,
                        frame.payload.len(),
                        frame.payload.first().copied(),
                    ));
                }
            }
            assert_eq!(
                got,
                [
                    (OPCODE_BINARY, 3, Some(b'o')),
                    (OPCODE_BINARY, 70_000, Some(7)),
                    (OPCODE_PING, 1, Some(b'p')),
                    (OPCODE_BINARY, 300, Some(1))
                ],
                "{piece}-byte pieces"
            );
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn violations() {
        let cases: [(&[u8], WsError); 4] = [
            (&[0xC2, 0], WsError::Reserved),
            (&[0x82, 0x81, 0, 0, 0, 0, 0], WsError::Masked),
            (&[0x02, 1, 0], WsError::Fragmented),
            (&[0x82, 126, 0xFF, 0xFF], WsError::TooLarge(0xFFFF)),
        ];
        for (bytes, want) in cases {
            let mut reader = WsReader::new(1000);
            reader.extend(bytes);
            assert_eq!(reader.next_frame(), Err(want));
        }
    }
}
