//! The chat owner: the sans-IO state machine that orders and commits every change to the chats
//! it owns (DESIGN.md §3, "Ownership and order").
//!
//! Feed it [`Input`]s with the current time; it appends [`Action`]s for its driver to carry
//! out (read the store, write a batch, answer, deliver). It has no clock, socket, thread or
//! store of its own, so the simulation drives it exactly as a gateway core does.
//!
//! How a request flows:
//! 1. It joins its chat's queue. A chat not in memory is loaded first (`Action::Load`); a send
//!    whose idempotency key is not in memory is looked up (`Action::Lookup`) at once.
//! 2. Requests leave a chat's queue in arrival order, each once its lookup is back: checks
//!    (membership, roles, sizes), then the next seq, and its mutations join the pending batch.
//! 3. On `Input::Flush` (the driver's end of tick) the pending batch becomes one
//!    `Action::Write`. One write is in flight at a time; the next batch grows meanwhile, so
//!    batches grow with load (group commit).
//! 4. On `Input::Written(Ok)` every request of that write is answered (`Sent` for a message, to
//!    every waiting retry too), its entries are delivered in seq order, receipts go out, and the
//!    next batch is written if there is one.
//!
//! Invariants:
//! - Per chat, seqs are handed out gap-free and in arrival order; entries are delivered only
//!   after they are durable, in seq order.
//! - A `(user, device, client_msg_id)` is written at most once: a retry gets the first answer
//!   (from memory while recent or in flight, else from the store).
//! - Every request gets exactly one answer.
//! - A failed write fails every request of that write and of the pending batch, and forgets the
//!   chats involved (they are reloaded from the store, which has none of those seqs).

mod chat;

use std::collections::VecDeque;
use std::sync::Arc;

use foldhash::HashMap;
use smallvec::{SmallVec, smallvec};
use store::StoreError;
use store::model::{
    Change, ChatState, Entry, Message, Mutation, ReceiptKind, Role, SentRecord, Seq, Update,
    WriteBatch,
};
use wire::enums::ErrorCode;
use wire::ids::{ChatId, ChatKind, DeviceId, MessageId, UserId};

use self::chat::Chat;
use crate::types::{
    Action, Answer, Audience, Delivery, Op, Origin, ReceiptNotice, SendKey, TypingNotice, WriteId,
};

/// The owner's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerLimits {
    /// Members of a group, creator included.
    pub group_members_max: usize,
    /// Typing notices per user per chat: at most one per this many ms.
    pub typing_interval_ms: u64,
    /// Completed idempotency answers kept in memory for retries (older ones come from the
    /// store).
    pub recent_sends_max: usize,
    /// Most mutations in one write batch.
    pub batch_mutations_max: usize,
}

impl Default for OwnerLimits {
    fn default() -> Self {
        Self {
            group_members_max: 1_024,
            typing_interval_ms: 3_000,
            recent_sends_max: 65_536,
            batch_mutations_max: 4_096,
        }
    }
}

/// What happened that the owner must know.
#[derive(Debug, Clone)]
pub enum Input {
    /// A request.
    Request(Origin, Op),
    /// The answer to `Action::Load`.
    Loaded(ChatId, Result<Option<ChatState>, StoreError>),
    /// The answer to `Action::Lookup`.
    LookedUp(SendKey, Result<Option<SentRecord>, StoreError>),
    /// The outcome of `Action::Write`.
    Written(WriteId, Result<(), StoreError>),
    /// The driver's end of tick: write what is pending (if no write is in flight).
    Flush,
}

/// A request waiting in its chat's queue.
#[derive(Debug)]
struct Queued {
    origin: Origin,
    op: Op,
}

/// A chat slot: loading (requests wait) or in memory.
#[derive(Debug)]
enum Slot {
    Loading(VecDeque<Queued>),
    Ready { chat: Chat, queue: VecDeque<Queued> },
}

/// What an idempotency key is known to be.
#[derive(Debug)]
enum Known {
    /// Being looked up in the store; these chats have a send with this key queued.
    LookingUp(SmallVec<[ChatId; 1]>),
    /// Not in the store (and not sequenced yet).
    Absent,
    /// Sequenced, waiting for durability; these origins get its `Sent`.
    InFlight(SmallVec<[Origin; 1]>),
    /// Durable.
    Done(SentRecord),
}

/// What to do once a write is durable, in order.
#[derive(Debug)]
enum Effect {
    /// A message: answer every waiter of its key, deliver it.
    Sent {
        key: SendKey,
        record: SentRecord,
        delivery: Delivery,
    },
    /// Answer one request.
    Answer(Origin, Answer),
    /// Deliver an entry.
    Deliver(Delivery),
    /// A receipt.
    Receipt(ReceiptNotice),
}

/// A batch being filled or written.
#[derive(Debug, Default)]
struct Batch {
    mutations: Vec<Mutation>,
    effects: Vec<Effect>,
    chats: Vec<ChatId>,
    /// Cursor mutations by (chat, user, device, kind), for coalescing.
    cursors: HashMap<(ChatId, UserId, DeviceId, ReceiptKind), usize>,
}

/// The owner of a set of chats (on one node: the chats that hash to one core).
#[derive(Debug)]
pub struct Owner {
    limits: OwnerLimits,
    slots: HashMap<ChatId, Slot>,
    known: HashMap<SendKey, Known>,
    /// `Done` keys in completion order, for bounding `known`.
    done_order: VecDeque<SendKey>,
    pending: Batch,
    in_flight: Option<(WriteId, Batch)>,
    next_write: WriteId,
    typing: HashMap<(ChatId, UserId), u64>,
    /// Chats whose queue stopped because the pending batch was full.
    blocked: Vec<ChatId>,
    /// The time of the input being handled.
    now_ms: u64,
}

impl Owner {
    /// An owner with no chats in memory.
    pub fn new(limits: OwnerLimits) -> Self {
        Self {
            limits,
            slots: HashMap::default(),
            known: HashMap::default(),
            done_order: VecDeque::new(),
            pending: Batch::default(),
            in_flight: None,
            next_write: 1,
            typing: HashMap::default(),
            blocked: Vec::new(),
            now_ms: 0,
        }
    }

    /// Chats in memory.
    pub fn chats_in_memory(&self) -> usize {
        self.slots.len()
    }

    /// Whether a write is in flight or pending.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.pending.mutations.is_empty()
    }

    /// Handles one input at `now_ms`, appending what to do to `out`.
    pub fn handle(&mut self, input: Input, now_ms: u64, out: &mut Vec<Action>) {
        self.now_ms = self.now_ms.max(now_ms);
        match input {
            Input::Request(origin, op) => self.request(origin, op, out),
            Input::Loaded(chat, result) => self.loaded(chat, result, out),
            Input::LookedUp(key, result) => self.looked_up(key, result, out),
            Input::Written(id, result) => self.written(id, result, out),
            Input::Flush => self.flush(out),
        }
    }

    fn request(&mut self, origin: Origin, op: Op, out: &mut Vec<Action>) {
        let chat = op.chat();
        if let Op::Typing { .. } = op {
            // Ephemeral: answered at once from memory (loading the chat if needed).
            if let Some(Slot::Ready { chat: c, .. }) = self.slots.get_mut(&chat) {
                let answer = typing(&mut self.typing, c, origin, self.now_ms, &self.limits, out);
                out.push(Action::Answer(origin, answer));
                return;
            }
        }
        if let Some(key) = send_key(&origin, &op) {
            match self.known.get_mut(&key) {
                None => {
                    self.known.insert(key, Known::LookingUp(smallvec![chat]));
                    out.push(Action::Lookup(key));
                }
                Some(Known::LookingUp(chats)) => chats.push(chat),
                Some(_) => {}
            }
        }
        let queued = Queued { origin, op };
        match self.slots.get_mut(&chat) {
            Some(Slot::Loading(queue) | Slot::Ready { queue, .. }) => queue.push_back(queued),
            None => {
                if let Op::CreateChat { .. } = queued.op {
                    // A fresh random group id: nothing to load.
                    let queue = VecDeque::from([queued]);
                    self.slots.insert(
                        chat,
                        Slot::Ready {
                            chat: Chat::new_group(chat),
                            queue,
                        },
                    );
                } else {
                    self.slots
                        .insert(chat, Slot::Loading(VecDeque::from([queued])));
                    out.push(Action::Load(chat));
                    return;
                }
            }
        }
        self.drive(chat, out);
    }

    fn loaded(
        &mut self,
        id: ChatId,
        result: Result<Option<ChatState>, StoreError>,
        out: &mut Vec<Action>,
    ) {
        let Some(Slot::Loading(queue)) = self.slots.remove(&id) else {
            return; // A stale answer (the chat was forgotten and reloaded since).
        };
        match result {
            Ok(state) => match Chat::loaded(id, state.as_ref()) {
                Some(chat) => {
                    self.slots.insert(id, Slot::Ready { chat, queue });
                    self.drive(id, out);
                }
                None => {
                    // A group that does not exist: nothing to queue for.
                    for q in queue {
                        let answer = Answer::error(ErrorCode::NotFound, "no such chat");
                        self.answer_now(&q, answer, out);
                    }
                }
            },
            Err(error) => {
                tracing::warn!(%error, chat = ?id, "router: loading a chat failed");
                for q in queue {
                    let answer = store_failure(&error, &q.origin);
                    self.answer_now(&q, answer, out);
                }
            }
        }
    }

    fn looked_up(
        &mut self,
        key: SendKey,
        result: Result<Option<SentRecord>, StoreError>,
        out: &mut Vec<Action>,
    ) {
        // Updated in place: one hash lookup on this path, which every new send takes.
        let Some(known) = self.known.get_mut(&key) else {
            return; // A stale answer: the key was forgotten since.
        };
        let Known::LookingUp(chats) = known else {
            tracing::trace!(?known, "router: a stale lookup answer");
            return;
        };
        let chats = std::mem::take(chats);
        match result {
            Ok(Some(record)) => {
                *known = Known::Done(record);
                self.done_order.push_back(key);
            }
            Ok(None) => *known = Known::Absent,
            Err(error) => {
                self.known.remove(&key);
                tracing::warn!(%error, "router: an idempotency lookup failed");
                // Answer the waiting sends with an error; a retry looks up again.
                self.fail_key(key, &error, out);
                return;
            }
        }
        for chat in chats {
            self.drive(chat, out);
        }
    }

    /// Answers (with an error) every queued send whose key failed to look up.
    fn fail_key(&mut self, key: SendKey, error: &StoreError, out: &mut Vec<Action>) {
        for slot in self.slots.values_mut() {
            let (Slot::Loading(queue) | Slot::Ready { queue, .. }) = slot;
            queue.retain(|q| {
                if send_key(&q.origin, &q.op) == Some(key) {
                    out.push(Action::Answer(q.origin, store_failure(error, &q.origin)));
                    false
                } else {
                    true
                }
            });
        }
    }

    fn answer_now(&mut self, q: &Queued, answer: Answer, out: &mut Vec<Action>) {
        if let Some(key) = send_key(&q.origin, &q.op)
            && matches!(
                self.known.get(&key),
                Some(Known::Absent | Known::LookingUp(_))
            )
        {
            self.known.remove(&key);
        }
        out.push(Action::Answer(q.origin, answer));
    }

    /// Takes requests off `id`'s queue while they can be decided.
    fn drive(&mut self, id: ChatId, out: &mut Vec<Action>) {
        loop {
            let Some(Slot::Ready { chat, queue }) = self.slots.get_mut(&id) else {
                return;
            };
            let Some(front) = queue.front() else {
                return;
            };
            if let Some(key) = send_key(&front.origin, &front.op) {
                match self.known.get(&key) {
                    // Wait for the lookup; later requests keep their order.
                    Some(Known::LookingUp(_)) => return,
                    // The answer was known when this request arrived but has since been
                    // evicted from memory: ask the store again rather than guess.
                    None => {
                        self.known.insert(key, Known::LookingUp(smallvec![id]));
                        out.push(Action::Lookup(key));
                        return;
                    }
                    Some(_) => {}
                }
            }
            if self.pending.mutations.len() >= self.limits.batch_mutations_max {
                self.blocked.push(id); // The next write makes room.
                return;
            }
            let q = queue.pop_front().expect("front exists");
            decide(
                chat,
                q,
                self.now_ms,
                &self.limits,
                &mut self.known,
                &mut self.pending,
                &mut self.typing,
                out,
            );
        }
    }

    fn flush(&mut self, out: &mut Vec<Action>) {
        if self.in_flight.is_some() || self.pending.mutations.is_empty() {
            // Answers with no mutation (errors, retries) went out already; effects without
            // mutations cannot exist.
            return;
        }
        let mut batch = std::mem::take(&mut self.pending);
        let id = self.next_write;
        self.next_write += 1;
        // The mutations go to the store; the effects wait here for the outcome.
        let mutations = std::mem::take(&mut batch.mutations);
        out.push(Action::Write(id, WriteBatch { mutations }));
        self.in_flight = Some((id, batch));
    }

    fn written(&mut self, id: WriteId, result: Result<(), StoreError>, out: &mut Vec<Action>) {
        let Some((in_flight, batch)) = self.in_flight.take() else {
            return;
        };
        if in_flight != id {
            self.in_flight = Some((in_flight, batch));
            return;
        }
        match result {
            Ok(()) => self.complete(batch, out),
            Err(error) => {
                tracing::error!(%error, "router: a write failed; failing its requests");
                let pending = std::mem::take(&mut self.pending);
                for batch in [batch, pending] {
                    self.fail(batch, &error, out);
                }
            }
        }
        // Requests held back by a full batch go on now.
        let mut blocked = std::mem::take(&mut self.blocked);
        blocked.sort_unstable();
        blocked.dedup();
        for chat in blocked {
            self.drive(chat, out);
        }
        self.flush(out);
    }

    fn complete(&mut self, batch: Batch, out: &mut Vec<Action>) {
        for effect in batch.effects {
            match effect {
                Effect::Sent {
                    key,
                    record,
                    delivery,
                } => {
                    if let Some(Known::InFlight(waiters)) =
                        self.known.insert(key, Known::Done(record))
                    {
                        for origin in waiters {
                            out.push(Action::Answer(origin, Answer::Sent(record)));
                        }
                    }
                    self.done_order.push_back(key);
                    out.push(Action::Deliver(delivery));
                }
                Effect::Answer(origin, answer) => out.push(Action::Answer(origin, answer)),
                Effect::Deliver(delivery) => out.push(Action::Deliver(delivery)),
                Effect::Receipt(receipt) => out.push(Action::Receipt(receipt)),
            }
        }
        while self.done_order.len() > self.limits.recent_sends_max {
            if let Some(key) = self.done_order.pop_front()
                && matches!(self.known.get(&key), Some(Known::Done(_)))
            {
                self.known.remove(&key);
            }
        }
    }

    fn fail(&mut self, batch: Batch, error: &StoreError, out: &mut Vec<Action>) {
        for effect in batch.effects {
            match effect {
                Effect::Sent { key, .. } => {
                    if let Some(Known::InFlight(waiters)) = self.known.remove(&key) {
                        for origin in waiters {
                            out.push(Action::Answer(origin, store_failure(error, &origin)));
                        }
                    }
                }
                Effect::Answer(origin, _) => {
                    out.push(Action::Answer(origin, store_failure(error, &origin)));
                }
                Effect::Deliver(_) | Effect::Receipt(_) => {}
            }
        }
        for chat in batch.chats {
            // Forget the chat; queued requests reload it.
            if let Some(Slot::Ready { queue, .. }) = self.slots.remove(&chat) {
                if queue.is_empty() {
                    continue;
                }
                self.slots.insert(chat, Slot::Loading(queue));
                out.push(Action::Load(chat));
            }
        }
    }
}

/// The shortest wait a client is told after the store was overloaded or unreachable; each
/// request's wait is spread over `[RETRY_AFTER_MS, 2 × RETRY_AFTER_MS)` so that the clients
/// refused together do not come back together.
pub const RETRY_AFTER_MS: u32 = 500;

/// The answer to a request the store failed: `Unavailable` (nothing was done) with a
/// `retry_after_ms` when waiting helps, `Internal` when the store refused a write as invalid
/// (a bug: the owner checks what it writes).
pub fn store_failure(error: &StoreError, origin: &Origin) -> Answer {
    let spread = || {
        let mix = store::model::splitmix(origin.request_id ^ origin.user.get().rotate_left(17));
        RETRY_AFTER_MS + u32::try_from(mix % u64::from(RETRY_AFTER_MS)).unwrap_or(0)
    };
    let (code, reason, retry_after_ms) = match error {
        StoreError::Overloaded(_) => (ErrorCode::Unavailable, "store overloaded", spread()),
        StoreError::Unavailable(_) | StoreError::Closed => {
            (ErrorCode::Unavailable, "store unavailable", spread())
        }
        // Waiting does not help a read-only store; another gateway may.
        StoreError::ReadOnly(_) => (ErrorCode::Unavailable, "store is read-only", 0),
        StoreError::SeqConflict { .. } | StoreError::UnknownChat(_) | StoreError::Invalid(_) => {
            (ErrorCode::Internal, "store refused the write", 0)
        }
    };
    Answer::Error {
        code,
        reason,
        retry_after_ms,
    }
}

fn send_key(origin: &Origin, op: &Op) -> Option<SendKey> {
    match op {
        Op::Send { client_msg_id, .. } => Some((origin.user, origin.device, *client_msg_id)),
        _ => None,
    }
}

/// What `decide` works with besides the chat.
struct Ctx<'a> {
    now_ms: u64,
    limits: &'a OwnerLimits,
    known: &'a mut HashMap<SendKey, Known>,
    pending: &'a mut Batch,
    typing: &'a mut HashMap<(ChatId, UserId), u64>,
    out: &'a mut Vec<Action>,
}

/// Decides one request at the front of its chat's queue.
#[allow(clippy::too_many_arguments)]
fn decide(
    chat: &mut Chat,
    q: Queued,
    now_ms: u64,
    limits: &OwnerLimits,
    known: &mut HashMap<SendKey, Known>,
    pending: &mut Batch,
    typing_state: &mut HashMap<(ChatId, UserId), u64>,
    out: &mut Vec<Action>,
) {
    let mut cx = Ctx {
        now_ms,
        limits,
        known,
        pending,
        typing: typing_state,
        out,
    };
    let Queued { origin, op } = q;
    match op {
        Op::Send {
            client_msg_id,
            kind,
            body,
            attachments,
            ..
        } => {
            let message = Message {
                // Set with the seq in `decide_send`.
                server_msg_id: MessageId::new(1).expect("nonzero"),
                sender: origin.user,
                sender_device: origin.device,
                client_msg_id,
                ts_ms: 0,
                kind,
                body,
                attachments,
            };
            decide_send(chat, origin, message, &mut cx);
        }
        Op::CreateChat {
            name,
            members,
            history,
            ..
        } => decide_create(chat, origin, name, members, history, &mut cx),
        Op::Modify {
            add,
            remove,
            promote,
            ..
        } => {
            let max = cx.limits.group_members_max;
            match chat.plan_modify(origin.user, &add, &remove, &promote, max) {
                Err(answer) => cx.out.push(Action::Answer(origin, answer)),
                Ok(changes) if changes.is_empty() => {
                    cx.out.push(Action::Answer(origin, Answer::Ok));
                }
                Ok(changes) => {
                    for change in changes {
                        append_update(chat, origin, change, cx.now_ms, cx.pending);
                    }
                    cx.pending.effects.push(Effect::Answer(origin, Answer::Ok));
                }
            }
        }
        Op::Cursor {
            kind, up_to_seq, ..
        } => decide_cursor(chat, origin, kind, up_to_seq, &mut cx),
        Op::Typing { .. } => {
            let answer = typing(cx.typing, chat, origin, cx.now_ms, cx.limits, cx.out);
            cx.out.push(Action::Answer(origin, answer));
        }
    }
}

/// A send: a retry gets the first answer; otherwise checks, the next seq, and a pending append.
/// `message` arrives with a placeholder id and time, set here.
fn decide_send(chat: &mut Chat, origin: Origin, mut message: Message, cx: &mut Ctx<'_>) {
    let key = message.idempotency_key();
    match cx.known.get_mut(&key) {
        Some(Known::Done(record)) => {
            cx.out.push(Action::Answer(origin, Answer::Sent(*record)));
            return;
        }
        Some(Known::InFlight(waiters)) => {
            waiters.push(origin);
            return;
        }
        _ => {}
    }
    let refusal = if !chat.exists() {
        Some(Answer::error(ErrorCode::NotFound, "no such chat"))
    } else if !chat.is_member(origin.user) {
        Some(Answer::error(
            ErrorCode::NotMember,
            "not a member of the chat",
        ))
    } else {
        None
    };
    if let Some(answer) = refusal {
        cx.known.remove(&key);
        cx.out.push(Action::Answer(origin, answer));
        return;
    }
    let (seq, ts_ms) = chat.next(cx.now_ms);
    let record = SentRecord {
        chat: chat.id,
        seq,
        server_msg_id: store::model::message_id(chat.id, seq),
        ts_ms,
    };
    message.server_msg_id = record.server_msg_id;
    message.ts_ms = ts_ms;
    let entry = Arc::new(Entry::Message(message));
    cx.known.insert(key, Known::InFlight(smallvec![origin]));
    chat.note_sender(seq, origin.user);
    cx.pending.mutations.push(Mutation::Append {
        chat: chat.id,
        seq,
        entry: entry.clone(),
    });
    cx.pending.chats.push(chat.id);
    let delivery = Delivery {
        chat: chat.id,
        seq,
        entry,
        audience: Audience {
            users: chat.audience(),
            except: Some((origin.user, origin.device)),
        },
    };
    cx.pending.effects.push(Effect::Sent {
        key,
        record,
        delivery,
    });
}

/// A new group: the creator is admin, the rest members, within the size limit.
fn decide_create(
    chat: &mut Chat,
    origin: Origin,
    name: String,
    members: Vec<UserId>,
    history: bool,
    cx: &mut Ctx<'_>,
) {
    if chat.exists() {
        let answer = Answer::error(ErrorCode::Internal, "group id collision; retry");
        cx.out.push(Action::Answer(origin, answer));
        return;
    }
    let mut others: Vec<UserId> = members.into_iter().filter(|m| *m != origin.user).collect();
    others.sort_unstable();
    others.dedup();
    if others.len() + 1 > cx.limits.group_members_max {
        let answer = Answer::error(
            ErrorCode::TooManyMembers,
            "member list over group_members_max",
        );
        cx.out.push(Action::Answer(origin, answer));
        return;
    }
    let mut all: Vec<(UserId, Role)> = vec![(origin.user, Role::Admin)];
    all.extend(others.into_iter().map(|u| (u, Role::Member)));
    let change = Change::Created {
        name,
        history,
        members: all,
    };
    append_update(chat, origin, change, cx.now_ms, cx.pending);
    cx.pending
        .effects
        .push(Effect::Answer(origin, Answer::ChatCreated(chat.id)));
}

/// A cursor move, coalesced with others of the same device in this batch, and its receipts.
fn decide_cursor(
    chat: &mut Chat,
    origin: Origin,
    kind: ReceiptKind,
    up_to_seq: Seq,
    cx: &mut Ctx<'_>,
) {
    let user = origin.user;
    if !chat.exists() {
        let answer = Answer::error(ErrorCode::NotFound, "no such chat");
        cx.out.push(Action::Answer(origin, answer));
        return;
    }
    if !chat.is_member(user) {
        let answer = Answer::error(ErrorCode::NotMember, "not a member of the chat");
        cx.out.push(Action::Answer(origin, answer));
        return;
    }
    let up_to_seq = up_to_seq.min(chat.head);
    let known = chat.acked.entry((user, origin.device, kind)).or_insert(0);
    if up_to_seq <= *known {
        // Cursors never move back, and a receipt never reports less than one before it.
        cx.out.push(Action::Answer(origin, Answer::Ok));
        return;
    }
    let old = std::mem::replace(known, up_to_seq);
    let mut targets = chat.receipt_targets(old, up_to_seq, user);
    let pending = &mut *cx.pending;
    let slot = (chat.id, user, origin.device, kind);
    if let Some(&i) = pending.cursors.get(&slot) {
        // Coalesce: one mutation, and one receipt per sender, per (chat, device, kind) per
        // batch, carrying the highest ack.
        if let Mutation::Cursor { up_to_seq: u, .. } = &mut pending.mutations[i] {
            *u = (*u).max(up_to_seq);
        }
        for effect in &mut pending.effects {
            if let Effect::Receipt(r) = effect
                && (r.chat, r.user, r.device, r.kind) == slot
            {
                r.up_to_seq = r.up_to_seq.max(up_to_seq);
                targets.retain(|to| *to != r.to);
            }
        }
    } else {
        pending.cursors.insert(slot, pending.mutations.len());
        pending.mutations.push(Mutation::Cursor {
            chat: chat.id,
            user,
            device: origin.device,
            kind,
            up_to_seq,
        });
        pending.chats.push(chat.id);
    }
    for to in targets {
        pending.effects.push(Effect::Receipt(ReceiptNotice {
            chat: chat.id,
            user,
            device: origin.device,
            kind,
            up_to_seq,
            to,
        }));
    }
    pending.effects.push(Effect::Answer(origin, Answer::Ok));
}

/// Appends one membership change at the next seq.
fn append_update(
    chat: &mut Chat,
    origin: Origin,
    change: Change,
    now_ms: u64,
    pending: &mut Batch,
) {
    // Everyone who was or is a member after the change hears of it.
    let before = chat.audience();
    chat.apply(origin.user, &change);
    let after = chat.audience();
    let mut users: Vec<UserId> = before.iter().chain(after.iter()).copied().collect();
    users.sort_unstable();
    users.dedup();
    let (seq, ts_ms) = chat.next(now_ms);
    let entry = Arc::new(Entry::Update(Update {
        ts_ms,
        actor: origin.user,
        change,
    }));
    pending.mutations.push(Mutation::Append {
        chat: chat.id,
        seq,
        entry: entry.clone(),
    });
    pending.chats.push(chat.id);
    pending.effects.push(Effect::Deliver(Delivery {
        chat: chat.id,
        seq,
        entry,
        audience: Audience {
            users: users.into(),
            except: None,
        },
    }));
}

/// A typing notice, throttled per user per chat.
fn typing(
    state: &mut HashMap<(ChatId, UserId), u64>,
    chat: &mut Chat,
    origin: Origin,
    now_ms: u64,
    limits: &OwnerLimits,
    out: &mut Vec<Action>,
) -> Answer {
    if !chat.exists() {
        return Answer::error(ErrorCode::NotFound, "no such chat");
    }
    if !chat.is_member(origin.user) {
        return Answer::error(ErrorCode::NotMember, "not a member of the chat");
    }
    let slot = (chat.id, origin.user);
    if let Some(&last) = state.get(&slot) {
        let next = last + limits.typing_interval_ms;
        if now_ms < next {
            return Answer::Error {
                code: ErrorCode::RateLimited,
                reason: "typing at most once per typing_interval_ms",
                retry_after_ms: u32::try_from(next - now_ms).unwrap_or(u32::MAX),
            };
        }
    }
    state.insert(slot, now_ms);
    if chat.id.kind() == ChatKind::Group || chat.exists() {
        out.push(Action::Typing(TypingNotice {
            chat: chat.id,
            user: origin.user,
            device: origin.device,
            audience: Audience {
                users: chat.audience(),
                except: Some((origin.user, origin.device)),
            },
        }));
    }
    Answer::Ok
}
