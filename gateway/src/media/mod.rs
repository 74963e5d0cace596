//! Media blobs (DESIGN.md F8): where attachment bytes live, and the pre-signed URLs that let
//! clients upload and download them without the bytes ever crossing a WebSocket.
//!
//! Layout: `mod.rs` ([`Blobs`], the one interface over both backends, and its construction
//! from the config), `sign` (HMAC-signed URLs of the built-in backend), `local` (blobs as files
//! in `media_dir`: streamed, hash-checked uploads), `http` (the media listener serving `local`),
//! `range` (the `Range` header), `s3` (an S3-compatible bucket through `rusty-s3` pre-signed
//! URLs), `client` (the HTTP/1 client `s3` uses for `HEAD`/`DELETE`).
//!
//! What this layer does not own: attachment records, who may reference or download what, and
//! when a blob dies (the store and messaging decide, then call [`Blobs::confirm`] and
//! [`Blobs::delete`]). Invariants: a URL is valid for `limits.url_ttl_s` from the `now` it was
//! issued at, both backends expiring at the same second ([`Blobs::expires_at_ms`]); a blob is
//! confirmed only when its size and digest are the declared ones (checked by us, or vouched for
//! by the S3 store); nothing here blocks an executor thread (files through io_uring, sockets
//! through Glommio; the blocking setup — key, directories, DNS — runs in
//! [`Blobs::from_config`] before the executors start).

pub mod client;
pub mod http;
pub mod local;
pub mod range;
pub mod s3;
pub mod sign;

use crate::config::{Config, MediaBackend};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use wire::AttachmentId;

/// The development media key's file name inside the data directory.
pub const DEV_KEY_FILE: &str = "dev-media.key";

/// Why a blob operation failed (the caller answers `Unavailable` or retries later).
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The local disk failed.
    #[error("blob storage: {0}")]
    Io(#[from] std::io::Error),
    /// The S3 store could not be reached or refused.
    #[error("S3: {0}")]
    S3(String),
}

/// Where blobs live: the gateway's own disk, or an S3-compatible bucket.
pub enum Blobs {
    /// Files in `media_dir`, served by the media listener.
    Local(local::LocalBlobs),
    /// Objects in a bucket; clients talk to the store directly.
    S3(s3::S3Blobs),
}

impl Blobs {
    /// The configured backend. `media_addr` is the bound media listener (the default public
    /// URL of the built-in backend). Blocking (files, key, DNS): call before the executors run.
    ///
    /// # Errors
    /// An unreadable or short key, a media directory that cannot be created, a bad S3 setting.
    pub fn from_config(config: &Config, media_addr: SocketAddr) -> anyhow::Result<Self> {
        let ttl_s = u64::from(config.limits.url_ttl_s);
        match config.media_backend {
            MediaBackend::Local => {
                let key = media_key(config)?;
                let dir = media_dir(config);
                let base = config
                    .media_public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{media_addr}"));
                let blobs = local::LocalBlobs::open(&dir, &base, sign::Signer::new(&key), ttl_s)
                    .with_context(|| format!("opening media_dir {}", dir.display()))?;
                Ok(Self::Local(blobs))
            }
            MediaBackend::S3 => {
                let settings = s3_settings(config)?;
                Ok(Self::S3(s3::S3Blobs::new(&settings, ttl_s)?))
            }
        }
    }

    /// A pre-signed upload URL for exactly this blob (size, SHA-256, type), valid `url_ttl_s`
    /// from `now_ms` (Unix ms). Clients `PUT` the bytes with `Content-Length: size`,
    /// `Content-Type: mime` and `x-amz-checksum-sha256: <standard base64 of sha256>` (the S3
    /// backend requires all three; the built-in one checks what is sent).
    pub fn upload_url(
        &self,
        id: AttachmentId,
        size: u64,
        sha256: &wire::Sha256,
        mime: &str,
        now_ms: u64,
    ) -> String {
        match self {
            Blobs::Local(b) => b.upload_url(id, size, sha256, mime, now_ms),
            Blobs::S3(b) => b.upload_url(id, size, sha256, mime, now_ms),
        }
    }

    /// A pre-signed download URL, served with `Content-Type: mime`, valid `url_ttl_s` from
    /// `now_ms`.
    pub fn download_url(&self, id: AttachmentId, mime: &str, now_ms: u64) -> String {
        match self {
            Blobs::Local(b) => b.download_url(id, mime, now_ms),
            Blobs::S3(b) => b.download_url(id, mime, now_ms),
        }
    }

    /// When URLs issued at `now_ms` stop working (Unix ms; `expires_at_ms` on the wire).
    pub fn expires_at_ms(&self, now_ms: u64) -> u64 {
        let ttl_s = match self {
            Blobs::Local(b) => b.ttl_s(),
            Blobs::S3(b) => b.ttl_s(),
        };
        expires_s(now_ms, ttl_s).saturating_mul(1000)
    }

    /// Whether the blob was uploaded and verified: `Local`, the checked file is in place with
    /// `size` bytes; `S3`, a `HEAD` finds the object with `size` bytes and the store's SHA-256
    /// checksum of it is `sha256`.
    ///
    /// # Errors
    /// The backend could not answer (not "absent": that is `Ok(false)`).
    pub async fn confirm(
        &self,
        id: AttachmentId,
        size: u64,
        sha256: &wire::Sha256,
    ) -> Result<bool, MediaError> {
        match self {
            Blobs::Local(b) => b.confirm(id, size).await,
            Blobs::S3(b) => b.confirm(id, size, sha256).await,
        }
    }

    /// Deletes the blob; deleting an absent blob succeeds.
    ///
    /// # Errors
    /// The backend could not delete it.
    pub async fn delete(&self, id: AttachmentId) -> Result<(), MediaError> {
        match self {
            Blobs::Local(b) => b.delete(id).await,
            Blobs::S3(b) => b.delete(id).await,
        }
    }
}

/// The last valid second of a URL issued at `now_ms` with `ttl_s`.
pub fn expires_s(now_ms: u64, ttl_s: u64) -> u64 {
    (now_ms / 1000).saturating_add(ttl_s)
}

/// `media_dir`, or `<data_dir>/media`.
pub fn media_dir(config: &Config) -> PathBuf {
    config
        .media_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("media"))
}

/// The HMAC key of the built-in backend: `media_key_file`'s exact bytes, or the development
/// key `<data_dir>/dev-media.key` (generated on first use).
///
/// # Errors
/// The file cannot be read or created, or holds fewer than 32 bytes.
pub fn media_key(config: &Config) -> anyhow::Result<Vec<u8>> {
    crate::keyfile::load(
        config.media_key_file.as_deref(),
        &config.data_dir,
        DEV_KEY_FILE,
        "media key",
        "generated a development media key; production must set media_key_file",
    )
}

/// The S3 settings, with the secret read from `s3_secret_key_file` (trailing whitespace
/// trimmed, so `echo secret > file` works).
fn s3_settings(config: &Config) -> anyhow::Result<s3::S3Settings> {
    // `Config::validate` guarantees these are set for the S3 backend.
    let missing = |key: &str| anyhow::anyhow!("{key} is required with media_backend = \"s3\"");
    let secret_file = config
        .s3_secret_key_file
        .as_ref()
        .ok_or_else(|| missing("s3_secret_key_file"))?;
    let secret = std::fs::read_to_string(secret_file)
        .with_context(|| format!("reading s3_secret_key_file {}", secret_file.display()))?;
    Ok(s3::S3Settings {
        endpoint: config
            .s3_endpoint
            .clone()
            .ok_or_else(|| missing("s3_endpoint"))?,
        bucket: config
            .s3_bucket
            .clone()
            .ok_or_else(|| missing("s3_bucket"))?,
        region: config.s3_region.clone(),
        access_key: config
            .s3_access_key
            .clone()
            .ok_or_else(|| missing("s3_access_key"))?,
        secret_key: secret.trim_end().to_owned(),
    })
}
