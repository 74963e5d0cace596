//! A minimal HTTP/1.1 client: one request per connection, enough for `/metrics`, the health
//! endpoints and refused WebSocket upgrades.

use std::io::{self, Read as _, Write as _};
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

/// `GET path` with `Connection: close`.
///
/// # Errors
/// Socket errors, a malformed response, or the deadline passing before the head arrives.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes())?;
    let (mut response, rest) = read_head(&mut stream, deadline)?;
    response.body = read_body(&mut stream, &response, rest, deadline)?;
    Ok(response)
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

/// The body: `Content-Length` bytes, else (or chunked) up to EOF or the deadline.
fn read_body(
    stream: &mut TcpStream,
    head: &Response,
    mut body: Vec<u8>,
    deadline: Instant,
) -> io::Result<Vec<u8>> {
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let want: Option<usize> = head.header("content-length").and_then(|v| v.parse().ok());
    loop {
        if want.is_some_and(|n| body.len() >= n) {
            body.truncate(want.unwrap_or_default());
            break;
        }
        let mut chunk = [0u8; 16 * 1024];
        match read_until(stream, &mut chunk, deadline) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::TimedOut && want.is_none() => break,
            Err(e) => return Err(e),
        }
    }
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(body)
}

fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let i = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("truncated chunk size"))?;
        let size = std::str::from_utf8(&data[..i]).map_err(|_| invalid("chunk size"))?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("chunk size"))?;
        data = &data[i + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(invalid("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
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
