//! The applier thread: applies durable log records to the index in LSN order, runs sweeps,
//! and checkpoints (seals the index's memtable; once the index's flush thread has written it
//! out, the log drops the segments it covers, see [`super::engine`]).
//!
//! Owns `apply_from` (the next LSN to apply, stored in the index in the same atomic batch as
//! the rows it covers) and the reader/writer rendezvous in [`Shared`]: the writer publishes
//! `durable_next` before it acknowledges a batch, the applier publishes `applied_next` after
//! each commit, and a read waits until `applied_next` reaches the `durable_next` it saw when it
//! was issued, so it sees every write acknowledged before it (read-your-acknowledged-writes).
//! Idempotency lookups do not wait: they ask the answers of durable records not yet applied,
//! kept under the same lock (see [`super::pending`]), and then the index; reads of one chat
//! wait only for pending appends to that chat. After each commit the applier takes a
//! reference to the index's active memtable and hands flushed ones to the reclaim thread (see
//! [`super::reclaim`]).
//!
//! Invariants: a log segment is deleted only after the index rows of all its records were
//! written to tables and synced (the engine reports a memtable's covered LSN only then); an
//! apply failure stops applying, is logged loudly, and from then on reads fail and writes are
//! refused (the store must be reopened, which replays the log).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use wire::ids::{ChatId, DeviceId, UserId};

use super::apply::{Scratch, apply_batch};
use super::codec::decode_batch;
use super::engine::Index;
use super::hot::HotRows;
use super::index::{IndexError, Txn};
use super::layout as l;
use super::pending::{Pending, SentKey, Unapplied};
use super::reclaim::Reclaimer;
use super::sent_bounds::{SentBounds, Verdict};
use super::sweep::sweep;
use crate::StoreError;
use crate::log::{LogHandle, Lsn};
use crate::model::{Millis, Retention, SentRecord, SweepReport};
use crate::reply::Replier;

/// Pending entries dropped per hold of [`Shared`]'s lock once applied (see `set_applied`).
const DROP_CHUNK: usize = 1024;

/// State shared by the writer's gate, the applier and the readers.
#[derive(Debug)]
pub(crate) struct Shared {
    /// One past the last LSN acknowledged as durable.
    pub(crate) durable_next: AtomicU64,
    /// Record bytes handed to the applier and not yet applied.
    pub(crate) backlog_bytes: AtomicU64,
    applied: Mutex<Applied>,
    changed: Condvar,
}

#[derive(Debug)]
struct Applied {
    next: Lsn,
    failure: Option<String>,
    /// Idempotency answers and chat appends of records in `next..` (see [`super::pending`]).
    pending: Pending,
    /// Per device, a bound on the ids in the index (see [`super::sent_bounds`]).
    bounds: SentBounds,
}

impl Shared {
    pub(crate) fn new(next: Lsn) -> Self {
        Self {
            durable_next: AtomicU64::new(next),
            backlog_bytes: AtomicU64::new(0),
            applied: Mutex::new(Applied {
                next,
                failure: None,
                pending: Pending::default(),
                bounds: SentBounds::default(),
            }),
            changed: Condvar::new(),
        }
    }

    /// Sets both LSNs at open, before any writer or reader runs.
    pub(crate) fn start_at(&self, next: Lsn) {
        self.durable_next
            .store(next, std::sync::atomic::Ordering::Release);
        self.set_applied(next, &[]);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        // A panic while holding this lock aborts the process (panic = "abort"), so a
        // poisoned lock cannot be observed in release builds; tests recover the data.
        self.applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Why the applier stopped, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// Blocks (on a reader thread) until everything durable at `target` is applied.
    pub(crate) fn wait_applied(&self, target: Lsn) -> Result<(), StoreError> {
        self.wait_until(|applied| applied.next >= target)
    }

    /// Blocks (on a reader thread) until what a read of `chat` issued at `target` must see is
    /// applied: the newest pending append to `chat`, if any, or everything durable at `target`
    /// if that is earlier (see [`super::pending`]).
    pub(crate) fn wait_chat_applied(&self, chat: ChatId, target: Lsn) -> Result<(), StoreError> {
        self.wait_until(|applied| {
            applied
                .pending
                .last_append(chat)
                .is_none_or(|last| applied.next >= target.min(last + 1))
        })
    }

    /// Blocks until `ready` holds of the applier's progress, or the applier failed.
    fn wait_until(&self, ready: impl Fn(&Applied) -> bool) -> Result<(), StoreError> {
        let mut applied = self.lock();
        loop {
            if let Some(reason) = &applied.failure {
                return Err(StoreError::Unavailable(reason.clone()));
            }
            if ready(&applied) {
                return Ok(());
            }
            applied = self
                .changed
                .wait(applied)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Keeps what record `lsn` leaves pending until the applier has applied it. Called on the
    /// writer thread once the record is durable, before its waiter is told `Ok`.
    pub(crate) fn remember(&self, lsn: Lsn, unapplied: Unapplied) {
        if unapplied.is_empty() {
            return;
        }
        let mut applied = self.lock();
        let next = applied.next;
        applied.pending.add(lsn, next, unapplied);
    }

    /// The answer for `key` of a durable record not yet applied, else what the device's bound
    /// says of it (see [`super::sent_bounds`]: the caller takes its index snapshot after
    /// this); `Err` after the applier failed. A miss here means that every answer
    /// acknowledged before this call is in the index.
    pub(crate) fn pending_sent(&self, key: &SentKey) -> Result<SentLookup, StoreError> {
        let mut applied = self.lock();
        if let Some(reason) = &applied.failure {
            return Err(StoreError::Unavailable(reason.clone()));
        }
        Ok(match applied.pending.sent(key) {
            Some(record) => SentLookup::Pending(record),
            None => SentLookup::Index(applied.bounds.begin(*key)),
        })
    }

    /// What readers' scans found: (user, device, epoch, highest id) per device.
    pub(crate) fn learned(&self, scans: &[(UserId, DeviceId, u64, u64)]) {
        let mut applied = self.lock();
        for &(user, device, epoch, max) in scans {
            applied.bounds.learned(user, device, epoch, max);
        }
    }

    /// Publishes the applier's progress; call after the commit that covers `..next`, with
    /// the idempotency keys it wrote (sorted).
    fn set_applied(&self, next: Lsn, sent: &[SentKey]) {
        {
            // In the same hold as the progress, and so before these answers leave `pending`.
            let mut applied = self.lock();
            applied.bounds.applied(sent);
            applied.next = next;
        }
        self.changed.notify_all();
        // Then drop the applied entries a chunk per hold of the lock: the writer's completion
        // callback (every acknowledgement) takes it too (see `pending`).
        while self.lock().pending.applied(next, DROP_CHUNK) {
            std::thread::yield_now();
        }
    }

    fn fail(&self, reason: String) {
        self.lock().failure = Some(reason);
        self.changed.notify_all();
    }
}

/// Where an idempotency answer is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SentLookup {
    /// In a durable record not yet applied.
    Pending(SentRecord),
    /// In the index, or not at all, as the verdict says.
    Index(Verdict),
}

/// Messages to the applier thread.
pub(crate) enum ToApplier {
    /// Records `first_lsn..` are durable.
    Apply {
        first_lsn: Lsn,
        records: Vec<Vec<u8>>,
    },
    /// Run retention as of `now`.
    Sweep {
        now: Millis,
        reply: Replier<SweepReport, StoreError>,
    },
    /// Checkpoint now and say when the log has dropped what the index holds (at close).
    Checkpoint { reply: Replier<(), StoreError> },
}

/// When the applier checkpoints.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckpointPolicy {
    /// After this many record bytes applied since the last checkpoint.
    pub(crate) bytes: u64,
    /// Or after this long with anything applied.
    pub(crate) interval: Duration,
}

/// The applier thread's state.
pub(crate) struct Applier {
    pub(crate) index: Index,
    pub(crate) shared: Arc<Shared>,
    pub(crate) log: LogHandle,
    pub(crate) retention: Retention,
    pub(crate) policy: CheckpointPolicy,
    /// The next LSN to apply.
    pub(crate) next: Lsn,
    /// Frees the index's flushed memtables off its locks (see [`super::reclaim`]).
    pub(crate) reclaimer: Reclaimer,
    /// The rows this thread reads back, as it last wrote them (see [`super::hot`]).
    pub(crate) hot: HotRows,
}

impl Applier {
    /// Serves messages until every sender is gone (what is applied but not flushed then is
    /// replayed from the log at the next open, unless a checkpoint was asked for first).
    pub(crate) fn run(mut self, rx: &Receiver<ToApplier>) {
        let mut since_checkpoint = 0u64;
        let mut last_checkpoint = Instant::now();
        let mut scratch = Scratch::default();
        loop {
            let message = match rx.recv_timeout(self.policy.interval) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    self.reclaimer.release();
                    if since_checkpoint > 0 {
                        self.checkpoint();
                        since_checkpoint = 0;
                        last_checkpoint = Instant::now();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let outcome = match message {
                ToApplier::Apply { first_lsn, records } => {
                    since_checkpoint += records.iter().map(|r| r.len() as u64).sum::<u64>();
                    self.apply(first_lsn, &records, rx, &mut since_checkpoint, &mut scratch)
                }
                ToApplier::Checkpoint { reply } => {
                    self.checkpoint_and_wait();
                    since_checkpoint = 0;
                    last_checkpoint = Instant::now();
                    reply.send(Ok(()));
                    Ok(())
                }
                ToApplier::Sweep { now, reply } => {
                    let mut txn = Txn::with_hot(&self.index, &mut self.hot);
                    match sweep(&mut txn, &self.retention, now) {
                        Ok(report) => {
                            reply.send(Ok(report));
                            Ok(())
                        }
                        Err(error) => {
                            reply.send(Err(StoreError::Unavailable(error.to_string())));
                            Err(error)
                        }
                    }
                }
            };
            if let Err(error) = outcome {
                let reason = format!("applying to the index failed: {error}");
                tracing::error!(%reason, "store: the index stopped; reopen the store to replay the log");
                self.shared.fail(reason);
                return;
            }
            if since_checkpoint >= self.policy.bytes
                || (since_checkpoint > 0 && last_checkpoint.elapsed() >= self.policy.interval)
            {
                self.checkpoint();
                since_checkpoint = 0;
                last_checkpoint = Instant::now();
            }
        }
    }

    /// Like [`Applier::checkpoint`], waiting until the index is written out and the log has
    /// deleted the segments.
    fn checkpoint_and_wait(&self) {
        if let Err(error) = self.index.flush_and_wait(self.next) {
            tracing::warn!(%error, "store: writing out the index failed; keeping the log");
            return;
        }
        if let Err(error) = futures_lite::future::block_on(self.log.checkpoint(self.next)) {
            tracing::warn!(%error, "store: the log could not drop checkpointed segments");
        }
    }

    /// Applies `records` and whatever else is queued (up to a bound) as one index batch.
    fn apply(
        &mut self,
        first_lsn: Lsn,
        records: &[Vec<u8>],
        rx: &Receiver<ToApplier>,
        since_checkpoint: &mut u64,
        scratch: &mut Scratch,
    ) -> Result<(), IndexError> {
        let mut txn = Txn::with_hot(&self.index, &mut self.hot).reusing(scratch.take_rows());
        let mut applied_bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
        apply_records(&mut txn, &mut self.next, first_lsn, records, scratch)?;
        // Coalesce queued batches into this index batch; a sweep waits for the next turn.
        let mut deferred = None;
        while txn.len() < 65_536 {
            match rx.try_recv() {
                Ok(ToApplier::Apply { first_lsn, records }) => {
                    let bytes = records.iter().map(|r| r.len() as u64).sum::<u64>();
                    *since_checkpoint += bytes;
                    applied_bytes += bytes;
                    apply_records(&mut txn, &mut self.next, first_lsn, &records, scratch)?;
                }
                Ok(other) => {
                    deferred = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        txn.put(l::APPLY_FROM, l::vars(&[self.next]));
        txn.commit()?;
        scratch.return_rows(txn.into_rows());
        // The backlog shrinks before the progress is published, so a read that waited for it
        // sees no backlog of what it waited for.
        self.shared
            .backlog_bytes
            .fetch_sub(applied_bytes, std::sync::atomic::Ordering::AcqRel);
        let sent = scratch.sent_keys();
        sent.sort_unstable();
        self.shared.set_applied(self.next, sent);
        sent.clear();
        // Observed before a rotation, so even a memtable one batch filled is ours to free.
        self.reclaimer.observe(&self.index);
        if self.index.is_full() {
            self.checkpoint();
            *since_checkpoint = 0;
        }
        self.reclaimer.release();
        if let Some(ToApplier::Checkpoint { reply }) = deferred {
            self.checkpoint_and_wait();
            reply.send(Ok(()));
        } else if let Some(ToApplier::Sweep { now, reply }) = deferred {
            let mut txn = Txn::with_hot(&self.index, &mut self.hot);
            let report = sweep(&mut txn, &self.retention, now);
            match report {
                Ok(report) => reply.send(Ok(report)),
                Err(error) => {
                    reply.send(Err(StoreError::Unavailable(error.to_string())));
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Seals the index's memtable, which holds everything below `next`: the flush thread
    /// writes it out and then tells the log it may drop what it covers (see `open`).
    fn checkpoint(&self) {
        self.index.rotate(self.next);
    }
}

/// Applies `records` (LSNs `first_lsn..`) and advances `next` past them.
fn apply_records(
    txn: &mut Txn<'_>,
    next: &mut Lsn,
    first_lsn: Lsn,
    records: &[Vec<u8>],
    scratch: &mut Scratch,
) -> Result<(), IndexError> {
    debug_assert_eq!(first_lsn, *next, "records arrive in LSN order");
    for record in records {
        let batch = decode_batch(record)?;
        apply_batch(txn, *next, &batch, scratch)?;
        *next += 1;
    }
    Ok(())
}
