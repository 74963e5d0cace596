//! Segment files and the log directory: listing, creating and syncing them.
//!
//! Invariant: a new segment is durable (its header synced, then the directory synced) before
//! any record is written to it, so after a crash only the newest segment can have a torn tail.
//! Segments are opened without `O_APPEND`: the writer writes at its own offset, because a
//! prepared segment is longer than its records.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{self, encode_header};
use super::{LogError, Lsn, SyncPolicy};

/// The path of the segment whose first record has `first_lsn`.
pub(crate) fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format::segment_name(first_lsn))
}

/// The first LSNs of the segments in `dir`, ascending. Other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<Lsn>, LogError> {
    let entries = fs::read_dir(dir).map_err(|e| LogError::io("listing", dir, e))?;
    let mut firsts = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("listing", dir, e))?;
        if let Some(first) = entry
            .file_name()
            .to_str()
            .and_then(format::parse_segment_name)
        {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// Creates the segment for `first_lsn` (one that grows as it is written, not prepared), writes
/// and syncs its header, then syncs `dir`, and returns the segment opened for writing.
pub(crate) fn create_segment(
    dir: &Path,
    first_lsn: Lsn,
    sync: &mut dyn SyncPolicy,
) -> io::Result<File> {
    let path = segment_path(dir, first_lsn);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    file.write_all(&encode_header(first_lsn, 0))?;
    sync.sync(&file)?;
    sync_dir(dir, sync)?;
    Ok(file)
}

/// Makes the directory's entries (created or removed segments) durable.
pub(crate) fn sync_dir(dir: &Path, sync: &mut dyn SyncPolicy) -> io::Result<()> {
    sync.sync(&File::open(dir)?)
}

/// Opens an existing segment for writing after dropping the torn bytes `good..data_end` and,
/// if that changed it, syncing it. A prepared segment gets zeros over those bytes (it keeps
/// its size); any other is cut to `good` bytes.
pub(crate) fn open_for_writing(
    path: &Path,
    good: u64,
    data_end: u64,
    prepared: bool,
    sync: &mut dyn SyncPolicy,
) -> io::Result<File> {
    let file = OpenOptions::new().write(true).open(path)?;
    if prepared {
        if data_end > good {
            write_zeros(&file, good, data_end)?;
            sync.sync(&file)?;
        }
    } else if file.metadata()?.len() != good {
        file.set_len(good)?;
        sync.sync(&file)?;
    }
    Ok(file)
}

/// Bytes of zeros written per `write` call.
const ZERO_CHUNK_BYTES: usize = 1024 * 1024;

static ZEROS: [u8; ZERO_CHUNK_BYTES] = [0; ZERO_CHUNK_BYTES];

/// Writes zeros over `from..to` of `file` (not synced), one chunk at a time; `each_chunk` is
/// called after every chunk with the bytes written so far and may stop the work with an error.
pub(crate) fn write_zeros_with(
    file: &File,
    from: u64,
    to: u64,
    mut each_chunk: impl FnMut(u64) -> io::Result<()>,
) -> io::Result<()> {
    let mut offset = from;
    while offset < to {
        let len =
            usize::try_from(to - offset).map_or(ZERO_CHUNK_BYTES, |n| n.min(ZERO_CHUNK_BYTES));
        file.write_all_at(&ZEROS[..len], offset)?;
        offset += len as u64;
        each_chunk(offset - from)?;
    }
    Ok(())
}

/// Writes zeros over `from..to` of `file` (not synced).
pub(crate) fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    write_zeros_with(file, from, to, |_| Ok(()))
}
