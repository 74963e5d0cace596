//! A minimal HTTP/1 client for the S3 backend's own requests (`HEAD`, `DELETE` of an object):
//! hyper's client connection over a Glommio `TcpStream`, one connection per request.
//!
//! Owns connecting, sending one bodiless request and reading its status and headers. Plain
//! `http://` only (no TLS stack in the gateway yet). Invariants: never blocks the executor (the
//! endpoint's address is resolved once at startup, not here); every request ends within
//! [`REQUEST_TIMEOUT`]; at most [`ERROR_BODY_BYTES_MAX`] of a response body is read.

use super::MediaError;
use crate::http_io::Io;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{HeaderMap, StatusCode};
use std::net::SocketAddr;
use std::time::Duration;

/// The longest a request may take, connect to last header.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a response body kept (an S3 error document, for the log).
const ERROR_BODY_BYTES_MAX: usize = 4096;

/// A response: its status, headers and the start of its body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Up to [`ERROR_BODY_BYTES_MAX`] bytes of the body.
    pub body: Vec<u8>,
}

/// Sends `method` for `path_and_query` to `addr` with `Host: host` and no body.
///
/// # Errors
/// [`MediaError::S3`] when the connection or the exchange fails or takes too long.
pub async fn request(
    addr: SocketAddr,
    host: &str,
    method: hyper::Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, MediaError> {
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(hyper::header::HOST, host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| MediaError::S3(format!("building the request: {e}")))?;
    let exchange = async move {
        let stream = glommio::net::TcpStream::connect(addr).await?;
        Ok(exchange(stream, req).await)
    };
    match glommio::timer::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(answer) => answer,
        Err(e) => Err(MediaError::S3(format!(
            "{addr}: {}",
            std::io::Error::from(e)
        ))),
    }
}

async fn exchange(
    stream: glommio::net::TcpStream,
    req: hyper::Request<Empty<Bytes>>,
) -> Result<Answer, MediaError> {
    let s3 = |what: &str, e: hyper::Error| MediaError::S3(format!("{what}: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(Io::new(stream))
        .await
        .map_err(|e| s3("handshake", e))?;
    // The connection's IO runs as its own task until the response has been read.
    glommio::spawn_local(async move {
        let _ = conn.await;
    })
    .detach();
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| s3("request", e))?;
    let (parts, mut body) = response.into_parts();
    let mut kept = Vec::new();
    while kept.len() < ERROR_BODY_BYTES_MAX {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = ERROR_BODY_BYTES_MAX - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(e)) => return Err(s3("response body", e)),
            None => break,
        }
    }
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: kept,
    })
}
