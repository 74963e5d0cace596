//! Who is who and who talks to whom: the run's workload, derived from the scenario alone.
//!
//! Owns user and device numbering, each user's direct peers, the groups' members, and the
//! split of devices among workers. Every process computes the same `Plan` from the same
//! scenario and seed (no IO, no clock), so the coordinator never ships membership around:
//! only the ids the gateway assigns to groups travel. Invariants: user `u` (0-based) is
//! `UserId(user_base + 1 + u)`; global device `g` belongs to user `g / devices_per_user` and
//! is `DeviceId(g % devices_per_user + 1)`; direct peers are symmetric and never the user
//! itself; a group's members are distinct and its creator is `members[0]`.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use rand::seq::index;
use rand::{Rng, SeedableRng, rngs::StdRng};
use wire::{ChatId, DeviceId, UserId};

use crate::live::scenario::Scenario;

/// The workload; see the module doc.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) users: u32,
    pub(crate) devices_per_user: u32,
    user_base: u64,
    /// Per user: the users it has a direct chat with (sorted).
    pub(crate) peers: Vec<Vec<u32>>,
    /// Per group: its members, creator first.
    pub(crate) groups: Vec<Vec<u32>>,
    /// Per user: the groups it is in.
    pub(crate) user_groups: Vec<Vec<u32>>,
}

impl Plan {
    /// The plan of `scenario` (deterministic in its seed).
    pub(crate) fn new(s: &Scenario) -> Self {
        let mut rng = StdRng::seed_from_u64(s.seed);
        let users = s.users;
        let mut peers = vec![BTreeSet::new(); users as usize];
        for u in 0..users {
            for _ in 0..s.contacts_per_user {
                // Another user, uniformly: draw from users - 1 and skip over `u`.
                let mut v = rng.random_range(0..users - 1);
                if v >= u {
                    v += 1;
                }
                peers[u as usize].insert(v);
                peers[v as usize].insert(u);
            }
        }
        let mut user_groups = vec![Vec::new(); users as usize];
        let groups: Vec<Vec<u32>> = (0..s.groups.count)
            .map(|g| {
                let size = s.groups.size.sample(&mut rng).min(u64::from(users)) as usize;
                let members: Vec<u32> = index::sample(&mut rng, users as usize, size)
                    .into_iter()
                    .map(|m| m as u32)
                    .collect();
                for &m in &members {
                    user_groups[m as usize].push(g);
                }
                members
            })
            .collect();
        Self {
            users,
            devices_per_user: s.devices_per_user,
            user_base: s.user_base,
            peers: peers.into_iter().map(|p| p.into_iter().collect()).collect(),
            groups,
            user_groups,
        }
    }

    /// Devices in the run.
    pub(crate) fn devices(&self) -> u32 {
        self.users * self.devices_per_user
    }

    /// The id of user `u`.
    pub(crate) fn user_id(&self, u: u32) -> UserId {
        UserId::new(self.user_base + 1 + u64::from(u)).expect("validated: ids stay under 2^63")
    }

    /// The index of a user id, if it is one of the plan's.
    pub(crate) fn user_index(&self, id: UserId) -> Option<u32> {
        let u = id.get().checked_sub(self.user_base + 1)?;
        u32::try_from(u).ok().filter(|&u| u < self.users)
    }

    /// The user of global device `g`.
    pub(crate) fn user_of(&self, g: u32) -> u32 {
        g / self.devices_per_user
    }

    /// The device id (within its user) of global device `g`.
    pub(crate) fn device_id(&self, g: u32) -> DeviceId {
        DeviceId::new(u64::from(g % self.devices_per_user) + 1).expect("nonzero")
    }

    /// The global device of (user index, device id), if it is one of the plan's.
    pub(crate) fn device_index(&self, user: u32, device: DeviceId) -> Option<u32> {
        let d = u32::try_from(device.get().checked_sub(1)?).ok()?;
        (user < self.users && d < self.devices_per_user).then(|| user * self.devices_per_user + d)
    }

    /// Global devices of user `u`.
    pub(crate) fn devices_of(&self, u: u32) -> std::ops::Range<u32> {
        u * self.devices_per_user..(u + 1) * self.devices_per_user
    }

    /// The direct chat id of users `a` and `b`.
    pub(crate) fn direct_chat(&self, a: u32, b: u32) -> ChatId {
        ChatId::direct(self.user_id(a), self.user_id(b))
    }

    /// `(first global device, count)` for each of `workers` workers: contiguous, sizes
    /// differing by at most one, covering every device once.
    pub(crate) fn shares(&self, workers: u32) -> Result<Vec<(u32, u32)>> {
        let devices = self.devices();
        ensure!(workers >= 1, "--workers must be at least 1");
        ensure!(
            workers <= devices,
            "more workers ({workers}) than devices ({devices})"
        );
        let (base, extra) = (devices / workers, devices % workers);
        let mut first = 0;
        Ok((0..workers)
            .map(|w| {
                let count = base + u32::from(w < extra);
                let share = (first, count);
                first += count;
                share
            })
            .collect())
    }
}

/// Group ids as the coordinator announces them: `n` → the id `CreateChat` returned.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupIds(Vec<Option<ChatId>>);

impl GroupIds {
    /// Room for `groups` groups, none known yet.
    pub(crate) fn new(groups: usize) -> Self {
        Self(vec![None; groups])
    }

    /// Records group `n`'s id.
    pub(crate) fn set(&mut self, n: u32, id: ChatId) -> Result<()> {
        let slot = self.0.get_mut(n as usize).context("no such group")?;
        ensure!(
            slot.is_none_or(|old| old == id),
            "group {n} announced twice"
        );
        *slot = Some(id);
        Ok(())
    }

    /// Group `n`'s id, once known.
    pub(crate) fn get(&self, n: u32) -> Option<ChatId> {
        self.0.get(n as usize).copied().flatten()
    }

    /// Whether every group's id is known.
    pub(crate) fn complete(&self) -> bool {
        self.0.iter().all(Option::is_some)
    }

    /// Every (group, id) known.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, ChatId)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(n, id)| Some((n as u32, (*id)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &[&str]) -> Scenario {
        let base = "users = 50\ndevices_per_user = 2\ncontacts_per_user = 3\n\
                    direct_share = 0.5\nrate_per_s = 10\nduration_s = 1\n\
                    [groups]\ncount = 4\nsize = { dist = \"uniform\", min = 2, max = 10 }\n";
        let o: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        Scenario::from_toml(base, &o).expect("valid")
    }

    #[test]
    fn deterministic_and_consistent() {
        let (a, b) = (Plan::new(&scenario(&[])), Plan::new(&scenario(&[])));
        assert_eq!(a.peers, b.peers);
        assert_eq!(a.groups, b.groups);
        assert_ne!(a.groups, Plan::new(&scenario(&["seed=2"])).groups);
        for (u, peers) in a.peers.iter().enumerate() {
            assert!(peers.len() >= 3, "each user picked 3 peers");
            for &v in peers {
                assert_ne!(v as usize, u);
                assert!(a.peers[v as usize].contains(&(u as u32)), "symmetric");
            }
        }
        for (n, members) in a.groups.iter().enumerate() {
            let distinct: BTreeSet<_> = members.iter().collect();
            assert_eq!(distinct.len(), members.len());
            assert!((2..=10).contains(&members.len()));
            for &m in members {
                assert!(a.user_groups[m as usize].contains(&(n as u32)));
            }
        }
    }

    #[test]
    fn ids_round_trip() {
        let p = Plan::new(&scenario(&[]));
        assert_eq!(p.devices(), 100);
        for g in 0..p.devices() {
            let u = p.user_of(g);
            assert_eq!(p.user_index(p.user_id(u)), Some(u));
            assert_eq!(p.device_index(u, p.device_id(g)), Some(g));
            assert!(p.devices_of(u).contains(&g));
        }
        let (u, v) = (0, p.peers[0][0]);
        assert_eq!(p.direct_chat(v, u), p.direct_chat(u, v));
        assert_eq!(p.user_index(UserId::new(5).expect("id")), None);
        let shares = p.shares(3).expect("ok");
        assert_eq!(shares, vec![(0, 34), (34, 33), (67, 33)]);
        assert!(p.shares(0).is_err() && p.shares(101).is_err());
    }
}
