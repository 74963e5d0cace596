//! A chat client for end-to-end tests: each request by name with a fresh `request_id`, every
//! server frame decoded into an owned [`Event`], and waits that keep what they skip.
//!
//! Built on [`WsClient`]; pings are answered as they are read, so an idle test client is never
//! closed for silence. It checks nothing about the protocol by itself: the tests do. It panics
//! only on what no correct server sends (a frame that does not decode, text, fragments) and when
//! a wait's deadline passes, listing what came instead.
//!
//! Invariant: events come out in arrival order; one skipped by a wait stays buffered, in order,
//! for the next wait, [`ChatClient::drain`] or [`ChatClient::expect_sync_done`].
//!
//! Layout: [`ChatClient`] here; the owned [`Event`] and its parts in `event.rs`.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use wire::{
    Ack, AttachmentId, Body, ChatId, ClientFrame, CreateChat, DeviceId, ErrorCode, FetchHistory,
    Limits, ModifyParticipants, Request, SendMessage, UserId,
};

mod event;
pub use event::{Event, Message, Page, Payload, Reply, Update};

use crate::gateway::{Gateway, IO_TIMEOUT};
use crate::ws::{Incoming, WsClient, op};

/// Longest wait for something that should come: an upper bound, never a delay.
pub const WAIT: Duration = IO_TIMEOUT;
/// How long a connection must stay silent to show that nothing more is coming.
pub const QUIET: Duration = Duration::from_millis(300);
/// A [`ChatClient::drain`] that never goes quiet for this long is a runaway server.
const DRAIN_MAX: Duration = Duration::from_secs(30);

/// A `UserId` from a test's number.
///
/// # Panics
/// When `id` is not a valid user id (0 or over `2^63-1`).
pub fn user(id: u64) -> UserId {
    UserId::new(id).unwrap_or_else(|| panic!("{id} is not a valid user id"))
}

/// A `DeviceId` from a test's number.
///
/// # Panics
/// When `id` is 0.
pub fn device(id: u64) -> DeviceId {
    DeviceId::new(id).unwrap_or_else(|| panic!("{id} is not a valid device id"))
}

/// The direct chat of users `a` and `b`.
pub fn direct(a: u64, b: u64) -> ChatId {
    ChatId::direct(user(a), user(b))
}

/// `SyncDone{chats, events}`.
pub fn sync_done(chats: u32, events: u64) -> wire::SyncDone {
    wire::SyncDone { chats, events }
}

/// A connected device of a user, speaking the chat protocol.
pub struct ChatClient {
    ws: WsClient,
    user: u64,
    device: u64,
    next_request_id: u64,
    buffered: VecDeque<Event>,
    closed: bool,
    limits: Limits,
    /// Frames skipped as `Unsupported` by the decoder (from a newer server, §5.6).
    skipped_unsupported: usize,
}

impl fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ChatClient(user {} device {}, {} buffered)",
            self.user,
            self.device,
            self.buffered.len()
        )
    }
}

impl ChatClient {
    /// Upgrades a connection for (user, device); nothing is read yet (the sync is buffered in
    /// the socket until a wait reads it).
    ///
    /// # Panics
    /// When the upgrade does not succeed.
    pub fn connect(gw: &Gateway, user: u64, device: u64) -> Self {
        Self {
            ws: gw.connect_unsynced(user, device),
            user,
            device,
            next_request_id: 1,
            buffered: VecDeque::new(),
            closed: false,
            limits: Limits::default(),
            skipped_unsupported: 0,
        }
    }

    /// Connects a device with nothing to sync: its first frame must be `SyncDone{0, 0}`.
    ///
    /// # Panics
    /// When anything else comes first, or nothing within [`WAIT`].
    pub fn connect_fresh(gw: &Gateway, user: u64, device: u64) -> Self {
        let mut client = Self::connect(gw, user, device);
        let (events, done) = client.expect_sync_done(WAIT);
        assert!(
            events.is_empty() && (done.chats, done.events) == (0, 0),
            "user {user} device {device} should have nothing to sync, got {events:?} {done:?}"
        );
        client
    }

    /// Registers a device: connects it once (nothing to sync), then closes.
    ///
    /// # Panics
    /// As [`Self::connect_fresh`].
    pub fn register(gw: &Gateway, user: u64, device: u64) {
        Self::connect_fresh(gw, user, device).close();
    }

    /// The user id.
    pub fn user(&self) -> u64 {
        self.user
    }

    /// The device id.
    pub fn device(&self) -> u64 {
        self.device
    }

    /// The raw client underneath, for what this one does not wrap.
    pub fn ws(&mut self) -> &mut WsClient {
        &mut self.ws
    }

    /// How many server frames were skipped because the decoder called them `Unsupported`.
    pub fn skipped_unsupported(&self) -> usize {
        self.skipped_unsupported
    }

    /// Sends `request` with a fresh request id and returns the id.
    ///
    /// # Panics
    /// When the socket write fails.
    pub fn request(&mut self, request: Request<'_>) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.ws
            .send_request(&ClientFrame {
                request_id,
                request,
            })
            .unwrap_or_else(|e| panic!("{self:?}: sending request {request_id}: {e}"));
        request_id
    }

    /// `CreateChat`; `members` are the other users.
    pub fn create_chat(&mut self, name: &str, members: &[u64], history: bool) -> u64 {
        let members = users(members);
        self.request(Request::CreateChat(CreateChat {
            name,
            members: &members,
            history,
        }))
    }

    /// `ModifyParticipants`.
    pub fn modify(&mut self, chat: ChatId, add: &[u64], remove: &[u64], promote: &[u64]) -> u64 {
        let (add, remove, promote) = (users(add), users(remove), users(promote));
        self.request(Request::ModifyParticipants(ModifyParticipants {
            chat,
            add: &add,
            remove: &remove,
            promote: &promote,
        }))
    }

    /// `SendMessage` with a `Text` body.
    pub fn send(&mut self, chat: ChatId, client_msg_id: u64, body: &str) -> u64 {
        self.send_body(chat, client_msg_id, Body::Text(body), &[])
    }

    /// `SendMessage` with an `Opaque` body.
    pub fn send_opaque(&mut self, chat: ChatId, client_msg_id: u64, body: &[u8]) -> u64 {
        self.send_body(chat, client_msg_id, Body::Opaque(body), &[])
    }

    /// `SendMessage` with any body and attachments.
    pub fn send_body(
        &mut self,
        chat: ChatId,
        client_msg_id: u64,
        body: Body<'_>,
        attachments: &[AttachmentId],
    ) -> u64 {
        self.request(Request::SendMessage(SendMessage {
            chat,
            client_msg_id,
            body,
            attachments,
        }))
    }

    /// `Delivered{chat, up_to_seq}`.
    pub fn delivered(&mut self, chat: ChatId, up_to_seq: u64) -> u64 {
        self.request(Request::Delivered(Ack { chat, up_to_seq }))
    }

    /// `Read{chat, up_to_seq}`.
    pub fn read(&mut self, chat: ChatId, up_to_seq: u64) -> u64 {
        self.request(Request::Read(Ack { chat, up_to_seq }))
    }

    /// `Typing{chat}`.
    pub fn typing(&mut self, chat: ChatId) -> u64 {
        self.request(Request::Typing(wire::Typing { chat }))
    }

    /// `FetchHistory{chat, before_seq, limit}`.
    pub fn fetch_history(&mut self, chat: ChatId, before_seq: u64, limit: u32) -> u64 {
        self.request(Request::FetchHistory(FetchHistory {
            chat,
            before_seq,
            limit,
        }))
    }

    /// Sends a request and waits for its `Result` (other events stay buffered).
    ///
    /// # Panics
    /// As [`Self::wait_result`].
    pub fn call(&mut self, request: Request<'_>) -> Reply {
        let id = self.request(request);
        self.wait_result(id, WAIT)
    }

    /// Creates a group and returns its id.
    ///
    /// # Panics
    /// When the answer is not `Ok` with `ChatCreated` within [`WAIT`].
    pub fn create_group(&mut self, name: &str, members: &[u64], history: bool) -> ChatId {
        let id = self.create_chat(name, members, history);
        self.wait_result(id, WAIT).chat_created()
    }

    /// Sends a text message and returns its `Sent`.
    ///
    /// # Panics
    /// When the answer is not `Ok` with `Sent` within [`WAIT`].
    pub fn send_ok(&mut self, chat: ChatId, client_msg_id: u64, body: &str) -> wire::Sent {
        let id = self.send(chat, client_msg_id, body);
        self.wait_result(id, WAIT).sent()
    }

    /// Waits for the `Result` with `request_id`, buffering everything else.
    ///
    /// # Panics
    /// When it does not come within `timeout`.
    pub fn wait_result(&mut self, request_id: u64, timeout: Duration) -> Reply {
        let event = self.wait_for(
            timeout,
            |e| matches!(e, Event::Result(r) if r.request_id == request_id),
        );
        let Event::Result(reply) = event else {
            unreachable!("the predicate matched only Results")
        };
        reply
    }

    /// The code of the `Result` with `request_id` (within [`WAIT`]).
    ///
    /// # Panics
    /// When it does not come, or is an error with a payload (§4.2: never).
    pub fn wait_code(&mut self, request_id: u64) -> ErrorCode {
        let reply = self.wait_result(request_id, WAIT);
        assert!(
            reply.code == ErrorCode::Ok || reply.payload == Payload::None,
            "an error Result with a payload: {reply:?}"
        );
        reply.code
    }

    /// Waits for the first `NewMessage`, buffering everything else.
    ///
    /// # Panics
    /// When none comes within `timeout`.
    pub fn wait_message(&mut self, timeout: Duration) -> Message {
        match self.wait_for(timeout, |e| matches!(e, Event::NewMessage(_))) {
            Event::NewMessage(m) => m,
            _ => unreachable!("the predicate matched only NewMessages"),
        }
    }

    /// Waits for the first `ChatUpdate`, buffering everything else.
    ///
    /// # Panics
    /// When none comes within `timeout`.
    pub fn wait_update(&mut self, timeout: Duration) -> Update {
        match self.wait_for(timeout, |e| matches!(e, Event::ChatUpdate(_))) {
            Event::ChatUpdate(u) => u,
            _ => unreachable!("the predicate matched only ChatUpdates"),
        }
    }

    /// Waits for the first event (buffered or new) that `predicate` accepts and takes it out;
    /// everything else stays buffered in order.
    ///
    /// # Panics
    /// When none comes within `timeout` or the connection ends first, listing what came.
    pub fn wait_for(&mut self, timeout: Duration, predicate: impl Fn(&Event) -> bool) -> Event {
        if let Some(at) = self.buffered.iter().position(&predicate) {
            return self.buffered.remove(at).expect("position is in range");
        }
        let deadline = Instant::now() + timeout;
        while let Some(event) = self.read_event(deadline) {
            if predicate(&event) {
                return event;
            }
            self.buffered.push_back(event);
        }
        panic!(
            "{self:?}: the awaited event did not come within {timeout:?} ({}); buffered: {:#?}",
            if self.closed {
                "connection closed"
            } else {
                "timed out"
            },
            self.buffered
        )
    }

    /// Everything buffered, then everything that arrives until the connection has been
    /// silent for `quiet` (or has ended).
    ///
    /// # Panics
    /// When it never goes quiet within 30 s.
    pub fn drain(&mut self, quiet: Duration) -> Vec<Event> {
        let started = Instant::now();
        let mut out: Vec<Event> = self.buffered.drain(..).collect();
        while let Some(event) = self.read_event(Instant::now() + quiet) {
            out.push(event);
            assert!(
                started.elapsed() < DRAIN_MAX,
                "{self:?}: never quiet for {quiet:?} within {DRAIN_MAX:?}"
            );
        }
        out
    }

    /// Reads up to and including the first `SyncDone`; returns the events before it, in order
    /// (the sync itself, plus any `Result` or live event that came earlier) and the `SyncDone`.
    ///
    /// # Panics
    /// When no `SyncDone` comes within `timeout` or the connection ends first.
    pub fn expect_sync_done(&mut self, timeout: Duration) -> (Vec<Event>, wire::SyncDone) {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let next = match self.buffered.pop_front() {
                Some(event) => Some(event),
                None => self.read_event(deadline),
            };
            match next {
                Some(Event::SyncDone(done)) => return (before, done),
                Some(event) => before.push(event),
                None => panic!(
                    "{self:?}: no SyncDone within {timeout:?} ({}); before it: {before:#?}",
                    if self.closed {
                        "connection closed"
                    } else {
                        "timed out"
                    },
                ),
            }
        }
    }

    /// Waits for the connection to end; returns its close code and the events before it.
    ///
    /// # Panics
    /// When it does not end within `timeout`.
    pub fn expect_close(&mut self, timeout: Duration) -> (Option<u16>, Vec<Event>) {
        let Event::Close(code) = self.wait_for(timeout, |e| matches!(e, Event::Close(_))) else {
            unreachable!("the predicate matched only Close")
        };
        (code, self.buffered.drain(..).collect())
    }

    /// Closes with 1000 and waits (up to [`WAIT`]) for the server's close or the end of the
    /// connection, so the server has seen the device go before the test goes on.
    pub fn close(mut self) {
        if self.closed {
            return;
        }
        let _ = self.ws.send_close(wire::ws::close::NORMAL);
        let deadline = Instant::now() + WAIT;
        while self.read_event(deadline).is_some() && !self.closed {}
    }

    /// The next event from the socket before `deadline`: `None` on timeout or once closed.
    fn read_event(&mut self, deadline: Instant) -> Option<Event> {
        loop {
            if self.closed {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let frame = match self.ws.next_message(left) {
                Ok(Incoming::Frame(frame)) => frame,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return None,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    panic!("{self:?}: an invalid server frame: {e}")
                }
                // EOF, or a reset: either way the connection is over.
                Ok(Incoming::Eof { .. }) | Err(_) => return Some(self.ended(None)),
            };
            match frame.opcode {
                op::BINARY if frame.fin && frame.rsv == 0 => {
                    if let Some(event) = self.decode(&frame.payload) {
                        return Some(event);
                    }
                }
                op::PONG => {}
                op::CLOSE => {
                    // Answer the close (RFC 6455 §5.5.1); the server may already be gone.
                    let code = frame.close_code();
                    let _ = self.ws.send_close(code.unwrap_or(wire::ws::close::NORMAL));
                    return Some(self.ended(code));
                }
                _ => panic!("{self:?}: the server sent {frame:?} (binary, unfragmented only)"),
            }
        }
    }

    fn ended(&mut self, code: Option<u16>) -> Event {
        self.closed = true;
        Event::Close(code)
    }

    /// A decoded frame, or `None` for one a newer server may send (skipped, §5.6).
    fn decode(&mut self, payload: &[u8]) -> Option<Event> {
        match wire::decode_server(payload, &self.limits) {
            Ok(frame) => Some(Event::from_frame(frame)),
            Err(e) if e.code == ErrorCode::Unsupported => {
                self.skipped_unsupported += 1;
                None
            }
            Err(e) => panic!(
                "{self:?}: a server frame that does not decode ({e}): {} bytes",
                payload.len()
            ),
        }
    }
}

/// Asserts that none of `clients` gets anything more: waits [`QUIET`] once for all of them,
/// then takes what each has buffered or received by then.
///
/// # Panics
/// When any of them got something, naming `what` and listing it.
pub fn assert_silent(clients: &mut [&mut ChatClient], what: &str) {
    // One shared quiet period: what the server sent meanwhile is already in each socket, so a
    // short read per client finds it.
    const READ_BUFFERED: Duration = Duration::from_millis(20);
    std::thread::sleep(QUIET);
    for client in clients.iter_mut() {
        let got = client.drain(READ_BUFFERED);
        assert!(got.is_empty(), "{what}: {client:?} got {got:#?}");
    }
}

fn users(ids: &[u64]) -> Vec<UserId> {
    ids.iter().map(|&id| user(id)).collect()
}
