//! The HTTP upgrade: read one request (bounded in size and time), route it, authenticate it and
//! answer 101, or refuse with a bare status and close.
//!
//! Owns everything before the first WebSocket frame. Responses are `http::Response` values
//! validated and serialized by tungstenite (`create_response`, `write_response`): hyper cannot
//! hand over a non-`Send` Glommio stream after an upgrade (see shared/FACTS.md), so this one
//! request is parsed with `httparse`. Invariants: nothing is upgraded without a verified token;
//! a refusal says nothing that helps an attacker (no body); bytes the client sent after the
//! request are returned, not lost.

use crate::auth::{AuthFailure, Identity};
use crate::core::Core;
use crate::metrics::Refusal;
use futures_lite::AsyncReadExt as _;
use futures_lite::AsyncWriteExt as _;
use glommio::net::TcpStream;
use std::time::Duration;
use tungstenite::http::{self, Request, Response, StatusCode};

/// Most headers in an upgrade request.
const HEADERS_MAX: usize = 32;
/// Bytes read per system call while the request arrives.
const READ_CHUNK_BYTES: usize = 1024;
/// How long a refused client may take to close its side.
const LINGER: Duration = Duration::from_secs(1);
/// Most reads (of `READ_CHUNK_BYTES`) discarded from a refused client.
const LINGER_READS_MAX: usize = 16;

/// The outcome of a handshake that succeeded.
pub struct Upgraded {
    /// The authenticated device.
    pub identity: Identity,
    /// Bytes received after the request (the start of the first frames).
    pub leftover: Vec<u8>,
}

/// Runs the upgrade on a fresh connection; `None` when it was refused (already answered).
pub async fn upgrade(core: &Core, stream: &mut TcpStream) -> Option<Upgraded> {
    let timeout = Duration::from_millis(core.config.handshake_timeout_ms);
    let read = read_request(stream, core.config.handshake_bytes_max);
    let Some(request) = glommio::timer::timeout(timeout, async { Ok(read.await) })
        .await
        .ok()
    else {
        core.metrics.refused(Refusal::HandshakeTimeout);
        return None;
    };
    let (bytes, consumed) = request?;
    let outcome = answer(core, &bytes[..consumed]);
    let response = outcome
        .as_ref()
        .map_or_else(|refusal| refusal, |(_, accepted)| accepted);
    let mut out = Vec::with_capacity(256);
    tungstenite::handshake::server::write_response(&mut out, response).ok()?;
    stream.write_all(&out).await.ok()?;
    let Ok((identity, _)) = outcome else {
        close_gently(stream).await;
        return None;
    };
    Some(Upgraded {
        identity,
        leftover: bytes[consumed..].to_vec(),
    })
}

/// Reads until a complete request head: (bytes read, length of the head). `None` if the peer
/// left or sent more than `bytes_max` without completing one (it is then just closed).
async fn read_request(stream: &mut TcpStream, bytes_max: usize) -> Option<(Vec<u8>, usize)> {
    let mut bytes = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        match httparse::Request::new(&mut headers).parse(&bytes) {
            Ok(httparse::Status::Complete(head)) => return Some((bytes, head)),
            Ok(httparse::Status::Partial) if bytes.len() < bytes_max => {}
            // Too long or not HTTP: nothing sensible to answer.
            _ => return None,
        }
    }
}

/// Decides the response: 101 with the identity, or a refusal.
fn answer(core: &Core, head: &[u8]) -> Result<(Identity, Response<()>), Response<()>> {
    let Some(request) = parse(head) else {
        core.metrics.refused(Refusal::BadRequest);
        return Err(status(StatusCode::BAD_REQUEST));
    };
    if request.uri().path() != core.config.ws_path {
        core.metrics.refused(Refusal::NotFound);
        return Err(status(StatusCode::NOT_FOUND));
    }
    if core.draining() {
        core.metrics.refused(Refusal::Draining);
        return Err(status(StatusCode::SERVICE_UNAVAILABLE));
    }
    let Ok(response) = tungstenite::handshake::server::create_response(&request) else {
        core.metrics.refused(Refusal::BadRequest);
        return Err(status(StatusCode::BAD_REQUEST));
    };
    let identity = token(&request)
        .ok_or(AuthFailure::Missing)
        .and_then(|t| core.auth.verify(t));
    match identity {
        Ok(identity) => Ok((identity, response)),
        Err(reason) => {
            core.metrics.auth_failure(reason);
            Err(status(StatusCode::UNAUTHORIZED))
        }
    }
}

/// The request head as an `http::Request`, if it is well-formed.
fn parse(head: &[u8]) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(head).ok()?;
    let mut builder = Request::builder()
        .method(parsed.method?)
        .uri(parsed.path?)
        .version(if parsed.version? == 1 {
            http::Version::HTTP_11
        } else {
            http::Version::HTTP_10
        });
    for header in parsed.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    builder.body(()).ok()
}

/// The bearer token from `Authorization`, else the `token` query parameter.
fn token(request: &Request<()>) -> Option<&str> {
    let bearer = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.or_else(|| {
        request
            .uri()
            .query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
    })
}

/// A bare refusal: status only, no body, connection closed.
pub fn status(code: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from_static("0"),
    );
    if code == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("5"),
        );
    }
    response
}

/// Answers a connection over `connections_max` with 503 and closes it, without reading.
pub async fn refuse_busy(core: &Core, mut stream: TcpStream) {
    core.metrics.refused(Refusal::ConnectionsMax);
    let mut out = Vec::with_capacity(128);
    if tungstenite::handshake::server::write_response(
        &mut out,
        &status(StatusCode::SERVICE_UNAVAILABLE),
    )
    .is_ok()
    {
        let _ = stream.write_all(&out).await;
    }
    close_gently(&mut stream).await;
}

/// Closes after a refusal without a reset: closing a socket with unread input makes the kernel
/// send RST, which can destroy the response before the client reads it. So: half-close, then
/// read and discard (bounded in bytes and time) until the client closes its side.
async fn close_gently(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
    let _ = glommio::timer::timeout(LINGER, async {
        let mut sink = [0u8; READ_CHUNK_BYTES];
        for _ in 0..LINGER_READS_MAX {
            if stream.read(&mut sink).await.unwrap_or(0) == 0 {
                break;
            }
        }
        Ok(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let req = parse(b"GET /ws?a=1&token=q.r.s HTTP/1.1\r\nHost: x\r\n\r\n").expect("parses");
        assert_eq!(token(&req), Some("q.r.s"));
        let req = parse(b"GET /ws?token=q HTTP/1.1\r\nAuthorization: Bearer h.e.d\r\n\r\n")
            .expect("parses");
        assert_eq!(token(&req), Some("h.e.d"), "the header wins");
        let req = parse(b"GET /ws HTTP/1.1\r\nAuthorization: Basic abc\r\n\r\n").expect("parses");
        assert_eq!(token(&req), None);
    }

    #[test]
    fn refusals_carry_no_body() {
        let mut out = Vec::new();
        tungstenite::handshake::server::write_response(&mut out, &status(StatusCode::UNAUTHORIZED))
            .expect("writes");
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
        assert!(text.contains("content-length: 0"), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
    }
}
