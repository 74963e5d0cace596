//! The one clock of a run: the host's monotonic clock in nanoseconds.
//!
//! Every process of a run (coordinator and workers) reads `CLOCK_MONOTONIC`, which is one
//! clock for the whole host, so an intended send time written by one worker can be compared
//! with a receive time read by another. This is why a run spans one host only. Never goes
//! back; not related to wall-clock time.

use rustix::time::{ClockId, clock_gettime};

/// Nanoseconds on the host's monotonic clock.
pub(crate) fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    // A monotonic clock is non-negative and u64 ns lasts 584 years of uptime.
    t.tv_sec.unsigned_abs() * 1_000_000_000 + t.tv_nsec.unsigned_abs()
}

/// Seconds as nanoseconds. Callers pass durations the scenario validated as finite and
/// ≥ 0; anything else saturates (`as` maps NaN and negatives to 0), never wraps.
#[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
pub(crate) fn secs_to_ns(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

/// A count or a time as `f64`, for rates and plots: exact below 2^53, far beyond any figure
/// a run produces.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn to_f64(x: u64) -> f64 {
    x as f64
}

/// A non-negative `f64` (a rounded count or time) as `u64`, saturating.
#[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
pub(crate) fn to_u64(x: f64) -> u64 {
    x.max(0.0) as u64
}

/// Whole microseconds from `from_ns` to `to_ns`, zero if `to_ns` is earlier.
pub(crate) fn us_between(from_ns: u64, to_ns: u64) -> u64 {
    to_ns.saturating_sub(from_ns) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_agrees_with_instant() {
        let (a, start) = (now_ns(), std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (b, elapsed) = (now_ns(), start.elapsed());
        assert!(b > a);
        let diff = (b - a).abs_diff(elapsed.as_nanos() as u64);
        assert!(diff < 5_000_000, "clocks disagree by {diff} ns");
        assert_eq!(us_between(b, a), 0);
        assert_eq!(us_between(1_000, 3_500), 2);
    }
}
