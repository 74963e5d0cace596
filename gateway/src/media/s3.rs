//! The S3-compatible blob backend (AWS S3, `MinIO`, Ceph, `s3s-fs`…): pre-signed URLs made with
//! `rusty-s3` (`SigV4`, no SDK), and the gateway's own `HEAD`/`DELETE` of objects.
//!
//! Owns the object key of an attachment (its 32 hex digits) and what each URL requires. The
//! upload URL signs `content-length`, `content-type` and `x-amz-checksum-sha256`, so the store
//! itself refuses a blob of another size or digest (and a client that leaves them out); the
//! download URL is a signed `GET` that also asks for the declared `Content-Type`. Invariants:
//! signing is pure (`now` is an input); `confirm` says yes only for an object whose length is
//! the declared one and whose SHA-256 checksum the store reports (`x-amz-checksum-mode`) as the
//! declared one, so the store must support S3's flexible checksums (AWS S3, `MinIO`, recent
//! Ceph, `s3s-fs` do); `delete` of a missing object succeeds; no request blocks the executor
//! (see `client`).

use super::MediaError;
use super::client;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rusty_s3::{Bucket, Credentials, S3Action as _, UrlStyle};
use std::net::SocketAddr;
use std::time::Duration;
use wire::AttachmentId;

/// The longest validity S3 accepts for a pre-signed URL (7 days).
pub const URL_TTL_S_MAX: u64 = 7 * 24 * 3600;
/// Validity of the URLs the gateway signs for its own requests.
const OWN_REQUEST_TTL: Duration = Duration::from_mins(1);

/// Where and as whom to reach the bucket.
#[derive(Clone, Debug)]
pub struct S3Settings {
    /// `http://host:port` (path-style requests: `<endpoint>/<bucket>/<key>`).
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The region signed into every request.
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
}

/// Blobs in an S3 bucket.
pub struct S3Blobs {
    bucket: Bucket,
    credentials: Credentials,
    addr: SocketAddr,
    host: String,
    ttl_s: u64,
}

impl S3Blobs {
    /// The bucket of `settings`, URLs valid `ttl_s` (at most [`URL_TTL_S_MAX`]). Resolves the
    /// endpoint's host name now, at startup (a blocking lookup, never on an executor).
    ///
    /// # Errors
    /// The endpoint is not an `http://` URL with a host that resolves, or the bucket name is
    /// invalid.
    pub fn new(settings: &S3Settings, ttl_s: u64) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let endpoint: url::Url = settings
            .endpoint
            .parse()
            .with_context(|| format!("s3_endpoint {:?} is not a URL", settings.endpoint))?;
        anyhow::ensure!(
            endpoint.scheme() == "http",
            "s3_endpoint must be http:// (the gateway has no TLS client yet)"
        );
        let name = endpoint.host_str().context("s3_endpoint has no host")?;
        let port = endpoint.port_or_known_default().unwrap_or(80);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(name, port))
            .with_context(|| format!("resolving s3_endpoint host {name}"))?
            .next()
            .with_context(|| format!("s3_endpoint host {name} has no address"))?;
        // The Host header exactly as rusty-s3 signs it.
        let host = match endpoint.port() {
            Some(port) => format!("{name}:{port}"),
            None => name.to_owned(),
        };
        let bucket = Bucket::new(
            endpoint,
            UrlStyle::Path,
            settings.bucket.clone(),
            settings.region.clone(),
        )
        .with_context(|| format!("s3_bucket {:?}", settings.bucket))?;
        let credentials = Credentials::new(&settings.access_key, &settings.secret_key);
        Ok(Self {
            bucket,
            credentials,
            addr,
            host,
            ttl_s: ttl_s.clamp(1, URL_TTL_S_MAX),
        })
    }

    /// A `PUT` URL accepting exactly this blob. The client must send `Content-Length: size`,
    /// `Content-Type: mime` and `x-amz-checksum-sha256: <base64 of sha256>`.
    pub fn upload_url(
        &self,
        id: AttachmentId,
        size: u64,
        sha256: &wire::Sha256,
        mime: &str,
        now_ms: u64,
    ) -> String {
        let key = key(id);
        let mut action = self.bucket.put_object(Some(&self.credentials), &key);
        let headers = action.headers_mut();
        headers.insert("content-length", size.to_string());
        headers.insert("content-type", mime.to_owned());
        headers.insert("x-amz-checksum-sha256", STANDARD.encode(sha256.as_bytes()));
        action.sign_with_time(self.ttl(), &timestamp(now_ms)).into()
    }

    /// A `GET` URL for the object, served as `mime`.
    pub fn download_url(&self, id: AttachmentId, mime: &str, now_ms: u64) -> String {
        let key = key(id);
        let mut action = self.bucket.get_object(Some(&self.credentials), &key);
        action
            .query_mut()
            .insert("response-content-type", mime.to_owned());
        action.sign_with_time(self.ttl(), &timestamp(now_ms)).into()
    }

    /// Whether the object is there with `size` bytes and the store vouches for `sha256`.
    ///
    /// # Errors
    /// The store cannot be reached or answers something other than found / not found.
    pub async fn confirm(
        &self,
        id: AttachmentId,
        size: u64,
        sha256: &wire::Sha256,
    ) -> Result<bool, MediaError> {
        let key = key(id);
        let mut action = self.bucket.head_object(Some(&self.credentials), &key);
        action
            .headers_mut()
            .insert("x-amz-checksum-mode", "ENABLED");
        let url = action.sign_with_time(OWN_REQUEST_TTL, &timestamp(crate::clock::unix_ms()));
        let answer = self
            .send(
                hyper::Method::HEAD,
                &url,
                &[("x-amz-checksum-mode", "ENABLED")],
            )
            .await?;
        match answer.status.as_u16() {
            200 => {}
            404 => return Ok(false),
            _ => return Err(unexpected("HEAD", &answer)),
        }
        let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok());
        let length_ok = header("content-length").and_then(|v| v.parse::<u64>().ok()) == Some(size);
        // Required, not just compared when present: a store that kept an object after refusing
        // its checksum (s3s-fs does) reports no checksum for it, and must not confirm it.
        let digest_ok =
            header("x-amz-checksum-sha256") == Some(&*STANDARD.encode(sha256.as_bytes()));
        Ok(length_ok && digest_ok)
    }

    /// Deletes the object (done if it is already gone).
    ///
    /// # Errors
    /// The store cannot be reached or refuses.
    pub async fn delete(&self, id: AttachmentId) -> Result<(), MediaError> {
        let key = key(id);
        let action = self.bucket.delete_object(Some(&self.credentials), &key);
        let url = action.sign_with_time(OWN_REQUEST_TTL, &timestamp(crate::clock::unix_ms()));
        let answer = self.send(hyper::Method::DELETE, &url, &[]).await?;
        match answer.status.as_u16() {
            200 | 204 | 404 => Ok(()),
            _ => Err(unexpected("DELETE", &answer)),
        }
    }

    async fn send(
        &self,
        method: hyper::Method,
        url: &url::Url,
        headers: &[(&str, &str)],
    ) -> Result<client::Answer, MediaError> {
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        client::request(self.addr, &self.host, method, &path, headers).await
    }

    /// How long its URLs stay valid, in seconds.
    pub fn ttl_s(&self) -> u64 {
        self.ttl_s
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_s)
    }
}

/// The object key of an attachment.
fn key(id: AttachmentId) -> String {
    hex::encode(id.as_bytes())
}

/// `now_ms` to the second, as the URL's signing time (so its expiry is
/// `super::expires_s(now_ms, ttl_s)`, the same second the built-in backend uses).
fn timestamp(now_ms: u64) -> jiff::Timestamp {
    let seconds = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::MAX)
}

fn unexpected(what: &str, answer: &client::Answer) -> MediaError {
    MediaError::S3(format!(
        "{what} answered {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> S3Blobs {
        let settings = S3Settings {
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "media".into(),
            region: "us-east-1".into(),
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        };
        S3Blobs::new(&settings, 900).expect("valid settings")
    }

    #[test]
    fn upload_urls_sign_the_length_type_and_checksum() {
        let id = AttachmentId::from_bytes([9; 16]).expect("nonzero");
        let url = blobs().upload_url(id, 42, &wire::Sha256::new([1; 32]), "image/png", 1_000);
        assert!(
            url.starts_with("http://127.0.0.1:9000/media/09090909090909090909090909090909?"),
            "{url}"
        );
        assert!(
            url.contains(
                "X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost%3Bx-amz-checksum-sha256"
            ),
            "{url}"
        );
        assert!(url.contains("X-Amz-Expires=900"), "{url}");
        assert!(url.contains("X-Amz-Date=19700101T000001Z"), "{url}");
    }

    #[test]
    fn download_urls_ask_for_the_declared_type() {
        let id = AttachmentId::from_bytes([9; 16]).expect("nonzero");
        let url = blobs().download_url(id, "image/png", 1_000);
        assert!(url.contains("response-content-type=image%2Fpng"), "{url}");
    }
}
