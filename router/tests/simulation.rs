//! Seeded random schedules of the router against the in-memory store, checked against what a
//! messenger must guarantee (issue 6, "Simulation").
//!
//! A world of users with several devices, direct chats and groups. Each step does one random
//! thing: a device connects (registers for live delivery, then syncs from the store in pages),
//! disconnects, sends (sometimes as a retry of an earlier id, sometimes to a chat it is not in),
//! acknowledges what it has, an admin changes a group's membership, an owner flushes, one
//! outstanding store call completes (loads, lookups and writes complete in random order), or
//! the whole router crashes (owners and connections vanish; the store keeps what is durable).
//! Two owners split the chats as two cores would. At the end everything quiesces, every device
//! connects and syncs, and the checks run:
//! - within one connection a device never gets a chat's seq twice or out of order, and never
//!   skips one (the first entry of a chat on a connection is at most one past what the device
//!   had, unless reported `Truncated`);
//! - after the final sync every device has every entry of every chat it belongs to, from the
//!   seq it joined at (or was registered at) to the head;
//! - a device never receives an entry of a chat at a seq where its user was not a member
//!   (except the update that removed it);
//! - every `Sent` is the store's entry for that idempotency key, a retry gets the same answer,
//!   and no key appears twice in the store.
//!
//! `SWITCHBOARD_SIM_SEEDS=n` runs more seeds; `SWITCHBOARD_SIM_SEED=s` starts elsewhere. A
//! failure prints its seed.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_lite::future::block_on;
use router::owner::{Input, Owner, OwnerLimits};
use router::ownership::{CorePlacement, Placement};
use router::session::{Event, Session};
use router::types::{Action, Answer, Op, Origin};
use store::Store;
use store::memory::MemoryStore;
use store::model::{BodyKind, Change, Entry, Mutation, ReceiptKind, Retention, WriteBatch};
use wire::ids::{ChatId, DeviceId, UserId};

const OWNERS: usize = 2;
const USERS: u64 = 6;
const DEVICES: u64 = 2;
const STEPS: usize = 400;

/// A small deterministic generator (xorshift64*), so a seed reproduces a schedule exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("fits")
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn user(n: u64) -> UserId {
    UserId::new(n).expect("valid user")
}

fn device(n: u64) -> DeviceId {
    DeviceId::new(n).expect("valid device")
}

/// A store call an owner asked for, not yet done.
enum Call {
    Load(ChatId),
    Lookup((UserId, DeviceId, u64)),
    Write(u64, WriteBatch),
}

/// One connected device.
struct Conn {
    id: u64,
    session: Session,
    /// Whether the sync plan was read.
    planned: bool,
    /// Chats whose sync pages are still to read.
    reading: bool,
    /// Per chat, the last seq this connection delivered to the device.
    seen: HashMap<ChatId, u64>,
}

/// What a device (the client app) has, across connections.
#[derive(Default)]
struct DeviceState {
    /// Per chat, the highest seq the device has processed.
    have: BTreeMap<ChatId, u64>,
    /// Every (chat, seq) it ever received, to check membership.
    received: Vec<(ChatId, u64)>,
    /// Sends it made: client id → (chat, answer if any).
    sends: BTreeMap<u64, (ChatId, Option<Answer>)>,
    next_client_id: u64,
}

struct World {
    rng: Rng,
    store: MemoryStore,
    owners: Vec<Owner>,
    calls: Vec<(usize, Call)>,
    conns: BTreeMap<(UserId, DeviceId), Conn>,
    devices: BTreeMap<(UserId, DeviceId), DeviceState>,
    next_conn: u64,
    now: u64,
    groups: Vec<ChatId>,
    /// Answers for (conn id, request id) received by clients.
    answers: Vec<(UserId, DeviceId, u64, Answer)>,
    failures: Vec<String>,
}

impl World {
    fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            store: MemoryStore::new(Retention::default()),
            owners: (0..OWNERS).map(|_| Owner::new(limits())).collect(),
            calls: Vec::new(),
            conns: BTreeMap::new(),
            devices: BTreeMap::new(),
            next_conn: 1,
            now: 1_000_000,
            groups: Vec::new(),
            answers: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn placement(chat: ChatId) -> usize {
        CorePlacement::new(OWNERS).owner_of(chat)
    }

    /// Feeds an input to the owner of index `o` and carries out its actions.
    fn feed(&mut self, o: usize, input: Input) {
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("owner {o} <- {input:?}");
        }
        let mut actions = Vec::new();
        self.owners[o].handle(input, self.now, &mut actions);
        for action in actions {
            self.act(o, action);
        }
    }

    fn act(&mut self, o: usize, action: Action) {
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("owner {o}: {action:?}");
        }
        match action {
            Action::Load(chat) => self.calls.push((o, Call::Load(chat))),
            Action::Lookup(key) => self.calls.push((o, Call::Lookup(key))),
            Action::Write(id, batch) => self.calls.push((o, Call::Write(id, batch))),
            Action::Answer(origin, answer) => {
                // The reply reaches the client only if that connection is still open.
                let open = self
                    .conns
                    .get(&(origin.user, origin.device))
                    .is_some_and(|c| c.id == origin.reply_to);
                if open {
                    if let Answer::Sent(record) = &answer {
                        // The client knows its own message's seq.
                        let state = self
                            .devices
                            .entry((origin.user, origin.device))
                            .or_default();
                        let have = state.have.entry(record.chat).or_insert(0);
                        if *have + 1 == record.seq {
                            *have = record.seq;
                        }
                    }
                    self.answers
                        .push((origin.user, origin.device, origin.request_id, answer));
                }
            }
            Action::Deliver(d) => {
                let keys: Vec<(UserId, DeviceId)> = self
                    .conns
                    .keys()
                    .copied()
                    .filter(|(u, dev)| {
                        d.audience.users.contains(u) && d.audience.except != Some((*u, *dev))
                    })
                    .collect();
                for key in keys {
                    let mut events = Vec::new();
                    if let Some(conn) = self.conns.get_mut(&key) {
                        conn.session.live(d.chat, d.seq, &d.entry, &mut events);
                    }
                    self.receive(key, events);
                }
            }
            Action::Receipt(_) | Action::Typing(_) => {}
        }
    }

    /// A device's client processes events from its connection.
    fn receive(&mut self, key: (UserId, DeviceId), events: Vec<Event>) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let state = self.devices.entry(key).or_default();
        for event in events {
            match event {
                Event::Entry { chat, seq, entry } => {
                    let seen = conn.seen.entry(chat).or_insert(0);
                    if seq <= *seen {
                        self.failures.push(format!(
                            "{key:?} got {chat:?} seq {seq} again or out of order (after {seen})"
                        ));
                    }
                    let have = state.have.get(&chat).copied().unwrap_or(0);
                    let from = if *seen == 0 { have } else { *seen };
                    // A device first hears of a chat it joins with the update that added it.
                    let joins = matches!(&*entry, Entry::Update(u) if match &u.change {
                        Change::Added(users) => users.contains(&key.0),
                        Change::Created { members, .. } => members.iter().any(|m| m.0 == key.0),
                        _ => false,
                    });
                    // (also after a gap: a re-added user missed what was said while away)
                    if seq > from + 1
                        && !joins
                        && !own_messages(&self.store, key, chat, from + 1..seq)
                    {
                        let log = describe_log(&self.store, chat);
                        self.failures.push(format!(
                            "{key:?} gap in {chat:?}: had {from}, then got {seq}; log {log:?}"
                        ));
                    }
                    *seen = seq;
                    state.have.insert(chat, have.max(seq));
                    state.received.push((chat, seq));
                }
                Event::Truncated { chat, to_seq, .. } => {
                    self.failures.push(format!(
                        "{key:?} truncated in {chat:?} to {to_seq} without retention"
                    ));
                }
                Event::SyncDone { .. } => {}
            }
        }
    }

    fn connect(&mut self, u: UserId, d: DeviceId) {
        if self.conns.contains_key(&(u, d)) {
            return;
        }
        let id = self.next_conn;
        self.next_conn += 1;
        // Registered for live delivery first, then the device is recorded and the plan read.
        self.conns.insert(
            (u, d),
            Conn {
                id,
                session: Session::new(u, d),
                planned: false,
                reading: true,
                seen: HashMap::new(),
            },
        );
        let seen = WriteBatch {
            mutations: vec![Mutation::DeviceSeen {
                user: u,
                device: d,
                at_ms: self.now,
            }],
        };
        block_on(self.store.write(seen)).expect("device seen");
        // The plan is read at a later step, so live deliveries can arrive before it.
    }

    /// Reads the sync plan of a connection that has none yet.
    fn read_plan(&mut self, key: (UserId, DeviceId)) {
        let plan = block_on(self.store.sync_plan(key.0, key.1)).expect("plan");
        // What the device acknowledged (or started at when it was registered) it has.
        let state = self.devices.entry(key).or_default();
        for c in &plan {
            let have = state.have.entry(c.chat).or_insert(0);
            *have = (*have).max(c.delivered_seq);
        }
        let mut events = Vec::new();
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.planned = true;
            conn.session.plan(&plan, &mut events);
        }
        self.receive(key, events);
    }

    /// Reads one sync page for one connection that is still syncing.
    fn sync_step(&mut self, key: (UserId, DeviceId)) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if !conn.planned {
            self.read_plan(key);
            return;
        }
        let wanted = conn.session.wanted();
        let Some(&(chat, after, until)) = wanted.first() else {
            conn.reading = false;
            return;
        };
        let page = block_on(self.store.read_log(chat, after, until, 3)).expect("read");
        let mut events = Vec::new();
        conn.session.synced(chat, page, &mut events);
        self.receive(key, events);
    }

    fn request(&mut self, u: UserId, d: DeviceId, op: Op) {
        let Some(conn) = self.conns.get(&(u, d)) else {
            return;
        };
        let origin = Origin {
            user: u,
            device: d,
            request_id: self.rng.next(),
            reply_to: conn.id,
        };
        let o = Self::placement(op.chat());
        self.feed(o, Input::Request(origin, op));
    }

    fn chats_of(&self, u: UserId) -> Vec<ChatId> {
        let mut chats: Vec<ChatId> = (1..=USERS)
            .filter(|&p| p != u.get())
            .map(|p| ChatId::direct(u, user(p)))
            .collect();
        chats.extend(self.groups.iter().copied());
        chats
    }

    fn send(&mut self, u: UserId, d: DeviceId) {
        let chats = self.chats_of(u);
        let chat = chats[self.rng.below(chats.len())];
        let state = self.devices.entry((u, d)).or_default();
        let retry = !state.sends.is_empty() && self.rng.chance(20);
        let client_msg_id = if retry {
            let ids: Vec<u64> = state.sends.keys().copied().collect();
            ids[self.rng.below(ids.len())]
        } else {
            state.next_client_id += 1;
            state.next_client_id
        };
        let state = self.devices.entry((u, d)).or_default();
        let chat = state.sends.get(&client_msg_id).map_or(chat, |(c, _)| *c);
        state.sends.entry(client_msg_id).or_insert((chat, None));
        let body = format!("{}:{}:{client_msg_id}", u.get(), d.get()).into_bytes();
        self.request(
            u,
            d,
            Op::Send {
                chat,
                client_msg_id,
                kind: BodyKind::Text,
                body,
                attachments: Vec::new(),
            },
        );
    }

    fn ack(&mut self, u: UserId, d: DeviceId) {
        let Some(state) = self.devices.get(&(u, d)) else {
            return;
        };
        let acks: Vec<(ChatId, u64)> = state.have.iter().map(|(c, s)| (*c, *s)).collect();
        for (chat, up_to_seq) in acks {
            if self.rng.chance(50) {
                self.request(
                    u,
                    d,
                    Op::Cursor {
                        chat,
                        kind: ReceiptKind::Delivered,
                        up_to_seq,
                    },
                );
            }
        }
    }

    fn modify(&mut self) {
        if self.groups.is_empty() {
            return;
        }
        let chat = self.groups[self.rng.below(self.groups.len())];
        let actor = user(1 + self.rng.next() % USERS);
        let target = user(1 + self.rng.next() % USERS);
        let (add, remove) = if self.rng.chance(50) {
            (vec![target], vec![])
        } else {
            (vec![], vec![target])
        };
        let d = device(1);
        self.connect(actor, d);
        self.request(
            actor,
            d,
            Op::Modify {
                chat,
                add,
                remove,
                promote: vec![],
            },
        );
    }

    fn complete_call(&mut self) {
        if self.calls.is_empty() {
            return;
        }
        // Writes of one owner complete in order (one is in flight at a time anyway).
        let (o, call) = self.calls.remove(self.rng.below(self.calls.len()));
        let input = match call {
            Call::Load(chat) => Input::Loaded(chat, block_on(self.store.chat(chat))),
            Call::Lookup(key) => {
                Input::LookedUp(key, block_on(self.store.sent(key.0, key.1, key.2)))
            }
            Call::Write(id, batch) => Input::Written(id, block_on(self.store.write(batch))),
        };
        self.feed(o, input);
    }

    fn crash(&mut self) {
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("CRASH");
        }
        // Writes already handed to the store are durable or not at random; the rest is lost.
        let calls = std::mem::take(&mut self.calls);
        for (_, call) in calls {
            if let Call::Write(_, batch) = call
                && self.rng.chance(50)
            {
                let _ = block_on(self.store.write(batch));
            }
        }
        self.owners = (0..OWNERS).map(|_| Owner::new(limits())).collect();
        self.conns.clear();
    }

    fn step(&mut self) {
        self.now += self.rng.next() % 50;
        let u = user(1 + self.rng.next() % USERS);
        let d = device(1 + self.rng.next() % DEVICES);
        match self.rng.below(100) {
            0..=9 => self.connect(u, d),
            10..=13 => {
                self.conns.remove(&(u, d));
            }
            14..=38 => self.send(u, d),
            39..=45 => self.ack(u, d),
            46..=49 => self.modify(),
            50..=64 => {
                for o in 0..OWNERS {
                    self.feed(o, Input::Flush);
                }
            }
            65..=89 => self.complete_call(),
            90 if self.rng.chance(20) => self.crash(),
            _ => {
                let keys: Vec<_> = self.conns.keys().copied().collect();
                if !keys.is_empty() {
                    let key = keys[self.rng.below(keys.len())];
                    self.sync_step(key);
                }
            }
        }
    }

    /// Runs everything outstanding to completion.
    fn quiesce(&mut self) {
        for _ in 0..10_000 {
            for o in 0..OWNERS {
                self.feed(o, Input::Flush);
            }
            if self.calls.is_empty() {
                break;
            }
            while !self.calls.is_empty() {
                self.complete_call();
            }
        }
    }

    fn finish_and_check(&mut self) -> Result<(), String> {
        self.quiesce();
        // Every device reconnects and syncs fully.
        self.conns.clear();
        for u in 1..=USERS {
            for d in 1..=DEVICES {
                self.connect(user(u), device(d));
                while self
                    .conns
                    .get(&(user(u), device(d)))
                    .is_some_and(|c| c.reading)
                {
                    self.sync_step((user(u), device(d)));
                }
            }
        }
        if let Some(first) = self.failures.first() {
            return Err(first.clone());
        }
        self.check_complete()?;
        self.check_sent()
    }

    fn check_complete(&self) -> Result<(), String> {
        let mut all_chats: HashSet<ChatId> = self.groups.iter().copied().collect();
        for a in 1..=USERS {
            for b in a + 1..=USERS {
                all_chats.insert(ChatId::direct(user(a), user(b)));
            }
        }
        for chat in all_chats {
            let Some(state) = block_on(self.store.chat(chat)).map_err(|e| e.to_string())? else {
                continue;
            };
            let page = block_on(self.store.read_log(chat, 0, state.head, usize::MAX))
                .map_err(|e| e.to_string())?;
            let seqs: Vec<u64> = page.entries.iter().map(|(s, _)| *s).collect();
            if seqs != (1..=state.head).collect::<Vec<_>>() {
                return Err(format!("{chat:?}: store log not gap-free: {seqs:?}"));
            }
            for member in &state.members {
                for d in 1..=DEVICES {
                    let dev = self
                        .devices
                        .get(&(member.user, device(d)))
                        .ok_or(format!("device {d} of {:?} never connected", member.user))?;
                    let mut have = dev.have.get(&chat).copied().unwrap_or(0);
                    if have < state.head
                        && own_messages(
                            &self.store,
                            (member.user, device(d)),
                            chat,
                            have + 1..state.head + 1,
                        )
                    {
                        have = state.head;
                    }
                    if have != state.head {
                        return Err(format!(
                            "{:?}/{d} has {chat:?} up to {have}, head {}",
                            member.user, state.head
                        ));
                    }
                }
            }
            // No entry reached a device of a user who was not a member at that seq.
            let members_at = membership_history(&page.entries, chat);
            for ((u, d), dev) in &self.devices {
                for (c, seq) in &dev.received {
                    if *c == chat && !members_at(*seq).contains(u) {
                        return Err(format!(
                            "{u:?}/{d:?} got {chat:?} seq {seq} as a non-member"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_sent(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for (u, d, _, answer) in &self.answers {
            if let Answer::Sent(record) = answer {
                let page =
                    block_on(
                        self.store
                            .read_log(record.chat, record.seq - 1, record.seq, 1),
                    )
                    .map_err(|e| e.to_string())?;
                let Some((_, Entry::Message(m))) = page.entries.first() else {
                    return Err(format!("Sent {record:?} is not a message in the store"));
                };
                if (m.sender, m.sender_device) != (*u, *d)
                    || m.server_msg_id != record.server_msg_id
                {
                    return Err(format!("Sent {record:?} names someone else's message"));
                }
                let stored = block_on(self.store.sent(*u, *d, m.client_msg_id))
                    .map_err(|e| e.to_string())?;
                if stored != Some(*record) {
                    return Err(format!(
                        "retry answer {record:?} differs from the store {stored:?}"
                    ));
                }
                seen.insert((*u, *d, m.client_msg_id));
            }
        }
        // No idempotency key twice in any chat.
        let mut keys = HashSet::new();
        for chat in self.all_chats() {
            let Some(state) = block_on(self.store.chat(chat)).map_err(|e| e.to_string())? else {
                continue;
            };
            let page = block_on(self.store.read_log(chat, 0, state.head, usize::MAX))
                .map_err(|e| e.to_string())?;
            for (_, entry) in page.entries {
                if let Entry::Message(m) = entry
                    && !keys.insert(m.idempotency_key())
                {
                    return Err(format!("{:?} stored twice", m.idempotency_key()));
                }
            }
        }
        if seen.is_empty() && self.answers.len() > 50 {
            return Err("no send was ever answered Sent".into());
        }
        Ok(())
    }

    fn all_chats(&self) -> Vec<ChatId> {
        let mut chats: Vec<ChatId> = self.groups.clone();
        for a in 1..=USERS {
            for b in a + 1..=USERS {
                chats.push(ChatId::direct(user(a), user(b)));
            }
        }
        chats
    }
}

/// A chat's log in short, for failure messages.
fn describe_log(store: &MemoryStore, chat: ChatId) -> Vec<String> {
    let Ok(page) = block_on(store.read_log(chat, 0, u64::MAX, usize::MAX)) else {
        return Vec::new();
    };
    page.entries
        .iter()
        .map(|(s, e)| match e {
            Entry::Message(m) => format!("{s}:msg {}/{}", m.sender.get(), m.sender_device.get()),
            Entry::Update(u) => format!("{s}:upd {:?}", u.change),
        })
        .collect()
}

/// Whether every seq in `range` of `chat` is a message sent by device `key` (which it is not
/// sent back).
fn own_messages(
    store: &MemoryStore,
    key: (UserId, DeviceId),
    chat: ChatId,
    range: std::ops::Range<u64>,
) -> bool {
    let (after, until) = (range.start - 1, range.end - 1);
    let Ok(page) = block_on(store.read_log(chat, after, until, usize::MAX)) else {
        return false;
    };
    page.entries.len() as u64 == until - after
        && page
            .entries
            .iter()
            .all(|(_, e)| matches!(e, Entry::Message(m) if (m.sender, m.sender_device) == key))
}

/// Who was a member at each seq, from the chat's updates (direct chats: both users always).
fn membership_history(
    entries: &[(u64, Entry)],
    chat: ChatId,
) -> impl Fn(u64) -> HashSet<UserId> + use<> {
    let mut timeline: Vec<(u64, HashSet<UserId>)> = Vec::new();
    let mut members: HashSet<UserId> = chat
        .direct_users()
        .map(|(a, b)| [a, b].into_iter().collect())
        .unwrap_or_default();
    for (seq, entry) in entries {
        if let Entry::Update(update) = entry {
            let before = members.clone();
            match &update.change {
                Change::Created { members: m, .. } => {
                    members = m.iter().map(|(u, _)| *u).collect();
                }
                Change::Added(users) => members.extend(users.iter().copied()),
                Change::Removed(users) => {
                    for u in users {
                        members.remove(u);
                    }
                }
                Change::Left => {
                    members.remove(&update.actor);
                }
                Change::Promoted(_) => {}
            }
            // The update itself goes to members before and after it.
            let at: HashSet<UserId> = before.union(&members).copied().collect();
            timeline.push((*seq, at));
        }
        timeline.push((*seq + 1, members.clone()));
    }
    let members_now = members;
    move |seq| {
        timeline
            .iter()
            .rev()
            .find(|(s, _)| *s <= seq)
            .map_or_else(|| members_now.clone(), |(_, m)| m.clone())
    }
}

fn limits() -> OwnerLimits {
    OwnerLimits {
        group_members_max: 5,
        batch_mutations_max: 8,
        recent_sends_max: 16,
        ..OwnerLimits::default()
    }
}

fn run(seed: u64) -> Result<usize, String> {
    let mut world = World::new(seed);
    // Two groups, created by user 1 with everyone in one and half in the other.
    for (i, members) in [vec![2, 3, 4], vec![2, 5]].into_iter().enumerate() {
        let chat = ChatId::group((1u128 << 127) | (u128::from(seed) << 8) | i as u128);
        world.connect(user(1), device(1));
        world.request(
            user(1),
            device(1),
            Op::CreateChat {
                chat,
                name: format!("g{i}"),
                members: members.into_iter().map(user).collect(),
                history: false,
            },
        );
        world.groups.push(chat);
    }
    for _ in 0..STEPS {
        world.step();
    }
    world.finish_and_check()?;
    Ok(world.answers.len())
}

#[test]
fn random_schedules_deliver_every_sent_message_once_in_order_to_members_only() {
    let seeds = std::env::var("SWITCHBOARD_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_u64);
    let first = std::env::var("SWITCHBOARD_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_u64);
    let mut answers = 0;
    for seed in first..first + seeds {
        match run(seed) {
            Ok(n) => answers += n,
            Err(why) => panic!(
                "simulation failed; reproduce with SWITCHBOARD_SIM_SEED={seed} \
                 SWITCHBOARD_SIM_SEEDS=1: {why}"
            ),
        }
    }
    println!("{seeds} schedules, {answers} answers checked");
    assert!(answers > seeds as usize, "the schedules did almost nothing");
}
