//! Which owner a chat belongs to.
//!
//! Owns the placement rule. On one node every chat is owned by core `hash(chat) % cores`,
//! fixed for the process's life; a fleet-wide placement (rendezvous hashing over live nodes
//! with leases and epoch fencing, a later issue) implements the same trait.
//! Invariant: for a given placement, every chat has exactly one owner.

use wire::ids::ChatId;

/// Maps a chat to the index of its owner.
pub trait Placement {
    /// The owner of `chat`: an index below the number of owners.
    fn owner_of(&self, chat: ChatId) -> usize;
}

/// One node: owners are the cores, `hash(chat) % cores`.
#[derive(Debug, Clone, Copy)]
pub struct CorePlacement {
    cores: usize,
}

impl CorePlacement {
    /// Placement over `cores` cores (at least 1).
    pub fn new(cores: usize) -> Self {
        Self {
            cores: cores.max(1),
        }
    }
}

impl Placement for CorePlacement {
    fn owner_of(&self, chat: ChatId) -> usize {
        // Chat ids are user ids or random; mix anyway so placement does not follow id patterns.
        let c = chat.get();
        let mut x = (c >> 64) as u64 ^ (c as u64).rotate_left(29);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        (x % self.cores as u64) as usize
    }
}
