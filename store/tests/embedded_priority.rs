//! `EmbeddedOptions::background_nice` and `apply_nice`: the index's flush and compaction
//! threads and the applier run at their own lowered priorities, the log writer and the readers
//! (on the acknowledgement and query paths) do not, and a value outside 0..=19 is refused.
//! `EmbeddedOptions::index_workers`: the index runs exactly that many compaction threads (and
//! one flush thread), and 0 or 65 is refused. One test in its own binary, so the process's
//! threads are only this store's.

use store::embedded::{EmbeddedOptions, EmbeddedStore, OpenError};

/// (thread name, nice value) of every thread of this process, from `/proc/self/task`.
fn threads() -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("procfs") {
        let path = task.expect("task").path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue; // The thread ended meanwhile.
        };
        // Fields after the parenthesised name; nice is field 19 (the 17th after it).
        let after = &stat[stat.rfind(')').expect("stat has a name") + 2..];
        let nice: i32 = after
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
            .expect("nice field");
        out.push((comm.trim().to_owned(), nice));
    }
    out
}

#[test]
fn background_threads_run_at_the_lowered_priority_and_the_ack_path_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = [
        EmbeddedOptions {
            background_nice: 20,
            ..EmbeddedOptions::default()
        },
        EmbeddedOptions {
            apply_nice: -1,
            ..EmbeddedOptions::default()
        },
        EmbeddedOptions {
            index_workers: 0,
            ..EmbeddedOptions::default()
        },
        EmbeddedOptions {
            index_workers: 65,
            ..EmbeddedOptions::default()
        },
    ];
    for options in refused {
        let what = format!("{options:?}");
        assert!(
            matches!(
                EmbeddedStore::open(dir.path(), options),
                Err(OpenError::Options(_))
            ),
            "{what}"
        );
    }

    // Not the store's default (2).
    let index_workers = 5;
    let options = EmbeddedOptions {
        background_nice: 15,
        apply_nice: 5,
        index_workers,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options).expect("open");
    // A new thread names itself once it runs: wait until the store's threads have.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let threads = loop {
        let threads = threads();
        let named = |prefix: &str| {
            threads
                .iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .count()
        };
        let all_named = named("store-reader") == EmbeddedOptions::default().readers
            && named("index-compact") == index_workers
            && named("index-flush") == 1;
        if all_named || std::time::Instant::now() > deadline {
            break threads;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let nice_of = |prefix: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, nice)| *nice)
            .collect()
    };
    assert_eq!(nice_of("store-applier"), [5], "{threads:?}");
    let compactions = nice_of("index-compact");
    assert_eq!(
        compactions,
        vec![15; index_workers],
        "compactions: {threads:?}"
    );
    assert_eq!(
        nice_of("index-flush"),
        [15],
        "the flush thread: {threads:?}"
    );
    assert_eq!(nice_of("log-writer"), [0], "acknowledgements: {threads:?}");
    let readers = nice_of("store-reader");
    assert_eq!(
        readers,
        vec![0; EmbeddedOptions::default().readers],
        "queries: {threads:?}"
    );
    drop(store);
}
