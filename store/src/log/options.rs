//! `LogOptions`: the log's limits and its sync policy, with documented defaults.
//!
//! Invariant: every queue and buffer the log keeps is bounded by one of these limits.

use std::fs::File;
use std::io;

/// How the writer makes written bytes durable. The default, [`DataSync`], calls
/// `fdatasync`; tests substitute a policy that fails to check the failure path.
pub trait SyncPolicy: Send + 'static {
    /// Makes everything written to `file` durable (`file` may be the log directory, after a
    /// segment was created).
    ///
    /// # Errors
    /// The operating system's error; it is never retried: the log goes read-only.
    fn sync(&mut self, file: &File) -> io::Result<()>;
}

/// `fdatasync(2)`: the data and the metadata needed to read it back (the file size).
#[derive(Debug, Clone, Copy, Default)]
pub struct DataSync;

impl SyncPolicy for DataSync {
    fn sync(&mut self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
}

/// Limits and policies of a log.
pub struct LogOptions {
    /// A segment rolls over to a new file once adding a record would pass this size.
    /// A single record larger than this still fits in an otherwise empty segment. Also the
    /// size of a prepared segment: the next one is zero-filled to this size ahead of use.
    pub segment_bytes_max: u64,
    /// Largest payload of one record.
    pub record_bytes_max: usize,
    /// Most records made durable by one sync.
    pub batch_records_max: usize,
    /// Most framed bytes made durable by one sync. Recovery treats damage within this many
    /// bytes of the end of the newest segment as a torn tail (the last, unacknowledged write);
    /// reopen a log with a value at least as large as the one it was written with.
    pub batch_bytes_max: usize,
    /// Most requests waiting for the writer thread; beyond it appends fail with `QueueFull`.
    pub queue_requests_max: usize,
    /// How written bytes are made durable.
    pub sync: Box<dyn SyncPolicy>,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes_max: 64 * 1024 * 1024,
            // A message is at most a 64 KiB frame (wire's frame_bytes_max) plus our metadata.
            record_bytes_max: 1024 * 1024,
            batch_records_max: 4096,
            batch_bytes_max: 4 * 1024 * 1024,
            // About 0.6 s of the 100k msg/s goal when each request is one record (~13 MiB).
            queue_requests_max: 64 * 1024,
            sync: Box::new(DataSync),
        }
    }
}

impl LogOptions {
    /// Checks that the limits are consistent: a batch holds at least one largest record.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.batch_records_max == 0 || self.queue_requests_max == 0 {
            return Err("batch_records_max and queue_requests_max must be at least 1");
        }
        if u32::try_from(self.record_bytes_max).is_err() {
            return Err("record_bytes_max must fit in a u32");
        }
        if super::format::framed_bytes(self.record_bytes_max) > self.batch_bytes_max {
            return Err("batch_bytes_max must hold one record of record_bytes_max");
        }
        Ok(())
    }
}

impl std::fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOptions")
            .field("segment_bytes_max", &self.segment_bytes_max)
            .field("record_bytes_max", &self.record_bytes_max)
            .field("batch_records_max", &self.batch_records_max)
            .field("batch_bytes_max", &self.batch_bytes_max)
            .field("queue_requests_max", &self.queue_requests_max)
            .finish_non_exhaustive()
    }
}
