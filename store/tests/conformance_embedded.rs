//! The conformance suite against the embedded backend, on a real directory: every case's
//! "reopen" drops the store (closing the log and the index) and opens the same directory.

use store::conformance::Harness;
use store::embedded::{EmbeddedOptions, EmbeddedStore};
use store::model::Retention;

/// A temporary directory holding one embedded store.
struct EmbeddedHarness {
    dir: tempfile::TempDir,
    retention: Retention,
}

impl EmbeddedHarness {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temp dir"),
            retention: Retention::default(),
        }
    }

    fn open_store(&self) -> EmbeddedStore {
        let options = EmbeddedOptions {
            retention: self.retention,
            ..EmbeddedOptions::default()
        };
        EmbeddedStore::open(self.dir.path(), options).expect("the store opens")
    }
}

impl Harness for EmbeddedHarness {
    type S = EmbeddedStore;

    fn open(&mut self, retention: Retention) -> EmbeddedStore {
        self.retention = retention;
        self.open_store()
    }

    fn reopen(&mut self, store: EmbeddedStore) -> EmbeddedStore {
        drop(store);
        self.open_store()
    }
}

store::store_conformance!(EmbeddedHarness::new());
