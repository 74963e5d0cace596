//! Inbound WebSocket frames: bytes in, complete messages out, protocol violations as close codes.
//!
//! Owns framing rules (RFC 6455 §5) for what clients send; headers are parsed by tungstenite's
//! `FrameHeader`. Invariants: a client frame must be masked (else 1002); text frames are refused
//! (1003); a message, fragmented or not, never exceeds `frame_bytes_max` (1009), checked from
//! the header before its payload is buffered; control frames are final and ≤ 125 bytes (1002).
//! Bytes are kept only while a frame or message is incomplete; an idle parser holds nothing.

use crate::core::Close;
use std::io::Cursor;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use wire::ws::close;

/// Longest control frame payload (RFC 6455 §5.5).
const CONTROL_PAYLOAD_MAX: u64 = 125;
/// A partial-frame buffer larger than this is released when it empties.
const KEEP_CAPACITY_BYTES: usize = 4096;

/// A complete message for the caller.
pub enum Message<'a> {
    /// A binary message (one `ClientFrame`), unmasked and reassembled.
    Binary(&'a [u8]),
    /// A ping; answer with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// The peer closed; answer with a close and stop.
    Close,
}

/// The parser's state for one connection.
pub struct Inbound {
    /// Received bytes not yet forming a complete frame.
    pending: Vec<u8>,
    /// A fragmented message being reassembled (`None` when not inside one).
    message: Option<Vec<u8>>,
    frame_bytes_max: usize,
}

fn protocol_error(reason: &'static str) -> Close {
    Close::new(close::PROTOCOL_ERROR, reason)
}

fn too_big() -> Close {
    Close::new(close::MESSAGE_TOO_BIG, "message over frame_bytes_max")
}

impl Inbound {
    /// A parser allowing messages up to `frame_bytes_max`.
    pub fn new(frame_bytes_max: usize) -> Self {
        Self {
            pending: Vec::new(),
            message: None,
            frame_bytes_max,
        }
    }

    /// Consumes `bytes` (unmasked in place), calling `on_message` for each complete message,
    /// in order. Bytes of an incomplete frame are kept for the next call.
    ///
    /// # Errors
    /// The close to send for a protocol violation; the connection must then close.
    pub fn feed(
        &mut self,
        bytes: &mut [u8],
        mut on_message: impl FnMut(Message<'_>),
    ) -> Result<(), Close> {
        if self.pending.is_empty() {
            // The common case: frames are parsed where they were read, with no copy.
            let used = self.parse(bytes, &mut on_message)?;
            self.pending.extend_from_slice(&bytes[used..]);
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(bytes);
        let used = self.parse(&mut pending, &mut on_message)?;
        pending.drain(..used);
        if pending.is_empty() && pending.capacity() > KEEP_CAPACITY_BYTES {
            pending = Vec::new();
        }
        self.pending = pending;
        Ok(())
    }

    /// Handles every complete frame at the start of `buf`; returns the bytes they used.
    fn parse(
        &mut self,
        buf: &mut [u8],
        on_message: &mut impl FnMut(Message<'_>),
    ) -> Result<usize, Close> {
        let mut at = 0;
        while let Some((used, is_close)) = self.next_frame(&mut buf[at..], on_message)? {
            at += used;
            if is_close {
                // Nothing after a close counts.
                return Ok(buf.len());
            }
        }
        Ok(at)
    }

    /// Handles the first complete frame in `buf`: `Some((bytes used, was a close))`, or `None`
    /// if `buf` holds only part of a frame.
    fn next_frame(
        &mut self,
        buf: &mut [u8],
        on_message: &mut impl FnMut(Message<'_>),
    ) -> Result<Option<(usize, bool)>, Close> {
        let mut cursor = Cursor::new(&*buf);
        let Some((header, len)) =
            FrameHeader::parse(&mut cursor).map_err(|_| protocol_error("bad frame header"))?
        else {
            return Ok(None);
        };
        let head = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
        let Some(mask) = header.mask else {
            return Err(protocol_error("client frames must be masked"));
        };
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(protocol_error("reserved bits set"));
        }
        if len > self.frame_bytes_max as u64 {
            return Err(too_big());
        }
        let len = usize::try_from(len).map_err(|_| too_big())?;
        if buf.len() < head + len {
            return Ok(None);
        }
        let payload = &mut buf[head..head + len];
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        let is_close = self.frame(header.opcode, header.is_final, payload, on_message)?;
        Ok(Some((head + len, is_close)))
    }

    /// Applies one unmasked frame; true if it was a close.
    fn frame(
        &mut self,
        opcode: OpCode,
        is_final: bool,
        payload: &[u8],
        on_message: &mut impl FnMut(Message<'_>),
    ) -> Result<bool, Close> {
        match opcode {
            OpCode::Data(Data::Text) => {
                Err(Close::new(close::UNSUPPORTED_DATA, "binary frames only"))
            }
            OpCode::Data(Data::Binary) if self.message.is_some() => {
                Err(protocol_error("new message inside a fragmented one"))
            }
            OpCode::Data(Data::Binary) if is_final => {
                on_message(Message::Binary(payload));
                Ok(false)
            }
            OpCode::Data(Data::Binary) => {
                self.message = Some(payload.to_vec());
                Ok(false)
            }
            OpCode::Data(Data::Continue) => {
                let message = self
                    .message
                    .as_mut()
                    .ok_or(protocol_error("continuation outside a message"))?;
                if message.len() + payload.len() > self.frame_bytes_max {
                    return Err(too_big());
                }
                message.extend_from_slice(payload);
                if is_final {
                    let message = self.message.take().unwrap_or_default();
                    on_message(Message::Binary(&message));
                }
                Ok(false)
            }
            OpCode::Control(control) => {
                if !is_final || payload.len() as u64 > CONTROL_PAYLOAD_MAX {
                    return Err(protocol_error("control frames must be final and short"));
                }
                match control {
                    Control::Ping => on_message(Message::Ping(payload)),
                    Control::Pong => {}
                    Control::Close => {
                        on_message(Message::Close);
                        return Ok(true);
                    }
                    Control::Reserved(_) => return Err(protocol_error("unknown opcode")),
                }
                Ok(false)
            }
            OpCode::Data(Data::Reserved(_)) => Err(protocol_error("unknown opcode")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        wire::ws::write_frame(&mut out, opcode, payload, Some([1, 2, 3, 4]));
        if !fin {
            out[0] &= 0x7F;
        }
        out
    }

    fn feed(parser: &mut Inbound, bytes: &[u8]) -> (Vec<String>, Result<(), Close>) {
        let mut seen = Vec::new();
        let result = parser.feed(&mut bytes.to_vec(), |m| {
            seen.push(match m {
                Message::Binary(b) => format!("bin:{}", String::from_utf8_lossy(b)),
                Message::Ping(b) => format!("ping:{}", String::from_utf8_lossy(b)),
                Message::Close => "close".into(),
            });
        });
        (seen, result)
    }

    #[test]
    fn messages_arrive_whole_however_the_bytes_are_split() {
        let mut bytes = frame(0x2, true, b"one");
        bytes.extend(frame(0x9, true, b"p"));
        bytes.extend(frame(0x2, false, b"tw"));
        bytes.extend(frame(0x0, true, b"o"));
        for split in 0..bytes.len() {
            let mut parser = Inbound::new(64);
            let (mut seen, r) = feed(&mut parser, &bytes[..split]);
            assert_eq!(r, Ok(()));
            let (rest, r) = feed(&mut parser, &bytes[split..]);
            assert_eq!(r, Ok(()));
            seen.extend(rest);
            assert_eq!(seen, ["bin:one", "ping:p", "bin:two"], "split at {split}");
            assert!(parser.pending.is_empty() && parser.message.is_none());
        }
    }

    #[test]
    fn violations_get_their_close_codes() {
        let code = |bytes: &[u8]| feed(&mut Inbound::new(64), bytes).1.map_err(|c| c.code);
        let mut unmasked = Vec::new();
        wire::ws::write_frame(&mut unmasked, 0x2, b"x", None);
        assert_eq!(code(&unmasked), Err(close::PROTOCOL_ERROR));
        assert_eq!(
            code(&frame(0x1, true, b"text")),
            Err(close::UNSUPPORTED_DATA)
        );
        assert_eq!(
            code(&frame(0x2, true, &[0; 65])),
            Err(close::MESSAGE_TOO_BIG)
        );
        assert_eq!(code(&frame(0x2, true, &[0; 64])), Ok(()));
        assert_eq!(code(&frame(0x0, true, b"x")), Err(close::PROTOCOL_ERROR));
        assert_eq!(code(&frame(0x3, true, b"x")), Err(close::PROTOCOL_ERROR));
        assert_eq!(code(&frame(0x9, false, b"x")), Err(close::PROTOCOL_ERROR));
        let mut rsv = frame(0x2, true, b"x");
        rsv[0] |= 0x40;
        assert_eq!(code(&rsv), Err(close::PROTOCOL_ERROR));
        let mut fragments = frame(0x2, false, &[0; 40]);
        fragments.extend(frame(0x0, true, &[0; 25]));
        assert_eq!(code(&fragments), Err(close::MESSAGE_TOO_BIG));
    }

    #[test]
    fn an_oversized_header_is_refused_before_its_payload_arrives() {
        let big = frame(0x2, true, &[0; 100]);
        // Only the header: refused without waiting for (or buffering) the payload.
        assert_eq!(
            feed(&mut Inbound::new(64), &big[..8]).1.map_err(|c| c.code),
            Err(close::MESSAGE_TOO_BIG)
        );
    }

    #[test]
    fn a_close_stops_parsing() {
        let mut bytes = frame(0x8, true, &1000u16.to_be_bytes());
        bytes.extend(frame(0x2, true, b"after"));
        assert_eq!(feed(&mut Inbound::new(64), &bytes).0, ["close"]);
    }
}
