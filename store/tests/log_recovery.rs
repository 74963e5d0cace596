//! Opening damaged logs: a torn tail of the newest segment is cut to the last good record;
//! damage anywhere else, a foreign file or another format version refuses to open.

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;

use store::log::{Log, LogError, LogOptions};

use common::{append_each, replay_all, segment_files, small_segments};

/// Bytes of one framed record of `payload(i)` (8 bytes of frame, 20 of payload).
const FRAMED: u64 = 28;

fn payload(i: u64) -> Vec<u8> {
    format!("record {i:013}").into_bytes()
}

/// A log of `n` records, closed cleanly.
fn write_log(dir: &Path, n: u64, options: LogOptions) {
    let log = Log::open(dir, options).expect("open");
    append_each(&log, (0..n).map(payload));
}

fn newest_segment(dir: &Path) -> std::path::PathBuf {
    segment_files(dir).pop().expect("a segment")
}

fn flip_byte(path: &Path, from_end: u64) {
    let mut bytes = fs::read(path).expect("read segment");
    let at = bytes.len() - usize::try_from(from_end).expect("small");
    bytes[at] ^= 0x20;
    fs::write(path, bytes).expect("write segment");
}

fn assert_recovers_to(dir: &Path, records: u64, dropped: u64) {
    let log = Log::open(dir, LogOptions::default()).expect("a torn tail recovers");
    assert_eq!(log.recovery().next_lsn(), records);
    assert_eq!(log.recovery().bytes_dropped(), dropped);
    // Appends continue right after the last good record, and a clean reopen sees them.
    assert_eq!(append_each(&log, [b"after".to_vec()]), vec![records]);
    drop(log);
    let replayed = replay_all(dir, LogOptions::default());
    let expected: Vec<_> = (0..records).map(|i| (i, payload(i))).collect();
    assert_eq!(replayed[..replayed.len() - 1], expected[..]);
    assert_eq!(replayed.last(), Some(&(records, b"after".to_vec())));
}

#[test]
fn a_tail_cut_mid_record_is_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 10, LogOptions::default());
    let newest = newest_segment(dir.path());
    let file = OpenOptions::new()
        .write(true)
        .open(&newest)
        .expect("open segment");
    let len = file.metadata().expect("metadata").len();
    file.set_len(len - 5).expect("truncate");
    assert_recovers_to(dir.path(), 9, FRAMED - 5);
}

#[test]
fn a_flipped_byte_in_the_last_record_drops_that_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 10, LogOptions::default());
    flip_byte(&newest_segment(dir.path()), 3);
    assert_recovers_to(dir.path(), 9, FRAMED);
}

#[test]
fn a_tail_cut_inside_the_frame_is_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 10, LogOptions::default());
    let newest = newest_segment(dir.path());
    let mut bytes = fs::read(&newest).expect("read");
    bytes.extend_from_slice(&[7, 0, 0]); // Three bytes of a frame that never completed.
    fs::write(&newest, bytes).expect("write");
    assert_recovers_to(dir.path(), 10, 3);
}

#[test]
fn a_new_segment_with_a_torn_header_is_started_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 11, LogOptions::default());
    // A crash between creating the next segment and syncing its header.
    fs::write(dir.path().join("log-000000000000000b.seg"), b"SWB").expect("torn segment");
    assert_recovers_to(dir.path(), 11, 3);
    assert_eq!(segment_files(dir.path()).len(), 2);
}

#[test]
fn damage_in_an_older_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 40, small_segments(200));
    let segments = segment_files(dir.path());
    assert!(segments.len() > 3);
    let before: Vec<_> = segments
        .iter()
        .map(|s| fs::read(s).expect("read"))
        .collect();
    flip_byte(&segments[1], 3);
    let error = Log::open(dir.path(), small_segments(200)).expect_err("refuses");
    let LogError::Corrupt { path, .. } = &error else {
        panic!("not Corrupt: {error}")
    };
    assert_eq!(path, &segments[1]);
    assert!(error.to_string().contains("checksum"), "{error}");
    let after: Vec<_> = segments
        .iter()
        .map(|s| fs::read(s).expect("read"))
        .collect();
    assert_eq!(before[2..], after[2..], "a refused open changes nothing");
}

#[test]
fn damage_in_the_newest_segment_before_its_last_batch_refuses_to_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = || LogOptions {
        record_bytes_max: 64,
        batch_bytes_max: 128,
        ..LogOptions::default()
    };
    write_log(dir.path(), 20, options());
    // Record 5 is far more than one batch (128 bytes) from the end: it was acknowledged.
    flip_byte(&newest_segment(dir.path()), 15 * FRAMED - 10);
    let error = Log::open(dir.path(), options()).expect_err("refuses");
    assert!(matches!(error, LogError::Corrupt { lsn: 5, .. }), "{error}");
}

#[test]
fn a_missing_middle_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 40, small_segments(200));
    fs::remove_file(&segment_files(dir.path())[2]).expect("remove");
    let error = Log::open(dir.path(), small_segments(200)).expect_err("refuses");
    assert!(error.to_string().contains("not contiguous"), "{error}");
}

#[test]
fn a_foreign_file_or_a_future_version_refuses_to_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 3, LogOptions::default());
    let segment = newest_segment(dir.path());
    let original = fs::read(&segment).expect("read");

    let mut future = original.clone();
    future[8..12].copy_from_slice(&3_u32.to_le_bytes());
    fs::write(&segment, &future).expect("write");
    let error = Log::open(dir.path(), LogOptions::default()).expect_err("refuses");
    assert!(
        matches!(
            error,
            LogError::IncompatibleVersion {
                found: 3,
                oldest: 1,
                newest: 2,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("version 3"), "{error}");

    let mut foreign = original;
    foreign[..8].copy_from_slice(b"NOTALOG!");
    fs::write(&segment, &foreign).expect("write");
    let error = Log::open(dir.path(), LogOptions::default()).expect_err("refuses");
    assert!(matches!(error, LogError::BadMagic { .. }), "{error}");
    assert_eq!(
        fs::read(&segment).expect("read"),
        foreign,
        "a refused open changes nothing"
    );
}
