//! A failing sync (injected through `LogOptions::sync`) is never acknowledged and never
//! retried: that batch and every later append fail with `ReadOnly`, and everything that was
//! acknowledged is still there after reopening.

mod common;

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use futures_lite::future::block_on;
use store::log::{Log, LogError, LogOptions, Lsn, SyncPolicy};

use common::replay_all;

/// Fails the `fail_at`-th sync (counting from 1) and succeeds otherwise, so a later success
/// cannot be mistaken for a retry that worked.
struct FailNth {
    calls: Arc<AtomicUsize>,
    fail_at: usize,
}

impl SyncPolicy for FailNth {
    fn sync(&mut self, file: &File) -> io::Result<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            return Err(io::Error::other("injected sync failure"));
        }
        file.sync_data()
    }
}

fn failing_at(fail_at: usize) -> (LogOptions, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let sync = Box::new(FailNth {
        calls: calls.clone(),
        fail_at,
    });
    (
        LogOptions {
            sync,
            ..LogOptions::default()
        },
        calls,
    )
}

/// Opening a new log syncs twice: the first segment's header, then the directory.
const SYNCS_AT_CREATE: usize = 2;

#[test]
fn the_failed_batch_and_every_later_append_fail_and_nothing_acked_is_lost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (options, _calls) = failing_at(SYNCS_AT_CREATE + 21);
    let log = Log::open(dir.path(), options).expect("open");
    let handle = log.handle();
    let results: Vec<_> = (0..40_u8)
        .map(|i| block_on(handle.append(vec![i; 10])))
        .collect();
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(lsn) => assert!(i < 20 && *lsn == i as Lsn, "append {i} acked as {lsn}"),
            Err(LogError::ReadOnly { cause }) => {
                assert!(i >= 20, "append {i} failed early");
                assert!(cause.to_string().contains("injected"), "{cause}");
            }
            Err(other) => panic!("append {i}: unexpected {other}"),
        }
    }
    let batch = block_on(handle.append_batch(vec![vec![1]]));
    assert!(
        matches!(batch, Err(LogError::ReadOnly { .. })),
        "still read-only: {batch:?}"
    );
    drop(log);

    let records = replay_all(dir.path(), LogOptions::default());
    for i in 0..20_u8 {
        assert_eq!(
            records[usize::from(i)],
            (Lsn::from(i), vec![i; 10]),
            "acked record {i}"
        );
    }
    // The failed batch's bytes may have reached the page cache; nothing after it was written.
    assert!(
        records.len() <= 21,
        "appends after the failure were written: {}",
        records.len()
    );
}

#[test]
fn concurrent_appends_around_a_failed_sync_keep_every_ack() {
    const THREADS: usize = 4;
    const PER_THREAD: u32 = 2_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let (options, calls) = failing_at(SYNCS_AT_CREATE + 30);
    // Small batches, so the failing sync falls in the middle of the run.
    let log = Log::open(
        dir.path(),
        LogOptions {
            batch_records_max: 64,
            ..options
        },
    )
    .expect("open");
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let handle = log.handle();
            thread::spawn(move || {
                let payload = |i: u32| format!("t{t}-{i}").into_bytes();
                let pending: Vec<_> = (0..PER_THREAD).map(|i| handle.append(payload(i))).collect();
                let results: Vec<_> = pending.into_iter().map(block_on).collect();
                let first_error = results.iter().position(Result::is_err);
                if let Some(at) = first_error {
                    assert!(
                        results[at..].iter().all(Result::is_err),
                        "an ack after an error"
                    );
                }
                let acked: Vec<(Lsn, Vec<u8>)> = (0..PER_THREAD)
                    .zip(results)
                    .filter_map(|(i, r)| r.ok().map(|lsn| (lsn, payload(i))))
                    .collect();
                acked
            })
        })
        .collect();
    let acked: Vec<_> = producers
        .into_iter()
        .flat_map(|p| p.join().expect("producer"))
        .collect();
    assert!(
        calls.load(Ordering::SeqCst) >= SYNCS_AT_CREATE + 30,
        "the failure was reached"
    );
    assert!(
        acked.len() < THREADS * PER_THREAD as usize,
        "some appends failed"
    );
    drop(log);

    let records = replay_all(dir.path(), LogOptions::default());
    for (lsn, payload) in &acked {
        let found = records.get(usize::try_from(*lsn).expect("small"));
        assert_eq!(
            found,
            Some(&(*lsn, payload.clone())),
            "acked record at LSN {lsn}"
        );
    }
}
