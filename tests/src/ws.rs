//! A raw WebSocket client (RFC 6455) that does the handshake itself and reads and writes
//! frames byte by byte, so a test can also send what a well-behaved client never would:
//! unmasked, text, fragmented, oversized, reserved bits, unknown opcodes.
//!
//! Server frames are checked as they are read: the server must never mask (RFC 6455 §5.1).

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha1::Digest as _;
use wire::{ClientFrame, Encoder, ErrorCode, Limits, ServerFrame};

use crate::http::{self, Response};

/// Opcodes (RFC 6455 §5.2).
pub mod op {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// Text.
    pub const TEXT: u8 = 0x1;
    /// Binary.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Largest server payload we accept: well over `frame_bytes_max`, so a bigger one is a bug.
const SERVER_PAYLOAD_MAX: u64 = 1 << 20;

/// The result of an upgrade attempt.
#[derive(Debug)]
pub enum Handshake {
    /// `101`, with a correct `Sec-WebSocket-Accept`.
    Upgraded(WsClient),
    /// Any other status, with the response.
    Refused(Response),
}

impl Handshake {
    /// The refusal's status; 101 when upgraded.
    pub fn status(&self) -> u16 {
        match self {
            Self::Upgraded(_) => 101,
            Self::Refused(r) => r.status,
        }
    }
}

/// Connects and upgrades `GET target` (path and query) with `headers` added.
///
/// # Errors
/// Socket errors, a deadline passing, or a 101 that is not a valid upgrade.
pub fn handshake(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<Handshake> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    handshake_on(stream, target, headers, timeout)
}

/// [`handshake`] on a socket the caller connected (e.g. with a small `SO_RCVBUF`).
///
/// # Errors
/// As [`handshake`].
pub fn handshake_on(
    mut stream: TcpStream,
    target: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<Handshake> {
    let deadline = Instant::now() + timeout;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(timeout))?;
    let key = base64::engine::general_purpose::STANDARD.encode(random_bytes::<16>());
    let host = stream.peer_addr()?;
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let (head, rest) = http::read_head(&mut stream, deadline)?;
    if head.status != 101 {
        let mut refused = head;
        refused.body = rest;
        return Ok(Handshake::Refused(refused));
    }
    let accept = accept_key(&key);
    let has = |name: &str, want: &str| {
        head.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
    };
    if !has("upgrade", "websocket")
        || !has("connection", "upgrade")
        || head.header("sec-websocket-accept") != Some(accept.as_str())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("an invalid 101 (want accept {accept}): {head:?}"),
        ));
    }
    Ok(Handshake::Upgraded(WsClient::new(stream, rest)))
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Bytes that differ per call (masks, keys): a splitmix64 of a counter and the time.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let mut x = nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// One frame as it is on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// RSV1..3 as the low three bits.
    pub rsv: u8,
    /// Opcode.
    pub opcode: u8,
    /// Payload (unmasked).
    pub payload: Vec<u8>,
}

impl Frame {
    /// A close frame's code, if it has one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == op::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Encodes one frame; `mask` `None` writes it unmasked (illegal from a client).
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(u8::from(fin) << 7 | (rsv & 0x7) << 4 | (opcode & 0xF));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
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
    out
}

/// What the server did when we read: a frame, or the connection ended.
#[derive(Debug)]
pub enum Incoming {
    /// A complete frame.
    Frame(Frame),
    /// Orderly EOF (FIN); any partial frame is in `partial` bytes.
    Eof {
        /// Bytes of an incomplete frame at EOF.
        partial: usize,
    },
}

/// How a connection ended, as seen by [`WsClient::expect_close`].
#[derive(Debug)]
pub enum Closed {
    /// A close frame: its code (if any) and reason.
    Frame {
        /// The close code.
        code: Option<u16>,
        /// The reason, lossy UTF-8.
        reason: String,
    },
    /// TCP closed (FIN) without a close frame.
    Eof,
    /// TCP reset or another socket error.
    Error(io::ErrorKind),
}

impl Closed {
    /// The close code, if a close frame with one came.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Frame { code, .. } => *code,
            _ => None,
        }
    }
}

/// A decoded server message, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMsg {
    /// `Result`, payload omitted.
    Result {
        /// Echoed request id.
        request_id: u64,
        /// The code.
        code: ErrorCode,
        /// The reason.
        reason: String,
    },
    /// `GoAway`.
    GoAway {
        /// Delay before reconnecting.
        reconnect_after_ms: u32,
    },
    /// Anything else, as its debug text.
    Other(String),
}

/// Decodes a binary message's payload with `wire::decode_server` and default limits.
///
/// # Errors
/// The decoder's refusal.
pub fn decode(payload: &[u8]) -> Result<ServerMsg, wire::DecodeError> {
    Ok(match wire::decode_server(payload, &Limits::default())? {
        ServerFrame::Result(r) => ServerMsg::Result {
            request_id: r.request_id,
            code: r.code,
            reason: r.reason.to_owned(),
        },
        ServerFrame::GoAway(g) => ServerMsg::GoAway {
            reconnect_after_ms: g.reconnect_after_ms,
        },
        other => ServerMsg::Other(format!("{other:?}")),
    })
}

/// A connected WebSocket client.
pub struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
    encoder: Encoder,
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WsClient({:?}, {} bytes buffered)",
            self.stream,
            self.buf.len()
        )
    }
}

impl WsClient {
    /// Wraps an upgraded stream and bytes already read past the 101 head.
    pub fn new(stream: TcpStream, buffered: Vec<u8>) -> Self {
        Self {
            stream,
            buf: buffered,
            encoder: Encoder::new(&Limits::default()),
        }
    }

    /// The socket (e.g. to shut it down or read its options).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes raw bytes.
    ///
    /// # Errors
    /// Socket errors (a write timeout of [`super::gateway::IO_TIMEOUT`] applies).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one frame, masked with a fresh key when `masked`.
    ///
    /// # Errors
    /// Socket errors.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, masked: bool, p: &[u8]) -> io::Result<()> {
        let mask = masked.then(random_bytes::<4>);
        self.write_raw(&encode_frame(fin, 0, opcode, mask, p))
    }

    /// Sends a masked binary message in one frame.
    ///
    /// # Errors
    /// Socket errors.
    pub fn send_binary(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_frame(true, op::BINARY, true, payload)
    }

    /// Encodes a request (`Encoder::encode_ws_client`) and sends it.
    ///
    /// # Errors
    /// Socket errors.
    ///
    /// # Panics
    /// When the request does not fit `frame_bytes_max`.
    pub fn send_request(&mut self, frame: &ClientFrame<'_>) -> io::Result<()> {
        let mut out = Vec::new();
        self.encoder
            .encode_ws_client(frame, random_bytes::<4>(), &mut out)
            .expect("test requests fit frame_bytes_max");
        self.write_raw(&out)
    }

    /// Sends a masked close frame with `code`.
    ///
    /// # Errors
    /// Socket errors.
    pub fn send_close(&mut self, code: u16) -> io::Result<()> {
        self.send_frame(true, op::CLOSE, true, &code.to_be_bytes())
    }

    /// Reads the next frame, whatever it is, or EOF.
    ///
    /// # Errors
    /// Socket errors; `TimedOut` after `timeout`; `InvalidData` for a masked or oversized
    /// server frame.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Incoming> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Incoming::Frame(frame));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = http::read_until(&mut self.stream, &mut chunk, deadline)?;
            if n == 0 {
                return Ok(Incoming::Eof {
                    partial: self.buf.len(),
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Like [`Self::recv`], but answers pings with pongs and skips them.
    ///
    /// # Errors
    /// As [`Self::recv`].
    pub fn next_message(&mut self, timeout: Duration) -> io::Result<Incoming> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left)? {
                Incoming::Frame(f) if f.opcode == op::PING => {
                    self.send_frame(true, op::PONG, true, &f.payload)?;
                }
                other => return Ok(other),
            }
        }
    }

    /// The next server message, decoded.
    ///
    /// # Panics
    /// On anything but a complete, unfragmented binary frame that decodes, within `timeout`.
    pub fn expect_msg(&mut self, timeout: Duration) -> ServerMsg {
        match self.next_message(timeout) {
            Ok(Incoming::Frame(f)) if f.opcode == op::BINARY && f.fin && f.rsv == 0 => {
                decode(&f.payload).unwrap_or_else(|e| {
                    panic!("a server frame that does not decode ({e}): {:?}", f.payload)
                })
            }
            other => panic!("expected a binary server frame, got {other:?}"),
        }
    }

    /// Reads a new connection's first message, which must be `SyncDone` (a device with nothing
    /// owed, before it sends anything: the sync runs beside requests, so once one is sent its
    /// `Result` may come before or after `SyncDone`).
    ///
    /// # Panics
    /// On anything else within `timeout`.
    pub fn expect_empty_sync(&mut self, timeout: Duration) {
        match self.expect_msg(timeout) {
            ServerMsg::Other(text) if text.starts_with("SyncDone") => {}
            other => panic!("expected SyncDone first, got {other:?}"),
        }
    }

    /// The next message, which must be a `Result`: `(request_id, code, reason)`.
    ///
    /// # Panics
    /// On anything else within `timeout`.
    pub fn expect_result(&mut self, timeout: Duration) -> (u64, ErrorCode, String) {
        match self.expect_msg(timeout) {
            ServerMsg::Result {
                request_id,
                code,
                reason,
            } => (request_id, code, reason),
            other => panic!("expected a Result, got {other:?}"),
        }
    }

    /// Reads until a close frame or the end of the connection, skipping (and answering)
    /// pings and skipping other frames; returns how it closed and what was skipped.
    ///
    /// # Errors
    /// `TimedOut` when neither comes within `timeout`.
    pub fn expect_close(&mut self, timeout: Duration) -> io::Result<(Closed, Vec<Frame>)> {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_message(left) {
                Ok(Incoming::Frame(f)) if f.opcode == op::CLOSE => {
                    let reason = String::from_utf8_lossy(f.payload.get(2..).unwrap_or_default());
                    let closed = Closed::Frame {
                        code: f.close_code(),
                        reason: reason.into_owned(),
                    };
                    return Ok((closed, skipped));
                }
                Ok(Incoming::Frame(f)) => skipped.push(f),
                Ok(Incoming::Eof { .. }) => return Ok((Closed::Eof, skipped)),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no close within {timeout:?}; skipped {skipped:?}"),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(e),
                Err(e) => return Ok((Closed::Error(e.kind()), skipped)),
            }
        }
    }

    /// Sends a request and returns its `Result`.
    ///
    /// # Panics
    /// When sending fails or the next message is not a `Result` within `timeout`.
    pub fn request(
        &mut self,
        frame: &ClientFrame<'_>,
        timeout: Duration,
    ) -> (u64, ErrorCode, String) {
        self.send_request(frame).expect("sending a request");
        self.expect_result(timeout)
    }

    /// Sends a harmless request (`SetPresence`) and asserts its `Result` comes back: the
    /// connection is alive and served. On a new connection the sync runs beside requests, so
    /// one `SyncDone` may come before the `Result`.
    ///
    /// # Panics
    /// When no matching `Result` arrives within `timeout`, or anything else does.
    pub fn assert_served(&mut self, request_id: u64, timeout: Duration) {
        let frame = ClientFrame {
            request_id,
            request: wire::Request::SetPresence(wire::SetPresence { online: true }),
        };
        self.send_request(&frame).expect("sending a request");
        let mut synced = false;
        let (id, code, reason) = loop {
            match self.expect_msg(timeout) {
                ServerMsg::Result {
                    request_id,
                    code,
                    reason,
                } => break (request_id, code, reason),
                ServerMsg::Other(text) if !synced && text.starts_with("SyncDone") => synced = true,
                other => panic!("expected a Result, got {other:?}"),
            }
        };
        assert_eq!(id, request_id, "{code:?} {reason}");
    }
}

/// One frame from the front of `buf`, and its length; `None` when incomplete.
fn parse_frame(buf: &[u8]) -> io::Result<Option<(Frame, usize)>> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the server sent a masked frame (header {b0:#04x} {b1:#04x})"),
        ));
    }
    let (len, mut at) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let bytes: [u8; 8] = buf[2..10].try_into().expect("8 bytes");
            (u64::from_be_bytes(bytes), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len > SERVER_PAYLOAD_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a server frame of {len} bytes"),
        ));
    }
    let len = len as usize;
    if buf.len() < at + len {
        return Ok(None);
    }
    let payload = buf[at..at + len].to_vec();
    at += len;
    let frame = Frame {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0F,
        payload,
    };
    Ok(Some((frame, at)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_matches_rfc6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_round_trip_through_the_parser() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let payload = vec![7; len];
            let wire = super::encode_frame(true, 0, super::op::BINARY, None, &payload);
            let (frame, used) = super::parse_frame(&wire).expect("valid").expect("complete");
            assert_eq!((frame.payload.len(), used), (len, wire.len()));
            assert!(
                super::parse_frame(&wire[..wire.len() - 1])
                    .expect("valid")
                    .is_none()
            );
        }
    }
}
