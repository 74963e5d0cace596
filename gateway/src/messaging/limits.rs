//! Rate limits (DESIGN.md F14, docs/PROTOCOL.md §6.8): token buckets per device and per user.
//!
//! Owns the bucket arithmetic and the per-user buckets of the users whose home core this is.
//! A device's send bucket lives on its connection (one device, one connection, one core). A
//! user's buckets live on the user's home core only (`Hub::home_core`), so the devices of one
//! user, wherever they are connected, draw from one bucket without a lock shared across cores.
//!
//! Invariants: a bucket never holds more than its burst; a refused take changes nothing but the
//! refill time; a full bucket is the same as no bucket, so full ones may be dropped at any time
//! (that bounds the map by the users that were recently busy).

use foldhash::HashMap;

use wire::{Limits, UserId};

/// A token bucket: `tokens` as of `at_ms` (a core clock in ms); `at_ms == 0` means full.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// A bucket's size and refill rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Most tokens.
    pub burst: u32,
    /// Tokens added per second.
    pub per_s: f64,
}

impl Rate {
    /// `per_s` tokens a second.
    pub fn per_s(burst: u32, per_s: u32) -> Self {
        Self {
            burst,
            per_s: f64::from(per_s),
        }
    }

    /// `per_min` tokens a minute.
    pub fn per_min(burst: u32, per_min: u32) -> Self {
        Self {
            burst,
            per_s: f64::from(per_min) / 60.0,
        }
    }
}

impl Bucket {
    /// The tokens at `now_ms`.
    fn level(self, now_ms: u64, rate: Rate) -> f64 {
        let burst = f64::from(rate.burst);
        if self.at_ms == 0 {
            return burst;
        }
        // Milliseconds are far below f64's exact range; the precision lost is irrelevant.
        #[allow(clippy::cast_precision_loss)]
        let elapsed_s = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        (self.tokens + elapsed_s * rate.per_s).min(burst)
    }

    /// Takes one token at `now_ms`.
    ///
    /// # Errors
    /// When there is none: the milliseconds until there is one (at least 1).
    pub fn take(&mut self, now_ms: u64, rate: Rate) -> Result<(), u32> {
        let now_ms = now_ms.max(1);
        let tokens = self.level(now_ms, rate);
        if tokens >= 1.0 {
            *self = Self {
                tokens: tokens - 1.0,
                at_ms: now_ms,
            };
            return Ok(());
        }
        *self = Self {
            tokens,
            at_ms: now_ms,
        };
        let seconds = (1.0 - tokens) / rate.per_s.max(f64::MIN_POSITIVE);
        // Clamped into u32 before the cast.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let millis = (seconds * 1000.0).ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        Err(millis)
    }

    /// Whether the bucket is full at `now_ms` (and may be forgotten).
    fn is_full(self, now_ms: u64, rate: Rate) -> bool {
        self.level(now_ms, rate) >= f64::from(rate.burst)
    }
}

/// What a per-user limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// `SendMessage`.
    Send,
    /// `CreateChat` and `ModifyParticipants`.
    Create,
    /// `CreateAttachment`.
    Upload,
}

impl LimitKind {
    /// The configured rate of this kind.
    pub fn rate(self, limits: &Limits) -> Rate {
        match self {
            Self::Send => Rate::per_s(limits.user_send_burst, limits.user_send_per_s),
            Self::Create => Rate::per_min(limits.create_burst, limits.create_per_min),
            Self::Upload => Rate::per_min(limits.upload_burst, limits.upload_per_min),
        }
    }

    /// The reason text of a refusal.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Send => "over the user's send limit (user_send_burst / user_send_per_s)",
            Self::Create => "over the user's chat change limit (create_burst / create_per_min)",
            Self::Upload => "over the user's upload limit (upload_burst / upload_per_min)",
        }
    }
}

/// Fewest buckets kept before full ones are dropped.
const PRUNE_FLOOR: usize = 1024;

/// The per-user buckets of the users homed on this core.
#[derive(Debug)]
pub struct UserLimits {
    buckets: HashMap<(UserId, LimitKind), Bucket>,
    prune_at: usize,
}

impl Default for UserLimits {
    fn default() -> Self {
        Self {
            buckets: HashMap::default(),
            prune_at: PRUNE_FLOOR,
        }
    }
}

impl UserLimits {
    /// Takes one token of `kind` for `user` at `now_ms`.
    ///
    /// # Errors
    /// When there is none: the milliseconds until there is one.
    pub fn take(
        &mut self,
        user: UserId,
        kind: LimitKind,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<(), u32> {
        if self.buckets.len() >= self.prune_at {
            self.buckets
                .retain(|(_, kind), bucket| !bucket.is_full(now_ms, kind.rate(limits)));
            self.prune_at = (self.buckets.len() * 2).max(PRUNE_FLOOR);
        }
        self.buckets
            .entry((user, kind))
            .or_default()
            .take(now_ms, kind.rate(limits))
    }

    /// Buckets kept (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u64) -> UserId {
        UserId::new(n).expect("nonzero")
    }

    #[test]
    fn a_bucket_gives_its_burst_then_one_token_per_refill_interval() {
        let rate = Rate::per_s(3, 2);
        let mut b = Bucket::default();
        for _ in 0..3 {
            assert_eq!(b.take(1_000, rate), Ok(()));
        }
        assert_eq!(
            b.take(1_000, rate),
            Err(500),
            "one token takes 500 ms at 2/s"
        );
        assert_eq!(b.take(1_250, rate), Err(250), "half refilled");
        assert_eq!(b.take(1_500, rate), Ok(()));
        assert_eq!(b.take(100_000, rate), Ok(()), "refills up to the burst");
        assert_eq!(b.take(100_000, rate), Ok(()));
        assert_eq!(b.take(100_000, rate), Ok(()));
        assert!(b.take(100_000, rate).is_err(), "never more than the burst");
    }

    #[test]
    fn per_minute_rates_wait_whole_seconds() {
        let rate = Rate::per_min(1, 60);
        let mut b = Bucket::default();
        assert_eq!(b.take(5, rate), Ok(()));
        assert_eq!(b.take(5, rate), Err(1_000));
    }

    #[test]
    fn users_and_kinds_have_separate_buckets() {
        let limits = Limits {
            user_send_burst: 1,
            create_burst: 1,
            ..Limits::default()
        };
        let mut u = UserLimits::default();
        assert_eq!(u.take(user(1), LimitKind::Send, 10, &limits), Ok(()));
        assert!(u.take(user(1), LimitKind::Send, 10, &limits).is_err());
        assert_eq!(u.take(user(2), LimitKind::Send, 10, &limits), Ok(()));
        assert_eq!(u.take(user(1), LimitKind::Create, 10, &limits), Ok(()));
    }

    #[test]
    fn full_buckets_are_dropped_when_the_map_grows() {
        let limits = Limits::default();
        let mut u = UserLimits::default();
        for n in 1..=PRUNE_FLOOR as u64 {
            assert_eq!(u.take(user(n), LimitKind::Send, 1_000, &limits), Ok(()));
        }
        assert_eq!(u.len(), PRUNE_FLOOR);
        // An hour later every bucket is full again: the next take prunes them all.
        assert_eq!(u.take(user(1), LimitKind::Send, 3_601_000, &limits), Ok(()));
        assert_eq!(u.len(), 1);
    }
}
