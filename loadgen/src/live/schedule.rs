//! Open-loop arrivals: the intended send times of one worker, fixed in advance of any answer.
//!
//! Owns the arithmetic of the schedule and nothing else: a seeded sequence of times at a set
//! rate, with exponential (Poisson) or equal (uniform) gaps, from `start_ns` until `end_ns`.
//! The worker sends each message at its intended time however late the previous answers
//! are, and every latency is measured from the intended time, so a stall delays the record
//! of every message it held up (no coordinated omission). Invariant: times never decrease
//! and all lie in `start_ns .. end_ns`.

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::live::clock::{to_f64, to_u64};
use crate::live::scenario::Arrivals;

/// A worker's intended send times.
#[derive(Debug)]
pub(crate) struct Schedule {
    rng: StdRng,
    kind: Arrivals,
    /// Mean gap, in ns (as f64 so rates that do not divide a second stay exact on average).
    gap_ns: f64,
    /// The next intended time, as f64 ns, so rounding does not accumulate.
    next: f64,
    end_ns: u64,
}

impl Schedule {
    /// Times at `rate_per_s` from `start_ns` to `end_ns`. `phase` in `0..1` offsets a uniform
    /// schedule by that share of a gap, so several workers' uniform schedules interleave
    /// rather than all firing together.
    pub(crate) fn new(
        kind: Arrivals,
        rate_per_s: f64,
        seed: u64,
        phase: f64,
        (start_ns, end_ns): (u64, u64),
    ) -> Self {
        let gap_ns = if rate_per_s > 0.0 {
            1e9 / rate_per_s
        } else {
            f64::INFINITY
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let first = match kind {
            Arrivals::Uniform => gap_ns * phase,
            Arrivals::Poisson => exponential(&mut rng, gap_ns),
        };
        Self {
            rng,
            kind,
            gap_ns,
            next: to_f64(start_ns) + first,
            end_ns,
        }
    }

    /// The next intended time, without taking it; `None` once the schedule is over.
    pub(crate) fn peek(&self) -> Option<u64> {
        let t = to_u64(self.next);
        (self.next.is_finite() && t < self.end_ns).then_some(t)
    }

    /// Takes the next intended time if it is due at `now_ns`.
    pub(crate) fn due(&mut self, now_ns: u64) -> Option<u64> {
        let t = self.peek().filter(|&t| t <= now_ns)?;
        self.next += match self.kind {
            Arrivals::Uniform => self.gap_ns,
            Arrivals::Poisson => exponential(&mut self.rng, self.gap_ns),
        };
        Some(t)
    }
}

/// An exponential gap with mean `mean` (inverse transform; `1 - u` keeps `ln` finite).
fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    let u: f64 = rng.random();
    -(1.0 - u).ln() * mean
}

#[cfg(test)]
#[allow(clippy::cast_precision_loss)] // statistics over a few thousand samples
mod tests {
    use super::*;

    fn all(mut s: Schedule) -> Vec<u64> {
        std::iter::from_fn(|| s.due(u64::MAX)).collect()
    }

    #[test]
    fn uniform_is_evenly_spaced_and_bounded() {
        let times = all(Schedule::new(
            Arrivals::Uniform,
            1000.0,
            1,
            0.5,
            (10_000_000, 20_000_000),
        ));
        assert_eq!(times.len(), 10);
        assert_eq!(times[0], 10_500_000);
        assert!(times.windows(2).all(|w| w[1] - w[0] == 1_000_000));
        assert!(times.iter().all(|&t| t < 20_000_000));
    }

    #[test]
    fn poisson_has_the_rate_and_exponential_gaps() {
        let seconds = 100;
        let end = seconds * 1_000_000_000;
        let times = all(Schedule::new(Arrivals::Poisson, 500.0, 9, 0.0, (0, end)));
        let n = times.len() as f64;
        assert!((n / 100.0 - 500.0).abs() < 15.0, "rate {}", n / 100.0);
        assert!(times.windows(2).all(|w| w[1] >= w[0]));
        // For exponential gaps the standard deviation equals the mean.
        let gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.05,
            "cv {}",
            var.sqrt() / mean
        );
    }

    #[test]
    fn due_waits_for_its_time() {
        let mut s = Schedule::new(Arrivals::Uniform, 10.0, 1, 0.0, (1_000, 1_000_000_000));
        assert_eq!(s.due(999), None);
        assert_eq!(s.due(1_000), Some(1_000));
        assert_eq!(s.peek(), Some(100_001_000));
        assert_eq!(s.due(100_000_999), None);
    }
}
