//! The conformance suite against the in-memory backend: "reopen" is a clone of the store, since
//! clones share one state.

use store::conformance::Harness;
use store::memory::MemoryStore;
use store::model::Retention;

/// Opens in-memory stores.
struct MemoryHarness;

impl Harness for MemoryHarness {
    type S = MemoryStore;

    fn open(&mut self, retention: Retention) -> MemoryStore {
        MemoryStore::new(retention)
    }

    fn reopen(&mut self, store: MemoryStore) -> MemoryStore {
        let reopened = store.clone();
        drop(store);
        reopened
    }
}

store::store_conformance!(MemoryHarness);
