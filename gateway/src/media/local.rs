//! The built-in blob backend's storage: blobs as files in `media_dir`, uploads streamed through
//! a temporary file, and the URLs that grant them.
//!
//! Owns `<media_dir>/<32 hex id>` (verified blobs) and `<media_dir>/tmp/` (uploads in flight).
//! Invariants: a file exists at a blob's final path only once its bytes were counted, hashed and
//! found equal to the signed size and SHA-256, synced, and renamed into place (so `confirm`
//! never sees a partial or wrong blob); a refused or abandoned upload leaves nothing behind;
//! an upload holds at most one write buffer in memory, never the blob; all file IO goes through
//! Glommio (io_uring), never a blocking call on the executor thread.

use super::MediaError;
use super::sign::{Grant, Method, Signer};
use glommio::io::BufferedFile;
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use wire::AttachmentId;

/// Bytes buffered per file write of an upload.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// The HTTP path prefix of blob URLs; the 32-hex-digit attachment id follows.
pub const PATH_PREFIX: &str = "/v1/blobs/";

/// The URL granting `grant` on the media listener at `base_url` (no trailing slash), as the
/// gateway issues it (public so tests and tools can mint URLs with the same key).
pub fn signed_url(base_url: &str, signer: &Signer, grant: &Grant) -> String {
    format!(
        "{base_url}{PATH_PREFIX}{}?{}",
        hex::encode(grant.id.as_bytes()),
        signer.query(grant)
    )
}

/// Blobs in a local directory, served by the gateway's media listener.
pub struct LocalBlobs {
    dir: PathBuf,
    tmp: PathBuf,
    base_url: String,
    signer: Signer,
    ttl_s: u64,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// More bytes arrived (or were announced) than the URL's signed size.
    #[error("the blob is larger than its declared size")]
    TooLarge,
    /// The body ended (or was announced) short of the signed size.
    #[error("the blob is smaller than its declared size")]
    TooSmall,
    /// The bytes do not hash to the signed SHA-256.
    #[error("the blob's SHA-256 differs from the declared one")]
    DigestMismatch,
    /// The disk failed us.
    #[error("storing the blob: {0}")]
    Io(#[from] std::io::Error),
}

impl LocalBlobs {
    /// Blobs in `dir`, reachable by clients at `base_url` (no trailing slash), URLs valid
    /// `ttl_s`. Creates `dir` and empties `dir/tmp` (uploads a previous run left unfinished).
    /// Runs before the executors start (plain blocking file calls are fine there).
    ///
    /// # Errors
    /// The directory cannot be created or cleaned.
    pub fn open(dir: &Path, base_url: &str, signer: Signer, ttl_s: u64) -> std::io::Result<Self> {
        let tmp = dir.join("tmp");
        match std::fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tmp,
            base_url: base_url.trim_end_matches('/').to_owned(),
            signer,
            ttl_s,
        })
    }

    /// How long its URLs stay valid, in seconds.
    pub fn ttl_s(&self) -> u64 {
        self.ttl_s
    }

    /// The signer that checks this backend's URLs.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// A URL granting `grant` (its method, its attachment).
    pub fn url(&self, grant: &Grant) -> String {
        signed_url(&self.base_url, &self.signer, grant)
    }

    /// A `PUT` URL for exactly this blob, valid `ttl_s` from `now_ms`.
    pub fn upload_url(
        &self,
        id: AttachmentId,
        size: u64,
        sha256: &wire::Sha256,
        mime: &str,
        now_ms: u64,
    ) -> String {
        self.url(&Grant {
            method: Method::Put,
            id,
            size,
            sha256: *sha256,
            mime: mime.to_owned(),
            expires_s: super::expires_s(now_ms, self.ttl_s),
        })
    }

    /// A `GET` URL serving the blob as `mime`, valid `ttl_s` from `now_ms`.
    pub fn download_url(&self, id: AttachmentId, mime: &str, now_ms: u64) -> String {
        self.url(&Grant {
            method: Method::Get,
            id,
            size: 0,
            sha256: wire::Sha256::new([0; 32]),
            mime: mime.to_owned(),
            expires_s: super::expires_s(now_ms, self.ttl_s),
        })
    }

    /// Where a verified blob lives.
    pub fn path(&self, id: AttachmentId) -> PathBuf {
        self.dir.join(hex::encode(id.as_bytes()))
    }

    /// Whether the verified blob is in place with `size` bytes.
    ///
    /// # Errors
    /// The disk failed (a missing file is `Ok(false)`).
    pub async fn confirm(&self, id: AttachmentId, size: u64) -> Result<bool, MediaError> {
        match self.open_blob(id).await? {
            Some((file, len)) => {
                let _ = file.close().await;
                Ok(len == size)
            }
            None => Ok(false),
        }
    }

    /// Removes the blob (done if it is already gone).
    ///
    /// # Errors
    /// The disk failed.
    pub async fn delete(&self, id: AttachmentId) -> Result<(), MediaError> {
        match glommio::io::remove(self.path(id)).await {
            Ok(()) => Ok(()),
            Err(e) => match std::io::Error::from(e) {
                e if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                e => Err(e.into()),
            },
        }
    }

    /// The verified blob, open for reading, and its length; `None` if there is none.
    ///
    /// # Errors
    /// The disk failed.
    pub async fn open_blob(
        &self,
        id: AttachmentId,
    ) -> Result<Option<(BufferedFile, u64)>, std::io::Error> {
        let file = match BufferedFile::open(self.path(id)).await {
            Ok(file) => file,
            Err(e) => {
                return match std::io::Error::from(e) {
                    e if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    e => Err(e),
                };
            }
        };
        let len = file.file_size().await?;
        Ok(Some((file, len)))
    }

    /// Starts receiving the blob a `PUT` grant allows, into a new temporary file.
    ///
    /// # Errors
    /// The temporary file cannot be created.
    pub async fn begin_upload(&self, grant: &Grant) -> Result<Upload, UploadError> {
        debug_assert_eq!(grant.method, Method::Put, "uploads need a PUT grant");
        let tmp = self.tmp.join(format!(
            "{}.{:016x}",
            hex::encode(grant.id.as_bytes()),
            rand::random::<u64>()
        ));
        let file = glommio::io::OpenOptions::new()
            .write(true)
            .create_new(true)
            .buffered_open(&tmp)
            .await
            .map_err(std::io::Error::from)?;
        Ok(Upload {
            file: Some(file),
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            written: 0,
            hasher: sha2::Sha256::new(),
            received: 0,
            size: grant.size,
            sha256: grant.sha256,
            tmp,
            dest: self.path(grant.id),
            dir: self.dir.clone(),
        })
    }
}

/// One upload in progress: counted, hashed and written as it arrives. Dropped unfinished, it
/// removes its temporary file (in a detached task: `Drop` cannot wait).
pub struct Upload {
    file: Option<BufferedFile>,
    buf: Vec<u8>,
    written: u64,
    hasher: sha2::Sha256,
    received: u64,
    size: u64,
    sha256: wire::Sha256,
    tmp: PathBuf,
    dest: PathBuf,
    dir: PathBuf,
}

impl Upload {
    /// Takes the next bytes of the body.
    ///
    /// # Errors
    /// [`UploadError::TooLarge`] as soon as the total passes the signed size; IO errors.
    ///
    /// # Panics
    /// Never: the file is open until `finish` (which consumes the upload) or `Drop`.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.received += chunk.len() as u64;
        if self.received > self.size {
            return Err(UploadError::TooLarge);
        }
        self.hasher.update(chunk);
        // Flush before the buffer would have to grow (a chunk is at most hyper's read size).
        if self.buf.len() + chunk.len() > WRITE_BUFFER_BYTES {
            self.flush().await?;
        }
        self.buf.extend_from_slice(chunk);
        if self.buf.len() >= WRITE_BUFFER_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// The body ended: checks size and digest, syncs, and moves the blob into place.
    ///
    /// # Errors
    /// [`UploadError::TooSmall`], [`UploadError::DigestMismatch`] (nothing is kept), IO errors.
    ///
    /// # Panics
    /// Never: the file is open until `finish` (which consumes the upload) or `Drop`.
    pub async fn finish(mut self) -> Result<(), UploadError> {
        if self.received < self.size {
            return Err(UploadError::TooSmall);
        }
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if digest != *self.sha256.as_bytes() {
            return Err(UploadError::DigestMismatch);
        }
        self.flush().await?;
        let file = self.file.as_ref().expect("finish runs once");
        // The bytes are durable before the final name points at them.
        file.fdatasync().await.map_err(std::io::Error::from)?;
        glommio::io::rename(&self.tmp, &self.dest)
            .await
            .map_err(std::io::Error::from)?;
        // Renamed: from here on nothing is left to clean up.
        let file = self.file.take().expect("still open");
        let _ = file.close().await;
        // And the rename itself is durable.
        let dir = glommio::io::Directory::open(&self.dir)
            .await
            .map_err(std::io::Error::from)?;
        dir.sync().await.map_err(std::io::Error::from)?;
        let _ = dir.close().await;
        Ok(())
    }

    /// Writes the buffered bytes at the end of the file.
    async fn flush(&mut self) -> std::io::Result<()> {
        let file = self.file.as_ref().expect("flushed only while open");
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_BUFFER_BYTES));
        let len = data.len();
        let n = file
            .write_at(data, self.written)
            .await
            .map_err(std::io::Error::from)?;
        // `write_at` consumes the buffer, so a short write (a full disk) cannot be resumed:
        // the upload fails and nothing is kept.
        if n != len {
            return Err(std::io::Error::other(format!(
                "short write: {n} of {len} bytes"
            )));
        }
        self.written += n as u64;
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            let tmp = std::mem::take(&mut self.tmp);
            glommio::spawn_local(async move {
                let _ = file.close().await;
                if let Err(error) = glommio::io::remove(&tmp).await {
                    tracing::warn!(%error, path = %tmp.display(), "removing a refused upload");
                }
            })
            .detach();
        }
    }
}
