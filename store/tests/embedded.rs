//! The embedded backend's own guarantees, beyond the conformance suite: a failing sync is
//! never acknowledged and makes the store read-only; a torn log tail recovers to the last
//! acknowledged state; damage elsewhere, a foreign directory or another format version
//! refuse to open with a clear message; the index is rebuilt from the log when it is lost
//! behind a checkpoint-less crash.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_lite::future::block_on;
use store::embedded::{EmbeddedOptions, EmbeddedStore, OpenError};
use store::log::{LogOptions, SyncPolicy};
use store::model::{Entry, Mutation, Retention, WriteBatch};
use store::{Store, StoreError};
use wire::ids::ChatId;

mod common;

use common::chat::{chat, device, head, message, messages, user};

/// Fails every sync from the `fail_from`-th on (counting from 1).
struct FailFrom {
    calls: Arc<AtomicUsize>,
    fail_from: usize,
}

impl SyncPolicy for FailFrom {
    fn sync(&mut self, file: &File) -> io::Result<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_from {
            return Err(io::Error::other("injected sync failure"));
        }
        file.sync_data()
    }
}

/// Opening a new store's log syncs twice (segment header, directory).
const SYNCS_AT_CREATE: usize = 2;

#[test]
fn a_failed_sync_is_not_acknowledged_and_the_store_goes_read_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let calls = Arc::new(AtomicUsize::new(0));
    let options = EmbeddedOptions {
        log: LogOptions {
            sync: Box::new(FailFrom {
                calls: calls.clone(),
                fail_from: SYNCS_AT_CREATE + 11,
            }),
            ..LogOptions::default()
        },
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options).expect("open");
    for seq in 1..=10 {
        block_on(store.write(message(seq))).expect("acked before the failure");
    }
    let failed = block_on(store.write(message(11)));
    assert!(
        matches!(&failed, Err(StoreError::ReadOnly(why)) if why.contains("injected")),
        "{failed:?}"
    );
    // Never retried, never acknowledged later: every later write fails too.
    let later = block_on(store.write(message(12)));
    assert!(matches!(later, Err(StoreError::ReadOnly(_))), "{later:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        SYNCS_AT_CREATE + 11,
        "no retry"
    );
    // Reads still serve what was acknowledged.
    assert_eq!(head(&store), 10);
    drop(store);

    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("reopen");
    // The failed record may have reached the page cache (it was never acked): 10 or 11.
    let h = head(&store);
    assert!((10..=11).contains(&h), "head after reopen: {h}");
    let page = block_on(store.read_log(chat(), 0, 10, 100)).expect("read");
    assert_eq!(page.entries.len(), 10, "every acked message is there");
}

/// The log's segment files (not a prepared next segment), oldest first.
fn log_segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

/// Options that never checkpoint during the test, so the log holds everything.
fn no_checkpoints() -> EmbeddedOptions {
    EmbeddedOptions {
        checkpoint_bytes: u64::MAX,
        checkpoint_interval: std::time::Duration::from_hours(1),
        checkpoint_on_close: false,
        log: LogOptions {
            segment_bytes_max: 16 * 1024,
            ..LogOptions::default()
        },
        ..EmbeddedOptions::default()
    }
}

#[test]
fn a_torn_log_tail_recovers_to_the_last_good_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = EmbeddedStore::open(dir.path(), no_checkpoints()).expect("open");
        for seq in 1..=50 {
            block_on(store.write(message(seq))).expect("acked");
        }
    }
    // Tear the newest segment in the middle of its last record (its last 40 bytes of data never
    // reached the disk: zeros, as in a prepared segment) and drop the index, as if the machine
    // died before the index was persisted: everything comes back from the log.
    let newest = log_segments(dir.path()).pop().expect("a segment");
    let mut bytes = fs::read(&newest).expect("read the segment");
    let data_end = bytes.iter().rposition(|&b| b != 0).expect("records") + 1;
    bytes[data_end - 40..data_end].fill(0);
    fs::write(&newest, bytes).expect("tear the segment");
    fs::remove_dir_all(dir.path().join("index")).expect("drop the index");
    let store = EmbeddedStore::open(dir.path(), no_checkpoints()).expect("recovers");
    assert!(
        store.open_report().torn_bytes_dropped > 0,
        "{:?}",
        store.open_report()
    );
    assert_eq!(
        head(&store),
        49,
        "the torn record is gone, the rest is there"
    );
    let page = block_on(store.read_log(chat(), 0, 49, 100)).expect("read");
    assert_eq!(
        page.entries.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=49).collect::<Vec<_>>()
    );
    // And the store goes on from there.
    block_on(store.write(message(50))).expect("the next seq is 50 again");
}

/// Idempotency expiry rows are one per log record, keyed by time and LSN: a replay into a lost
/// index rebuilds one per record even when records share a time, so a sweep past the offline
/// TTL expires every key.
#[test]
fn a_replayed_index_expires_every_idempotency_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let at_one_time = |seq| {
        let mut batch = message(seq);
        if let Mutation::Append { entry, .. } = &mut batch.mutations[0]
            && let Entry::Message(m) = Arc::make_mut(entry)
        {
            m.ts_ms = 1_000;
        }
        batch
    };
    {
        let store = EmbeddedStore::open(dir.path(), no_checkpoints()).expect("open");
        for seq in 1..=30 {
            block_on(store.write(at_one_time(seq))).expect("acked");
        }
    }
    fs::remove_dir_all(dir.path().join("index")).expect("drop the index");
    let store = EmbeddedStore::open(dir.path(), no_checkpoints()).expect("recovers");
    assert_eq!(store.open_report().replayed, 30);
    assert!(
        block_on(store.sent(user(1), device(), 30))
            .expect("read")
            .is_some()
    );
    let ttl = Retention::default().offline_ttl_ms;
    let report = block_on(store.sweep(1_000 + ttl)).expect("sweep");
    assert_eq!(
        report.sent_records_deleted, 0,
        "exactly the TTL old is kept"
    );
    let report = block_on(store.sweep(1_000 + ttl + 1)).expect("sweep");
    assert_eq!(report.sent_records_deleted, 30);
    for seq in 1..=30 {
        assert_eq!(
            block_on(store.sent(user(1), device(), seq)).expect("read"),
            None
        );
    }
}

#[test]
fn damage_before_the_tail_refuses_to_open_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = EmbeddedStore::open(dir.path(), no_checkpoints()).expect("open");
        for seq in 1..=400 {
            block_on(store.write(message(seq))).expect("acked");
        }
    }
    let segments = log_segments(dir.path());
    assert!(segments.len() >= 3, "several segments: {segments:?}");
    let mut bytes = fs::read(&segments[0]).expect("read");
    bytes[200] ^= 0xff;
    fs::write(&segments[0], &bytes).expect("write");
    fs::remove_dir_all(dir.path().join("index")).expect("drop the index");
    let error = EmbeddedStore::open(dir.path(), no_checkpoints())
        .err()
        .expect("refuses");
    let text = error.to_string();
    assert!(matches!(error, OpenError::Log(_)), "{text}");
    assert!(text.contains("corrupt"), "{text}");
    assert_eq!(
        fs::read(&segments[0]).expect("read"),
        bytes,
        "left as it was"
    );
}

#[test]
fn another_format_version_or_a_foreign_directory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("create"));
    let format = dir.path().join("FORMAT");
    assert_eq!(
        fs::read_to_string(&format).expect("FORMAT"),
        "switchboard store format 4\n"
    );
    for other in ["5", "0"] {
        fs::write(&format, format!("switchboard store format {other}\n")).expect("write");
        let error = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
            .err()
            .expect("refuses");
        assert!(matches!(error, OpenError::Incompatible { .. }), "{error}");
        let text = error.to_string();
        assert!(
            text.contains(&format!("format {other}"))
                && text.contains("format 4")
                && text.contains("upgrades formats 1, 2 and 3 in place"),
            "{text}"
        );
    }

    let foreign = tempfile::tempdir().expect("temp dir");
    fs::write(foreign.path().join("notes.txt"), "mine").expect("write");
    let error = EmbeddedStore::open(foreign.path(), EmbeddedOptions::default())
        .err()
        .expect("refuses");
    assert!(matches!(error, OpenError::Foreign(_)), "{error}");

    // A first open killed between writing `FORMAT.tmp` and renaming it left only that: the
    // directory is still a new store's, not a foreign one.
    let interrupted = tempfile::tempdir().expect("temp dir");
    fs::write(interrupted.path().join("FORMAT.tmp"), "switchboard st").expect("write");
    drop(EmbeddedStore::open(interrupted.path(), EmbeddedOptions::default()).expect("creates"));
    assert_eq!(
        fs::read_to_string(interrupted.path().join("FORMAT")).expect("FORMAT"),
        "switchboard store format 4\n"
    );
}

#[test]
fn a_format_1_or_3_directory_is_upgraded_in_place_and_keeps_its_messages() {
    for old in [1, 3] {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
            for seq in 1..=3 {
                block_on(store.write(message(seq))).expect("acked");
            }
        }
        let format = dir.path().join("FORMAT");
        fs::write(&format, format!("switchboard store format {old}\n")).expect("write");
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("upgrades");
        assert_eq!(
            fs::read_to_string(&format).expect("FORMAT"),
            "switchboard store format 4\n",
            "from format {old}"
        );
        assert_eq!(head(&store), 3);
        block_on(store.write(message(4))).expect("acked");
        assert_eq!(head(&store), 4);
    }
}

#[test]
fn checkpoints_let_old_segments_go_and_reopen_replays_only_the_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = || EmbeddedOptions {
        checkpoint_bytes: 8 * 1024,
        log: LogOptions {
            segment_bytes_max: 16 * 1024,
            ..LogOptions::default()
        },
        ..EmbeddedOptions::default()
    };
    {
        let store = EmbeddedStore::open(dir.path(), options()).expect("open");
        for seq in 1..=2_000 {
            block_on(store.write(message(seq))).expect("acked");
        }
    }
    let segments = log_segments(dir.path()).len();
    // 2,000 records of ~190 bytes is ~24 segments of 16 KiB without checkpoints.
    assert!(segments <= 3, "{segments} segments left after checkpoints");
    let store = EmbeddedStore::open(dir.path(), options()).expect("reopen");
    assert_eq!(
        store.open_report().replayed,
        0,
        "closed cleanly: nothing to replay"
    );
    assert_eq!(head(&store), 2_000);
}

#[test]
fn memtables_and_tables_under_1_mib_are_refused_before_anything_is_created() {
    for (memtable_bytes, table_bytes) in [(512 << 10, 8 << 20), (8 << 20, 0)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = EmbeddedOptions {
            memtable_bytes,
            table_bytes,
            ..EmbeddedOptions::default()
        };
        let refused = EmbeddedStore::open(dir.path(), options).err();
        assert!(
            matches!(refused, Some(OpenError::Options(_))),
            "{memtable_bytes}/{table_bytes}: {refused:?}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// `index_dir` puts the index elsewhere (another disk); the store reopens from there, and an
/// index that does not match the log (an empty one after checkpoints dropped old segments)
/// is refused rather than silently missing messages.
#[test]
fn the_index_may_live_elsewhere_and_a_foreign_index_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let other_disk = tempfile::tempdir().expect("temp dir");
    let options = |index: &Path| EmbeddedOptions {
        checkpoint_bytes: 8 * 1024,
        log: LogOptions {
            segment_bytes_max: 16 * 1024,
            ..LogOptions::default()
        },
        index_dir: Some(index.to_owned()),
        ..EmbeddedOptions::default()
    };
    let index = other_disk.path().join("index");
    {
        let store = EmbeddedStore::open(dir.path(), options(&index)).expect("open");
        for seq in 1..=500 {
            block_on(store.write(message(seq))).expect("acked");
        }
    }
    assert!(!dir.path().join("index").exists(), "nothing in <dir>/index");
    assert!(index.is_dir());
    let store = EmbeddedStore::open(dir.path(), options(&index)).expect("reopen");
    assert_eq!(head(&store), 500);
    drop(store);

    let empty = other_disk.path().join("empty");
    let refused = EmbeddedStore::open(dir.path(), options(&empty)).err();
    match refused {
        Some(OpenError::Index(why)) => assert!(why.contains("do not belong together"), "{why}"),
        other => panic!("an empty index after checkpoints must be refused: {other:?}"),
    }
}

/// Idempotency lookups do not wait for the applier (they ask the answers of durable records
/// not yet applied first), yet each one issued right after a write's acknowledgement finds
/// it: big batches keep the applier behind the acknowledgements while this runs.
#[test]
fn an_idempotency_lookup_right_after_the_ack_finds_the_message_before_it_is_applied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
    let mut seq = 0;
    for _ in 0..10 {
        block_on(store.write(messages(&mut seq, 2_000))).expect("durable");
        let found = block_on(store.sent(user(1), device(), seq)).expect("lookup");
        assert_eq!(found.map(|r| (r.chat, r.seq)), Some((chat(), seq)));
        let many = block_on(store.sent_many(vec![
            (user(1), device(), seq - 1),
            (user(1), device(), seq + 1),
        ]))
        .expect("lookup");
        assert_eq!(
            many.iter().map(|r| r.map(|r| r.seq)).collect::<Vec<_>>(),
            [Some(seq - 1), None]
        );
    }
}

/// Reads of one chat (its state, its log) wait only for pending appends to that chat, yet each
/// one issued right after a write's acknowledgement sees it: big batches keep the applier
/// behind the acknowledgements while this runs. Another chat, with nothing pending, reads as
/// it was.
#[test]
fn a_chat_read_right_after_the_ack_sees_the_append_before_it_is_applied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
    let other = ChatId::direct(user(1), user(3));
    let mut first = message(1);
    if let Some(Mutation::Append { chat, .. }) = first.mutations.first_mut() {
        *chat = other;
    }
    block_on(store.write(first)).expect("durable");
    let mut seq = 0;
    for _ in 0..10 {
        block_on(store.write(messages(&mut seq, 2_000))).expect("durable");
        assert_eq!(
            head(&store),
            seq,
            "the chat's state shows the acknowledged append"
        );
        let page = block_on(store.read_log(chat(), seq - 1, seq, 10)).expect("log");
        assert_eq!(page.entries.iter().map(|e| e.0).collect::<Vec<_>>(), [seq]);
        let untouched = block_on(store.chat(other)).expect("read").expect("exists");
        assert_eq!(untouched.head, 1);
    }
}

/// `caught_up` answers only once the index holds every acknowledged write: then the backlog
/// gauge reads 0 and a read that waits for everything (the user's chats) sees the chat.
#[test]
fn caught_up_answers_once_the_index_holds_every_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
    let lag = store.index_lag();
    let mut seq = 0;
    for _ in 0..5 {
        block_on(store.write(messages(&mut seq, 2_000))).expect("durable");
        block_on(store.caught_up()).expect("caught up");
        assert_eq!(lag.backlog_bytes(), 0, "nothing is left to apply");
        assert_eq!(block_on(store.user_chats(user(2))).expect("read"), [chat()]);
    }
}

/// A lookup of an id above everything its device sent is answered from a per-device bound,
/// not the index; the bound must rise with every later write. After the bound is learned (at
/// 50), later sends (51..=80, applied and gone from the pending answers) are still found,
/// ids above them are not, an id below the bound sent out of order is found, and after a
/// reopen (bounds learned anew) all of it still holds.
#[test]
fn a_device_s_later_sends_are_found_after_its_id_bound_was_learned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut seq = 0;
    let mut send = |store: &EmbeddedStore, ids: &[u64]| {
        let mut batch = WriteBatch::default();
        for &id in ids {
            seq += 1;
            let mut one = message(seq);
            if let Some(Mutation::Append { entry, .. }) = one.mutations.first_mut()
                && let Entry::Message(m) = Arc::make_mut(entry)
            {
                m.client_msg_id = id;
            }
            batch.mutations.extend(one.mutations);
        }
        block_on(store.write(batch)).expect("durable");
        block_on(store.caught_up()).expect("caught up");
        // Let the applier drop the applied answers from the pending ones, so the lookups
        // below can only be answered by the index or the bound.
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let found = |store: &EmbeddedStore, id: u64| {
        block_on(store.sent(user(1), device(), id))
            .expect("lookup")
            .is_some()
    };
    {
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
        send(&store, &(1..=50).collect::<Vec<_>>());
        assert!(!found(&store, 51), "learns the bound");
        assert!(found(&store, 30) && found(&store, 50));
        send(&store, &(51..=80).collect::<Vec<_>>());
        for id in [51, 75, 80] {
            assert!(
                found(&store, id),
                "id {id} was written after the bound was learned"
            );
        }
        assert!(!found(&store, 81) && !found(&store, 1_000));
        // Out of order: below the bound and above it.
        send(&store, &[5_000, 100]);
        assert!(found(&store, 100) && found(&store, 5_000));
        assert!(!found(&store, 4_999) && !found(&store, 5_001));
    }
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("reopen");
    assert!(!found(&store, 5_001));
    for id in [1, 50, 51, 80, 100, 5_000] {
        assert!(found(&store, id), "id {id} after reopen");
    }
    assert!(!found(&store, 81) && !found(&store, 4_999));
}
