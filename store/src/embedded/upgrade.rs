//! Upgrades an index that fjall kept (store formats 1 and 2: fjall's files in `<index>/`) to
//! the tree of [`super::engine`] in `<index>/lsm` (format 3 and later), in place, at open.
//!
//! Owns the order that makes an interrupted upgrade safe to start again: every row is copied
//! into a new tree in `<index>/lsm.upgrade` (inside the index directory, which may be a mount
//! point of its own, so the rename stays on one filesystem), which is written out and synced;
//! that directory is renamed to `<index>/lsm`; fjall's files are removed; and only then does
//! the caller rewrite `FORMAT`. A `FORMAT` that still names an old format with `<index>/lsm`
//! present means the copy finished: only the removal is left. A leftover
//! `<index>/lsm.upgrade` is an unfinished copy and is started over. The log is not touched: the copied `apply_from` row says where its
//! replay starts, as before.

use std::fs;
use std::path::Path;

use super::engine::{Batch, Index, IndexOptions};
use super::{OpenError, io_error};

/// fjall's keyspace that held the index.
const KEYSPACE: &str = "store";

/// Rows per copied batch.
const BATCH_ROWS: usize = 16_384;

/// Makes `<index>/lsm` hold every row of fjall's index in `index`; returns how many rows were
/// copied (0 when an earlier, interrupted upgrade had finished the copy).
///
/// # Errors
/// fjall's index cannot be read, or the new tree cannot be written.
pub(super) fn from_fjall(index: &Path, options: &IndexOptions) -> Result<u64, OpenError> {
    let lsm = index.join("lsm");
    let mut copied = 0;
    if !lsm.exists() {
        let tmp = index.join("lsm.upgrade");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_error("removing", &tmp))?;
        }
        if index.exists() {
            copied = copy(index, &tmp, options)?;
        } else {
            fs::create_dir_all(&tmp).map_err(io_error("creating", &tmp))?;
        }
        fs::create_dir_all(index).map_err(io_error("creating", index))?;
        fs::rename(&tmp, &lsm).map_err(io_error("renaming", &tmp))?;
        sync_dir(index)?;
    }
    for entry in fs::read_dir(index).map_err(io_error("listing", index))? {
        let path = entry.map_err(io_error("listing", index))?.path();
        if path == lsm {
            continue;
        }
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(io_error("removing fjall's file", &path))?;
    }
    sync_dir(index)?;
    Ok(copied)
}

/// Copies every row of fjall's index in `from` into a new tree in `to`, written out and synced.
fn copy(from: &Path, to: &Path, options: &IndexOptions) -> Result<u64, OpenError> {
    let fjall_error = |e: fjall::Error| OpenError::Index(format!("reading fjall's index: {e}"));
    let engine_error = |e| OpenError::Index(format!("writing the upgraded index: {e}"));
    let db = fjall::Database::builder(from).open().map_err(fjall_error)?;
    let ks = db
        .keyspace(KEYSPACE, fjall::KeyspaceCreateOptions::default)
        .map_err(fjall_error)?;
    let tree = Index::open(to, options).map_err(engine_error)?;
    let mut batch = Batch::default();
    let mut copied = 0u64;
    let outcome = (|| {
        for guard in ks.iter() {
            let (key, value) = guard.into_inner().map_err(fjall_error)?;
            batch.insert(key.to_vec(), value.to_vec());
            copied += 1;
            if batch.len() >= BATCH_ROWS {
                tree.commit(&mut batch).map_err(engine_error)?;
                if tree.is_full() {
                    tree.rotate(0);
                }
            }
        }
        tree.commit(&mut batch).map_err(engine_error)?;
        tree.flush_and_wait(0).map_err(engine_error)
    })();
    tree.close();
    outcome?;
    tracing::info!(
        rows = copied,
        "store: copied fjall's index into the new index"
    );
    Ok(copied)
}

fn sync_dir(dir: &Path) -> Result<(), OpenError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing", dir))
}

#[cfg(test)]
mod tests {
    use futures_lite::future::block_on;
    use lsm_tree::Guard;
    use wire::ids::{ChatId, DeviceId};

    use super::*;
    use crate::Store;
    use crate::embedded::apply::tests::{append, user};
    use crate::embedded::{EmbeddedOptions, EmbeddedStore};
    use crate::model::WriteBatch;

    fn chat() -> ChatId {
        ChatId::direct(user(1), user(2))
    }

    fn message(seq: u64) -> WriteBatch {
        WriteBatch {
            mutations: vec![append(seq)],
        }
    }

    fn index_options() -> IndexOptions {
        IndexOptions::for_tests(64 << 20)
    }

    /// Writes 300 messages and closes; then turns the directory into what a format-2 build
    /// left: the same rows in a fjall index in `index/`. Returns the rows.
    fn format_2_directory(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        {
            let store = EmbeddedStore::open(dir, EmbeddedOptions::default()).expect("open");
            for seq in 1..=300 {
                block_on(store.write(message(seq))).expect("acked");
            }
        }
        let (index, lsm) = (dir.join("index"), dir.join("index").join("lsm"));
        let tree = Index::open(&lsm, &index_options()).expect("open the tree");
        let rows: Vec<(Vec<u8>, Vec<u8>)> = tree
            .prefix([])
            .map(|guard| {
                let (k, v) = guard.into_inner().expect("row");
                (k.to_vec(), v.to_vec())
            })
            .collect();
        tree.close();
        fs::remove_dir_all(&lsm).expect("remove the tree");
        let db = fjall::Database::builder(&index).open().expect("fjall");
        let ks = db
            .keyspace(KEYSPACE, fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        for (key, value) in &rows {
            ks.insert(key.as_slice(), value.as_slice()).expect("insert");
        }
        db.persist(fjall::PersistMode::SyncAll).expect("persist");
        drop((ks, db));
        fs::write(dir.join("FORMAT"), "switchboard store format 2\n").expect("FORMAT");
        rows
    }

    #[test]
    fn a_fjall_index_is_copied_into_the_new_one_and_fjall_s_files_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = format_2_directory(dir.path());
        assert!(rows.len() > 300, "{} rows", rows.len());
        // An earlier upgrade that died mid-copy left this behind.
        let leftover = dir.path().join("index").join("lsm.upgrade");
        fs::create_dir_all(leftover.join("tables")).expect("an unfinished copy");

        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("upgrade");
        assert_eq!(
            fs::read_to_string(dir.path().join("FORMAT")).expect("FORMAT"),
            "switchboard store format 4\n"
        );
        assert!(!leftover.exists());
        let left: Vec<_> = fs::read_dir(dir.path().join("index"))
            .expect("index")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["lsm"], "only the new tree is left");
        let state = block_on(store.chat(chat()))
            .expect("read")
            .expect("the chat");
        assert_eq!(state.head, 300);
        let page = block_on(store.read_log(chat(), 0, 300, 1_000)).expect("read");
        assert_eq!(page.entries.len(), 300);
        assert!(page.entries.iter().map(|(seq, _)| *seq).eq(1..=300));
        let again = block_on(store.sent(user(1), DeviceId::new(1).expect("valid"), 150));
        assert_eq!(again.expect("read").map(|r| r.seq), Some(150));
        block_on(store.write(message(301))).expect("acked after the upgrade");
        drop(store);

        // Reopened, it is a plain format-3 store.
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("reopen");
        let state = block_on(store.chat(chat()))
            .expect("read")
            .expect("the chat");
        assert_eq!(state.head, 301);
    }

    #[test]
    fn an_upgrade_interrupted_after_the_copy_only_removes_fjall_s_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = format_2_directory(dir.path());
        let index = dir.path().join("index");
        // The copy finished and was renamed into place; fjall's files and FORMAT 2 are left.
        assert_eq!(
            from_fjall(&index, &index_options()).expect("upgrade") as usize,
            rows.len()
        );
        fs::create_dir_all(index.join("keyspaces")).expect("a fjall leftover");
        assert_eq!(from_fjall(&index, &index_options()).expect("again"), 0);
        let left: Vec<_> = fs::read_dir(&index)
            .expect("index")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["lsm"]);
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
        let state = block_on(store.chat(chat()))
            .expect("read")
            .expect("the chat");
        assert_eq!(state.head, 300);
    }
}
