//! The log's happy paths: concurrent appends, batches, rollover, checkpoints, replay.

mod common;

use std::thread;

use futures_lite::future::block_on;
use store::log::{Log, LogError, LogOptions, Lsn};

use common::{append_each, replay_all, segment_files, small_segments};

const THREADS: usize = 4;
const PER_THREAD: usize = 10_000;

#[test]
fn concurrent_appends_get_distinct_gap_free_lsns_and_replay_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open");
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let handle = log.handle();
            thread::spawn(move || {
                // Hand everything over first (as an executor would), then wait.
                let pending: Vec<_> = (0..PER_THREAD)
                    .map(|i| {
                        let payload = format!("t{t}-{i}").into_bytes();
                        (handle.append(payload.clone()), payload)
                    })
                    .collect();
                pending
                    .into_iter()
                    .map(|(done, payload)| (block_on(done).expect("append succeeds"), payload))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked: Vec<(Lsn, Vec<u8>)> = producers
        .into_iter()
        .flat_map(|p| p.join().expect("producer"))
        .collect();
    for thread_acks in acked.chunks(PER_THREAD) {
        assert!(
            thread_acks.windows(2).all(|w| w[0].0 < w[1].0),
            "one thread's LSNs rise"
        );
    }
    acked.sort();
    let total = (THREADS * PER_THREAD) as u64;
    assert!(
        acked.iter().map(|a| a.0).eq(0..total),
        "LSNs are distinct and gap-free"
    );
    log.close();

    let reopened = Log::open(dir.path(), LogOptions::default()).expect("reopen");
    assert_eq!(reopened.recovery().next_lsn(), total);
    assert_eq!(reopened.recovery().bytes_dropped(), 0);
    drop(reopened);
    assert_eq!(replay_all(dir.path(), LogOptions::default()), acked);
}

#[test]
fn batches_get_consecutive_lsns_and_an_idle_append_is_acked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open");
    let handle = log.handle();
    assert_eq!(
        block_on(handle.append(b"alone".to_vec())).expect("append"),
        0
    );
    let batch = (0..100_u8).map(|i| vec![i; usize::from(i)]).collect();
    assert_eq!(block_on(handle.append_batch(batch)).expect("batch"), 1..101);
    assert_eq!(
        block_on(handle.append_batch(Vec::new())).expect("empty batch"),
        101..101
    );
    drop(log);
    let records = replay_all(dir.path(), LogOptions::default());
    assert_eq!(records.len(), 101);
    assert_eq!(records[0], (0, b"alone".to_vec()));
    assert_eq!(records[100], (100, vec![99; 99]));
}

#[test]
fn limits_are_errors_not_waits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = LogOptions {
        record_bytes_max: 100,
        batch_bytes_max: 1000,
        batch_records_max: 10,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).expect("open");
    let handle = log.handle();
    let too_big = block_on(handle.append(vec![0; 101]));
    assert!(matches!(
        too_big,
        Err(LogError::RecordTooLarge {
            bytes: 101,
            max: 100
        })
    ));
    let too_many = block_on(handle.append_batch(vec![vec![1]; 11]));
    assert!(matches!(
        too_many,
        Err(LogError::BatchTooLarge { records: 11, .. })
    ));
    let bad = LogOptions {
        record_bytes_max: 2000,
        batch_bytes_max: 1000,
        ..LogOptions::default()
    };
    assert!(matches!(
        Log::open(dir.path(), bad),
        Err(LogError::InvalidOptions(_))
    ));
    log.close();
    let closed = block_on(handle.append(vec![1]));
    assert!(matches!(closed, Err(LogError::Closed)), "{closed:?}");
}

#[test]
fn segments_roll_over_replay_from_the_middle_and_checkpoint_deletes_old_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let payload = |i: u64| format!("{i:050}").into_bytes();
    let log = Log::open(dir.path(), small_segments(300)).expect("open");
    assert_eq!(
        append_each(&log, (0..100).map(payload)),
        (0..100).collect::<Vec<_>>()
    );
    let segments = segment_files(dir.path()).len();
    assert!(
        segments >= 20,
        "300-byte segments hold 4 records each: {segments}"
    );
    drop(log);

    let log = Log::open(dir.path(), small_segments(300)).expect("reopen");
    let mut replayed = Vec::new();
    let applied = log
        .replay(37, |lsn, p| replayed.push((lsn, p.to_vec())))
        .expect("replay");
    assert_eq!(applied, 63);
    assert!(
        replayed
            .iter()
            .cloned()
            .eq((37..100).map(|i| (i, payload(i))))
    );

    let deleted = block_on(log.handle().checkpoint(50)).expect("checkpoint");
    assert!(deleted > 0);
    assert_eq!(segment_files(dir.path()).len(), segments - deleted);
    drop(log);
    let log = Log::open(dir.path(), small_segments(300)).expect("reopen after checkpoint");
    let first = log.recovery().first_lsn();
    assert!(
        first <= 50 && first + 4 > 50,
        "kept the segment holding 50, not more: {first}"
    );

    // Even a checkpoint past the end keeps the active segment, and appends go on.
    block_on(log.handle().checkpoint(u64::MAX)).expect("checkpoint all");
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(append_each(&log, [payload(100)]), vec![100]);
    drop(log);
    let records = replay_all(dir.path(), small_segments(300));
    assert_eq!(records.last(), Some(&(100, payload(100))));
}
