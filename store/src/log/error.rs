//! `LogError`: everything the log reports to its callers.
//!
//! Invariant: a damaged or foreign log is reported with the file and offset involved, never
//! skipped; a failed sync is reported as [`LogError::ReadOnly`] to every affected waiter.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::Lsn;

/// An error from opening, appending to, replaying or checkpointing the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A filesystem operation failed (not a sync of appended records; see `ReadOnly`).
    #[error("log I/O error: {context} {}: {source}", path.display())]
    Io {
        /// What the log was doing.
        context: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A file named like a segment does not start with the segment magic.
    #[error("{} is not a switchboard log segment (bad magic bytes)", path.display())]
    BadMagic {
        /// The segment file.
        path: PathBuf,
    },
    /// A segment was written by a format version this build does not read.
    #[error(
        "{} has log format version {found}, this build reads versions {oldest} to {newest}; \
         open it with a matching switchboard build",
        path.display()
    )]
    IncompatibleVersion {
        /// The segment file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The oldest version this build reads.
        oldest: u32,
        /// The newest version this build reads (and the one it writes).
        newest: u32,
    },
    /// The log is damaged somewhere other than a torn tail of the newest segment, so opening
    /// it would lose or misreport acknowledged records. Nothing was changed on disk.
    #[error("log corrupt in {} at byte {offset} (LSN {lsn}): {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// The byte offset in that file.
        offset: u64,
        /// The LSN the damaged record would have had.
        lsn: Lsn,
        /// What is wrong.
        reason: String,
    },
    /// A sync failed earlier (or just now): the log accepts no more appends until it is
    /// reopened, and the records of the failed batch were not acknowledged.
    #[error("log is read-only after a failed sync: {cause}")]
    ReadOnly {
        /// The sync error.
        #[source]
        cause: Arc<io::Error>,
    },
    /// The writer's request queue is full: the disk is not keeping up. Try again later.
    #[error("log queue full ({queue_requests_max} requests waiting)")]
    QueueFull {
        /// The configured queue limit.
        queue_requests_max: usize,
    },
    /// One record is larger than `record_bytes_max`.
    #[error("log record of {bytes} bytes exceeds record_bytes_max {max}")]
    RecordTooLarge {
        /// The record's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// One `append_batch` is larger than `batch_bytes_max` or `batch_records_max`.
    #[error("log batch of {records} records / {bytes} framed bytes exceeds the batch limits")]
    BatchTooLarge {
        /// Records in the batch.
        records: usize,
        /// Framed bytes of the batch.
        bytes: usize,
    },
    /// The options are inconsistent.
    #[error("invalid log options: {0}")]
    InvalidOptions(&'static str),
    /// The log's owner refused the request (see [`super::Gate::admit`]); nothing was written.
    #[error("append refused: {0}")]
    Refused(super::gate::Refusal),
    /// The log was closed.
    #[error("log closed")]
    Closed,
}

impl LogError {
    /// An [`LogError::Io`] with its context.
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            context,
            path: path.into(),
            source,
        }
    }
}
