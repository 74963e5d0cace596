//! The embedded backend (the default; no servers): a write-ahead log on the acknowledgement
//! path, applied in the background to an LSM index (`lsm-tree`, [`engine`]) that serves reads.
//!
//! Why this shape (`../shared/FACTS.md`, measured here): fjall alone stalls commits for
//! 110–280 ms at memtable rotations (ack p99 ~376 ms at 100k msg/s) and redb alone tops out
//! near 35k msg/s, while an append-only log with one `fdatasync` per batch keeps p99 in
//! single-digit ms. So an acknowledgement waits only for the log; the index catches up behind,
//! and has no journal of its own: the log is its write-ahead log.
//!
//! Threads: the log's writer (group commit; its [`gate::SeqGate`] checks every batch's seqs
//! and hands durable records on), the applier ([`apply_thread`]: index batches, sweeps,
//! checkpoints), a few readers ([`read`]) and the index's flush and compaction threads
//! ([`engine`]). Executor threads only enqueue and await.
//!
//! Directory layout (format version [`FORMAT_VERSION`], in `FORMAT`; the formats
//! [`UPGRADES_FORMATS`] are upgraded in place): `FORMAT`, `log/` (segments, see [`crate::log`]),
//! `index/lsm/` (the LSM tree: its tables and versions, see [`engine`]).
//!
//! Invariants: `Ok` from [`Store::write`] means the log record was synced; a read sees
//! every write acknowledged before it was issued; reopening replays the log from the index's
//! `apply_from`, so the index ends exactly where the log does.

mod apply;
mod apply_thread;
mod attachments;
mod codec;
mod engine;
mod gate;
mod hot;
mod index;
mod layout;
mod pending;
mod read;
mod reclaim;
mod sent_bounds;
mod sweep;
mod upgrade;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use wire::ids::{AttachmentId, ChatId, DeviceId, UserId};

use self::apply_thread::{Applier, CheckpointPolicy, Shared, ToApplier};
use self::engine::{Index, IndexOptions};
use self::index::{IndexError, Txn};
use self::read::{Reader, Readers};
use self::reclaim::Reclaimer;
use crate::log::{Log, LogError, LogOptions, Lsn};
use crate::model::{
    Attachment, ChatState, Device, DeviceCursor, LogPage, Millis, Retention, SentRecord, Seq,
    SweepReport, SyncChat, WriteBatch,
};
use crate::reply::Reply;
use crate::{Store, StoreError, StoreReply};

/// The data-directory format this build reads and writes.
///
/// 2: a chat's head is a row of its own (`h`), rewritten by every append; the chat's row keeps
/// the head it had when format 1 last wrote it. A build that reads only format 1 would take
/// that stale head for the current one, so it must refuse a format-2 directory.
///
/// 3: the index is an LSM tree in `index/lsm` that the store drives itself ([`engine`]), no
/// longer a fjall database in `index/`; the rows are the same. A build that expects fjall's
/// files would find none and rebuild the index from a log that no longer holds everything.
///
/// 4: a message whose server id is the one derived from its chat and seq
/// ([`crate::model::message_id`], every message the router sequences) is stored without it, in
/// log records, entry rows and idempotency rows (16 bytes less each; [`codec`], [`layout`]).
/// A format-3 build cannot read those entries, so it must refuse a format-4 directory.
pub const FORMAT_VERSION: u32 = 4;

/// The older formats this build opens and upgrades in place, before it writes anything:
/// formats 1 and 2 have their fjall index copied into the new tree ([`upgrade`]), and format
/// 1's missing head rows are read from the chat rows as before (every read falls back to
/// them); format 3's rows and records are all readable as they are (ids kept in full).
pub const UPGRADES_FORMATS: [u32; 3] = [1, 2, 3];

/// The newest format whose index is a fjall database.
const LAST_FJALL_FORMAT: u32 = 2;

/// [`UPGRADES_FORMATS`] for a message: "1, 2 and 3".
fn upgradable_formats() -> String {
    let names: Vec<String> = UPGRADES_FORMATS.iter().map(u32::to_string).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

/// What the `FORMAT` file says (followed by a newline).
fn format_line(version: u32) -> String {
    format!("switchboard store format {version}")
}

const MIB: u64 = 1 << 20;

/// How the embedded store runs.
#[derive(Debug)]
pub struct EmbeddedOptions {
    /// The write-ahead log's options (sync policy, batch limits, segment size).
    pub log: LogOptions,
    /// How long things are kept.
    pub retention: Retention,
    /// Reader threads.
    pub readers: usize,
    /// Queries waiting for a reader before new ones are refused with `Overloaded`.
    pub read_queue_max: usize,
    /// Record bytes handed to the applier and not yet applied before the writer (and so
    /// every acknowledgement) waits for it. Large enough to ride out the index's memtable
    /// stalls (100–300 ms, ~5 MiB at 100k messages/s) without stalling acks; it bounds the
    /// applier's memory and how far the index may lag: a crash replays at most this plus
    /// what the index has not written out yet (at most `checkpoint_bytes` of log and the
    /// memtables waiting for the flush thread).
    pub apply_backlog_bytes_max: u64,
    /// Checkpoint after this many record bytes applied, or when the index's memtable is full,
    /// whichever comes first. A checkpoint seals the memtable; the index's flush thread writes
    /// it out as a table, and then the log drops the segments it covers. So this bounds the
    /// log kept and what a crash replays (32 MiB by default: about 1.3 s of replay), and
    /// smaller means more, smaller tables for compactions to merge.
    pub checkpoint_bytes: u64,
    /// Or after this long with anything applied (so a quiet store's log is trimmed too).
    pub checkpoint_interval: Duration,
    /// The index's memtable size: one is written out (and synced) as a table when full.
    pub memtable_bytes: u64,
    /// The size of the tables compactions write (each is synced when written).
    pub table_bytes: u64,
    /// The index's block cache, in bytes.
    pub cache_bytes: u64,
    /// At close, checkpoint so the log keeps nothing the index holds (the default). Off, the
    /// log keeps every segment since the last checkpoint (recovery tests use this).
    pub checkpoint_on_close: bool,
    /// The nice value (0 to 19) of the index's flush and compaction threads: their work comes in
    /// bursts that can wait. When the CPU is short they yield it to the log writer
    /// (acknowledgements), the readers, the applier and the gateway's executors.
    pub background_nice: i32,
    /// The nice value (0 to 19) of the applier. Its lag is what reads other than idempotency
    /// lookups wait for, and at `apply_backlog_bytes_max` acknowledgements wait too, so it
    /// should yield less than the flush and compaction workers it shares the background with.
    pub apply_nice: i32,
    /// Where the index lives; `None` (the default): `<dir>/index`. On a host with a second
    /// disk, putting the index there keeps its writes (about 3× the log's bytes) from
    /// delaying the log's syncs, which every acknowledgement waits for. A store must always be
    /// opened with the same index: an index that does not match the log is refused.
    pub index_dir: Option<PathBuf>,
    /// The index's compaction threads (1 to 64; its one flush thread comes on top, so a flush
    /// never waits behind a compaction). Default 2: level 0 → 1 and the deeper levels compact
    /// at once.
    pub index_workers: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            log: LogOptions::default(),
            retention: Retention::default(),
            readers: 2,
            read_queue_max: 65_536,
            apply_backlog_bytes_max: 32 << 20,
            checkpoint_bytes: 32 << 20,
            checkpoint_interval: Duration::from_secs(30),
            memtable_bytes: 64 << 20,
            table_bytes: 16 << 20,
            cache_bytes: 64 << 20,
            checkpoint_on_close: true,
            background_nice: 0,
            apply_nice: 0,
            index_dir: None,
            index_workers: 2,
        }
    }
}

/// Why the embedded store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory holds another format version (or something else).
    #[error(
        "{}: {found}; this build reads \"{}\" (and upgrades formats {} in place). \
         Open it with a matching switchboard build",
        path.display(),
        format_line(FORMAT_VERSION),
        upgradable_formats()
    )]
    Incompatible {
        /// The `FORMAT` file.
        path: PathBuf,
        /// What it says.
        found: String,
    },
    /// Another open store (in this process or another) holds the directory.
    #[error("{} is in use by another open store", .0.display())]
    Locked(PathBuf),
    /// The directory is not empty but has no `FORMAT` file: not a store this build made.
    #[error("{} is not empty and has no FORMAT file; refusing to use it as a store", .0.display())]
    Foreign(PathBuf),
    /// The log could not be opened or replayed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The index could not be opened or is inconsistent with the log.
    #[error("store index: {0}")]
    Index(String),
    /// Options out of range.
    #[error("invalid store options: {0}")]
    Options(&'static str),
    /// A filesystem operation failed.
    #[error("store I/O: {context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl From<IndexError> for OpenError {
    fn from(e: IndexError) -> Self {
        Self::Index(e.to_string())
    }
}

/// What opening found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// Log records replayed into the index.
    pub replayed: u64,
    /// Bytes of a torn log tail that were cut.
    pub torn_bytes_dropped: u64,
    /// Chats in the store.
    pub chats: usize,
}

/// The embedded store. Cheap to share (`Arc`); dropping the last handle closes it: the log's
/// writer finishes what is queued, the applier applies it and checkpoints.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The exclusive lock on `<dir>/LOCK` (see [`lock_dir`]).
    _lock: fs::File,
    index: Index,
    checkpoint_on_close: bool,
    log: Option<Log>,
    applier_tx: Option<Sender<ToApplier>>,
    readers: Readers,
    /// The writer, applier and readers' rendezvous (for the idempotency answers).
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    report: OpenReport,
}

impl EmbeddedOptions {
    /// Refuses inconsistent options before anything is created on disk.
    fn validate(&self) -> Result<(), OpenError> {
        self.retention.validate().map_err(OpenError::Options)?;
        if self.readers == 0 || self.read_queue_max == 0 || self.apply_backlog_bytes_max == 0 {
            return Err(OpenError::Options(
                "readers, read_queue_max and apply_backlog_bytes_max must be nonzero",
            ));
        }
        if self.memtable_bytes < MIB || self.table_bytes < MIB {
            return Err(OpenError::Options(
                "memtable_bytes and table_bytes must be at least 1 MiB",
            ));
        }
        if !(1..=64).contains(&self.index_workers) {
            return Err(OpenError::Options("index_workers must be within 1..=64"));
        }
        if !(0..=19).contains(&self.background_nice) || !(0..=19).contains(&self.apply_nice) {
            return Err(OpenError::Options(
                "background_nice and apply_nice must be within 0..=19",
            ));
        }
        Ok(())
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    /// [`OpenError`]: an incompatible or foreign directory, a damaged log, an index that does
    /// not match the log, or I/O.
    pub fn open(dir: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self, OpenError> {
        options.validate()?;
        let dir = dir.as_ref();
        let lock = lock_dir(dir)?;
        if let Some(from) = check_format(dir)? {
            upgrade_from(dir, from, &options)?;
        }
        let apply_nice = options.apply_nice;
        let index = open_index(dir, &options)?;
        // Until the store owns it, an error return closes the index (its threads hold it).
        let mut guard = CloseOnError(Some(index.clone()));
        let apply_from = match index.get(layout::APPLY_FROM).map_err(IndexError::from)? {
            Some(bytes) => layout::read_vars::<1>(&bytes).map_err(IndexError::from)?[0],
            None => 0,
        };
        // Unbounded in messages, bounded in bytes by the gate (`apply_backlog_bytes_max`).
        let (applier_tx, applier_rx) = crossbeam_channel::unbounded();
        let mut replayed = 0;
        let mut chats = 0;
        let shared = Arc::new(Shared::new(0));
        let gate_shared = shared.clone();
        let log = Log::open_with(dir.join("log"), options.log, |recovery| {
            if apply_from < recovery.first_lsn() || apply_from > recovery.next_lsn() {
                return Err(OpenError::Index(format!(
                    "the index was applied up to LSN {apply_from} but the log holds LSNs {}..{}; \
                     the directory's log and index do not belong together",
                    recovery.first_lsn(),
                    recovery.next_lsn()
                )));
            }
            replayed = replay(&index, recovery, apply_from)?;
            gate_shared.start_at(recovery.next_lsn());
            let heads = read::heads(&index)?;
            chats = heads.len();
            Ok(gate::SeqGate::new(
                heads,
                applier_tx.clone(),
                gate_shared,
                options.apply_backlog_bytes_max,
            ))
        })?;
        let report = OpenReport {
            replayed,
            torn_bytes_dropped: log.recovery().bytes_dropped(),
            chats,
        };
        // A flushed memtable's rows are in synced tables: the log may drop what it covers (the
        // writer deletes the segments; nobody waits for it).
        let checkpoints = log.handle();
        index.on_flushed(move |covered| drop(checkpoints.checkpoint(covered)));
        let mut threads = Vec::new();
        let (reclaim_tx, reclaim_rx) = crossbeam_channel::unbounded();
        let applier = Applier {
            index: index.clone(),
            shared: shared.clone(),
            log: log.handle(),
            retention: options.retention,
            policy: CheckpointPolicy {
                bytes: options.checkpoint_bytes,
                interval: options.checkpoint_interval,
            },
            next: log.recovery().next_lsn(),
            reclaimer: Reclaimer::new(reclaim_tx),
            hot: hot::HotRows::new(hot::DEFAULT_CAPACITY),
        };
        // `open` returns once the applier runs at its priority, so nothing it applies (and
        // nothing a caller observes) ever ran at the wrong one.
        let (lowered_tx, lowered_rx) = std::sync::mpsc::sync_channel(1);
        threads.push(spawn("store-applier", dir, move || {
            set_nice(apply_nice);
            let _ = lowered_tx.send(());
            applier.run(&applier_rx);
        })?);
        // An error means the thread ended first; the store then fails its writes as before.
        let _ = lowered_rx.recv();
        // Frees the index's flushed memtables; ends when the applier (the only sender) is gone.
        // Always at the lowest priority: freeing late only holds memory a little longer, and
        // the applier frees itself once too much waits (`reclaim::QUEUED_MAX`).
        threads.push(spawn("store-reclaim", dir, move || {
            set_nice(reclaim::NICE);
            reclaim::free_until_closed(&reclaim_rx);
        })?);
        let (read_tx, read_rx) = crossbeam_channel::bounded(options.read_queue_max);
        for i in 0..options.readers {
            let reader = Reader {
                index: index.clone(),
            };
            let rx = read_rx.clone();
            threads.push(spawn(&format!("store-reader-{i}"), dir, move || {
                read::serve(&reader, &rx);
            })?);
        }
        guard.0 = None;
        let inner = Inner {
            _lock: lock,
            index,
            checkpoint_on_close: options.checkpoint_on_close,
            log: Some(log),
            applier_tx: Some(applier_tx),
            readers: Readers::new(read_tx, shared.clone()),
            shared,
            threads,
            report,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Applies everything acknowledged so far, writes the index out and lets the log drop the
    /// segments that covers, so that the next open replays nothing. Blocks until done: never
    /// call it on an executor. False if it could not run (the store is closed or failed) or
    /// the log could not be checkpointed; what is not checkpointed is replayed at the next
    /// open, so nothing is lost either way.
    ///
    /// Dropping the last handle does this too (unless `checkpoint_on_close` is off); this is
    /// for a process about to exit while other handles may outlive it (a task that was never
    /// dropped).
    pub fn checkpoint(&self) -> bool {
        self.inner.checkpoint()
    }

    /// What opening found and did.
    pub fn open_report(&self) -> OpenReport {
        self.inner.report
    }

    /// How long the log's syncs (the acknowledgement path's disk time) have taken since open;
    /// `None` once the store is closed.
    pub fn log_sync_stats(&self) -> Option<Arc<crate::log::SyncStats>> {
        self.inner.log.as_ref().map(Log::sync_stats)
    }

    /// Answers once every write acknowledged before the call is applied to the index (on a
    /// reader thread): what a bench or test waits for to see the index caught up. Reads of one
    /// chat do not wait for this (see `pending`), so they cannot stand in for it.
    pub fn caught_up(&self) -> StoreReply<()> {
        self.inner.readers.run(|_| Ok(()))
    }

    /// How far the index lags the log: read at any time, from any thread (atomics only).
    pub fn index_lag(&self) -> IndexLag {
        IndexLag(self.inner.shared.clone())
    }

    /// A handle that tells whether the store still takes writes (for a readiness check).
    pub fn health(&self) -> StoreHealth {
        StoreHealth {
            log: self.log_sync_stats(),
            shared: self.inner.shared.clone(),
        }
    }
}

/// Whether the store still takes writes (see [`EmbeddedStore::health`]); cheap to clone and
/// to ask from any thread (atomics and one short lock, never the store's threads).
#[derive(Debug, Clone)]
pub struct StoreHealth {
    log: Option<Arc<crate::log::SyncStats>>,
    shared: Arc<apply_thread::Shared>,
}

impl StoreHealth {
    /// Why the store takes no more writes, if so: its log turned read-only after a failed
    /// write or sync (a full disk, an I/O error), or applying to its index failed. Either
    /// lasts until the store is reopened (a restart); nothing acknowledged is lost.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        if self.log.as_ref().is_some_and(|log| log.read_only()) {
            return Some("the log is read-only after a failed write or sync".to_owned());
        }
        self.shared.failure()
    }
}

/// How far the index lags the log (see [`EmbeddedStore::index_lag`]): reads that cannot be
/// answered from pending records wait for this lag.
#[derive(Debug, Clone)]
pub struct IndexLag(Arc<apply_thread::Shared>);

impl IndexLag {
    /// Bytes of durable records handed to the applier and not yet applied.
    #[must_use]
    pub fn backlog_bytes(&self) -> u64 {
        self.0
            .backlog_bytes
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The log record `batch` becomes: what [`EmbeddedStore::write`] appends to the log, byte
/// for byte. For benchmarks that put the same load on the log alone (`store::log::Log`), to
/// compare what the index costs the acknowledgements.
#[must_use]
pub fn log_record(batch: &WriteBatch) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_batch(batch, &mut out);
    out
}

/// Upgrades a directory of format `from` (one of [`UPGRADES_FORMATS`]) in place: the index
/// first, then `FORMAT`.
fn upgrade_from(dir: &Path, from: u32, options: &EmbeddedOptions) -> Result<(), OpenError> {
    let rows = if from <= LAST_FJALL_FORMAT {
        upgrade::from_fjall(&index_dir(dir, options), &index_options(options))?
    } else {
        0
    };
    write_format(dir)?;
    tracing::info!(
        dir = %dir.display(),
        from,
        to = FORMAT_VERSION,
        rows,
        "store: upgraded the data directory's format in place"
    );
    Ok(())
}

/// An exclusive lock on `<dir>/LOCK` (created if missing), held while the store is open: a
/// second store on the same directory, in this process or another, is refused. Nothing else
/// keeps two from writing the same log and tree.
fn lock_dir(dir: &Path) -> Result<fs::File, OpenError> {
    fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
    let path = dir.join("LOCK");
    lock_file(&path)
        .map_err(io_error("locking", &path))?
        .ok_or_else(|| OpenError::Locked(dir.to_owned()))
}

/// Opens (creating if missing) `path` and takes an exclusive `flock` on it, without waiting:
/// `Ok(None)` when another open file (in this process or another) holds it. The lock lasts as
/// long as the returned file is open. The gateway locks its data directory with it too.
///
/// # Errors
/// `path` cannot be opened or locked for another reason than being held.
pub fn lock_file(path: &Path) -> std::io::Result<Option<fs::File>> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

/// Closes the index when dropped: `open` holds one until the store owns the index, so a
/// failed open leaves no index threads behind.
struct CloseOnError(Option<Index>);

impl Drop for CloseOnError {
    fn drop(&mut self) {
        if let Some(index) = &self.0 {
            index.close();
        }
    }
}

/// The index's directory: `index_dir`, or `<dir>/index`.
fn index_dir(dir: &Path, options: &EmbeddedOptions) -> PathBuf {
    options
        .index_dir
        .clone()
        .unwrap_or_else(|| dir.join("index"))
}

/// Opens the index's tree (`<index>/lsm`) and starts its threads at `background_nice`.
fn open_index(dir: &Path, options: &EmbeddedOptions) -> Result<Index, OpenError> {
    let path = index_dir(dir, options).join("lsm");
    Index::open(&path, &index_options(options)).map_err(|e| OpenError::Index(e.to_string()))
}

fn index_options(options: &EmbeddedOptions) -> IndexOptions {
    IndexOptions {
        cache_bytes: options.cache_bytes,
        memtable_bytes: options.memtable_bytes,
        table_bytes: options.table_bytes,
        compaction_threads: options.index_workers,
        nice: options.background_nice,
    }
}

/// Lowers the calling thread's priority to `nice` (on Linux the nice value is per thread).
/// Not being allowed to is not an error: the store works the same, only less politely.
fn set_nice(nice: i32) {
    if nice == 0 {
        return;
    }
    if let Err(error) = rustix::process::setpriority_process(None, nice) {
        tracing::warn!(%error, nice, "store: could not lower a background thread's priority");
    }
}

fn spawn(
    name: &str,
    dir: &Path,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, OpenError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|source| OpenError::Io {
            context: "starting a thread for",
            path: dir.to_owned(),
            source,
        })
}

/// An `OpenError::Io` maker for `context` on `path`.
fn io_error(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OpenError {
    let path = path.to_owned();
    move |source| OpenError::Io {
        context,
        path,
        source,
    }
}

/// Creates `FORMAT` in a new (or empty) directory; for a format of [`UPGRADES_FORMATS`], the
/// version to upgrade from (the caller upgrades, then writes `FORMAT`); refuses another
/// version or a foreign directory. `dir` exists ([`lock_dir`] made it).
fn check_format(dir: &Path) -> Result<Option<u32>, OpenError> {
    let path = dir.join("FORMAT");
    match fs::read_to_string(&path) {
        Ok(found) => {
            let found = found.trim_end().to_owned();
            if found == format_line(FORMAT_VERSION) {
                Ok(None)
            } else if let Some(&from) = UPGRADES_FORMATS
                .iter()
                .find(|&&old| found == format_line(old))
            {
                Ok(Some(from))
            } else {
                Err(OpenError::Incompatible { path, found })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // `FORMAT.tmp` alone is a first open that died before its rename: still empty (and
            // `LOCK` is this open's).
            let mut entries = fs::read_dir(dir).map_err(io_error("listing", dir))?;
            let empty = entries.all(|entry| {
                entry.is_ok_and(|e| e.file_name() == "FORMAT.tmp" || e.file_name() == "LOCK")
            });
            if !empty {
                return Err(OpenError::Foreign(dir.to_owned()));
            }
            write_format(dir).map(|()| None)
        }
        Err(e) => Err(io_error("reading", &path)(e)),
    }
}

/// Writes `FORMAT` (this build's version) atomically and durably: a temporary file, synced,
/// renamed over it, the directory synced.
fn write_format(dir: &Path) -> Result<(), OpenError> {
    let (tmp, path) = (dir.join("FORMAT.tmp"), dir.join("FORMAT"));
    let mut file = fs::File::create(&tmp).map_err(io_error("creating", &tmp))?;
    writeln!(file, "{}", format_line(FORMAT_VERSION)).map_err(io_error("writing", &tmp))?;
    file.sync_all().map_err(io_error("syncing", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_error("renaming", &tmp))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing", dir))
}

/// Applies the log's records from `apply_from` to the index, in index batches.
fn replay(
    index: &Index,
    recovery: &crate::log::Recovery,
    apply_from: Lsn,
) -> Result<u64, OpenError> {
    let mut txn = Txn::new(index);
    let mut scratch = apply::Scratch::default();
    let mut failure: Option<IndexError> = None;
    let mut next = apply_from;
    let replayed = recovery.replay(apply_from, |lsn, record| {
        if failure.is_some() {
            return;
        }
        let step = codec::decode_batch(record)
            .map_err(IndexError::from)
            .and_then(|batch| apply::apply_batch(&mut txn, lsn, &batch, &mut scratch))
            .and_then(|()| {
                next = lsn + 1;
                if txn.len() >= 65_536 {
                    txn.put(layout::APPLY_FROM, layout::vars(&[next]));
                    txn.commit()?;
                    if index.is_full() {
                        index.rotate(next);
                    }
                    // No reader runs yet, so no device has a bound to raise.
                    scratch.sent_keys().clear();
                }
                Ok(())
            });
        if let Err(e) = step {
            failure = Some(e);
        }
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    txn.put(layout::APPLY_FROM, layout::vars(&[next]));
    txn.commit()?;
    Ok(replayed)
}

impl Inner {
    /// See [`EmbeddedStore::checkpoint`].
    fn checkpoint(&self) -> bool {
        let (Some(log), Some(tx)) = (&self.log, &self.applier_tx) else {
            return false;
        };
        // Let the log drop what the index will hold: a checkpoint request queues behind every
        // append, so once it is answered every acknowledged record was handed to the applier;
        // then the applier applies them, persists, and has the log delete covered segments.
        let flushed = futures_lite::future::block_on(log.handle().checkpoint(0));
        let (reply, answer) = Reply::channel();
        flushed.is_ok()
            && tx.send(ToApplier::Checkpoint { reply }).is_ok()
            && futures_lite::future::block_on(answer).is_ok()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.checkpoint_on_close {
            self.checkpoint();
        }
        // Then the log: its writer finishes the queue (and drops the gate's sender to the
        // applier).
        if let Some(log) = self.log.take() {
            log.close();
        }
        // Then the applier sees every sender gone and applies the rest (what it applied since
        // the last flush is replayed at the next open unless the checkpoint above ran).
        self.applier_tx = None;
        // Readers stop when the last sender (ours) is gone.
        self.readers.close();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("store: a store thread panicked");
            }
        }
        // Last, the index's threads: what they have not flushed, the log still holds.
        self.index.close();
    }
}

impl Store for EmbeddedStore {
    fn write(&self, batch: WriteBatch) -> StoreReply<()> {
        let Some(log) = &self.inner.log else {
            return Reply::ready(Err(StoreError::Closed));
        };
        let mut record = Vec::with_capacity(64 + batch.mutations.len() * 128);
        codec::encode_batch(&batch, &mut record);
        let (replier, reply) = Reply::channel();
        let unapplied = pending::Unapplied::of(&batch);
        let shared = self.inner.shared.clone();
        // The writer thread completes the reply itself: no extra hop. Idempotency answers and
        // chat appends are kept in memory until applied, so the owner's lookups and chat loads
        // need not wait for the applier.
        log.handle().append_then(record, move |outcome| {
            if let Ok(lsn) = &outcome {
                shared.remember(*lsn, unapplied);
            }
            replier.send(outcome.map(drop).map_err(store_error));
        });
        reply
    }

    fn chat(&self, chat: ChatId) -> StoreReply<Option<ChatState>> {
        self.inner
            .readers
            .run_chat(chat, move |s| Ok(read::chat(s, chat)?))
    }

    fn sent(
        &self,
        user: UserId,
        device: DeviceId,
        client_msg_id: u64,
    ) -> StoreReply<Option<SentRecord>> {
        self.inner
            .readers
            .run_sent(vec![(user, device, client_msg_id)], |mut answers| {
                answers.pop().flatten()
            })
    }

    fn sent_many(&self, keys: Vec<(UserId, DeviceId, u64)>) -> StoreReply<Vec<Option<SentRecord>>> {
        self.inner.readers.run_sent(keys, |answers| answers)
    }

    fn sync_plan(&self, user: UserId, device: DeviceId) -> StoreReply<Vec<SyncChat>> {
        self.inner
            .readers
            .run(move |s| Ok(read::sync_plan(s, user, device)?))
    }

    fn read_log(
        &self,
        chat: ChatId,
        after_seq: Seq,
        until_seq: Seq,
        limit: usize,
    ) -> StoreReply<LogPage> {
        self.inner.readers.run_chat(chat, move |s| {
            read::read_log(s, chat, after_seq, until_seq, limit)?
                .ok_or(StoreError::UnknownChat(chat))
        })
    }

    fn history(&self, chat: ChatId, before_seq: Seq, limit: usize) -> StoreReply<LogPage> {
        self.inner.readers.run_chat(chat, move |s| {
            read::history(s, chat, before_seq, limit)?.ok_or(StoreError::UnknownChat(chat))
        })
    }

    fn user_chats(&self, user: UserId) -> StoreReply<Vec<ChatId>> {
        self.inner
            .readers
            .run(move |s| Ok(read::user_chats(s, user)?))
    }

    fn devices(&self, user: UserId) -> StoreReply<Vec<Device>> {
        self.inner.readers.run(move |s| Ok(read::devices(s, user)?))
    }

    fn cursors(&self, chat: ChatId) -> StoreReply<Vec<DeviceCursor>> {
        self.inner
            .readers
            .run(move |s| read::cursors(s, chat)?.ok_or(StoreError::UnknownChat(chat)))
    }

    fn attachment(&self, id: AttachmentId) -> StoreReply<Option<Attachment>> {
        self.inner
            .readers
            .run(move |s| Ok(attachments::get(s, id)?))
    }

    fn referenced_in(&self, chat: ChatId, id: AttachmentId) -> StoreReply<bool> {
        self.inner
            .readers
            .run(move |s| Ok(attachments::is_referenced(s, id, Some(chat))?))
    }

    fn unreferenced_attachments(
        &self,
        created_before_ms: Millis,
        limit: usize,
    ) -> StoreReply<Vec<AttachmentId>> {
        self.inner
            .readers
            .run(move |s| Ok(attachments::unreferenced(s, created_before_ms, limit)?))
    }

    fn sweep(&self, now_ms: Millis) -> StoreReply<SweepReport> {
        let Some(tx) = &self.inner.applier_tx else {
            return Reply::ready(Err(StoreError::Closed));
        };
        let (reply, answer) = Reply::channel();
        match tx.send(ToApplier::Sweep { now: now_ms, reply }) {
            Ok(()) => answer,
            Err(_) => Reply::ready(Err(StoreError::Closed)),
        }
    }
}

/// How a log outcome reads to a store caller.
fn store_error(error: LogError) -> StoreError {
    match error {
        LogError::Refused(refusal) => match refusal.downcast::<StoreError>() {
            Ok(error) => *error,
            Err(other) => StoreError::Invalid(other.to_string()),
        },
        LogError::ReadOnly { cause } => StoreError::ReadOnly(cause.to_string()),
        LogError::QueueFull { .. } => StoreError::Overloaded(error.to_string()),
        LogError::Closed => StoreError::Closed,
        LogError::RecordTooLarge { .. } | LogError::BatchTooLarge { .. } => {
            StoreError::Invalid(error.to_string())
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl From<IndexError> for StoreError {
    fn from(e: IndexError) -> Self {
        Self::Unavailable(e.to_string())
    }
}
