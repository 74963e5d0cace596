//! A set of `u64`s kept as sorted, disjoint, non-adjacent inclusive ranges: the ledger's unit.
//!
//! Owns the representation only. Messages of one sender in one chat carry consecutive
//! counters, so the set they form is almost always one range: inserting in ascending order is
//! O(1) (it extends the last range) and the set stays a few words. Invariant: `ranges` is
//! sorted, no two ranges overlap or touch, and every range has `lo <= hi`.

use std::fmt;

use anyhow::{Context, Result, ensure};

/// A set of integers as ranges; see the module doc.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// Adds `x`; returns `false` if it was already there.
    pub(crate) fn insert(&mut self, x: u64) -> bool {
        // Fast path: appending at or right after the end.
        if let Some(last) = self.ranges.last_mut() {
            if x == last.1.wrapping_add(1) && last.1 != u64::MAX {
                last.1 = x;
                return true;
            }
            if x > last.1 {
                self.ranges.push((x, x));
                return true;
            }
        } else {
            self.ranges.push((x, x));
            return true;
        }
        // `at`: the first range whose end is at or past `x`.
        let at = self.ranges.partition_point(|&(_, hi)| hi < x);
        if self.ranges[at].0 <= x {
            return false;
        }
        let joins_prev = at > 0 && self.ranges[at - 1].1 + 1 == x;
        let joins_next = self.ranges[at].0 == x + 1;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[at - 1].1 = self.ranges[at].1;
                self.ranges.remove(at);
            }
            (true, false) => self.ranges[at - 1].1 = x,
            (false, true) => self.ranges[at].0 = x,
            (false, false) => self.ranges.insert(at, (x, x)),
        }
        true
    }

    /// Whether `x` is in the set.
    pub(crate) fn contains(&self, x: u64) -> bool {
        let at = self.ranges.partition_point(|&(_, hi)| hi < x);
        self.ranges.get(at).is_some_and(|&(lo, _)| lo <= x)
    }

    /// How many integers the set holds.
    pub(crate) fn len(&self) -> u64 {
        self.ranges.iter().map(|&(lo, hi)| hi - lo + 1).sum()
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The largest element.
    pub(crate) fn max(&self) -> Option<u64> {
        self.ranges.last().map(|&(_, hi)| hi)
    }

    /// Adds every element of `other`.
    pub(crate) fn union_with(&mut self, other: &Self) {
        for &(lo, hi) in &other.ranges {
            for x in lo..=hi {
                self.insert(x);
            }
        }
    }

    /// How many elements of `self` are not in `other` (walks both lists once).
    pub(crate) fn count_not_in(&self, other: &Self) -> u64 {
        let mut missing = 0;
        let mut j = 0;
        for &(lo, hi) in &self.ranges {
            let mut covered = 0;
            while j < other.ranges.len() && other.ranges[j].1 < lo {
                j += 1;
            }
            let mut k = j;
            while k < other.ranges.len() && other.ranges[k].0 <= hi {
                let (olo, ohi) = other.ranges[k];
                covered += ohi.min(hi) - olo.max(lo) + 1;
                k += 1;
            }
            missing += hi - lo + 1 - covered;
        }
        missing
    }

    /// Elements of `self` that are in neither `a` nor `b`.
    pub(crate) fn count_not_in_either(&self, a: &Self, b: &Self) -> u64 {
        if b.is_empty() {
            return self.count_not_in(a);
        }
        let mut both = a.clone();
        both.union_with(b);
        self.count_not_in(&both)
    }

    /// Parses the [`Display`](fmt::Display) form: `-` for empty, else `lo-hi` or `x`, comma-separated.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut set = Self::default();
        if text == "-" {
            return Ok(set);
        }
        for part in text.split(',') {
            let (lo, hi) = if let Some((lo, hi)) = part.split_once('-') {
                (lo.parse()?, hi.parse()?)
            } else {
                let x: u64 = part
                    .parse()
                    .with_context(|| format!("bad range {part:?}"))?;
                (x, x)
            };
            ensure!(lo <= hi, "range {part:?} runs backwards");
            let after_last = set
                .ranges
                .last()
                .is_none_or(|&(_, h)| h < lo.saturating_sub(1));
            ensure!(after_last, "ranges in {text:?} are not sorted and disjoint");
            set.ranges.push((lo, hi));
        }
        Ok(set)
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ranges.is_empty() {
            return f.write_str("-");
        }
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    #[test]
    fn matches_a_btreeset_under_random_inserts() {
        let mut rng = StdRng::seed_from_u64(7);
        for round in 0..200 {
            let mut set = RangeSet::default();
            let mut model = BTreeSet::new();
            for _ in 0..rng.random_range(0..60) {
                let x = rng.random_range(0..40);
                assert_eq!(set.insert(x), model.insert(x), "round {round} insert {x}");
            }
            assert_eq!(set.len(), model.len() as u64);
            for x in 0..42 {
                assert_eq!(set.contains(x), model.contains(&x));
            }
            for pair in set.ranges.windows(2) {
                assert!(pair[0].1 + 1 < pair[1].0, "disjoint, not touching: {set:?}");
            }
            assert_eq!(RangeSet::parse(&set.to_string()).expect("round trip"), set);
            let mut other = RangeSet::default();
            let mut other_model = BTreeSet::new();
            for _ in 0..rng.random_range(0..60) {
                let x = rng.random_range(0..40);
                other.insert(x);
                other_model.insert(x);
            }
            let want = model.difference(&other_model).count() as u64;
            assert_eq!(set.count_not_in(&other), want, "{set} minus {other}");
        }
    }

    #[test]
    fn text_form() {
        let mut set = RangeSet::default();
        assert_eq!(set.to_string(), "-");
        for x in [1, 2, 3, 7, 9, 10] {
            set.insert(x);
        }
        assert_eq!(set.to_string(), "1-3,7,9-10");
        assert_eq!(set.max(), Some(10));
        assert!(RangeSet::parse("3-1").is_err());
        assert!(RangeSet::parse("5,3").is_err());
        assert!(
            RangeSet::parse("1-3,4").is_err(),
            "touching ranges are one range"
        );
        assert!(RangeSet::parse("x").is_err());
    }
}
