//! Opening a log directory: verify every segment, cut a torn tail, and replay records.
//!
//! Owns the decision between "torn tail" and "corruption". Only the newest segment can hold
//! unacknowledged bytes, and only its last write (at most `batch_bytes_max` bytes, since every
//! batch is synced before the next is written). A segment's data ends at its last non-zero
//! byte (a prepared segment is zeros after its records). So damage within `batch_bytes_max` of
//! the end of the newest segment's data is a torn tail: cut to the last good record (a
//! prepared segment gets zeros over it instead, keeping its size) and report the bytes
//! dropped. Damage anywhere else, non-zero bytes after a segment's end of records, a header
//! from another format version, or a gap between segments refuses to open: it never continues
//! past damage or returns wrong data. A stale prepared file (a crash while preparing) is
//! deleted.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::files::{create_segment, list_segments, open_for_writing, segment_path, sync_dir};
use super::format::{self, FLAG_PREPARED, HEADER_BYTES, HeaderError};
use super::prepare::prepared_path;
use super::{LogError, LogOptions, Lsn};

/// What opening the log found; also replays the records it verified.
#[derive(Debug, Clone)]
pub struct Recovery {
    dir: PathBuf,
    segments: Vec<Lsn>,
    next_lsn: Lsn,
    bytes_dropped: u64,
    record_bytes_max: usize,
}

/// The newest segment, opened for appending after recovery.
pub(crate) struct Tail {
    pub(crate) file: File,
    pub(crate) first_lsn: Lsn,
    pub(crate) bytes: u64,
    /// Whether the segment was prepared (zero-filled to its full size).
    pub(crate) prepared: bool,
}

/// What one segment holds.
struct Scan {
    next_lsn: Lsn,
    /// Bytes up to the end of the last good record.
    good_bytes: u64,
    /// Bytes up to the last non-zero byte.
    data_end: u64,
    file_bytes: u64,
    prepared: bool,
}

impl Scan {
    /// Bytes of torn tail that opening drops: cut from a segment that grows as it is written,
    /// zeroed in a prepared one.
    fn dropped(&self) -> u64 {
        let end = if self.prepared {
            self.data_end
        } else {
            self.file_bytes
        };
        end.saturating_sub(self.good_bytes)
    }
}

impl Recovery {
    /// The LSN of the oldest record still in the log (equal to `next_lsn` if it is empty).
    pub fn first_lsn(&self) -> Lsn {
        self.segments[0]
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Bytes of torn tail cut from the newest segment (0 after a clean shutdown).
    pub fn bytes_dropped(&self) -> u64 {
        self.bytes_dropped
    }

    /// The first LSN of each segment found, oldest first.
    pub fn segments(&self) -> &[Lsn] {
        &self.segments
    }

    /// Calls `apply(lsn, payload)` for every record from `from_lsn` up to `next_lsn()` (the
    /// records present at open), in LSN order, and returns how many it applied. Replay before
    /// checkpointing: a segment deleted by a checkpoint cannot be replayed.
    ///
    /// # Errors
    /// `Io` if a segment cannot be read; `Corrupt` if a record no longer verifies.
    pub fn replay(
        &self,
        from_lsn: Lsn,
        mut apply: impl FnMut(Lsn, &[u8]),
    ) -> Result<u64, LogError> {
        let mut applied = 0;
        for (i, &first) in self.segments.iter().enumerate() {
            let end = self.segments.get(i + 1).copied().unwrap_or(self.next_lsn);
            if end <= from_lsn || first == end {
                continue;
            }
            let path = segment_path(&self.dir, first);
            let data = fs::read(&path).map_err(|e| LogError::io("reading", &path, e))?;
            let mut offset = HEADER_BYTES;
            for lsn in first..end {
                let corrupt = |reason: String| corrupt(&path, offset, lsn, reason);
                let rest = data.get(offset..).filter(|r| !r.is_empty());
                let rest = rest.ok_or_else(|| corrupt("log shrank since it was opened".into()))?;
                let (payload, framed) = format::decode_record(rest, self.record_bytes_max)
                    .map_err(|e| corrupt(e.describe()))?;
                if lsn >= from_lsn {
                    apply(lsn, payload);
                    applied += 1;
                }
                offset += framed;
            }
        }
        Ok(applied)
    }
}

/// Verifies the log in `dir` (creating it if missing), cuts a torn tail, and opens the
/// newest segment for appending.
pub(crate) fn recover(dir: &Path, options: &mut LogOptions) -> Result<(Recovery, Tail), LogError> {
    fs::create_dir_all(dir).map_err(|e| LogError::io("creating", dir, e))?;
    let stale = prepared_path(dir);
    match fs::remove_file(&stale) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(LogError::io("deleting", &stale, e));
        }
        _ => {}
    }
    let mut segments = list_segments(dir)?;
    if segments.is_empty() {
        let file = create_segment(dir, 0, options.sync.as_mut())
            .map_err(|e| LogError::io("creating segment in", dir, e))?;
        segments.push(0);
        let tail = Tail {
            file,
            first_lsn: 0,
            bytes: HEADER_BYTES as u64,
            prepared: false,
        };
        return Ok((recovery(dir, segments, 0, 0, options), tail));
    }
    let mut expected = None;
    let mut last = None;
    for (i, &first) in segments.iter().enumerate() {
        let newest = i + 1 == segments.len();
        let path = segment_path(dir, first);
        let scan = scan_segment(&path, first, expected, newest, options)?;
        expected = Some(scan.next_lsn);
        last = Some(scan);
    }
    let scan = last.expect("segments is not empty");
    let first_lsn = *segments.last().expect("segments is not empty");
    let tail = open_tail(dir, first_lsn, &scan, options)?;
    let dropped = scan.dropped();
    if dropped > 0 {
        let shown = dir.display();
        tracing::warn!(dir = %shown, dropped, "log: cut a torn tail from the newest segment");
    }
    Ok((
        recovery(dir, segments, scan.next_lsn, dropped, options),
        tail,
    ))
}

fn recovery(
    dir: &Path,
    segments: Vec<Lsn>,
    next_lsn: Lsn,
    bytes_dropped: u64,
    options: &LogOptions,
) -> Recovery {
    let record_bytes_max = options.record_bytes_max;
    Recovery {
        dir: dir.to_owned(),
        segments,
        next_lsn,
        bytes_dropped,
        record_bytes_max,
    }
}

/// Opens the newest segment for writing without its torn tail; a segment whose creation was
/// torn (no complete header yet) gets its header written again.
fn open_tail(
    dir: &Path,
    first_lsn: Lsn,
    scan: &Scan,
    options: &mut LogOptions,
) -> Result<Tail, LogError> {
    let path = segment_path(dir, first_lsn);
    let cut = |e| LogError::io("cutting the torn tail of", &path, e);
    let sync = options.sync.as_mut();
    let (good, end) = (scan.good_bytes, scan.data_end);
    let mut file = open_for_writing(&path, good, end, scan.prepared, sync).map_err(cut)?;
    if scan.good_bytes == 0 {
        file.write_all(&format::encode_header(first_lsn, 0))
            .map_err(cut)?;
        sync.sync(&file).map_err(cut)?;
        sync_dir(dir, sync).map_err(cut)?;
    }
    Ok(Tail {
        file,
        first_lsn,
        bytes: scan.good_bytes.max(HEADER_BYTES as u64),
        prepared: scan.prepared,
    })
}

/// Verifies one segment: its header, its place in the LSN sequence, and every record.
fn scan_segment(
    path: &Path,
    name_lsn: Lsn,
    expected: Option<Lsn>,
    newest: bool,
    options: &LogOptions,
) -> Result<Scan, LogError> {
    let data = fs::read(path).map_err(|e| LogError::io("reading", path, e))?;
    let file_bytes = data.len() as u64;
    let data_end = data
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    let window = options.batch_bytes_max;
    if expected.is_some_and(|lsn| lsn != name_lsn) {
        let reason = format!("segments are not contiguous: expected first LSN {expected:?}");
        return Err(corrupt(path, 0, name_lsn, reason));
    }
    if newest && torn_creation(&data, window) {
        return Ok(Scan {
            next_lsn: name_lsn,
            good_bytes: 0,
            data_end: data_end as u64,
            file_bytes,
            prepared: false,
        });
    }
    let header = format::decode_header(&data).map_err(|e| header_error(path, name_lsn, e))?;
    let first = header.first_lsn;
    if first != name_lsn {
        let reason = format!("header says first LSN {first}, file name says {name_lsn}");
        return Err(corrupt(path, 0, name_lsn, reason));
    }
    let (mut offset, mut lsn) = (HEADER_BYTES, first);
    // Past `data_end` every byte is zero: the end of the records (a record whose last bytes
    // are zeros ends past it).
    while offset < data_end {
        let rest = &data[offset..];
        let damage = if format::is_zero_frame(rest) {
            "a zero frame with data after it".to_owned()
        } else {
            match format::decode_record(rest, options.record_bytes_max) {
                Ok((_, framed)) => {
                    (offset, lsn) = (offset + framed, lsn + 1);
                    continue;
                }
                Err(e) => e.describe(),
            }
        };
        if newest && data_end - offset <= window {
            break;
        }
        return Err(corrupt(path, offset, lsn, damage));
    }
    Ok(Scan {
        next_lsn: lsn,
        good_bytes: offset as u64,
        data_end: data_end as u64,
        file_bytes,
        prepared: header.flags & FLAG_PREPARED != 0,
    })
}

/// A newest segment whose header never became durable: shorter than a header, or only zeros.
fn torn_creation(data: &[u8], window: usize) -> bool {
    data.len() < HEADER_BYTES || (data.len() <= window && data.iter().all(|&b| b == 0))
}

fn header_error(path: &Path, lsn: Lsn, error: HeaderError) -> LogError {
    let path = path.to_owned();
    match error {
        HeaderError::Magic => LogError::BadMagic { path },
        HeaderError::Version(found) => LogError::IncompatibleVersion {
            path,
            found,
            oldest: format::OLDEST_FORMAT_VERSION,
            newest: format::FORMAT_VERSION,
        },
        HeaderError::Short => corrupt(&path, 0, lsn, "segment shorter than its header".into()),
        HeaderError::Checksum => corrupt(&path, 0, lsn, "segment header checksum mismatch".into()),
    }
}

fn corrupt(path: &Path, offset: usize, lsn: Lsn, reason: String) -> LogError {
    LogError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        lsn,
        reason,
    }
}
