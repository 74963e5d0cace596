//! Messaging on one node: each core's [`Hub`] drives its chat owner (`router::owner`), routes
//! requests to the owner core and answers back, fans out durable entries to the connected
//! devices, and syncs each device on connect.
//!
//! Owns the wiring between connections, the router's state machines, the store and the other
//! cores. Threads: none of its own; everything runs on the core's executor. Store calls return
//! futures completed by the store's threads (a foreign wake), and work for another core goes
//! over Glommio's channel mesh in batches, one batch per peer per driver tick.
//!
//! Invariants:
//! - A chat's requests all go to its owner core (`router::ownership::CorePlacement`), so its
//!   seqs come from one owner; answers go back to the core of the connection that asked.
//! - A durable entry is encoded once (header included) and that buffer is shared by every
//!   recipient on every core (`Arc`), unless a session holds it back during a sync.
//! - A connection is registered for live entries before its sync plan is read
//!   (`router::session`), so nothing durable slips between sync and live.
//! - No lock is shared between cores; the mesh is the only cross-core path.
//! - A user's per-user state (presence, rate limits) lives on the user's home core
//!   (`Hub::home_core`); a limited request passes there before its owner.

mod frames;
pub mod limits;
mod media;
mod presence;
mod requests;
mod sync;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use foldhash::HashMap;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use router::owner::{Input, Owner, OwnerLimits};
use router::ownership::{CorePlacement, Placement};
use router::session::{Event, Session};
use router::types::{Action, Answer, Delivery, Op, Origin, ReceiptNotice, TypingNotice};
use store::Store;
use wire::{DeviceId, ServerFrame, UserId};

use crate::core::{Close, Conn, Core};
use crate::outbound::Frame;
use crate::signal::Signal;
use wire::ws::close;

pub use media::sweep as sweep_attachments;
pub use requests::handle_request;

/// Bits of `Origin::reply_to` that hold the connection id (the rest is the core).
const CONN_ID_BITS: u32 = 48;

/// The per-core connection id inside a `reply_to` (`Conn::id`).
fn local_id(reply_to: u64) -> u64 {
    reply_to & ((1 << CONN_ID_BITS) - 1)
}

/// The core of a `reply_to`.
fn core_of(reply_to: u64) -> usize {
    usize::try_from(reply_to >> CONN_ID_BITS).unwrap_or(usize::MAX)
}

/// A durable entry as every core fans it out: the delivery and its encoded frame.
#[derive(Debug)]
pub struct Fanout {
    delivery: Delivery,
    frame: Arc<[u8]>,
}

/// Work for another core.
#[derive(Debug)]
pub enum Item {
    /// A request for a chat this core does not own.
    Request(Origin, Op),
    /// For the user's home core: a request to count against the user's rate limit of that
    /// kind, then to carry out.
    Limited(Origin, limits::LimitKind, Then),
    /// The answer to a request a connection on that core made.
    Answer(Origin, Answer),
    /// A durable entry to deliver live.
    Deliver(Arc<Fanout>),
    /// A receipt for a user's devices.
    Receipt(ReceiptNotice),
    /// A typing notice.
    Typing(Arc<TypingNotice>),
    /// A device connected at this time (µs since the epoch): its connections attached
    /// earlier close with 4002.
    Connected(UserId, DeviceId, u64),
    /// For the user's presence core: a device connected, disconnected or changed visibility.
    PresenceDevice(UserId, DeviceId, presence::DeviceChange),
    /// For the user's presence core: send the user's presence to this connection.
    PresenceQuery(UserId, u64),
    /// A user's presence (online, last seen): to the one connection given, or to every
    /// subscriber.
    Presence(UserId, bool, u64, Option<u64>),
}

/// What a request that passed its user's rate limit does next.
#[derive(Debug)]
pub enum Then {
    /// Go to its chat's owner.
    Submit(Op),
    /// A send with attachments: check them (store reads, maybe blob `HEAD`s), then go to its
    /// chat's owner. The check comes after the limit, so a limited user costs no I/O.
    SendWithAttachments(Op),
    /// Reserve an attachment (`CreateAttachment`) and answer with its upload URL.
    CreateAttachment(media::Declared),
}

/// The channel mesh every core joins at start.
pub type Mesh = MeshBuilder<Vec<Item>, Full>;

/// Batches of work queued on one mesh channel.
const MESH_CHANNEL_BATCHES: usize = 1024;

/// A mesh for `cores` cores.
pub fn mesh(cores: usize) -> Mesh {
    MeshBuilder::full(cores, MESH_CHANNEL_BATCHES)
}

/// One core's messaging state.
pub struct Hub {
    core: std::rc::Weak<Core>,
    store: Arc<dyn Store>,
    /// Media blobs (upload/download URLs, confirm, delete): one `Blobs` for the process.
    blobs: Arc<crate::media::Blobs>,
    me: usize,
    placement: CorePlacement,
    owner: RefCell<Owner>,
    inbox: RefCell<Vec<Input>>,
    tick: Signal,
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    users: RefCell<HashMap<UserId, Vec<u64>>>,
    next_conn: Cell<u64>,
    outbox: RefCell<Vec<Vec<Item>>>,
    senders: Senders<Vec<Item>>,
    presence: RefCell<presence::Presence>,
    user_limits: RefCell<limits::UserLimits>,
    /// Idempotency keys the owner asked for this tick.
    lookups: RefCell<Vec<router::types::SendKey>>,
    /// [`Hub::deliver_local`]'s buffers, kept between deliveries (empty while not in use).
    deliver_conns: Cell<Vec<Rc<Conn>>>,
    deliver_events: Cell<Vec<Event>>,
}

impl Hub {
    /// Joins the mesh and starts this core's driver and mesh receivers.
    ///
    /// # Errors
    /// When the mesh cannot be joined (another core failed to start).
    pub async fn start(
        core: &Rc<Core>,
        store: Arc<dyn Store>,
        blobs: Arc<crate::media::Blobs>,
        mesh: Mesh,
    ) -> anyhow::Result<()> {
        let (senders, receivers) = mesh
            .join()
            .await
            .map_err(|e| anyhow::anyhow!("joining the core mesh: {e}"))?;
        let peers = senders.nr_consumers();
        let limits = &core.config.limits;
        let owner = Owner::new(OwnerLimits {
            group_members_max: limits.group_members_max,
            typing_interval_ms: u64::from(limits.typing_interval_ms),
            ..OwnerLimits::default()
        });
        let hub = Rc::new(Self {
            core: Rc::downgrade(core),
            store,
            blobs,
            me: senders.peer_id(),
            placement: CorePlacement::new(peers),
            owner: RefCell::new(owner),
            inbox: RefCell::new(Vec::new()),
            tick: Signal::default(),
            conns: RefCell::new(HashMap::default()),
            users: RefCell::new(HashMap::default()),
            next_conn: Cell::new(1),
            outbox: RefCell::new((0..peers).map(|_| Vec::new()).collect()),
            senders,
            presence: RefCell::new(presence::Presence::default()),
            user_limits: RefCell::new(limits::UserLimits::default()),
            lookups: RefCell::new(Vec::new()),
            deliver_conns: Cell::new(Vec::new()),
            deliver_events: Cell::new(Vec::new()),
        });
        if core.hub.set(hub.clone()).is_err() {
            anyhow::bail!("the messaging hub started twice");
        }
        spawn_receivers(core, receivers);
        glommio::spawn_local(presence::flush_forever(core.clone(), hub.clone())).detach();
        let driver = core.clone();
        glommio::spawn_local(async move { drive(&driver, &hub).await }).detach();
        Ok(())
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The process's media blobs.
    pub fn blobs(&self) -> &crate::media::Blobs {
        &self.blobs
    }

    /// The core this hub runs on (for tasks that outlive a call).
    fn core(&self) -> Option<Rc<Core>> {
        self.core.upgrade()
    }

    /// The shared handle of an attached connection.
    fn conn(&self, conn: &Conn) -> Option<Rc<Conn>> {
        let id = local_id(conn.id.get());
        self.conns.borrow().get(&id).cloned()
    }

    /// Registers an upgraded connection for live delivery and starts its sync.
    pub fn attach(self: &Rc<Self>, core: &Rc<Core>, conn: &Rc<Conn>) {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        conn.id.set((self.me as u64) << CONN_ID_BITS | id);
        *conn.session.borrow_mut() = Some(Box::new(Session::new(
            conn.identity.user,
            conn.identity.device,
        )));
        self.conns.borrow_mut().insert(id, conn.clone());
        self.users
            .borrow_mut()
            .entry(conn.identity.user)
            .or_default()
            .push(id);
        let at = unix_us();
        conn.attached_us.set(at);
        let (user, device) = (conn.identity.user, conn.identity.device);
        self.broadcast(|| Item::Connected(user, device, at));
        self.tick.raise();
        self.replace_older(user, device, at);
        self.presence_device(user, device, presence::DeviceChange::Connected);
        let (hub, core, conn) = (self.clone(), core.clone(), conn.clone());
        glommio::spawn_local(async move { sync::run(&hub, &core, &conn).await }).detach();
    }

    /// Closes this core's connections of `(user, device)` attached before `at` (4002): the
    /// same device connecting again replaces its older connection, wherever it is.
    fn replace_older(&self, user: UserId, device: DeviceId, at: u64) {
        for conn in self.local_conns(&[user]) {
            if conn.identity.device == device && conn.attached_us.get() < at {
                conn.request_close(Close::new(
                    close::REPLACED,
                    "replaced by a newer connection",
                ));
            }
        }
    }

    /// Forgets a connection that is ending.
    pub fn detach(&self, conn: &Conn) {
        let id = local_id(conn.id.get());
        if self.conns.borrow_mut().remove(&id).is_none() {
            return;
        }
        let mut users = self.users.borrow_mut();
        if let Some(ids) = users.get_mut(&conn.identity.user) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                users.remove(&conn.identity.user);
            }
        }
        conn.session.borrow_mut().take();
        let watched = std::mem::take(&mut *conn.presence_subs.borrow_mut());
        self.presence
            .borrow_mut()
            .subscribe(conn.id.get(), &watched, &[]);
        self.presence_device(
            conn.identity.user,
            conn.identity.device,
            presence::DeviceChange::Disconnected,
        );
    }

    /// The core that keeps `user`'s per-user state: presence and rate limits.
    fn home_core(&self, user: UserId) -> usize {
        let peers = self.outbox.borrow().len().max(1) as u64;
        let mut x = user.get().wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        usize::try_from(x % peers).unwrap_or(0)
    }

    /// Reports a device change to the user's presence core.
    pub(crate) fn presence_device(
        &self,
        user: UserId,
        device: DeviceId,
        change: presence::DeviceChange,
    ) {
        let core = self.home_core(user);
        if core == self.me {
            self.presence.borrow_mut().device(user, device, change);
        } else {
            self.outbox.borrow_mut()[core].push(Item::PresenceDevice(user, device, change));
            self.tick.raise();
        }
    }

    /// Replaces `conn`'s presence subscriptions and asks for the current state of each user.
    pub(crate) fn subscribe_presence(&self, core: &Core, conn: &Conn, users: &[UserId]) {
        let mut users = users.to_vec();
        users.sort_unstable();
        users.dedup();
        let old = std::mem::replace(&mut *conn.presence_subs.borrow_mut(), users.clone());
        let id = conn.id.get();
        self.presence.borrow_mut().subscribe(id, &old, &users);
        for user in users {
            let pc = self.home_core(user);
            if pc == self.me {
                let (online, last_seen) = self.presence.borrow().state(user);
                self.presence_local(core, user, online, last_seen, Some(id));
            } else {
                self.outbox.borrow_mut()[pc].push(Item::PresenceQuery(user, id));
            }
        }
        self.tick.raise();
    }

    /// Sends a presence to one connection on this core (`target`), or to this core's
    /// subscribers of `user`.
    fn presence_local(
        &self,
        core: &Core,
        user: UserId,
        online: bool,
        last_seen_ms: u64,
        target: Option<u64>,
    ) {
        let frame = ServerFrame::Presence(wire::Presence {
            user,
            online,
            last_seen_ms,
        });
        let ids: Vec<u64> = match target {
            Some(id) => vec![id],
            None => self.presence.borrow().subscribers(user).to_vec(),
        };
        if ids.is_empty() {
            return;
        }
        let Some(frame) = core.encode(&frame) else {
            return;
        };
        let conns = self.conns.borrow();
        for id in ids {
            if let Some(conn) = conns.get(&local_id(id)) {
                core.send(conn, frame.clone());
            }
        }
    }

    /// Counts a request against its user's rate limit of `kind` (on the user's home core),
    /// then carries out `then`, or answers `RateLimited`.
    pub fn submit_limited(&self, core: &Core, origin: Origin, kind: limits::LimitKind, then: Then) {
        let home = self.home_core(origin.user);
        if home == self.me {
            self.limit_here(core, origin, kind, then);
        } else {
            self.outbox.borrow_mut()[home].push(Item::Limited(origin, kind, then));
            self.tick.raise();
        }
    }

    /// `submit_limited` on the user's home core.
    fn limit_here(&self, core: &Core, origin: Origin, kind: limits::LimitKind, then: Then) {
        let limits = &core.config.limits;
        let taken = self
            .user_limits
            .borrow_mut()
            .take(origin.user, kind, core.now_ms(), limits);
        match (taken, then) {
            (Err(retry_after_ms), _) => {
                let answer = Answer::Error {
                    code: wire::ErrorCode::RateLimited,
                    reason: kind.reason(),
                    retry_after_ms,
                };
                self.answer(core, origin, answer);
            }
            (Ok(()), Then::Submit(op)) => self.submit(origin, op),
            (Ok(()), Then::SendWithAttachments(op)) => {
                media::send_with_attachments(core, origin, op);
            }
            (Ok(()), Then::CreateAttachment(declared)) => {
                media::spawn_create(core, origin, declared);
            }
        }
        // An answer for another core waits in the outbox for the driver.
        self.tick.raise();
    }

    /// Hands a request to its chat's owner core.
    pub fn submit(&self, origin: Origin, op: Op) {
        let owner = self.placement.owner_of(op.chat());
        if owner == self.me {
            self.inbox.borrow_mut().push(Input::Request(origin, op));
        } else {
            self.outbox.borrow_mut()[owner].push(Item::Request(origin, op));
        }
        self.tick.raise();
    }

    /// Looks up this tick's idempotency keys in one store call (one reader job and one
    /// wake-up for the lot, not one per send), then feeds each answer to the owner.
    fn lookup_all(self: &Rc<Self>) {
        let keys = std::mem::take(&mut *self.lookups.borrow_mut());
        if keys.is_empty() {
            return;
        }
        let reply = self.store.sent_many(keys.clone());
        let hub = self.clone();
        glommio::spawn_local(async move {
            let answers = reply.await.and_then(|answers| {
                if answers.len() == keys.len() {
                    Ok(answers)
                } else {
                    let why = "sent_many: wrong answer count".into();
                    Err(store::StoreError::Unavailable(why))
                }
            });
            let mut inbox = hub.inbox.borrow_mut();
            match answers {
                Ok(answers) => inbox.extend(
                    keys.into_iter()
                        .zip(answers)
                        .map(|(key, answer)| Input::LookedUp(key, Ok(answer))),
                ),
                Err(error) => inbox.extend(
                    keys.into_iter()
                        .map(|key| Input::LookedUp(key, Err(error.clone()))),
                ),
            }
            drop(inbox);
            hub.tick.raise();
        })
        .detach();
    }

    /// Feeds the owner an input from a store call.
    fn feed(&self, input: Input) {
        self.inbox.borrow_mut().push(input);
        self.tick.raise();
    }

    /// Carries out one owner action.
    fn act(self: &Rc<Self>, core: &Core, action: Action) {
        match action {
            Action::Load(chat) => {
                let reply = self.store.chat(chat);
                let hub = self.clone();
                glommio::spawn_local(async move { hub.feed(Input::Loaded(chat, reply.await)) })
                    .detach();
            }
            // Looked up together at the end of the tick (`Hub::lookup_all`).
            Action::Lookup(key) => self.lookups.borrow_mut().push(key),
            Action::Write(id, batch) => {
                let reply = self.store.write(batch);
                let hub = self.clone();
                glommio::spawn_local(async move { hub.feed(Input::Written(id, reply.await)) })
                    .detach();
            }
            Action::Answer(origin, answer) => self.answer(core, origin, answer),
            Action::Deliver(delivery) => {
                let Some(frame) =
                    frames::entry_frame(delivery.chat, delivery.seq, &delivery.entry, |f| {
                        core.encode_shared(f)
                    })
                else {
                    return;
                };
                let fanout = Arc::new(Fanout { delivery, frame });
                self.broadcast(|| Item::Deliver(fanout.clone()));
                self.deliver_local(core, &fanout);
            }
            Action::Receipt(receipt) => {
                self.broadcast(|| Item::Receipt(receipt));
                self.receipt_local(core, &receipt);
            }
            Action::Typing(typing) => {
                let typing = Arc::new(typing);
                self.broadcast(|| Item::Typing(typing.clone()));
                self.typing_local(core, &typing);
            }
        }
    }

    fn broadcast(&self, item: impl Fn() -> Item) {
        let mut outbox = self.outbox.borrow_mut();
        for (peer, queue) in outbox.iter_mut().enumerate() {
            if peer != self.me {
                queue.push(item());
            }
        }
    }

    /// [`Hub::answer`] from a task outside the driver: wakes the driver to send it on.
    fn answer_to(&self, core: &Core, origin: Origin, answer: Answer) {
        self.answer(core, origin, answer);
        self.tick.raise();
    }

    /// Sends an answer to the connection that asked (here or on its core).
    fn answer(&self, core: &Core, origin: Origin, answer: Answer) {
        let owner_core = core_of(origin.reply_to);
        if owner_core != self.me {
            if let Some(queue) = self.outbox.borrow_mut().get_mut(owner_core) {
                queue.push(Item::Answer(origin, answer));
            }
            return;
        }
        let id = local_id(origin.reply_to);
        let conn = self.conns.borrow().get(&id).cloned();
        if let Some(conn) = conn
            && let Some(frame) = frames::result(origin.request_id, &answer, |f| core.encode(f))
        {
            core.send(&conn, frame);
        }
    }

    /// The local connections of the users in `users` (sorted), each with its user.
    fn local_conns(&self, users: &[UserId]) -> Vec<Rc<Conn>> {
        let mut out = Vec::new();
        self.local_conns_into(users, &mut out);
        out
    }

    /// [`Hub::local_conns`], appended to `out`.
    fn local_conns_into(&self, users: &[UserId], out: &mut Vec<Rc<Conn>>) {
        let by_user = self.users.borrow();
        let conns = self.conns.borrow();
        let mut take = |ids: &Vec<u64>| {
            out.extend(ids.iter().filter_map(|id| conns.get(id).cloned()));
        };
        if by_user.len() < users.len() {
            for (user, ids) in by_user.iter() {
                if users.binary_search(user).is_ok() {
                    take(ids);
                }
            }
        } else {
            for user in users {
                if let Some(ids) = by_user.get(user) {
                    take(ids);
                }
            }
        }
    }

    /// Delivers a durable entry to this core's connections in its audience.
    fn deliver_local(&self, core: &Core, fanout: &Fanout) {
        let d = &fanout.delivery;
        // Buffers reused from delivery to delivery: one message allocates none here.
        let (mut conns, mut events) = (self.deliver_conns.take(), self.deliver_events.take());
        self.local_conns_into(&d.audience.users, &mut conns);
        for conn in conns.drain(..) {
            let identity = &conn.identity;
            if d.audience.except == Some((identity.user, identity.device)) {
                continue;
            }
            if let Some(session) = conn.session.borrow_mut().as_mut() {
                session.live(d.chat, d.seq, &d.entry, &mut events);
            }
            for event in events.drain(..) {
                match &event {
                    // The common case: the shared buffer, not a new encoding.
                    Event::Entry { chat, seq, .. } if *chat == d.chat && *seq == d.seq => {
                        core.send(&conn, Frame::Shared(fanout.frame.clone()));
                    }
                    _ => send_event(core, &conn, &event),
                }
            }
        }
        self.deliver_conns.set(conns);
        self.deliver_events.set(events);
    }

    fn receipt_local(&self, core: &Core, receipt: &ReceiptNotice) {
        let conns = self.local_conns(&[receipt.to]);
        if conns.is_empty() {
            return;
        }
        if let Some(frame) = core.encode(&frames::receipt(receipt)) {
            for conn in conns {
                core.send(&conn, frame.clone());
            }
        }
    }

    fn typing_local(&self, core: &Core, typing: &TypingNotice) {
        let conns = self.local_conns(&typing.audience.users);
        let mut frame = None;
        for conn in conns {
            if typing.audience.except == Some((conn.identity.user, conn.identity.device))
                || typing.user == conn.identity.user
            {
                continue;
            }
            if frame.is_none() {
                frame = core.encode(&frames::typing(typing));
            }
            if let Some(frame) = &frame {
                core.send(&conn, frame.clone());
            }
        }
    }

    /// Handles a batch of work from another core.
    fn receive(&self, core: &Core, items: Vec<Item>) {
        for item in items {
            match item {
                Item::Request(origin, op) => {
                    self.inbox.borrow_mut().push(Input::Request(origin, op));
                    self.tick.raise();
                }
                Item::Limited(origin, kind, then) => self.limit_here(core, origin, kind, then),
                Item::Answer(origin, answer) => self.answer(core, origin, answer),
                Item::Deliver(fanout) => self.deliver_local(core, &fanout),
                Item::Receipt(receipt) => self.receipt_local(core, &receipt),
                Item::Typing(typing) => self.typing_local(core, &typing),
                Item::Connected(user, device, newest) => self.replace_older(user, device, newest),
                Item::PresenceDevice(user, device, change) => {
                    self.presence.borrow_mut().device(user, device, change);
                }
                Item::PresenceQuery(user, reply_to) => {
                    let (online, last_seen) = self.presence.borrow().state(user);
                    let target = core_of(reply_to);
                    let item = Item::Presence(user, online, last_seen, Some(reply_to));
                    if let Some(queue) = self.outbox.borrow_mut().get_mut(target) {
                        queue.push(item);
                    }
                    self.tick.raise();
                }
                Item::Presence(user, online, last_seen, target) => {
                    self.presence_local(core, user, online, last_seen, target);
                }
            }
        }
    }
}

/// Encodes a session event for one connection.
fn send_event(core: &Core, conn: &Conn, event: &Event) {
    if let Some(frame) = frames::event(event, |f| core.encode(f)) {
        core.send(conn, frame);
    }
}

// Server time for entries, presence, retention; microseconds order connections of one
// device across cores.
pub(crate) use crate::clock::{unix_ms, unix_us};

/// The driver: on every wake, feeds the owner what arrived, ends the tick (`Flush`), carries
/// out the actions, then sends each peer its batch.
async fn drive(core: &Rc<Core>, hub: &Rc<Hub>) {
    let mut actions = Vec::new();
    loop {
        hub.tick.wait().await;
        let inputs = std::mem::take(&mut *hub.inbox.borrow_mut());
        let now = unix_ms();
        {
            let mut owner = hub.owner.borrow_mut();
            for input in inputs {
                owner.handle(input, now, &mut actions);
            }
            owner.handle(Input::Flush, now, &mut actions);
        }
        for action in actions.drain(..) {
            hub.act(core, action);
        }
        hub.lookup_all();
        let batches: Vec<(usize, Vec<Item>)> = hub
            .outbox
            .borrow_mut()
            .iter_mut()
            .enumerate()
            .filter(|(_, q)| !q.is_empty())
            .map(|(peer, q)| (peer, std::mem::take(q)))
            .collect();
        for (peer, batch) in batches {
            if hub.senders.send_to(peer, batch).await.is_err() {
                tracing::error!(peer, "a core's mesh channel is closed");
            }
        }
        glommio::yield_if_needed().await;
    }
}

/// One task per peer: applies the batches it sends.
fn spawn_receivers(core: &Rc<Core>, mut receivers: Receivers<Vec<Item>>) {
    for (_, rx) in receivers.streams() {
        let core = core.clone();
        glommio::spawn_local(async move {
            while let Some(batch) = rx.recv().await {
                if let Some(hub) = core.hub.get() {
                    hub.receive(&core, batch);
                }
            }
        })
        .detach();
    }
}
