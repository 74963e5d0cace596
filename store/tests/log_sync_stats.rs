//! The log counts its syncs: how many, how long, and the time spent in stalls (syncs longer
//! than `STALL`), as the writer made them. A slow sync is injected through `LogOptions::sync`.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_lite::future::block_on;
use store::log::{Log, LogOptions, STALL, SyncPolicy};

/// Syncs for real, and first sleeps `STALL` + 5 ms while `slow` is set.
struct Slow {
    slow: Arc<AtomicBool>,
}

impl SyncPolicy for Slow {
    fn sync(&mut self, file: &File) -> io::Result<()> {
        if self.slow.load(Ordering::SeqCst) {
            std::thread::sleep(STALL + Duration::from_millis(5));
        }
        file.sync_data()
    }
}

#[test]
fn syncs_and_stalls_are_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let slow = Arc::new(AtomicBool::new(false));
    let options = LogOptions {
        sync: Box::new(Slow { slow: slow.clone() }),
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).expect("open");
    let handle = log.handle();
    // Opening syncs the new segment's header and the directory; those are not appends.
    let stats = log.sync_stats();
    let at_open = stats.snapshot();
    for i in 0..5_u8 {
        block_on(handle.append(vec![i; 10])).expect("durable");
    }
    let fast = stats.snapshot();
    // Each append waited for its own sync: nothing else was queued.
    assert_eq!(fast.syncs - at_open.syncs, 5);
    assert_eq!(fast.stalled, Duration::ZERO, "{fast:?}");
    slow.store(true, Ordering::SeqCst);
    for i in 0..2_u8 {
        block_on(handle.append(vec![i; 10])).expect("durable");
    }
    let after = stats.snapshot();
    assert_eq!(after.syncs - fast.syncs, 2);
    let stall = STALL + Duration::from_millis(5);
    assert!(after.stalled >= 2 * stall, "{after:?}");
    assert!(after.max >= stall, "{after:?}");
    assert!(after.total >= after.stalled);
    // 2 of 7 appends' syncs were slow: the 0.9 quantile is a stall, the median is not.
    assert!(after.quantile_at_most(0.9) >= STALL, "{after:?}");
    assert!(after.quantile_at_most(0.5) < STALL, "{after:?}");
}
