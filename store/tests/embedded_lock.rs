//! The embedded store's directory lock and failed opens: a second store on an open store's
//! directory is refused, and an open that fails after the index is open leaves no index threads
//! behind. One test in its own binary, so the process's threads are only this test's.

use std::fs;

use futures_lite::future::block_on;
use store::Store;
use store::embedded::{EmbeddedOptions, EmbeddedStore, OpenError};

mod common;

use common::chat::{head, message};

/// A second store on an open store's directory is refused (two would write the same log and
/// tree); once the first is closed, it opens. A failed open leaves the directory free too.
#[test]
fn a_directory_in_use_is_refused_and_freed_at_close() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
    block_on(first.write(message(1))).expect("acked");
    let error = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
        .err()
        .expect("refused while open");
    assert!(matches!(error, OpenError::Locked(_)), "{error}");
    assert!(error.to_string().contains("in use"), "{error}");
    drop(first);
    let second = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("reopen");
    assert_eq!(head(&second), 1);
    drop(second);

    // An index that does not belong to the log: the open fails after the index is open, and
    // must leave nothing running that holds the directory or the tree.
    fs::remove_dir_all(dir.path().join("log")).expect("remove the log");
    fs::create_dir_all(dir.path().join("log")).expect("an empty log");
    for _ in 0..2 {
        let error = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
            .err()
            .expect("refused");
        assert!(matches!(error, OpenError::Index(_)), "{error}");
    }
    let threads = std::fs::read_dir("/proc/self/task")
        .expect("procfs")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("index-"))
        .count();
    assert_eq!(threads, 0, "index threads left behind by the failed opens");
}
