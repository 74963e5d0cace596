//! The segment preparer: a thread that makes the next segment's file ahead of time, filled
//! with zeros and synced, so that the writer's syncs only overwrite blocks already on disk.
//!
//! Why: appending to a growing file makes every `fdatasync` write the inode too (the file's
//! size changed), a second device write per sync. Overwriting blocks that are allocated and
//! written needs no metadata, so the sync is one data write. `store_log/sync_cost` measured
//! p50 185–204 µs for growing against 88–101 µs for overwriting on this machine's disk, with
//! the syncing thread's CPU 75–78 against 42–43 µs. Zeros (not `fallocate`) because writing
//! into unwritten extents converts them, which is metadata again. The zeros are paced (1 MiB
//! at a time, synced, at [`PACE_FACTOR`] times the rate the log fills its active segment, and
//! at least [`PACE_MIN_BYTES_PER_S`]) because the log's own syncs wait behind them.
//!
//! Owns the file [`PREPARED_NAME`] in the log directory: it truncates what a failed
//! preparation left before making a new one (recovery deletes what a crash left). The writer
//! takes the finished file, writes the segment header into it, syncs it, renames it to the
//! segment's name and syncs the directory: so a segment name always holds a synced header, and
//! a crash before the rename leaves only the stale file.
//!
//! A failed preparation (typically a full disk) deletes what it wrote, so the zeros do not take
//! the space the log's own writes need, and the next one starts no sooner than [`RETRY_AFTER`]
//! later: the writer asks after every batch, and retrying at that rate would fill the disk
//! with zeros and the log with warnings.
//!
//! Invariants: at most one preparation is in flight; the preparer never touches a file with a
//! segment's name; dropping the [`Preparer`] cancels an unfinished preparation (between
//! chunks) and joins the thread.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::files::write_zeros_with;

/// The prepared file's name in the log directory (not a segment's name: recovery ignores it).
pub(crate) const PREPARED_NAME: &str = "prepared.seg.tmp";

/// Bytes written between syncs while preparing: the disk gets the zeros in small bursts, not
/// one burst of a whole segment that the writer's next sync would queue behind.
const SYNC_EVERY_BYTES: u64 = 1024 * 1024;

/// The slowest a preparation writes zeros (bytes per second): a 64 MiB segment in 4 s.
pub(crate) const PACE_MIN_BYTES_PER_S: u64 = 16 * 1024 * 1024;

/// How many times faster than the log fills its active segment the zeros are written: the
/// next segment is ready when the active one is about a quarter full.
pub(crate) const PACE_FACTOR: u64 = 4;

/// How long after a failed preparation the next may start.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The pace for a log that filled `bytes` of its active segment in `elapsed`.
pub(crate) fn pace(bytes: u64, elapsed: Duration) -> u64 {
    let per_s = u128::from(bytes) * 1_000_000 / elapsed.as_micros().max(1);
    u64::try_from(per_s)
        .unwrap_or(u64::MAX)
        .saturating_mul(PACE_FACTOR)
        .max(PACE_MIN_BYTES_PER_S)
}

/// The path of the prepared file in `dir`.
pub(crate) fn prepared_path(dir: &Path) -> PathBuf {
    dir.join(PREPARED_NAME)
}

/// The writer's side of the preparer thread.
pub(crate) struct Preparer {
    dir: PathBuf,
    state: State,
    cancel: Arc<AtomicBool>,
    /// No preparation starts before this (set by a failure).
    not_before: Option<Instant>,
}

enum State {
    Idle,
    Preparing {
        done: Receiver<io::Result<File>>,
        thread: JoinHandle<()>,
    },
    Ready(File),
}

impl Preparer {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            state: State::Idle,
            cancel: Arc::new(AtomicBool::new(false)),
            not_before: None,
        }
    }

    /// Whether a file is being prepared or is ready to take.
    fn is_busy(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Starts preparing a file of `bytes` zeros, written at `pace` bytes per second at most
    /// (see [`pace`]), unless one is in flight or ready, or the last one failed less than
    /// [`RETRY_AFTER`] ago. A failure to start is logged: the writer then creates its next
    /// segment the slow way.
    pub(crate) fn request(&mut self, bytes: u64, pace: u64) {
        if self.is_busy() || self.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let (tx, done) = crossbeam_channel::bounded(1);
        let path = prepared_path(&self.dir);
        let cancel = self.cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("log-prepare".to_owned())
            .spawn(move || prepare(&path, bytes, pace, &cancel, &tx));
        match spawned {
            Ok(thread) => self.state = State::Preparing { done, thread },
            Err(error) => tracing::warn!(%error, "log: could not start the segment preparer"),
        }
    }

    /// The prepared file, if it is finished; `None` while it is in flight, or if preparing
    /// failed (logged; the next [`Preparer::request`] tries again).
    pub(crate) fn take_ready(&mut self) -> Option<File> {
        self.poll();
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Ready(file) => Some(file),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Whether a finished file is waiting to be taken.
    pub(crate) fn has_ready(&mut self) -> bool {
        self.poll();
        matches!(self.state, State::Ready(_))
    }

    fn poll(&mut self) {
        let State::Preparing { done, .. } = &self.state else {
            return;
        };
        let outcome = match done.try_recv() {
            Ok(outcome) => outcome,
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => Err(io::Error::other("the preparer thread died")),
        };
        if let State::Preparing { thread, .. } = std::mem::replace(&mut self.state, State::Idle) {
            let _ = thread.join();
        }
        match outcome {
            Ok(file) => self.state = State::Ready(file),
            Err(error) => {
                // Give back the space the zeros took (the log may need it).
                let _ = std::fs::remove_file(prepared_path(&self.dir));
                self.not_before = Some(Instant::now() + RETRY_AFTER);
                tracing::warn!(
                    dir = %self.dir.display(),
                    %error,
                    retry_after_s = RETRY_AFTER.as_secs(),
                    "log: preparing the next segment failed; segments grow as they are written \
                     until a later preparation succeeds"
                );
            }
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let State::Preparing { thread, .. } = std::mem::replace(&mut self.state, State::Idle)
            && thread.join().is_err()
        {
            tracing::error!("log: the segment preparer panicked");
        }
    }
}

/// The preparer thread's work: a fresh file of `bytes` zeros, synced, sent back on `done`.
fn prepare(
    path: &Path,
    bytes: u64,
    pace: u64,
    cancel: &AtomicBool,
    done: &Sender<io::Result<File>>,
) {
    let _ = done.send(zero_filled(path, bytes, pace, cancel));
}

/// Writes and syncs the zeros 1 MiB at a time, no faster than `pace` bytes per second: the
/// log's syncs share the disk, and one that lands behind a burst of zeros waits for all of it
/// (unpaced, a 64 MiB preparation stalled the gateway's acknowledgements for ~250 ms).
fn zero_filled(path: &Path, bytes: u64, pace: u64, cancel: &AtomicBool) -> io::Result<File> {
    // Truncating drops what a failed or cancelled preparation left.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let (started, mut synced) = (Instant::now(), 0);
    write_zeros_with(&file, 0, bytes, |written| {
        if cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled"));
        }
        if written - synced >= SYNC_EVERY_BYTES {
            file.sync_data()?;
            synced = written;
        }
        let due = Duration::from_micros(
            u64::try_from(u128::from(written) * 1_000_000 / u128::from(pace.max(1)))
                .unwrap_or(u64::MAX),
        );
        if let Some(early) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(early);
        }
        Ok(())
    })?;
    file.sync_data()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_is_a_multiple_of_the_fill_rate_and_never_below_the_floor() {
        let mib = 1024 * 1024;
        // 10 MiB/s filled → 40 MiB/s of zeros.
        assert_eq!(pace(10 * mib, Duration::from_secs(1)), 40 * mib);
        // A slow log still gets its next segment within a few seconds.
        assert_eq!(pace(mib, Duration::from_secs(100)), PACE_MIN_BYTES_PER_S);
        // No time elapsed (or no bytes): no division by zero, no overflow.
        assert_eq!(pace(0, Duration::ZERO), PACE_MIN_BYTES_PER_S);
        assert_eq!(pace(u64::MAX, Duration::ZERO), u64::MAX);
    }

    /// Waits (bounded) until the preparer's outcome is in.
    fn settle(preparer: &mut Preparer) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(preparer.state, State::Preparing { .. }) {
            assert!(Instant::now() < deadline, "the preparation never finished");
            preparer.poll();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_failed_preparation_deletes_its_file_and_is_not_retried_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut preparer = Preparer::new(dir.path().to_path_buf());
        // The preparation fails: it cannot open its file (a directory has that name).
        std::fs::create_dir(prepared_path(dir.path())).expect("mkdir");
        preparer.request(1024 * 1024, u64::MAX);
        settle(&mut preparer);
        assert!(
            preparer.take_ready().is_none(),
            "a failed preparation is not ready"
        );
        // The next request, right away, starts nothing.
        std::fs::remove_dir(prepared_path(dir.path())).expect("rmdir");
        preparer.request(1024 * 1024, u64::MAX);
        assert!(!preparer.is_busy(), "retried at once after a failure");
        // Once the back-off has passed, it prepares again, and succeeds.
        preparer.not_before = Some(Instant::now());
        preparer.request(1024 * 1024, u64::MAX);
        assert!(preparer.is_busy(), "not retried after the back-off");
        settle(&mut preparer);
        let file = preparer.take_ready().expect("the retry succeeded");
        assert_eq!(file.metadata().expect("metadata").len(), 1024 * 1024);
    }

    #[test]
    fn a_failed_preparation_gives_back_the_space_it_took() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut preparer = Preparer::new(dir.path().to_path_buf());
        // A partial file, as a preparation that ran out of space leaves it.
        std::fs::write(prepared_path(dir.path()), vec![0u8; 4096]).expect("partial file");
        preparer.state = State::Preparing {
            done: {
                let (tx, rx) = crossbeam_channel::bounded(1);
                tx.send(Err(io::Error::from_raw_os_error(28)))
                    .expect("send ENOSPC");
                rx
            },
            thread: std::thread::spawn(|| {}),
        };
        preparer.poll();
        assert!(
            !prepared_path(dir.path()).exists(),
            "the failed preparation's file is still there"
        );
    }
}
