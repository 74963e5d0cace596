//! The client side of the WebSocket opening handshake (RFC 6455 §4.1), over any `Read + Write`.
//!
//! Owns the upgrade request loadgen sends (with `Authorization: Bearer <jwt>`) and the checks on
//! the response: status 101, `Upgrade: websocket`, and a `Sec-WebSocket-Accept` that matches
//! our key. Written by hand rather than with tungstenite so an idle client holds no buffers
//! after the handshake. Invariant: a successful handshake hands back every byte it read past
//! the response head, so no frame is lost.

use std::io::{self, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to the key before hashing.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// A response head longer than this is not a WebSocket upgrade we will accept.
const RESPONSE_HEAD_BYTES_MAX: usize = 8192;
/// Headers we look at in a response (httparse needs a fixed bound).
const RESPONSE_HEADERS_MAX: usize = 32;

/// Why a handshake failed, phrased so equal causes compare equal (they are tallied by text).
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// Reading or writing the socket failed.
    Io(io::Error),
    /// The server closed the connection before finishing its response.
    Closed,
    /// The server answered with a status other than 101.
    Status(u16),
    /// The response was not a valid upgrade (bad head, missing or wrong headers).
    Invalid(&'static str),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) if e.kind() == io::ErrorKind::WouldBlock => f.write_str("timed out"),
            Self::Io(e) => write!(f, "{e}"),
            Self::Closed => f.write_str("closed by server before response"),
            Self::Status(code) => write!(f, "HTTP {code}"),
            Self::Invalid(what) => write!(f, "invalid upgrade response: {what}"),
        }
    }
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// The upgrade request for `path` on `host`, with a base64 `key` and a bearer `token`.
pub(crate) fn request(host: &str, path: &str, key: &str, token: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
}

/// A `Sec-WebSocket-Key` from 16 bytes the caller chose (need not be secret on loopback).
pub(crate) fn key(nonce: [u8; 16]) -> String {
    BASE64.encode(nonce)
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with.
pub(crate) fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// Sends `request` and reads the response; returns any bytes read past the response head.
pub(crate) fn perform<S: Read + Write>(
    stream: &mut S,
    request: &str,
    key: &str,
) -> Result<Vec<u8>, HandshakeError> {
    stream.write_all(request.as_bytes())?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0_u8; 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head_len) = check_response(&buf, key)? {
            return Ok(buf.split_off(head_len));
        }
        if buf.len() > RESPONSE_HEAD_BYTES_MAX {
            return Err(HandshakeError::Invalid("response head too long"));
        }
    }
}

/// `Ok(Some(head_len))` once `buf` holds a complete, valid 101 head; `Ok(None)` if incomplete.
pub(crate) fn check_response(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HandshakeError::Invalid("unparsable response head")),
    };
    let code = response.code.unwrap_or(0);
    if code != 101 {
        return Err(HandshakeError::Status(code));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(HandshakeError::Invalid("no Upgrade: websocket"));
    }
    match header("sec-websocket-accept") {
        Some(accept) if accept == accept_for(key) => Ok(Some(head_len)),
        Some(_) => Err(HandshakeError::Invalid("wrong Sec-WebSocket-Accept")),
        None => Err(HandshakeError::Invalid("no Sec-WebSocket-Accept")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted peer: reads come from `input` in `step`-byte pieces; writes are kept.
    struct Script {
        input: Vec<u8>,
        at: usize,
        step: usize,
        written: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.input.len() - self.at);
            out[..n].copy_from_slice(&self.input[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Write for Script {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn rfc_6455_example_key() {
        // RFC 6455 §1.3's worked example.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(key(*b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn split_response_keeps_trailing_frame() {
        let k = key([7; 16]);
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_for(&k)
        );
        let mut input = response.into_bytes();
        input.extend_from_slice(b"\x89\x00"); // an empty ping right behind the head
        let req = request("127.0.0.1:1", "/ws", &k, "tok");
        assert!(req.contains("Authorization: Bearer tok\r\n"));
        for step in [1, 3, 64, 4096] {
            let mut peer = Script {
                input: input.clone(),
                at: 0,
                step,
                written: Vec::new(),
            };
            let mut rest = perform(&mut peer, &req, &k).expect("valid upgrade");
            assert_eq!(peer.written, req.as_bytes());
            // What was read past the head comes back; the rest is still in the "socket".
            peer.read_to_end(&mut rest).expect("scripted read");
            assert_eq!(
                rest, b"\x89\x00",
                "no byte after the head is lost (step {step})"
            );
        }
    }

    #[test]
    fn failures_are_named() {
        let k = key([1; 16]);
        let cases: [(&[u8], &str); 4] = [
            (
                b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n",
                "HTTP 401",
            ),
            (
                b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\r\n",
                "no Sec-WebSocket-Accept",
            ),
            (
                b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: x\r\n\r\n",
                "no Upgrade: websocket",
            ),
            (b"HTTP/1.1 101 OK\r\n", "closed by server before response"),
        ];
        for (input, want) in cases {
            let mut peer = Script {
                input: input.to_vec(),
                at: 0,
                step: 64,
                written: Vec::new(),
            };
            let err = perform(&mut peer, "GET", &k).expect_err("must fail");
            assert!(
                err.to_string().contains(want),
                "{err} should mention {want}"
            );
        }
    }
}
