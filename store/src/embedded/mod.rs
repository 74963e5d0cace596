//! The embedded backend (the default; no servers): a write-ahead log on the acknowledgement
//! path, applied in the background to a fjall LSM index that serves reads.
//!
//! Why this shape (`../shared/FACTS.md`, measured here): fjall alone stalls commits for
//! 110–280 ms at memtable rotations (ack p99 ~376 ms at 100k msg/s) and redb alone tops out
//! near 35k msg/s, while an append-only log with one `fdatasync` per batch keeps p99 in
//! single-digit ms. So an acknowledgement waits only for the log; the index catches up behind.
//!
//! Threads: the log's writer (group commit; its [`gate::SeqGate`] checks every batch's seqs
//! and hands durable records on), the applier ([`apply_thread`]: index batches, sweeps,
//! checkpoints) and a few readers ([`read`]). Executor threads only enqueue and await.
//!
//! Directory layout (format version [`FORMAT_VERSION`], in `FORMAT`; format
//! [`UPGRADES_FORMAT`] is upgraded in place): `FORMAT`, `log/` (segments, see [`crate::log`]),
//! `index/` (fjall).
//!
//! Invariants: `Ok` from [`Store::write`] means the log record was synced; a read sees
//! every write acknowledged before it was issued; reopening replays the log from the index's
//! `apply_from`, so the index ends exactly where the log does.

mod apply;
mod apply_thread;
mod attachments;
mod codec;
mod gate;
mod hot;
mod index;
mod layout;
mod pending;
mod read;
mod reclaim;
mod sent_bounds;
mod sweep;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use wire::ids::{AttachmentId, ChatId, DeviceId, UserId};

use self::apply_thread::{Applier, CheckpointPolicy, Shared, ToApplier};
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
pub const FORMAT_VERSION: u32 = 2;

/// The older format this build opens and upgrades in place (by rewriting `FORMAT` before it
/// writes anything): format 1 differs only in having no head rows, and every read falls back
/// to the chat row's head where a chat has none.
pub const UPGRADES_FORMAT: u32 = 1;

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
    /// `checkpoint_bytes` of log (34 MiB by default, ~1.3 s at the measured replay rate).
    pub apply_backlog_bytes_max: u64,
    /// Checkpoint after this many record bytes applied. A checkpoint syncs fjall's journal,
    /// which shares the disk with the log: small, frequent checkpoints keep each of those
    /// syncs short, so the log's syncs (acknowledgements) seldom wait behind a large one.
    pub checkpoint_bytes: u64,
    /// Or after this long with anything applied.
    pub checkpoint_interval: Duration,
    /// The index's memtable size: one is written out (and synced) as a table when full. Like
    /// `checkpoint_bytes`, smaller means shorter bursts of index writes for the log's syncs to
    /// wait behind. Applies when the index is created; an existing index keeps its own.
    pub memtable_bytes: u64,
    /// The size of the tables compactions write (each is synced when written); applies when
    /// the index is created, as `memtable_bytes`.
    pub table_bytes: u64,
    /// The index's block cache, in bytes.
    pub cache_bytes: u64,
    /// At close, checkpoint so the log keeps nothing the index holds (the default). Off, the
    /// log keeps every segment since the last checkpoint (recovery tests use this).
    pub checkpoint_on_close: bool,
    /// The nice value (0 to 19) of fjall's flush and compaction workers: their work comes in
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
    /// fjall's flush and compaction threads (1 to 64). Default 4, whatever the core count:
    /// with fewer, fjall 3.1's first worker, which keeps itself free for flushes, hands every
    /// compaction request it receives back to the shared queue and receives it again
    /// (a busy loop) for as long as the others are compacting. Spare workers take those
    /// requests and sleep instead. Measured on the 2-core development VM, 4 workers against
    /// fjall's default of 2 there: about 25% less CPU in the workers at 100k msg/s, and through
    /// the gateway (`messaging` bench, 1:1) 69.8k against 59.4k deliveries per gateway
    /// CPU-second (medians of 3, alternated). One worker avoids the loop
    /// too, but then a flush waits behind every compaction, and fjall can deadlock a lone
    /// worker on its own full queue (fjall-rs/fjall#323).
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
            // Measured at 100k msg/s (`store_engine` bench, issue 5), alternated in one run:
            // with 16 MiB tables and 2 MiB / 200 ms checkpoints the log spent 1.6–2.9% of the
            // time in syncs over 10 ms, against 3.6–4.9% with fjall's 64 MiB tables and 16 MiB
            // / 1 s; ack p99 median 20 ms against 28 ms, p50 unchanged (0.6 ms). 8 MiB
            // memtables cut stalls further but tripled p50 and cost ~19% of the gateway's
            // throughput in compactions.
            checkpoint_bytes: 2 << 20,
            checkpoint_interval: Duration::from_millis(200),
            memtable_bytes: 64 << 20,
            table_bytes: 16 << 20,
            cache_bytes: 64 << 20,
            checkpoint_on_close: true,
            background_nice: 0,
            apply_nice: 0,
            index_dir: None,
            index_workers: 4,
        }
    }
}

/// Why the embedded store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory holds another format version (or something else).
    #[error(
        "{}: {found}; this build reads \"{}\" (and upgrades \"{}\" in place). Open it with \
         a matching switchboard build",
        path.display(),
        format_line(FORMAT_VERSION),
        format_line(UPGRADES_FORMAT)
    )]
    Incompatible {
        /// The `FORMAT` file.
        path: PathBuf,
        /// What it says.
        found: String,
    },
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
        check_format(dir)?;
        let apply_nice = options.apply_nice;
        let db = open_index(dir, &options)?;
        let (memtable_bytes, table_bytes) = (options.memtable_bytes, options.table_bytes);
        let ks = db
            .keyspace("store", move || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(memtable_bytes)
                    .compaction_strategy(Arc::new(
                        fjall::compaction::Leveled::default().with_table_target_size(table_bytes),
                    ))
            })
            .map_err(|e| OpenError::Index(e.to_string()))?;
        let apply_from = match ks.get(layout::APPLY_FROM).map_err(IndexError::from)? {
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
            replayed = replay(&db, &ks, recovery, apply_from)?;
            gate_shared.start_at(recovery.next_lsn());
            let heads = read::heads(&ks)?;
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
        let mut threads = Vec::new();
        let (reclaim_tx, reclaim_rx) = crossbeam_channel::unbounded();
        let applier = Applier {
            db: db.clone(),
            ks: ks.clone(),
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
                db: db.clone(),
                ks: ks.clone(),
            };
            let rx = read_rx.clone();
            threads.push(spawn(&format!("store-reader-{i}"), dir, move || {
                read::serve(&reader, &rx);
            })?);
        }
        let inner = Inner {
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

/// Opens the index (fjall) from a thread at `background_nice`, so fjall's workers inherit it.
fn open_index(dir: &Path, options: &EmbeddedOptions) -> Result<Database, OpenError> {
    let (nice, cache_bytes, workers) = (
        options.background_nice,
        options.cache_bytes,
        options.index_workers,
    );
    let path = options
        .index_dir
        .clone()
        .unwrap_or_else(|| dir.join("index"));
    let open = || {
        set_nice(nice);
        Database::builder(&path)
            .cache_size(cache_bytes)
            // Keep fjall's own journal small: the log is the source of truth, and a large
            // journal only lengthens recovery.
            .max_journaling_size(64 << 20)
            .worker_threads(workers)
            .open()
            .map_err(|e| OpenError::Index(e.to_string()))
    };
    std::thread::scope(|scope| {
        scope
            .spawn(open)
            .join()
            .unwrap_or_else(|_| Err(OpenError::Index("opening the index panicked".into())))
    })
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

/// Creates `FORMAT` in a new (or empty) directory and upgrades format [`UPGRADES_FORMAT`] in
/// place; refuses another version or a foreign directory.
fn check_format(dir: &Path) -> Result<(), OpenError> {
    fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
    let path = dir.join("FORMAT");
    match fs::read_to_string(&path) {
        Ok(found) => {
            let found = found.trim_end().to_owned();
            if found == format_line(FORMAT_VERSION) {
                Ok(())
            } else if found == format_line(UPGRADES_FORMAT) {
                write_format(dir)?;
                tracing::info!(
                    dir = %dir.display(),
                    from = UPGRADES_FORMAT,
                    to = FORMAT_VERSION,
                    "store: upgraded the data directory's format in place"
                );
                Ok(())
            } else {
                Err(OpenError::Incompatible { path, found })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let empty = fs::read_dir(dir)
                .map_err(io_error("listing", dir))?
                .next()
                .is_none();
            if !empty {
                return Err(OpenError::Foreign(dir.to_owned()));
            }
            write_format(dir)
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
    db: &Database,
    ks: &Keyspace,
    recovery: &crate::log::Recovery,
    apply_from: Lsn,
) -> Result<u64, OpenError> {
    let mut txn = Txn::new(db, ks);
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

impl Drop for Inner {
    fn drop(&mut self) {
        // Let the log drop what the index will hold: a checkpoint request queues behind every
        // append, so once it is answered every acknowledged record was handed to the applier;
        // then the applier applies them, persists, and has the log delete covered segments.
        if let (true, Some(log), Some(tx)) = (self.checkpoint_on_close, &self.log, &self.applier_tx)
        {
            let flushed = futures_lite::future::block_on(log.handle().checkpoint(0));
            let (reply, answer) = Reply::channel();
            if flushed.is_ok() && tx.send(ToApplier::Checkpoint { reply }).is_ok() {
                let _ = futures_lite::future::block_on(answer);
            }
        }
        // Then the log: its writer finishes the queue (and drops the gate's sender to the
        // applier).
        if let Some(log) = self.log.take() {
            log.close();
        }
        // Then the applier sees every sender gone, applies the rest and checkpoints.
        self.applier_tx = None;
        // Readers stop when the last sender (ours) is gone.
        self.readers.close();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("store: a store thread panicked");
            }
        }
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
