//! Segment files and the log directory: listing, creating and syncing them.
//!
//! Invariant: a new segment is durable (its header synced, then the directory synced) before
//! any record is written to it, so after a crash only the newest segment can have a torn tail.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
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

/// Creates the segment for `first_lsn`, writes and syncs its header, then syncs `dir`, and
/// returns the segment opened for appending.
pub(crate) fn create_segment(
    dir: &Path,
    first_lsn: Lsn,
    sync: &mut dyn SyncPolicy,
) -> io::Result<File> {
    let path = segment_path(dir, first_lsn);
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)?;
    file.write_all(&encode_header(first_lsn))?;
    sync.sync(&file)?;
    sync_dir(dir, sync)?;
    Ok(file)
}

/// Makes the directory's entries (created or removed segments) durable.
pub(crate) fn sync_dir(dir: &Path, sync: &mut dyn SyncPolicy) -> io::Result<()> {
    sync.sync(&File::open(dir)?)
}

/// Opens an existing segment for appending after cutting it to `len` bytes (dropping a torn
/// tail) and, if that changed it, syncing the cut.
pub(crate) fn open_for_append(
    path: &Path,
    len: u64,
    sync: &mut dyn SyncPolicy,
) -> io::Result<File> {
    let file = OpenOptions::new().append(true).open(path)?;
    if file.metadata()?.len() != len {
        file.set_len(len)?;
        sync.sync(&file)?;
    }
    Ok(file)
}
