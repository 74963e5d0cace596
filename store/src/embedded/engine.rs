//! The index engine: one LSM tree (`lsm-tree`, the engine under fjall) with no journal of its
//! own, because the store's log already is the index's write-ahead log.
//!
//! Why not fjall itself: fjall writes every batch to its journal before its memtable. Beside
//! the log that is a second copy of every row (about 1.6× the log's bytes), and in the
//! `messaging` bench (1:1) it cost 12–25% of the gateway's deliveries per CPU-second. So the
//! store drives the tree itself; what fjall added besides the journal is here, small:
//! sequence numbers, snapshots, a flush thread, compaction threads and write stalls.
//!
//! Owns:
//! - what reads see: a batch's rows share one sequence number and become visible together
//!   when it is published, so a reader never sees part of a batch. The tree also numbers its
//!   versions (flushes, compactions) from the same counter and raises the counter it is
//!   given as "visible" past each, even while a batch is half inserted; so reads use
//!   `published`, which only [`Index::commit`] raises, never that counter;
//! - open snapshots: compactions and flushes keep every version an open snapshot may read
//!   (the watermark is the oldest open snapshot, as in fjall);
//! - durability of the index: nothing is synced per batch. [`Index::rotate`] seals the active
//!   memtable together with the log position it covers; the `index-flush` thread writes sealed
//!   memtables out as tables (lsm-tree syncs the tables and the tree's version), and only then
//!   reports that position to [`Index::on_flushed`], after which the log may drop what is
//!   below it. After a crash the tree holds what was flushed, and `apply_from`, written by
//!   every batch, says where the log's replay starts;
//! - write stalls: [`Index::commit`] waits while [`SEALED_MAX`] memtables wait for the flush
//!   thread (bounding memory) or while level 0 has [`L0_STOP`] runs (bounding read cost).
//!
//! Invariants: one thread writes (commits and rotations; the applier, or replay at open);
//! sealed memtables are flushed in the order they were sealed; `on_flushed` sees covered
//! positions in increasing order; after a background failure every commit fails.

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeBounds;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use lsm_tree::compaction::CompactionStrategy;
use lsm_tree::config::{
    BloomConstructionPolicy, CompressionPolicy, FilterPolicy, FilterPolicyEntry,
    RestartIntervalPolicy,
};
use lsm_tree::{
    AbstractTree, AnyTree, Cache, CompressionType, DescriptorTable, IterGuardImpl, Memtable, SeqNo,
    SequenceNumberCounter, Slice,
};

use crate::log::Lsn;

/// Sealed memtables waiting for the flush thread beyond which commits wait.
pub(crate) const SEALED_MAX: usize = 4;

/// Level-0 runs at which commits wait for compaction.
pub(crate) const L0_STOP: usize = 24;

/// Table files kept open (fjall's default on Linux).
const OPEN_TABLES: usize = 900;

/// Compactions one request may run back to back (each runs one step of the strategy).
const COMPACTIONS_PER_REQUEST: usize = 64;

/// Rows in key order (either way), each read from the tree when taken.
pub(crate) type Rows = Box<dyn DoubleEndedIterator<Item = IterGuardImpl> + Send + 'static>;

/// What the flush thread calls with each covered log position ([`Index::on_flushed`]).
type OnFlushed = Box<dyn FnMut(Lsn) + Send>;

/// How the index is built; fixed for the life of an [`Index`].
#[derive(Debug, Clone)]
pub(crate) struct IndexOptions {
    /// The block cache.
    pub(crate) cache_bytes: u64,
    /// A memtable at least this large is full ([`Index::is_full`]).
    pub(crate) memtable_bytes: u64,
    /// Compactions write tables of this size.
    pub(crate) table_bytes: u64,
    /// Compaction threads (the flush thread is one more).
    pub(crate) compaction_threads: usize,
    /// The nice value of the flush and compaction threads.
    pub(crate) nice: i32,
}

#[cfg(test)]
impl IndexOptions {
    /// Small caches and one compaction thread, for tests.
    pub(crate) fn for_tests(memtable_bytes: u64) -> Self {
        Self {
            cache_bytes: 8 << 20,
            memtable_bytes,
            table_bytes: 16 << 20,
            compaction_threads: 1,
            nice: 0,
        }
    }
}

/// The index: cheap to clone; [`Index::close`] stops its threads.
#[derive(Clone)]
pub(crate) struct Index(Arc<Inner>);

struct Inner {
    tree: AnyTree,
    /// The next sequence number a commit (or the tree, for a new version) takes.
    seqno: SequenceNumberCounter,
    /// Reads see every row whose sequence number is below this: raised only after a whole
    /// batch is in the memtable.
    published: AtomicU64,
    /// Open snapshots: sequence number → how many.
    snapshots: Mutex<BTreeMap<SeqNo, usize>>,
    state: Mutex<State>,
    changed: Condvar,
    memtable_bytes: u64,
    strategy: Arc<dyn CompactionStrategy + Send + Sync>,
    on_flushed: Mutex<Option<OnFlushed>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    /// The log position each sealed, not yet flushed memtable covers, oldest first.
    sealed: VecDeque<Lsn>,
    /// Compaction requests so far (threads compare with what they last served).
    compaction_requests: u64,
    closing: bool,
    failure: Option<String>,
}

/// Why the index refused an operation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error(transparent)]
    Tree(#[from] lsm_tree::Error),
    #[error("the index's background work failed: {0}")]
    Background(String),
}

pub(crate) type Result<T> = std::result::Result<T, EngineError>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Index {
    /// Opens (or creates) the tree in `path` and starts its threads.
    ///
    /// # Errors
    /// The tree could not be opened (I/O, a damaged version or table), or a thread not started.
    pub(crate) fn open(path: &Path, options: &IndexOptions) -> Result<Self> {
        let seqno = SequenceNumberCounter::default();
        // The tree raises this past every version it makes; nothing here reads it (see
        // `published`).
        let versions_visible = SequenceNumberCounter::default();
        let tree = lsm_tree::Config::new(path, seqno.clone(), versions_visible)
            .use_cache(Arc::new(Cache::with_capacity_bytes(options.cache_bytes)))
            .use_descriptor_table(Some(Arc::new(DescriptorTable::new(OPEN_TABLES))))
            // fjall 3.1's defaults, which this index was measured with.
            .data_block_restart_interval_policy(RestartIntervalPolicy::new([10, 16]))
            .data_block_compression_policy(CompressionPolicy::new([
                CompressionType::None,
                CompressionType::None,
                CompressionType::Lz4,
            ]))
            .filter_policy(FilterPolicy::new([
                FilterPolicyEntry::Bloom(BloomConstructionPolicy::FalsePositiveRate(0.0001)),
                FilterPolicyEntry::Bloom(BloomConstructionPolicy::BitsPerKey(10.0)),
            ]))
            .open()?;
        if let Some(highest) = tree.get_highest_seqno() {
            seqno.fetch_max(highest + 1);
        }
        let index = Self(Arc::new(Inner {
            tree,
            published: AtomicU64::new(seqno.get()),
            seqno,
            snapshots: Mutex::new(BTreeMap::new()),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            memtable_bytes: options.memtable_bytes,
            strategy: Arc::new(
                lsm_tree::compaction::Leveled::default()
                    .with_table_target_size(options.table_bytes),
            ),
            on_flushed: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
        }));
        let mut threads = Vec::new();
        let spawn = |name: &str, run: fn(&Inner) -> Result<()>| {
            let (inner, nice) = (index.0.clone(), options.nice);
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    super::set_nice(nice);
                    // A panic fails the index too: a writer waiting for this thread must not
                    // wait forever.
                    let failure = match std::panic::catch_unwind(AssertUnwindSafe(|| run(&inner))) {
                        Ok(Ok(())) => return,
                        Ok(Err(error)) => error.to_string(),
                        Err(_) => "an index thread panicked".to_owned(),
                    };
                    tracing::error!(%failure, "store: the index's background work failed");
                    inner.fail(failure);
                })
        };
        let started = (|| {
            threads.push(spawn("index-flush", flush_until_closed)?);
            for _ in 0..options.compaction_threads.max(1) {
                threads.push(spawn("index-compact", compact_until_closed)?);
            }
            Ok::<_, std::io::Error>(())
        })();
        *lock(&index.0.threads) = threads;
        if let Err(error) = started {
            index.close();
            return Err(lsm_tree::Error::from(error).into());
        }
        // Tables left from before may already call for compaction.
        index.0.request_compaction();
        Ok(index)
    }

    /// Tells the index what to call with each covered log position once it is flushed.
    pub(crate) fn on_flushed(&self, f: impl FnMut(Lsn) + Send + 'static) {
        *lock(&self.0.on_flushed) = Some(Box::new(f));
    }

    /// The latest committed value of `key` (for the writing thread, whose own commits are all
    /// visible; other threads read through a [`Snapshot`]).
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Slice>> {
        Ok(self.0.tree.get(key, self.0.published())?)
    }

    /// The latest rows under `prefix`, in key order (see [`Index::get`]).
    pub(crate) fn prefix(&self, prefix: impl AsRef<[u8]>) -> Rows {
        self.0.tree.prefix(prefix, self.0.published(), None)
    }

    /// The latest rows in `range`, in key order (see [`Index::get`]).
    pub(crate) fn range<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Rows {
        self.0.tree.range(range, self.0.published(), None)
    }

    /// A consistent view of everything committed so far, kept readable until dropped.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut open = lock(&self.0.snapshots);
        let seqno = self.0.published();
        *open.entry(seqno).or_default() += 1;
        Snapshot {
            index: self.clone(),
            seqno,
        }
    }

    /// Applies `batch` atomically: its rows become visible together, and leaves it empty
    /// with its capacity (a writer reuses one batch: growing a fresh one to the applier's
    /// 65,536 rows reallocated and faulted in megabytes per commit). Not synced (see the
    /// module doc). Waits first while the flush thread or compactions are far behind.
    ///
    /// # Errors
    /// The background work failed before (the index takes no more writes); `batch` is then
    /// left as it was.
    pub(crate) fn commit(&self, batch: &mut Batch) -> Result<()> {
        self.stall()?;
        if batch.rows.is_empty() {
            return Ok(());
        }
        let seqno = self.0.seqno.next();
        for (key, value) in batch.rows.drain(..) {
            match value {
                Some(value) => self.0.tree.insert(key, value, seqno),
                None => self.0.tree.remove(key, seqno),
            };
        }
        self.0.published.fetch_max(seqno + 1, Ordering::AcqRel);
        Ok(())
    }

    /// Whether the active memtable is full.
    pub(crate) fn is_full(&self) -> bool {
        self.0.tree.active_memtable().size() >= self.0.memtable_bytes
    }

    /// The memtable commits go into now.
    pub(crate) fn active_memtable(&self) -> Arc<Memtable> {
        self.0.tree.active_memtable()
    }

    /// Seals the active memtable, which holds everything applied below log position `covered`,
    /// and hands it to the flush thread. Nothing happens if it is empty.
    pub(crate) fn rotate(&self, covered: Lsn) {
        if self.0.tree.rotate_memtable().is_some() {
            lock(&self.0.state).sealed.push_back(covered);
            self.0.changed.notify_all();
        }
    }

    /// Seals the active memtable (see [`Index::rotate`]) and waits until every sealed one is
    /// flushed.
    ///
    /// # Errors
    /// A flush failed.
    pub(crate) fn flush_and_wait(&self, covered: Lsn) -> Result<()> {
        self.rotate(covered);
        let mut state = lock(&self.0.state);
        loop {
            if let Some(failure) = &state.failure {
                return Err(EngineError::Background(failure.clone()));
            }
            if state.sealed.is_empty() {
                return Ok(());
            }
            if state.closing {
                return Err(EngineError::Background("the index is closing".into()));
            }
            state = self.0.wait(state);
        }
    }

    /// Stops the background threads (a flush in progress finishes; sealed memtables not yet
    /// flushed are dropped: the log still holds their rows) and waits for them.
    pub(crate) fn close(&self) {
        lock(&self.0.state).closing = true;
        self.0.changed.notify_all();
        let threads = std::mem::take(&mut *lock(&self.0.threads));
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("store: an index thread panicked");
            }
        }
    }

    /// Waits while sealed memtables pile up or level 0 has too many runs.
    fn stall(&self) -> Result<()> {
        let mut state = lock(&self.0.state);
        loop {
            if let Some(failure) = &state.failure {
                return Err(EngineError::Background(failure.clone()));
            }
            if state.closing {
                return Ok(());
            }
            if state.sealed.len() >= SEALED_MAX {
                state = self.0.wait(state);
                continue;
            }
            if self.0.tree.l0_run_count() >= L0_STOP {
                state.compaction_requests += 1;
                self.0.changed.notify_all();
                state = self
                    .0
                    .changed
                    .wait_timeout(state, Duration::from_millis(10))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            return Ok(());
        }
    }
}

impl Inner {
    /// Waits for a change of `state` (a poisoned lock is taken over: the state stays valid).
    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn published(&self) -> SeqNo {
        self.published.load(Ordering::Acquire)
    }

    /// The sequence number below which versions no open snapshot can read may go.
    fn watermark(&self) -> SeqNo {
        let open = lock(&self.snapshots);
        open.keys()
            .next()
            .copied()
            .unwrap_or_else(|| self.published())
            .saturating_sub(1)
    }

    fn request_compaction(&self) {
        lock(&self.state).compaction_requests += 1;
        self.changed.notify_all();
    }

    fn fail(&self, reason: String) {
        lock(&self.state).failure.get_or_insert(reason);
        self.changed.notify_all();
    }
}

/// The `index-flush` thread: writes sealed memtables out, oldest first, then reports the log
/// position they cover.
fn flush_until_closed(inner: &Inner) -> Result<()> {
    loop {
        let (count, covered) = {
            let mut state = lock(&inner.state);
            while state.sealed.is_empty() && !state.closing {
                state = inner.wait(state);
            }
            match state.sealed.back() {
                Some(&covered) if !state.closing => (state.sealed.len(), covered),
                _ => return Ok(()),
            }
        };
        // Every memtable counted was sealed before this reads the tree's sealed list, so this
        // flush writes all of them (and perhaps one sealed since, which the next turn finds
        // already written).
        {
            let flush_lock = inner.tree.get_flush_lock();
            inner.tree.flush(&flush_lock, inner.watermark())?;
        }
        lock(&inner.state).sealed.drain(..count);
        inner.changed.notify_all();
        if let Some(on_flushed) = lock(&inner.on_flushed).as_mut() {
            on_flushed(covered);
        }
        inner.request_compaction();
    }
}

/// An `index-compact` thread: on each request, compacts until the strategy finds nothing to do.
fn compact_until_closed(inner: &Inner) -> Result<()> {
    let mut served = 0;
    loop {
        {
            let mut state = lock(&inner.state);
            while state.compaction_requests == served && !state.closing {
                state = inner.wait(state);
            }
            if state.closing {
                return Ok(());
            }
            served = state.compaction_requests;
        }
        for _ in 0..COMPACTIONS_PER_REQUEST {
            let before = inner.tree.current_version().id();
            inner
                .tree
                .compact(inner.strategy.clone(), inner.watermark())?;
            if inner.tree.current_version().id() == before {
                break;
            }
        }
        // A stalled writer waits for level 0 to shrink.
        inner.changed.notify_all();
    }
}

/// A consistent view of the index (see [`Index::snapshot`]).
pub(crate) struct Snapshot {
    index: Index,
    seqno: SeqNo,
}

impl Snapshot {
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Slice>> {
        Ok(self.index.0.tree.get(key, self.seqno)?)
    }

    pub(crate) fn prefix(&self, prefix: impl AsRef<[u8]>) -> Rows {
        self.index.0.tree.prefix(prefix, self.seqno, None)
    }

    pub(crate) fn range<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Rows {
        self.index.0.tree.range(range, self.seqno, None)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut open = lock(&self.index.0.snapshots);
        if let Some(count) = open.get_mut(&self.seqno) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.seqno);
            }
        }
    }
}

/// Rows to commit together ([`Index::commit`]); a later row for the same key wins.
#[derive(Default)]
pub(crate) struct Batch {
    rows: Vec<(Slice, Option<Slice>)>,
}

impl Batch {
    pub(crate) fn insert(&mut self, key: impl Into<Slice>, value: impl Into<Slice>) {
        self.rows.push((key.into(), Some(value.into())));
    }

    pub(crate) fn remove(&mut self, key: impl Into<Slice>) {
        self.rows.push((key.into(), None));
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use lsm_tree::Guard;

    use super::*;

    fn options() -> IndexOptions {
        IndexOptions::for_tests(1 << 20)
    }

    /// A new index with 1 MiB memtables in a temp dir.
    fn open() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Index::open(dir.path(), &options()).expect("open");
        (dir, index)
    }

    fn put(index: &Index, key: &str, value: &str) {
        let mut batch = Batch::default();
        batch.insert(key.as_bytes(), value.as_bytes());
        index.commit(&mut batch).expect("commit");
    }

    fn value(snapshot: &Snapshot, key: &str) -> Option<Vec<u8>> {
        snapshot
            .get(key.as_bytes())
            .expect("get")
            .map(|v| v.to_vec())
    }

    #[test]
    fn a_snapshot_sees_what_was_committed_before_it_even_after_flushes_and_compactions() {
        let (_dir, index) = open();
        put(&index, "k", "old");
        let before = index.snapshot();
        for round in 0..6 {
            put(&index, "k", &format!("new{round}"));
            index.flush_and_wait(round).expect("flush");
            index
                .0
                .tree
                .major_compact(1 << 20, index.0.watermark())
                .expect("compact");
        }
        assert_eq!(value(&before, "k").as_deref(), Some(&b"old"[..]));
        assert_eq!(value(&index.snapshot(), "k").as_deref(), Some(&b"new5"[..]));
        drop(before);
        index.close();
    }

    #[test]
    fn a_batch_becomes_visible_whole() {
        let (_dir, index) = open();
        let empty = index.snapshot();
        let mut batch = Batch::default();
        batch.insert(&b"a"[..], &b"1"[..]);
        batch.insert(&b"b"[..], &b"2"[..]);
        batch.remove(&b"a"[..]);
        index.commit(&mut batch).expect("commit");
        assert_eq!(
            empty.prefix(b"").count(),
            0,
            "an older snapshot sees none of it"
        );
        let rows: Vec<_> = index
            .snapshot()
            .prefix(b"")
            .map(|g| g.into_inner().expect("row").0.to_vec())
            .collect();
        assert_eq!(rows, vec![b"b".to_vec()], "the later delete of a wins");
        index.close();
    }

    /// Flushes and compactions make new tree versions, numbered from the same counter as the
    /// batches, while a batch is being inserted: a reader must still never see half of one.
    #[test]
    fn readers_never_see_half_a_batch_while_flushes_and_compactions_run() {
        let (_dir, index) = open();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (index, done) = (index.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut checked = 0u64;
                    while !done.load(Ordering::Relaxed) {
                        let snapshot = index.snapshot();
                        let (a, b) = (value(&snapshot, "a"), value(&snapshot, "z"));
                        assert_eq!(a, b, "half a batch after {checked} checks");
                        checked += 1;
                    }
                    checked
                })
            })
            .collect();
        let filler = [3u8; 512];
        for n in 0u64..8_000 {
            let mut batch = Batch::default();
            batch.insert(&b"a"[..], n.to_be_bytes().to_vec());
            for i in 0..8u64 {
                batch.insert(
                    [&b"m"[..], &n.to_be_bytes(), &i.to_be_bytes()].concat(),
                    filler.to_vec(),
                );
            }
            batch.insert(&b"z"[..], n.to_be_bytes().to_vec());
            index.commit(&mut batch).expect("commit");
            if index.is_full() {
                index.rotate(n);
            }
        }
        done.store(true, Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().expect("reader") > 0);
        }
        assert!(index.0.tree.table_count() > 1, "flushes ran");
        index.close();
    }

    #[test]
    fn flushed_rows_survive_a_reopen_and_the_covered_position_is_reported_after_the_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reported = Arc::new(Mutex::new(Vec::new()));
        {
            let index = Index::open(dir.path(), &options()).expect("open");
            let seen = reported.clone();
            let tree_dir = dir.path().to_owned();
            index.on_flushed(move |lsn| {
                // By now the tables are on disk: a second tree opened on them sees the row.
                let tables = std::fs::read_dir(tree_dir.join("tables")).map_or(0, Iterator::count);
                lock(&seen).push((lsn, tables));
            });
            put(&index, "kept", "1");
            index.flush_and_wait(7).expect("flush");
            put(&index, "lost", "2");
            index.close();
        }
        let reported = lock(&reported).clone();
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert_eq!(reported[0].0, 7);
        assert!(reported[0].1 >= 1, "a table was written before the report");
        let index = Index::open(dir.path(), &options()).expect("reopen");
        let snapshot = index.snapshot();
        assert_eq!(value(&snapshot, "kept").as_deref(), Some(&b"1"[..]));
        assert_eq!(
            value(&snapshot, "lost"),
            None,
            "unflushed rows are the log's to replay"
        );
        // New commits get sequence numbers above the recovered ones.
        put(&index, "kept", "3");
        assert_eq!(value(&index.snapshot(), "kept").as_deref(), Some(&b"3"[..]));
        drop(snapshot);
        index.close();
    }

    #[test]
    fn full_memtables_are_flushed_in_the_background_and_compacted() {
        let (_dir, index) = open();
        let value = [7u8; 200];
        let mut rotations = 0;
        for i in 0u64..40_000 {
            let mut batch = Batch::default();
            batch.insert(i.to_be_bytes().to_vec(), value.to_vec());
            index.commit(&mut batch).expect("commit");
            if index.is_full() {
                rotations += 1;
                index.rotate(i + 1);
            }
        }
        index.flush_and_wait(40_000).expect("flush");
        assert!(rotations >= 4, "{rotations} rotations");
        assert!(index.0.tree.table_count() >= 1);
        let snapshot = index.snapshot();
        assert_eq!(snapshot.prefix(b"").count(), 40_000);
        assert!(
            snapshot
                .get(39_999u64.to_be_bytes())
                .expect("get")
                .is_some()
        );
        drop(snapshot);
        index.close();
    }
}
