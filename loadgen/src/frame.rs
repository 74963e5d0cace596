//! Reading the server's WebSocket frames on an idle client: a sans-IO [`FrameReader`].
//!
//! Owns splitting a byte stream into frames (RFC 6455 §5.2) just far enough to answer pings and
//! notice a close; data frames are counted and their payload skipped, never buffered. No IO:
//! the caller feeds bytes and acts on [`Event`]s. Invariants: a partial frame is never an
//! error; buffered bytes stay under one control frame plus one header (`PENDING_BYTES_MAX`),
//! so an idle connection costs no heap unless a frame straddles two reads.

use std::fmt;

/// A control frame's payload is at most 125 bytes (RFC 6455 §5.5).
const CONTROL_PAYLOAD_BYTES_MAX: u64 = 125;
/// The most a reader ever holds between feeds: a whole control frame with the largest header.
const PENDING_BYTES_MAX: usize = 14 + CONTROL_PAYLOAD_BYTES_MAX as usize;

const OPCODE_CLOSE: u8 = wire::ws::OPCODE_CLOSE;
const OPCODE_PING: u8 = wire::ws::OPCODE_PING;

/// Something the server sent that the client may have to act on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// A ping: answer with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A close, with its status code if it carried one.
    Close(Option<u16>),
    /// The start of a data frame (its payload is skipped).
    Data,
}

/// The server broke the framing rules; the connection cannot continue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Reserved bits set (we negotiate no extensions).
    Reserved,
    /// A server frame with the mask bit set (RFC 6455 §5.1 forbids it).
    Masked,
    /// A control frame longer than 125 bytes.
    ControlTooLong,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reserved => "frame with reserved bits set",
            Self::Masked => "masked frame from server",
            Self::ControlTooLong => "control frame over 125 bytes",
        })
    }
}

/// Per-connection framing state: empty (no heap) between frames.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    /// The start of a frame that straddles reads.
    pending: Vec<u8>,
    /// Payload bytes of the current data frame still to skip.
    skip: u64,
}

impl FrameReader {
    /// Feeds `data` and calls `on` for each event, in order.
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        on: &mut impl FnMut(Event<'_>),
    ) -> Result<(), FrameError> {
        let skipped = usize::try_from(self.skip)
            .unwrap_or(usize::MAX)
            .min(data.len());
        self.skip -= skipped as u64;
        data = &data[skipped..];
        if self.pending.is_empty() {
            let used = self.frames(data, on)?;
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(data);
            let used = self.frames(&buf, on)?;
            buf.drain(..used);
            self.pending = if buf.is_empty() { Vec::new() } else { buf };
        }
        debug_assert!(
            self.pending.len() <= PENDING_BYTES_MAX,
            "pending grew past one frame"
        );
        Ok(())
    }

    /// Handles the whole frames at the start of `buf`; returns how many bytes it consumed.
    fn frames(&mut self, buf: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<usize, FrameError> {
        let mut at = 0;
        while let Some(head) = Head::parse(&buf[at..])? {
            let rest = &buf[at..];
            let total = head.len as u64 + head.payload_len;
            if head.opcode & 0x8 == 0 {
                on(Event::Data);
                if (rest.len() as u64) < total {
                    self.skip = total - rest.len() as u64;
                    return Ok(buf.len());
                }
            } else {
                if head.payload_len > CONTROL_PAYLOAD_BYTES_MAX {
                    return Err(FrameError::ControlTooLong);
                }
                if (rest.len() as u64) < total {
                    return Ok(at);
                }
                control(head.opcode, &rest[head.len..total as usize], on);
            }
            at += total as usize;
        }
        Ok(at)
    }
}

fn control(opcode: u8, payload: &[u8], on: &mut impl FnMut(Event<'_>)) {
    match opcode {
        OPCODE_PING => on(Event::Ping(payload)),
        OPCODE_CLOSE => on(Event::Close(
            payload
                .get(..2)
                .map(|code| u16::from_be_bytes([code[0], code[1]])),
        )),
        // A pong we never asked for, or a reserved control opcode: nothing to do.
        _ => {}
    }
}

/// A parsed frame header.
struct Head {
    opcode: u8,
    /// Header bytes.
    len: usize,
    payload_len: u64,
}

impl Head {
    /// `Ok(None)` until `buf` holds the whole header.
    fn parse(buf: &[u8]) -> Result<Option<Self>, FrameError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        if b0 & 0x70 != 0 {
            return Err(FrameError::Reserved);
        }
        if b1 & 0x80 != 0 {
            return Err(FrameError::Masked);
        }
        let (len, payload_len) = match b1 & 0x7F {
            126 if buf.len() >= 4 => (4, u64::from(u16::from_be_bytes([buf[2], buf[3]]))),
            127 if buf.len() >= 10 => {
                let mut be = [0_u8; 8];
                be.copy_from_slice(&buf[2..10]);
                (10, u64::from_be_bytes(be))
            }
            126 | 127 => return Ok(None),
            short => (2, u64::from(short)),
        };
        Ok(Some(Self {
            opcode: b0 & 0x0F,
            len,
            payload_len,
        }))
    }
}

#[cfg(test)]
mod tests {
    use wire::ws::{OPCODE_BINARY, OPCODE_PONG, write_close, write_frame};

    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Ping(Vec<u8>),
        Close(Option<u16>),
        Data,
    }

    fn feed_in_pieces(stream: &[u8], piece: usize) -> (Vec<Seen>, FrameReader) {
        let mut reader = FrameReader::default();
        let mut seen = Vec::new();
        for chunk in stream.chunks(piece) {
            reader
                .feed(chunk, &mut |event| {
                    seen.push(match event {
                        Event::Ping(p) => Seen::Ping(p.to_vec()),
                        Event::Close(code) => Seen::Close(code),
                        Event::Data => Seen::Data,
                    });
                })
                .expect("valid stream");
        }
        (seen, reader)
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let mut stream = Vec::new();
        write_frame(&mut stream, OPCODE_PING, b"abc", None);
        write_frame(&mut stream, OPCODE_BINARY, &vec![9; 70_000], None);
        write_frame(&mut stream, OPCODE_PONG, b"", None);
        write_frame(&mut stream, OPCODE_BINARY, &vec![1; 300], None);
        write_frame(&mut stream, OPCODE_PING, &[5; 125], None);
        write_close(&mut stream, 4000, "idle", None);
        let want = vec![
            Seen::Ping(b"abc".to_vec()),
            Seen::Data,
            Seen::Data,
            Seen::Ping(vec![5; 125]),
            Seen::Close(Some(4000)),
        ];
        for piece in [1, 2, 3, 7, 125, 4096, stream.len()] {
            let (seen, reader) = feed_in_pieces(&stream, piece);
            assert_eq!(seen, want, "split into {piece}-byte pieces");
            assert!(
                reader.pending.is_empty() && reader.skip == 0,
                "nothing left over"
            );
        }
    }

    #[test]
    fn empty_close_has_no_code() {
        let (seen, _) = feed_in_pieces(&[0x88, 0x00], 1);
        assert_eq!(seen, vec![Seen::Close(None)]);
    }

    #[test]
    fn protocol_violations() {
        let mut reader = FrameReader::default();
        let mut ignore = |_: Event<'_>| {};
        assert_eq!(
            reader.feed(&[0xC2, 0x00], &mut ignore),
            Err(FrameError::Reserved)
        );
        let mut masked = Vec::new();
        write_frame(&mut masked, OPCODE_PING, b"x", Some([1, 2, 3, 4]));
        let mut reader = FrameReader::default();
        assert_eq!(reader.feed(&masked, &mut ignore), Err(FrameError::Masked));
        let mut reader = FrameReader::default();
        assert_eq!(
            reader.feed(&[0x89, 126, 0, 126], &mut ignore),
            Err(FrameError::ControlTooLong)
        );
    }
}
