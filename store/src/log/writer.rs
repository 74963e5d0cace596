//! The writer thread: group commit of queued appends, segment rollover, checkpoints.
//!
//! Loop: block for the first request, drain what else is queued up to the batch limits,
//! write the batch with one `write` per segment touched, make it durable with one sync, then
//! complete every waiter with its LSNs. Batches grow with load by themselves: when idle a
//! batch is one record and is acknowledged after one sync.
//!
//! Segments: once the active segment holds [`PREPARE_AFTER_BYTES`] (or half its size, if that
//! is less), the writer asks the [`Preparer`] for the next segment's file, zero-filled and
//! synced at a pace set by how fast the active one fills, and rolls into it when the active
//! one is full. A segment that grows as it is written (the first after open, or one made when
//! no prepared file was ready) is left for a prepared one as soon as that is ready: its syncs
//! cost about twice as much.
//!
//! Invariants: a waiter is told `Ok` only after the sync covering its records returned `Ok`.
//! A failed write or sync is never retried: that batch and every later append fail with
//! `ReadOnly` until the log is reopened (after a failed fsync the kernel may have dropped the
//! dirty pages, so a retry could report success for data that is not on disk).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::files::{create_segment, segment_path, sync_dir};
use super::format::{FLAG_PREPARED, HEADER_BYTES, encode_header, encode_record};
use super::gate::{Gate, Refusal};
use super::handle::{Done, Payloads, Request};
use super::prepare::{self, Preparer, prepared_path};
use super::recover::Tail;
use super::stats::SyncStats;
use super::{LogError, LogOptions, Lsn, SyncPolicy};

/// Bytes in the active segment after which the next one is prepared (a smaller segment size
/// prepares at half of it). A log that never writes this much never prepares a file.
pub(crate) const PREPARE_AFTER_BYTES: u64 = 1024 * 1024;

/// The writer thread's state.
pub(crate) struct Writer {
    dir: PathBuf,
    sync: Box<dyn SyncPolicy>,
    segment_bytes_max: u64,
    batch_records_max: usize,
    batch_bytes_max: usize,
    /// First LSN of every segment on disk, oldest first; the last one is being written.
    segments: VecDeque<Lsn>,
    file: File,
    file_bytes: u64,
    /// Whether the active segment was prepared (zero-filled to its full size).
    file_prepared: bool,
    /// When the active segment was started (or the log opened) and its size then: how fast it
    /// fills sets the pace of the next preparation.
    file_since: (Instant, u64),
    preparer: Preparer,
    next_lsn: Lsn,
    /// Set by the first failed write or sync; from then on every append fails.
    failed: Option<Arc<io::Error>>,
    buf: Vec<u8>,
    gate: Box<dyn Gate>,
    stats: Arc<SyncStats>,
}

/// An append request taken off the queue, with the LSNs it was given.
struct Pending {
    payloads: Payloads,
    done: Done,
    lsns: Range<Lsn>,
    /// Set when the gate refused the request: it is not written.
    refused: Option<Refusal>,
}

impl Writer {
    pub(crate) fn new(
        dir: PathBuf,
        options: LogOptions,
        segments: &[Lsn],
        next_lsn: Lsn,
        tail: Tail,
        gate: Box<dyn Gate>,
        stats: Arc<SyncStats>,
    ) -> Self {
        debug_assert_eq!(
            segments.last(),
            Some(&tail.first_lsn),
            "the tail is the newest"
        );
        Self {
            preparer: Preparer::new(dir.clone()),
            file_prepared: tail.prepared,
            file_since: (Instant::now(), tail.bytes),
            dir,
            sync: options.sync,
            segment_bytes_max: options.segment_bytes_max,
            batch_records_max: options.batch_records_max,
            batch_bytes_max: options.batch_bytes_max,
            segments: segments.iter().copied().collect(),
            file: tail.file,
            file_bytes: tail.bytes,
            next_lsn,
            failed: None,
            buf: Vec::with_capacity(options.batch_bytes_max),
            gate,
            stats,
        }
    }

    /// Serves requests until `Shutdown` or until every handle is gone.
    pub(crate) fn run(mut self, rx: &Receiver<Request>) {
        let mut batch = Vec::new();
        let mut carried = None;
        loop {
            let Some(first) = carried.take().or_else(|| rx.recv().ok()) else {
                return;
            };
            match first {
                Request::Shutdown => return,
                Request::Checkpoint { up_to_lsn, done } => {
                    done.send(self.checkpoint(up_to_lsn));
                }
                Request::Append {
                    payloads,
                    framed_bytes,
                    done,
                } => {
                    let mut bytes = framed_bytes;
                    batch.push(Pending {
                        payloads,
                        done,
                        lsns: 0..0,
                        refused: None,
                    });
                    carried = self.drain(rx, &mut batch, &mut bytes);
                    self.commit(&mut batch);
                }
            }
        }
    }

    /// Adds queued appends to `batch` up to the batch limits; returns the first request that
    /// did not fit or is not an append, to be served next.
    fn drain(
        &self,
        rx: &Receiver<Request>,
        batch: &mut Vec<Pending>,
        bytes: &mut usize,
    ) -> Option<Request> {
        let mut records: usize = batch.iter().map(|p| p.payloads.len()).sum();
        while records < self.batch_records_max && *bytes < self.batch_bytes_max {
            let request = rx.try_recv().ok()?;
            let Request::Append {
                payloads,
                framed_bytes,
                done,
            } = request
            else {
                return Some(request);
            };
            let fits = records + payloads.len() <= self.batch_records_max
                && *bytes + framed_bytes <= self.batch_bytes_max;
            if !fits {
                return Some(Request::Append {
                    payloads,
                    framed_bytes,
                    done,
                });
            }
            records += payloads.len();
            *bytes += framed_bytes;
            batch.push(Pending {
                payloads,
                done,
                lsns: 0..0,
                refused: None,
            });
        }
        None
    }

    /// Makes `batch` durable, hands its records to the gate, and completes its waiters (with
    /// `Refused` for what the gate refused, `ReadOnly` for everything if a write failed).
    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if self.failed.is_none() {
            match self.write_batch(batch) {
                Ok(first_lsn) => {
                    let records = batch
                        .iter_mut()
                        .filter(|p| p.refused.is_none())
                        .flat_map(|p| std::mem::take(&mut p.payloads).into_vec())
                        .collect::<Vec<_>>();
                    if !records.is_empty() {
                        self.gate.durable(first_lsn, records);
                    }
                }
                Err(error) => {
                    tracing::error!(
                        dir = %self.dir.display(),
                        %error,
                        "log: write or sync failed; the log is read-only until reopened and \
                         this batch is not acknowledged"
                    );
                    self.failed = Some(Arc::new(error));
                    self.stats.record_read_only();
                }
            }
        }
        for pending in batch.drain(..) {
            let outcome = match (&self.failed, pending.refused) {
                (Some(cause), _) => Err(LogError::ReadOnly {
                    cause: cause.clone(),
                }),
                (None, Some(refusal)) => Err(LogError::Refused(refusal)),
                (None, None) => Ok(pending.lsns),
            };
            pending.done.complete(outcome);
        }
    }

    /// Asks the gate about every request, writes and syncs every admitted record (rolling to
    /// a new segment where one fills up), gives each its LSNs; returns the batch's first LSN.
    fn write_batch(&mut self, batch: &mut [Pending]) -> io::Result<Lsn> {
        self.buf.clear();
        let first_lsn = self.next_lsn;
        let mut lsn = first_lsn;
        let mut records: Vec<&[u8]> = Vec::new();
        // Asked once per batch, not per record: a growing segment is left at the first record
        // of the batch that finds a prepared file ready.
        let mut leave_growing = !self.file_prepared && self.preparer.has_ready();
        for pending in batch.iter_mut() {
            records.clear();
            records.extend(pending.payloads.iter());
            if let Err(refusal) = self.gate.admit(&records) {
                pending.refused = Some(refusal);
                continue;
            }
            let start = lsn;
            for payload in pending.payloads.iter() {
                let framed = super::format::framed_bytes(payload.len()) as u64;
                let pending_bytes = self.file_bytes + self.buf.len() as u64;
                let segment_has_records = lsn > *self.segments.back().expect("never empty");
                let full = pending_bytes + framed > self.segment_bytes_max;
                if segment_has_records && (full || leave_growing) {
                    self.flush_and_sync()?;
                    self.roll(lsn)?;
                    leave_growing = false;
                }
                encode_record(&mut self.buf, payload);
                lsn += 1;
            }
            pending.lsns = start..lsn;
        }
        if lsn > first_lsn {
            self.flush_and_sync()?;
        }
        self.next_lsn = lsn;
        let prepare_after = PREPARE_AFTER_BYTES.min(self.segment_bytes_max / 2);
        if self.file_bytes >= prepare_after {
            let (since, bytes_then) = self.file_since;
            let pace = prepare::pace(self.file_bytes - bytes_then, since.elapsed());
            self.preparer.request(self.segment_bytes_max, pace);
        }
        Ok(first_lsn)
    }

    fn flush_and_sync(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.file_bytes)?;
            self.file_bytes += self.buf.len() as u64;
            self.buf.clear();
        }
        let started = Instant::now();
        let synced = self.sync.sync(&self.file);
        self.stats.record(started.elapsed());
        synced
    }

    /// Starts a new segment whose first record is `first_lsn`: the prepared file if one is
    /// ready, else a new file that grows as it is written.
    fn roll(&mut self, first_lsn: Lsn) -> io::Result<()> {
        let prepared = self.preparer.take_ready();
        self.file_prepared = prepared.is_some();
        self.file = match prepared {
            Some(file) => self.install_prepared(&file, first_lsn).map(|()| file)?,
            None => create_segment(&self.dir, first_lsn, self.sync.as_mut())?,
        };
        self.file_bytes = HEADER_BYTES as u64;
        self.file_since = (Instant::now(), self.file_bytes);
        self.segments.push_back(first_lsn);
        let prepared = self.file_prepared;
        self.stats.record_segment(prepared);
        tracing::debug!(first_lsn, prepared, "log: rolled to a new segment");
        Ok(())
    }

    /// Makes the prepared `file` the segment for `first_lsn`: header written and synced
    /// before the rename, the rename synced before any record is written to it.
    fn install_prepared(&mut self, file: &File, first_lsn: Lsn) -> io::Result<()> {
        file.write_all_at(&encode_header(first_lsn, FLAG_PREPARED), 0)?;
        self.sync.sync(file)?;
        fs::rename(prepared_path(&self.dir), segment_path(&self.dir, first_lsn))?;
        sync_dir(&self.dir, self.sync.as_mut())
    }

    /// Deletes the segments whose records are all below `up_to_lsn`, never the active one.
    fn checkpoint(&mut self, up_to_lsn: Lsn) -> Result<usize, LogError> {
        let mut deleted = 0;
        while self.segments.len() > 1 && self.segments[1] <= up_to_lsn {
            let first = self.segments[0];
            let path = segment_path(&self.dir, first);
            fs::remove_file(&path).map_err(|e| LogError::io("deleting", &path, e))?;
            self.segments.pop_front();
            deleted += 1;
        }
        if deleted > 0 {
            // Not durable deletion is harmless (an old segment reappearing is still valid), but
            // a failing directory sync is worth reporting.
            sync_dir(&self.dir, self.sync.as_mut())
                .map_err(|e| LogError::io("syncing after checkpoint", &self.dir, e))?;
        }
        Ok(deleted)
    }
}

impl Payloads {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(many) => many.len(),
        }
    }

    fn into_vec(self) -> Vec<Vec<u8>> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let (one, many) = match self {
            Self::One(one) => (Some(one.as_slice()), &[][..]),
            Self::Many(many) => (None, many.as_slice()),
        };
        one.into_iter().chain(many.iter().map(Vec::as_slice))
    }
}

impl Done {
    /// Tells the waiter; a waiter that stopped waiting is not an error.
    fn complete(self, outcome: Result<Range<Lsn>, LogError>) {
        match self {
            Self::One(tx) => tx.send(outcome.map(|lsns| lsns.start)),
            Self::Many(tx) => tx.send(outcome),
            Self::Call(then) => then(outcome.map(|lsns| lsns.start)),
        }
    }
}
