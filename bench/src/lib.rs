//! switchboard's micro-benchmarks (criterion), one file per crate under `benches/`.
//!
//! Layout: `benches/wire.rs` (encode, verify+decode, `encode_ws`), `benches/store_log.rs` (the
//! write-ahead log alone), `benches/store_engine.rs` (the embedded store: durable writes, ack
//! latency beside fjall alone, sync reads, reopen and replay). `benches/media.rs`: issuing a
//! pre-signed media URL (built-in HMAC and S3 `SigV4`). Each benchmark is named after
//! what it measures and sets its throughput, so reports read as ns/op and bytes/s. Wall-clock
//! figures on a shared machine are compared as ratios within one run; benches never assert on
//! time. CI runs them once each (`cargo bench -p bench -- --test`) so they never rot.

use std::collections::HashMap;
use std::path::Path;

/// A process's or thread's name and CPU time (utime + stime, in clock ticks) from its `stat`
/// file under `/proc`.
#[must_use]
pub fn proc_ticks(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (open, close) = (text.find('(')?, text.rfind(')')?);
    let name = text[open + 1..close].to_owned();
    // After the name: field 3 (state) onwards; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// Every thread of process `pid` (a number, or `self`): thread id → (name, CPU clock ticks).
#[must_use]
pub fn thread_ticks(pid: &str) -> HashMap<u64, (String, u64)> {
    let mut threads = HashMap::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let tid = task.file_name().to_string_lossy().parse().unwrap_or(0);
            if let Some(sample) = proc_ticks(&task.path().join("stat")) {
                threads.insert(tid, sample);
            }
        }
    }
    threads
}
