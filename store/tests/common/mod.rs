//! Helpers shared by the store's integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod chat;

use std::path::Path;

use store::log::{Log, LogOptions, Lsn};

/// Every record of the log in `dir`, replayed after reopening it with `options`.
pub fn replay_all(dir: &Path, options: LogOptions) -> Vec<(Lsn, Vec<u8>)> {
    let log = Log::open(dir, options).expect("the log reopens");
    let mut records = Vec::new();
    let first = log.recovery().first_lsn();
    log.replay(first, |lsn, payload| records.push((lsn, payload.to_vec())))
        .expect("replay succeeds");
    records
}

/// Options with small segments, to exercise rollover.
pub fn small_segments(segment_bytes_max: u64) -> LogOptions {
    LogOptions {
        segment_bytes_max,
        ..LogOptions::default()
    }
}

/// The segment files in `dir`, sorted by name (and so by first LSN).
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("the log directory is readable")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

/// Appends `payloads` one request at a time, waiting for each, and returns their LSNs.
pub fn append_each(log: &Log, payloads: impl IntoIterator<Item = Vec<u8>>) -> Vec<Lsn> {
    let handle = log.handle();
    payloads
        .into_iter()
        .map(|p| futures_lite::future::block_on(handle.append(p)).expect("append succeeds"))
        .collect()
}
