//! The media listener: `PUT` and `GET`/`HEAD` of blobs of the built-in backend over HTTP/1
//! (hyper on Glommio, core 0), each request authorised by its signed URL alone.
//!
//! Owns the mapping from requests to [`LocalBlobs`] and from outcomes to HTTP statuses: a bad,
//! tampered, foreign or expired signature → 403; a body whose size or SHA-256 differs from the
//! signed one → 400 (nothing kept); a missing blob → 404; an unsatisfiable range → 416; a disk
//! failure → 500. Invariants: no request is served without a verified signature; no input
//! panics; a body is streamed (to the file while hashing, or from the file in chunks), never
//! held whole in memory; at most `media_connections_max` connections are open at once.

use super::Blobs;
use super::local::{LocalBlobs, PATH_PREFIX, UploadError};
use super::range::{self, Served};
use super::sign::{Grant, Method, Refusal};
use crate::http_io::Io;
use bytes::Bytes;
use glommio::io::BufferedFile;
use glommio::net::TcpListener;
use http_body_util::{BodyExt as _, Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use wire::AttachmentId;

/// A media connection that moves no byte for this long is closed (slow or dead clients).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from the file per body chunk of a download.
const READ_CHUNK_BYTES: usize = 128 * 1024;
/// Most bytes of a refused upload's body read and thrown away before answering, so a client
/// that sends its body without waiting (no `Expect: 100-continue`) reads the answer instead of
/// a connection reset. Past this the connection is simply closed.
const DISCARD_BYTES_MAX: u64 = 1024 * 1024;
/// Served when the signed MIME type is not a valid header value.
const FALLBACK_TYPE: &str = "application/octet-stream";

/// A file's chunks, produced on this core (Glommio files are not `Send`).
type Chunks = Pin<Box<dyn futures_lite::Stream<Item = Result<Frame<Bytes>, std::io::Error>>>>;
/// A response body: small and fixed, or streamed from a file.
type Body = Either<Full<Bytes>, StreamBody<Chunks>>;

/// Serves the media listener forever (on the calling core).
/// With the S3 backend it answers 404 to everything (clients talk to the bucket).
pub async fn serve(listener: TcpListener, blobs: Arc<Blobs>, connections_max: usize) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let Ok(stream) = listener.accept().await else {
            // Out of descriptors: the WebSocket accept loops count it; just retry later.
            glommio::timer::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if open.get() >= connections_max {
            // Closing at once is the cheapest refusal; the client retries later.
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let (blobs, open) = (blobs.clone(), open.clone());
        glommio::spawn_local(async move {
            let service = hyper::service::service_fn(move |req| {
                let blobs = blobs.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &blobs).await) }
            });
            let io = Io::with_idle_timeout(stream, IDLE_TIMEOUT);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// One request.
async fn handle(req: Request<Incoming>, blobs: &Blobs) -> Response<Body> {
    let (Blobs::Local(blobs), Some(id)) = (blobs, attachment(req.uri().path())) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let method = match *req.method() {
        hyper::Method::PUT => Method::Put,
        hyper::Method::GET | hyper::Method::HEAD => Method::Get,
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT"));
            return r;
        }
    };
    let query = req.uri().query().unwrap_or_default();
    let grant = match blobs
        .signer()
        .verify(method, id, query, crate::clock::unix_s())
    {
        Ok(grant) => grant,
        Err(refusal) if method == Method::Put => return refuse_body(req, refused(refusal)).await,
        Err(refusal) => return refused(refusal),
    };
    match method {
        Method::Put => upload(req, &grant, blobs).await,
        Method::Get => download(&req, &grant, blobs).await,
    }
}

/// The attachment id of a blob path, `/v1/blobs/<32 hex digits>`.
fn attachment(path: &str) -> Option<AttachmentId> {
    let hex = path.strip_prefix(PATH_PREFIX)?;
    let mut bytes = [0u8; AttachmentId::SIZE];
    hex::decode_to_slice(hex, &mut bytes).ok()?;
    AttachmentId::from_bytes(bytes)
}

fn refused(refusal: Refusal) -> Response<Body> {
    let reason = match refusal {
        Refusal::Malformed => "malformed signed URL\n",
        Refusal::BadSignature => "bad signature\n",
        Refusal::Expired => "URL expired\n",
    };
    text(StatusCode::FORBIDDEN, reason)
}

/// `PUT`: stream the body into a temporary file while counting and hashing it, then check.
async fn upload(req: Request<Incoming>, grant: &Grant, blobs: &LocalBlobs) -> Response<Body> {
    if let Some(refusal) = precheck(&req, grant) {
        return refuse_body(req, refusal).await;
    }
    let mut upload = match blobs.begin_upload(grant).await {
        Ok(upload) => upload,
        Err(error) => return upload_failed(&error),
    };
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The client went away or broke HTTP framing; dropping the upload cleans up.
            return text(StatusCode::BAD_REQUEST, "the upload did not complete\n");
        };
        if let Some(data) = frame.data_ref()
            && let Err(error) = upload.write(data).await
        {
            drop(upload);
            discard(&mut body).await;
            return upload_failed(&error);
        }
    }
    match upload.finish().await {
        Ok(()) => text(StatusCode::OK, "stored\n"),
        Err(error) => upload_failed(&error),
    }
}

/// Refusals known from the headers alone, before a byte of the body is read (so a client
/// that sent `Expect: 100-continue` never sends the body at all).
fn precheck(req: &Request<Incoming>, grant: &Grant) -> Option<Response<Body>> {
    // hyper has already refused an unparsable Content-Length.
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = length {
        if length > grant.size {
            return Some(upload_failed(&UploadError::TooLarge));
        }
        if length < grant.size {
            return Some(upload_failed(&UploadError::TooSmall));
        }
    }
    // A client may send the S3-style checksum header to either backend; it must agree.
    if let Some(sum) = req.headers().get("x-amz-checksum-sha256") {
        use base64::Engine as _;
        let declared = base64::engine::general_purpose::STANDARD.encode(grant.sha256.as_bytes());
        if sum.as_bytes() != declared.as_bytes() {
            return Some(upload_failed(&UploadError::DigestMismatch));
        }
    }
    None
}

/// Answers a `PUT` refused before its body was read: the body is discarded first (up to
/// [`DISCARD_BYTES_MAX`]) unless the client waits for `100 Continue`, which it then never gets.
async fn refuse_body(req: Request<Incoming>, response: Response<Body>) -> Response<Body> {
    let waits = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits {
        discard(&mut req.into_body()).await;
    }
    response
}

/// Reads and drops up to [`DISCARD_BYTES_MAX`] more bytes of `body`.
async fn discard(body: &mut Incoming) {
    let mut read = 0u64;
    while read <= DISCARD_BYTES_MAX {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
            Some(Err(_)) | None => return,
        }
    }
}

fn upload_failed(error: &UploadError) -> Response<Body> {
    match error {
        UploadError::Io(e) => {
            tracing::error!(error = %e, "media upload failed on the disk");
            text(StatusCode::INTERNAL_SERVER_ERROR, "storage error\n")
        }
        refused => text(StatusCode::BAD_REQUEST, &format!("{refused}\n")),
    }
}

/// `GET`/`HEAD`: the blob (or the requested range of it), streamed from the file.
async fn download(req: &Request<Incoming>, grant: &Grant, blobs: &LocalBlobs) -> Response<Body> {
    let (file, len) = match blobs.open_blob(grant.id).await {
        Ok(Some(found)) => found,
        Ok(None) => return text(StatusCode::NOT_FOUND, "no such blob\n"),
        Err(error) => {
            tracing::error!(%error, "opening a blob");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "storage error\n");
        }
    };
    let served = range::parse(
        req.headers().get(header::RANGE).map(HeaderValue::as_bytes),
        len,
    );
    let (status, start, end) = match served {
        Served::Whole => (StatusCode::OK, 0, len),
        Served::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        Served::Unsatisfiable => {
            let _ = file.close().await;
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            insert(&mut r, header::CONTENT_RANGE, &format!("bytes */{len}"));
            return r;
        }
    };
    let body = if req.method() == hyper::Method::HEAD {
        let _ = file.close().await;
        Either::Left(Full::new(Bytes::new()))
    } else {
        file_body(file, start, end)
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let content_type = HeaderValue::from_str(&grant.mime)
        .unwrap_or_else(|_| HeaderValue::from_static(FALLBACK_TYPE));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // The type is the uploader's word: browsers must not sniff or run it on our origin.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    insert(&mut r, header::CONTENT_LENGTH, &(end - start).to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        let range = format!("bytes {start}-{}/{len}", end - 1);
        insert(&mut r, header::CONTENT_RANGE, &range);
    }
    r
}

/// Bytes `start..end` of `file`, read in chunks as hyper asks for them (so at most a chunk or
/// two per download is in memory); the file is closed at the end.
fn file_body(file: BufferedFile, start: u64, end: u64) -> Body {
    let chunks = futures_lite::stream::unfold(Some((file, start)), move |state| async move {
        let (file, pos) = state?;
        if pos >= end {
            let _ = file.close().await;
            return None;
        }
        let want = (end - pos).min(READ_CHUNK_BYTES as u64) as usize;
        match file.read_at(pos, want).await {
            Ok(read) if !read.is_empty() => {
                let n = read.len() as u64;
                let chunk = Frame::data(Bytes::copy_from_slice(&read));
                Some((Ok(chunk), Some((file, pos + n))))
            }
            // Shorter than when we looked: end the body with an error (hyper resets it).
            Ok(_) => Some((Err(std::io::ErrorKind::UnexpectedEof.into()), None)),
            Err(error) => Some((Err(std::io::Error::from(error)), None)),
        }
    });
    Either::Right(StreamBody::new(Box::pin(chunks)))
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::copy_from_slice(
        body.as_bytes(),
    ))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn insert(r: &mut Response<Body>, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_32_hex_digit_nonzero_ids_are_blob_paths() {
        let id = "0102030405060708090a0b0c0d0e0f10";
        assert_eq!(
            attachment(&format!("{PATH_PREFIX}{id}")).map(|a| *a.as_bytes()),
            Some([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])
        );
        for bad in [
            format!("{PATH_PREFIX}{}", "0".repeat(32)),
            format!("{PATH_PREFIX}{id}00"),
            format!("{PATH_PREFIX}{}", &id[1..]),
            format!("{PATH_PREFIX}{}", id.replace('a', "g")),
            format!("/v2/blobs/{id}"),
            format!("{PATH_PREFIX}{id}/"),
        ] {
            assert_eq!(attachment(&bad), None, "{bad}");
        }
    }
}
