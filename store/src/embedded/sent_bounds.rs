//! Per sending device, an upper bound on the client message ids it has in the index, so the
//! idempotency lookup of a new send (every send: the router must know the key is new) is
//! answered without searching the index.
//!
//! Clients number their messages with a per-device counter (docs/PROTOCOL.md §6.3), so a new
//! send's id is above every id its device used before: once the bound is known, "above the
//! bound and not pending" proves the key absent. An id at or below the bound (a retry, or a
//! client that does not count up) is looked up in the index as before. Measured in the
//! `messaging` bench (1:1), the index lookups were ~13% of the gateway's CPU.
//!
//! Owns the bound's soundness. It lives in [`super::apply_thread::Shared`]'s lock, beside the
//! pending answers, and an entry is:
//! - created by a reader that finds none (`begin`), unknown, tagged with the map's epoch;
//! - raised by the applier after each commit, before those records' answers leave
//!   [`super::pending`], for every device it wrote a row of (`applied`; entries only);
//! - made known by that reader (`learned`) with the highest id under the device's prefix in
//!   an index snapshot it took after `begin`, unless the map was cleared since (epoch).
//!
//! Invariant: a known entry is at least every id of its device committed to the index. Rows
//! committed before the reader's snapshot are in its scan; rows committed after it are raised
//! by the applier into the entry, which existed since `begin`. Retention only deletes rows,
//! which keeps the bound an upper bound. So for a key not pending (checked first, under the
//! same lock), an id above a known bound is not in the index.
//!
//! Bounded: at most `capacity` devices; a full map is cleared and its epoch advances (every
//! device's next lookup searches the index again, as all did before this existed).

use std::collections::HashMap;

use foldhash::fast::RandomState;
use wire::ids::{DeviceId, UserId};

use super::pending::SentKey;

/// Devices tracked by default: about 40 bytes each, so ~10 MiB when full.
pub(crate) const DEFAULT_CAPACITY: usize = 262_144;

/// A device's bound.
#[derive(Debug, Clone, Copy)]
struct Bound {
    /// At least every id of the device committed since the entry was created (and, once
    /// `known`, every id in the index).
    max: u64,
    known: bool,
}

/// What the bound says of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Above a known bound: not in the index.
    Absent,
    /// Search the index.
    Search,
    /// Search the index, and learn the device's bound from the same snapshot (`learned`
    /// with this epoch).
    SearchAndLearn(u64),
}

/// The bounds (see the module doc).
#[derive(Debug)]
pub(crate) struct SentBounds {
    devices: HashMap<(UserId, DeviceId), Bound, RandomState>,
    epoch: u64,
    capacity: usize,
}

impl Default for SentBounds {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl SentBounds {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            devices: HashMap::default(),
            epoch: 0,
            capacity: capacity.max(1),
        }
    }

    /// What to do for a key that is not pending. Creates the device's entry if it has none;
    /// the reader must then take its snapshot after this call.
    pub(crate) fn begin(&mut self, (user, device, id): SentKey) -> Verdict {
        match self.devices.get(&(user, device)) {
            Some(bound) if bound.known && id > bound.max => Verdict::Absent,
            Some(bound) if bound.known => Verdict::Search,
            Some(_) => Verdict::SearchAndLearn(self.epoch),
            None => {
                if self.devices.len() >= self.capacity {
                    self.devices.clear();
                    self.epoch += 1;
                }
                self.devices.insert(
                    (user, device),
                    Bound {
                        max: 0,
                        known: false,
                    },
                );
                Verdict::SearchAndLearn(self.epoch)
            }
        }
    }

    /// The reader's scan: `max` is the highest id under the device's prefix in a snapshot
    /// taken after `begin` returned `SearchAndLearn(epoch)` (0 if none).
    pub(crate) fn learned(&mut self, user: UserId, device: DeviceId, epoch: u64, max: u64) {
        if epoch != self.epoch {
            return;
        }
        if let Some(bound) = self.devices.get_mut(&(user, device)) {
            bound.max = bound.max.max(max);
            bound.known = true;
        }
    }

    /// The applier committed rows of these keys (called before their answers leave
    /// `pending`). Sorted keys cost one lookup per device; any order is correct.
    pub(crate) fn applied(&mut self, keys: &[SentKey]) {
        for run in keys.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            let Some(&(user, device, _)) = run.first() else {
                continue;
            };
            let max = run.iter().map(|&(_, _, id)| id).max().unwrap_or(0);
            if let Some(bound) = self.devices.get_mut(&(user, device)) {
                bound.max = bound.max.max(max);
            }
        }
    }

    /// Devices tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.devices.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: u64, id: u64) -> SentKey {
        (
            UserId::new(user).expect("user"),
            DeviceId::new(1).expect("device"),
            id,
        )
    }

    #[test]
    fn a_device_is_searched_until_its_bound_is_learned_then_only_at_or_below_it() {
        let mut b = SentBounds::new(8);
        let Verdict::SearchAndLearn(epoch) = b.begin(key(1, 10)) else {
            panic!("a new device is learned");
        };
        // Until the reader reports, every lookup searches (and may learn).
        assert_eq!(b.begin(key(1, 11)), Verdict::SearchAndLearn(epoch));
        let (user, device, _) = key(1, 0);
        b.learned(user, device, epoch, 10);
        assert_eq!(b.begin(key(1, 11)), Verdict::Absent);
        assert_eq!(b.begin(key(1, 10)), Verdict::Search);
        assert_eq!(b.begin(key(1, 3)), Verdict::Search);
    }

    #[test]
    fn the_applier_raises_a_bound_past_what_it_committed() {
        let mut b = SentBounds::new(8);
        let Verdict::SearchAndLearn(epoch) = b.begin(key(1, 5)) else {
            panic!("a new device is learned");
        };
        // Committed after the reader's snapshot (so not in its scan, which saw 4).
        let mut keys = vec![key(1, 9), key(2, 3), key(1, 7)];
        keys.sort_unstable();
        b.applied(&keys);
        let (user, device, _) = key(1, 0);
        b.learned(user, device, epoch, 4);
        assert_eq!(b.begin(key(1, 9)), Verdict::Search, "9 is in the index");
        assert_eq!(b.begin(key(1, 10)), Verdict::Absent);
        // Keys in any order raise it to their highest.
        b.applied(&[key(1, 12), key(1, 11)]);
        assert_eq!(b.begin(key(1, 12)), Verdict::Search);
        assert_eq!(b.begin(key(1, 13)), Verdict::Absent);
        // Device 2 had no entry: the applier does not create one.
        assert!(matches!(b.begin(key(2, 4)), Verdict::SearchAndLearn(_)));
    }

    #[test]
    fn a_full_map_is_cleared_and_a_scan_from_before_the_clear_is_not_trusted() {
        let mut b = SentBounds::new(2);
        let Verdict::SearchAndLearn(old) = b.begin(key(1, 5)) else {
            panic!("a new device is learned");
        };
        assert!(matches!(b.begin(key(2, 5)), Verdict::SearchAndLearn(_)));
        // A third device clears the map: the epoch moves on.
        let Verdict::SearchAndLearn(new) = b.begin(key(3, 5)) else {
            panic!("a new device is learned");
        };
        assert_ne!(old, new);
        assert_eq!(b.len(), 1);
        assert!(matches!(b.begin(key(1, 5)), Verdict::SearchAndLearn(e) if e == new));
        // The scan for device 1 began before the clear: ignored.
        let (user, device, _) = key(1, 0);
        b.learned(user, device, old, 100);
        assert!(matches!(b.begin(key(1, 101)), Verdict::SearchAndLearn(_)));
        b.learned(user, device, new, 100);
        assert_eq!(b.begin(key(1, 101)), Verdict::Absent);
    }
}
