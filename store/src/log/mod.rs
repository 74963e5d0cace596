//! The write-ahead log: a checksummed, segmented, append-only file log with group commit.
//!
//! Owns the acknowledgement path of the embedded store: a record is acknowledged only after
//! the `fdatasync` covering it returned. Later bricks apply the log to an LSM and checkpoint it.
//!
//! Layout: [`format`] (the bytes on disk), `files` (creating, listing and syncing segment
//! files), `recover` (opening: verify, cut a torn tail, [`Recovery::replay`]), `handle`
//! ([`LogHandle`]: non-blocking appends from any thread), `writer` (the one writer thread:
//! batching, one sync per batch, rollover, checkpoints), `prepare` (the thread that zero-fills
//! the next segment ahead of time, so the writer's syncs write no inode), `gate` ([`Gate`]:
//! the owner's hooks on the writer thread), `options` ([`LogOptions`]), `stats`
//! ([`SyncStats`]: how long the writer's syncs take).
//!
//! Invariants:
//! - LSNs are gap-free across segments: a record's LSN is its segment's first LSN plus its
//!   index; recovery refuses a gap between segments.
//! - Only the newest segment can have a torn tail; damage anywhere else refuses to open.
//! - After a failed write or sync the log is read-only until reopened; nothing in the failed
//!   batch is acknowledged.
//! - One writer per directory: the caller (the gateway's data-dir lock) ensures that no two
//!   `Log`s are open on the same directory.
//!
//! ```no_run
//! # async fn example() -> Result<(), store::log::LogError> {
//! use store::log::{Log, LogOptions};
//! let log = Log::open("/var/lib/switchboard/log", LogOptions::default())?;
//! log.replay(0, |lsn, payload| { /* apply to the index */ })?;
//! let handle = log.handle();
//! let lsn = handle.append(b"hello".to_vec()).await?;
//! handle.checkpoint(lsn).await?;
//! # Ok(()) }
//! ```

pub mod format;

mod error;
mod files;
mod gate;
mod handle;
mod options;
mod prepare;
mod recover;
mod stats;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use error::LogError;
pub use gate::{Gate, OpenGate, Refusal};
pub use handle::{Completion, LogHandle};
pub use options::{DataSync, LogOptions, SyncPolicy};
pub use recover::Recovery;
pub use stats::{STALL, SyncSnapshot, SyncStats};

/// A log sequence number: the index of a record in the log, from 0, gap-free.
pub type Lsn = u64;

/// An open log: its recovery report and its writer thread. Dropping it (or [`Log::close`])
/// stops the writer after the requests already queued; later appends fail with `Closed`.
pub struct Log {
    handle: LogHandle,
    recovery: Recovery,
    writer: Option<JoinHandle<()>>,
    stats: Arc<SyncStats>,
}

impl Log {
    /// Opens (or creates) the log in `dir`: verifies every segment, cuts a torn tail of the
    /// newest one, and starts the writer thread.
    ///
    /// # Errors
    /// `InvalidOptions`; `Io`; `BadMagic`, `IncompatibleVersion` or `Corrupt` for a log this
    /// build must not open (nothing on disk is changed then).
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Self, LogError> {
        Self::open_with(dir, options, |_| Ok::<_, LogError>(OpenGate))
    }

    /// Opens the log like [`Log::open`], then calls `make_gate` with what recovery found
    /// (e.g. to replay the tail into an index) before the writer thread starts; the writer
    /// calls the returned gate (see [`Gate`]).
    ///
    /// # Errors
    /// As [`Log::open`], or whatever `make_gate` returns.
    pub fn open_with<G: Gate, E: From<LogError>>(
        dir: impl AsRef<Path>,
        mut options: LogOptions,
        make_gate: impl FnOnce(&Recovery) -> Result<G, E>,
    ) -> Result<Self, E> {
        options.validate().map_err(LogError::InvalidOptions)?;
        let dir = dir.as_ref();
        let (recovery, tail) = recover::recover(dir, &mut options)?;
        let gate = Box::new(make_gate(&recovery)?);
        let (tx, rx) = crossbeam_channel::bounded(options.queue_requests_max);
        let handle = LogHandle::new(tx, &options);
        let stats = Arc::new(SyncStats::default());
        let writer = writer::Writer::new(
            dir.to_owned(),
            options,
            recovery.segments(),
            recovery.next_lsn(),
            tail,
            gate,
            stats.clone(),
        );
        let writer = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || writer.run(&rx))
            .map_err(|e| LogError::io("starting the writer thread for", dir, e))?;
        Ok(Self {
            handle,
            recovery,
            writer: Some(writer),
            stats,
        })
    }

    /// A handle to append from any thread.
    pub fn handle(&self) -> LogHandle {
        self.handle.clone()
    }

    /// What opening the log found.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// How long the writer's syncs have taken since open: counters that stay readable (and
    /// keep their last values) after the log is closed.
    pub fn sync_stats(&self) -> Arc<SyncStats> {
        self.stats.clone()
    }

    /// Replays the records present at open from `from_lsn`; see [`Recovery::replay`].
    ///
    /// # Errors
    /// As [`Recovery::replay`].
    pub fn replay(&self, from_lsn: Lsn, apply: impl FnMut(Lsn, &[u8])) -> Result<u64, LogError> {
        self.recovery.replay(from_lsn, apply)
    }

    /// Stops the writer after the requests already queued and waits for it.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        // A blocking send: the writer drains the queue, so this waits at most one queue.
        if self.handle.shutdown().is_ok() && writer.join().is_err() {
            tracing::error!("log: the writer thread panicked");
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}
