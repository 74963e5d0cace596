//! Wall-clock time since the Unix epoch, for what leaves the process or outlives it: entry
//! timestamps, presence, retention cutoffs, signed URLs' expiry.
//!
//! Invariant: a clock before the epoch reads 0 and one past `u64` saturates; nothing panics.
//! (Intervals inside the process use `Core::now_ms`, a monotonic clock.)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Microseconds since the Unix epoch.
pub fn unix_us() -> u64 {
    u64::try_from(since_epoch().as_micros()).unwrap_or(u64::MAX)
}

/// Seconds since the Unix epoch.
pub fn unix_s() -> u64 {
    since_epoch().as_secs()
}
