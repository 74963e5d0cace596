//! Frees the index's memtables on a thread of ours, outside the index's locks.
//!
//! Why: the index's tree (lsm-tree 3.1) drops its last reference to a flushed memtable when it
//! garbage-collects old versions, and it does so while holding the tree's version lock, which
//! every index read (`get`, snapshot, range) takes. Freeing a full 64 MiB memtable (hundreds of
//! thousands of skiplist nodes) takes 150–250 ms of CPU here, so every flushed memtable stalled
//! every index read, and with them every idempotency lookup (so every send), for that long:
//! the gateway's end-to-end p99.9 was that stall (measured with `perf`, issue 6).
//!
//! Owns one extra reference to every memtable the applier wrote into. [`Reclaimer::observe`]
//! (after each index commit) takes a reference to the tree's active memtable when it is a new
//! one; [`Reclaimer::release`] hands every memtable that only we still reference to the
//! `store-reclaim` thread (nice 19), which frees it. So when the tree lets go, it only
//! decrements a count.
//!
//! Invariants: a memtable is handed over only when our reference is its last (so nothing can
//! reach it any more, and nobody can get a new reference); we hold at most the memtables the
//! tree holds plus those flushed since the last `release` (memory is freed at most one applier
//! turn later than before). Memtables filled during replay at open and flushed before the
//! applier's first commit are not observed; they are freed the old way, before any traffic.

use std::sync::Arc;

use crossbeam_channel::Sender;
use lsm_tree::Memtable;

use super::engine::Index;

/// The freeing thread's nice value: the lowest priority, whatever `background_nice` is.
pub(crate) const NICE: i32 = 19;

/// Memtables queued for the freeing thread beyond which the applier frees them itself: on a
/// CPU so busy that the freeing thread falls this far behind, memory stays bounded (at most
/// this many extra memtables) and the cost moves to the applier, whose backlog is bounded.
pub(crate) const QUEUED_MAX: usize = 2;

/// The applier's side: the references it holds and the way to the freeing thread.
pub(crate) struct Reclaimer {
    held: Vec<Arc<Memtable>>,
    to_free: Sender<Arc<Memtable>>,
}

impl Reclaimer {
    /// Hands memtables to free to `to_free` (see [`free_until_closed`]).
    pub(crate) fn new(to_free: Sender<Arc<Memtable>>) -> Self {
        Self {
            held: Vec::new(),
            to_free,
        }
    }

    /// Keeps a reference to `index`'s active memtable unless we already have one.
    pub(crate) fn observe(&mut self, index: &Index) {
        let active = index.active_memtable();
        if !self.held.iter().any(|held| Arc::ptr_eq(held, &active)) {
            self.held.push(active);
        }
    }

    /// Hands every memtable the tree no longer references to the freeing thread.
    pub(crate) fn release(&mut self) {
        let mut i = 0;
        while i < self.held.len() {
            if Arc::strong_count(&self.held[i]) == 1 {
                let last = self.held.swap_remove(i);
                if self.to_free.len() < QUEUED_MAX {
                    // The thread is gone only at close; then this thread frees it.
                    drop(self.to_free.send(last));
                } else {
                    // Too much waits for the freeing thread already: free it here.
                    drop(last);
                }
            } else {
                i += 1;
            }
        }
    }

    /// How many memtables we hold a reference to.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.len()
    }
}

/// The `store-reclaim` thread's loop: frees what it is given until the applier is gone.
pub(crate) fn free_until_closed(rx: &crossbeam_channel::Receiver<Arc<Memtable>>) {
    while let Ok(memtable) = rx.recv() {
        drop(memtable);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(index: &Index, round: u32) {
        let mut batch = crate::embedded::engine::Batch::default();
        for i in 0..1_000u32 {
            batch.insert(
                [round.to_be_bytes(), i.to_be_bytes()].concat(),
                [7u8; 64].to_vec(),
            );
        }
        index.commit(&mut batch).expect("commit");
    }

    #[test]
    fn a_flushed_memtable_is_freed_by_us_and_a_live_one_is_kept() {
        let (_dir, tree) = crate::embedded::index::temp();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut reclaimer = Reclaimer::new(tx);

        fill(&tree, 0);
        reclaimer.observe(&tree);
        reclaimer.observe(&tree);
        assert_eq!(reclaimer.held(), 1, "the same memtable is held once");
        let first = Arc::downgrade(&reclaimer.held[0]);
        reclaimer.release();
        assert_eq!(reclaimer.held(), 1, "the tree still writes into it");
        assert!(rx.try_recv().is_err());

        // Flush it, and write on so the tree's old versions (which still reference it) are
        // collected; then only our reference is left.
        let mut freed = Vec::new();
        for round in 1..=4 {
            tree.flush_and_wait(u64::from(round)).expect("flush");
            fill(&tree, round);
            reclaimer.observe(&tree);
            reclaimer.release();
            freed.extend(rx.try_iter());
        }
        assert!(
            freed
                .iter()
                .any(|m| std::ptr::eq(Arc::as_ptr(m), first.as_ptr())),
            "the first memtable was handed over once the tree let go of it ({} handed over)",
            freed.len()
        );
        for memtable in &freed {
            assert_eq!(
                Arc::strong_count(memtable),
                1,
                "only handed over when ours was the last"
            );
        }
        assert!(reclaimer.held() >= 1, "the active memtable stays held");
        let active = tree.active_memtable();
        assert!(reclaimer.held.iter().any(|held| Arc::ptr_eq(held, &active)));
        assert!(!freed.iter().any(|m| Arc::ptr_eq(m, &active)));
    }
}
