//! Prepared segments: the writer rolls into files zero-filled and synced ahead of time (so its
//! syncs overwrite blocks already on disk), and recovery reads "zeros after the records" as
//! the end of a segment, never as a reason to skip damage. Also: a stale prepared file is
//! deleted at open, and a log written by format version 1 opens and continues.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use store::log::{Log, LogError, LogOptions, SyncSnapshot};

use common::{append_each, replay_all, segment_files};

/// Segment size in these tests: the writer prepares the next one at half of it.
const SEGMENT: u64 = 8 * 1024;
/// Bytes of one framed record of `payload(i)` (8 bytes of frame, 20 of payload).
const FRAMED: u64 = 28;
/// The prepared file's name (`store::log`'s `PREPARED_NAME`).
const PREPARED: &str = "prepared.seg.tmp";

fn payload(i: u64) -> Vec<u8> {
    format!("record {i:013}").into_bytes()
}

/// Small segments and a small torn-tail window (one batch is at most 128 bytes).
fn options() -> LogOptions {
    LogOptions {
        segment_bytes_max: SEGMENT,
        record_bytes_max: 64,
        batch_bytes_max: 128,
        ..LogOptions::default()
    }
}

fn flags(segment: &Path) -> u32 {
    let bytes = fs::read(segment).expect("read segment");
    u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"))
}

fn is_prepared(segment: &Path) -> bool {
    flags(segment) & 1 == 1
}

fn data_end(segment: &Path) -> usize {
    let bytes = fs::read(segment).expect("read segment");
    bytes.iter().rposition(|&b| b != 0).expect("a header") + 1
}

/// Appends one record at a time until `prepared` segments are prepared ones and the newest
/// of them holds at least three records (the preparer runs on its own thread: this waits for
/// it, up to 20 s), closes the log and returns how many records it holds and the newest
/// segment, with the writer's counters.
fn log_with_prepared_segments(dir: &Path, prepared: usize) -> (u64, PathBuf, SyncSnapshot) {
    let log = Log::open(dir, options()).expect("open");
    let started = Instant::now();
    let mut n = 0;
    loop {
        append_each(&log, [payload(n)]);
        n += 1;
        let mut segments = segment_files(dir);
        let newest = segments.pop().expect("a segment");
        let header_and_three = 32 + 3 * FRAMED as usize;
        let older = segments.iter().filter(|s| is_prepared(s)).count();
        if is_prepared(&newest) && older + 1 >= prepared && data_end(&newest) >= header_and_three {
            let stats = log.sync_stats();
            drop(log);
            return (n, newest, stats.snapshot());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no prepared segment after {n} records"
        );
        if n % 64 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn assert_all_replay(dir: &Path, n: u64) {
    let replayed = replay_all(dir, options());
    let expected: Vec<_> = (0..n).map(|i| (i, payload(i))).collect();
    assert_eq!(replayed, expected);
}

#[test]
fn the_writer_rolls_into_prepared_zero_filled_segments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (n, newest, stats) = log_with_prepared_segments(dir.path(), 1);
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 2, "{segments:?}");
    // Every rollover is counted, and those into a segment that grows (none was ready).
    let growing = segments.iter().filter(|s| !is_prepared(s)).count() as u64;
    assert_eq!(stats.segments, segments.len() as u64 - 1);
    assert_eq!(
        stats.segments_unprepared,
        growing - 1,
        "the first was not rolled into"
    );
    assert!(!is_prepared(&segments[0]), "the first segment grows");
    for segment in segments.iter().filter(|s| is_prepared(s)) {
        let len = fs::metadata(segment).expect("meta").len();
        assert_eq!(len, SEGMENT, "{} has its full size", segment.display());
        let bytes = fs::read(segment).expect("read");
        assert_eq!(bytes[8..12], 2_u32.to_le_bytes(), "format version 2");
        assert!(bytes[data_end(segment)..].iter().all(|&b| b == 0));
    }
    assert!(is_prepared(&newest));
    assert_all_replay(dir.path(), n);
    // Reopened with the writer at the end of the prepared segment's records, appends go on.
    let log = Log::open(dir.path(), options()).expect("reopen");
    assert_eq!(
        log.recovery().bytes_dropped(),
        0,
        "zeros are not a torn tail"
    );
    assert_eq!(append_each(&log, [payload(n)]), vec![n]);
    drop(log);
    assert_all_replay(dir.path(), n + 1);
}

#[test]
fn a_torn_tail_in_a_prepared_segment_is_zeroed_and_the_segment_keeps_its_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (n, newest, _) = log_with_prepared_segments(dir.path(), 1);
    let mut bytes = fs::read(&newest).expect("read");
    let end = data_end(&newest);
    bytes[end - 3] ^= 0x20;
    fs::write(&newest, bytes).expect("write");

    let log = Log::open(dir.path(), options()).expect("a torn tail recovers");
    assert_eq!(log.recovery().next_lsn(), n - 1);
    assert_eq!(log.recovery().bytes_dropped(), FRAMED);
    assert_eq!(fs::metadata(&newest).expect("meta").len(), SEGMENT);
    let good = end - FRAMED as usize;
    let after_cut = fs::read(&newest).expect("read");
    assert!(
        after_cut[good..].iter().all(|&b| b == 0),
        "the torn record is zeroed"
    );
    assert_eq!(append_each(&log, [b"after".to_vec()]), vec![n - 1]);
    drop(log);

    let replayed = replay_all(dir.path(), options());
    let mut expected: Vec<_> = (0..n - 1).map(|i| (i, payload(i))).collect();
    expected.push((n - 1, b"after".to_vec()));
    assert_eq!(replayed, expected);
}

#[test]
fn a_zero_frame_followed_by_data_in_the_last_batch_is_a_torn_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (n, newest, _) = log_with_prepared_segments(dir.path(), 1);
    // The last record's frame never reached the disk, its payload did.
    let mut bytes = fs::read(&newest).expect("read");
    let last = data_end(&newest) - FRAMED as usize;
    bytes[last..last + 8].fill(0);
    fs::write(&newest, bytes).expect("write");
    let log = Log::open(dir.path(), options()).expect("a torn tail recovers");
    assert_eq!(log.recovery().next_lsn(), n - 1);
}

#[test]
fn data_after_the_zeros_of_a_prepared_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, newest, _) = log_with_prepared_segments(dir.path(), 2);
    let segments = segment_files(dir.path());
    // Far past the last batch of the newest segment (more than 128 bytes): not a torn write.
    let mut bytes = fs::read(&newest).expect("read");
    let last = bytes.len() - 1;
    bytes[last] = 1;
    fs::write(&newest, &bytes).expect("write");
    let error = Log::open(dir.path(), options()).expect_err("refuses");
    let LogError::Corrupt { path, reason, .. } = &error else {
        panic!("not Corrupt: {error}")
    };
    assert_eq!(path, &newest);
    assert!(reason.contains("zero frame"), "{error}");
    assert_eq!(
        fs::read(&newest).expect("read"),
        bytes,
        "nothing was changed"
    );

    // In an older prepared segment, any byte after its records is damage.
    bytes[last] = 0;
    fs::write(&newest, &bytes).expect("write");
    let older = segments[..segments.len() - 1]
        .iter()
        .find(|s| is_prepared(s))
        .expect("an older prepared segment");
    let mut old = fs::read(older).expect("read");
    let at = old.len() - 1;
    assert!(data_end(older) < at, "the segment ends in zeros");
    old[at] = 7;
    fs::write(older, &old).expect("write");
    let error = Log::open(dir.path(), options()).expect_err("refuses");
    assert!(
        matches!(&error, LogError::Corrupt { path, .. } if path == older),
        "{error}"
    );
}

#[test]
fn a_stale_prepared_file_is_deleted_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(Log::open(dir.path(), options()).expect("open"));
    // A crash while preparing left a file that was never made a segment.
    fs::write(dir.path().join(PREPARED), b"half-prepared").expect("write");
    let log = Log::open(dir.path(), options()).expect("open");
    assert!(!dir.path().join(PREPARED).exists());
    assert_eq!(append_each(&log, [payload(0)]), vec![0]);
}

#[test]
fn a_log_written_in_format_version_1_opens_and_continues() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open");
    append_each(&log, (0..5).map(payload));
    drop(log);
    // Version 1 wrote the same header with version 1 and no flags, and no prepared segments.
    let segment = segment_files(dir.path()).pop().expect("a segment");
    let mut bytes = fs::read(&segment).expect("read");
    assert_eq!(bytes[12..16], [0; 4], "a segment that grows has no flags");
    bytes[8..12].copy_from_slice(&1_u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    fs::write(&segment, bytes).expect("write");

    let log = Log::open(dir.path(), LogOptions::default()).expect("version 1 opens");
    assert_eq!(log.recovery().next_lsn(), 5);
    assert_eq!(append_each(&log, [payload(5)]), vec![5]);
    drop(log);
    let replayed = replay_all(dir.path(), LogOptions::default());
    let expected: Vec<_> = (0..6).map(|i| (i, payload(i))).collect();
    assert_eq!(replayed, expected);
}
