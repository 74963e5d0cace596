//! Presence (DESIGN.md F10; docs/PROTOCOL.md §4.10, §4.11): who is online, and since when
//! they were last seen, for the users a connection subscribed to.
//!
//! Owns the presence state of the users placed on this core (`hash(user) % cores`): which of
//! their devices are connected and visible (`SetPresence{online}`), and when they were last
//! seen. Cores report device changes to the user's presence core; it notes which users
//! changed and, every [`FLUSH`], broadcasts the state of each changed user once to every core,
//! which passes it to its subscribed connections. So a user flapping on and off costs at most
//! one `Presence` per flush window (the throttle).
//!
//! Invariants: a user is online while at least one of its devices is connected and visible;
//! `last_seen_ms` is the time it went offline (or now, while online); the state lives in
//! memory only (after a restart everyone starts offline with `last_seen_ms` 0 until seen).

use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use foldhash::HashMap;
use wire::{DeviceId, UserId};

use super::{Hub, Item, unix_ms};
use crate::core::Core;

/// How often changed presence is broadcast (and so the most often one user's presence is).
pub(super) const FLUSH: Duration = Duration::from_millis(500);

/// One user's presence, on its presence core.
#[derive(Debug, Default)]
pub(super) struct UserPresence {
    /// Connected devices, each with whether it shows as online.
    devices: HashMap<DeviceId, Visible>,
    last_seen_ms: u64,
}

/// Whether a connected device shows as online, and how many of its connections are open.
#[derive(Debug, Clone, Copy)]
struct Visible {
    connections: u32,
    shown: bool,
}

impl UserPresence {
    pub(super) fn online(&self) -> bool {
        self.devices.values().any(|v| v.shown)
    }

    pub(super) fn last_seen_ms(&self, now: u64) -> u64 {
        if self.online() {
            now
        } else {
            self.last_seen_ms
        }
    }
}

/// A device event for a user's presence core.
#[derive(Debug, Clone, Copy)]
pub enum DeviceChange {
    /// A connection of the device opened.
    Connected,
    /// A connection of the device closed.
    Disconnected,
    /// The device asked to show as online or not.
    Shown(bool),
}

/// This core's presence state.
#[derive(Debug, Default)]
pub(super) struct Presence {
    /// Users placed on this core.
    users: HashMap<UserId, UserPresence>,
    /// Users whose presence changed since the last flush.
    changed: BTreeSet<UserId>,
    /// Subscriptions of this core's connections: watched user → connection ids.
    subscribers: HashMap<UserId, Vec<u64>>,
}

impl Presence {
    /// Applies a device change (on the user's presence core).
    pub(super) fn device(&mut self, user: UserId, device: DeviceId, change: DeviceChange) {
        let state = self.users.entry(user).or_default();
        let was = state.online();
        match change {
            DeviceChange::Connected => {
                let v = state.devices.entry(device).or_insert(Visible {
                    connections: 0,
                    shown: true,
                });
                v.connections += 1;
            }
            DeviceChange::Disconnected => {
                if let Some(v) = state.devices.get_mut(&device) {
                    v.connections = v.connections.saturating_sub(1);
                    if v.connections == 0 {
                        state.devices.remove(&device);
                    }
                }
            }
            DeviceChange::Shown(shown) => {
                if let Some(v) = state.devices.get_mut(&device) {
                    v.shown = shown;
                }
            }
        }
        if was && !state.online() {
            state.last_seen_ms = unix_ms();
        }
        if was != state.online() {
            self.changed.insert(user);
        }
    }

    /// The state to send for `user` (on its presence core).
    pub(super) fn state(&self, user: UserId) -> (bool, u64) {
        let now = unix_ms();
        self.users
            .get(&user)
            .map_or((false, 0), |p| (p.online(), p.last_seen_ms(now)))
    }

    /// Replaces connection `conn`'s subscriptions.
    pub(super) fn subscribe(&mut self, conn: u64, old: &[UserId], new: &[UserId]) {
        for user in old {
            if let Some(ids) = self.subscribers.get_mut(user) {
                ids.retain(|i| *i != conn);
                if ids.is_empty() {
                    self.subscribers.remove(user);
                }
            }
        }
        for user in new {
            self.subscribers.entry(*user).or_default().push(conn);
        }
    }

    /// This core's connections subscribed to `user`.
    pub(super) fn subscribers(&self, user: UserId) -> &[u64] {
        self.subscribers.get(&user).map_or(&[], Vec::as_slice)
    }
}

/// Every [`FLUSH`], broadcasts the users whose presence changed.
pub(super) async fn flush_forever(core: Rc<Core>, hub: Rc<Hub>) {
    while !core.draining() {
        glommio::timer::sleep(FLUSH).await;
        let changed: Vec<(UserId, bool, u64)> = {
            let mut presence = hub.presence.borrow_mut();
            let changed = std::mem::take(&mut presence.changed);
            changed
                .into_iter()
                .map(|user| {
                    let (online, last_seen) = presence.state(user);
                    (user, online, last_seen)
                })
                .collect()
        };
        if changed.is_empty() {
            continue;
        }
        for (user, online, last_seen) in changed {
            hub.broadcast(|| Item::Presence(user, online, last_seen, None));
            hub.presence_local(&core, user, online, last_seen, None);
        }
        hub.tick.raise();
    }
}
