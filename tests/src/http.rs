//! HTTP for the tests: `get` for the ops endpoints (`ureq`), and reading a raw response head
//! off a socket for refused WebSocket upgrades (where the point is the bytes on the wire).

use std::io::{self, Read as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The largest response head we accept.
const HEAD_BYTES_MAX: usize = 64 * 1024;

/// A response.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (as far as it arrived before the connection closed or the deadline).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` on the ops listener (with `ureq`; any status is returned, not an error).
///
/// # Errors
/// Connection errors, or the deadline passing.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .map_err(io::Error::other)?;
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .read_to_vec()
        .map_err(io::Error::other)?;
    Ok(Response {
        status: response.status().as_u16(),
        headers,
        body,
    })
}

/// Reads up to the end of a response head; returns it and the bytes read past it.
///
/// # Errors
/// Socket errors, a malformed head, EOF before its end, or the deadline.
pub fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<(Response, Vec<u8>)> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > HEAD_BYTES_MAX {
            return Err(invalid("response head over 64 KiB"));
        }
        let mut chunk = [0u8; 4096];
        let n = read_until(stream, &mut chunk, deadline)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF before the end of the response head: {buf:?}"),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| invalid("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(invalid(&format!("bad status line {status_line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(&format!("bad status line {status_line:?}")));
    }
    let status = code
        .parse()
        .map_err(|_| invalid(&format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| invalid(&format!("bad header line {line:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let rest = buf[end + 4..].to_vec();
    let response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    Ok((response, rest))
}

/// One `read` bounded by `deadline`; a timeout is `ErrorKind::TimedOut`.
///
/// # Errors
/// Socket errors, or `TimedOut` once the deadline has passed.
pub fn read_until(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    stream.set_read_timeout(Some(left))?;
    match stream.read(buf) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
        }
        other => other,
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}
