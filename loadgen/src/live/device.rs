//! One simulated device: its connection, where it is in its life, and its side of the ledger.
//!
//! Owns a device's state machine (never connected → connecting → syncing → live → offline
//! → connecting …, or failed for good), its counters (`client_msg_id` per device, a counter
//! per chat for the ledger), the sends still awaiting their `Result`, and the requests it
//! writes (`SendMessage`, `CreateChat`, `Delivered`/`Read`). Never reads the clock or a
//! socket itself. Invariant: `pending` holds exactly the sends written and not yet answered,
//! keyed by `client_msg_id`, which is also the request id of a send.

use std::collections::{BTreeMap, HashMap};

use wire::{Ack, Body, ChatId, ClientFrame, CreateChat, Encoder, Request, SendMessage, UserId};

use crate::live::body::Stamp;
use crate::live::conn::{Conn, splitmix};
use crate::live::ledger::{Inbox, Outbox};

/// Request ids of `CreateChat` (`| group`): apart from sends, which count up from 1.
pub(crate) const CREATE_TAG: u64 = 1 << 62;
/// Request ids of `Delivered`/`Read` acks (`| n`).
pub(crate) const ACK_TAG: u64 = 1 << 61;

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Not connected yet (before the ramp reaches it).
    New,
    /// Connecting or upgrading.
    Connecting,
    /// Upgraded; receiving its sync, waiting for `SyncDone`.
    Syncing,
    /// Synced: sends and receives.
    Live,
    /// Disconnected; reconnects at `until_ns`.
    Offline { until_ns: u64 },
    /// Given up on (refused for good, or the initial connection failed).
    Failed,
}

/// A send awaiting its `Result`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    pub(crate) chat: ChatId,
    pub(crate) stamp: Stamp,
    pub(crate) body_len: usize,
}

/// One device; see the module doc.
#[derive(Debug)]
pub(crate) struct Device {
    /// Global device index in the plan.
    pub(crate) g: u32,
    pub(crate) token: String,
    pub(crate) status: Status,
    pub(crate) conn: Option<Conn>,
    /// Connection attempts so far (a timer names the attempt it was set for).
    pub(crate) attempt: u32,
    /// Failed attempts in a row (for backoff).
    pub(crate) failures: u32,
    /// When the current attempt began.
    pub(crate) conn_started_ns: u64,
    /// When the current connection's attempt began: messages meant to be sent before this
    /// were missed while away and arrive through sync.
    pub(crate) online_since_ns: u64,
    /// The server asked to reconnect after this delay (`GoAway`).
    pub(crate) go_away_ms: Option<u32>,
    /// The churn event that took it offline, until it is live again.
    pub(crate) storm: Option<u32>,
    /// It has been live at least once.
    pub(crate) ever_live: bool,
    /// It has been live again after a disconnect.
    pub(crate) reconnected: bool,
    pub(crate) inbox: Inbox,
    pub(crate) outbox: Outbox,
    next_msg: u64,
    chat_msgs: HashMap<ChatId, u64>,
    pub(crate) pending: BTreeMap<u64, Pending>,
    /// Chats with deliveries not yet acked.
    pub(crate) unacked: Vec<ChatId>,
    /// A [`crate::live::engine::Timer::Ack`] is pending for this device.
    pub(crate) ack_armed: bool,
    next_ack: u64,
    mask_state: u64,
}

impl Device {
    /// Device `g` with its token.
    pub(crate) fn new(g: u32, token: String) -> Self {
        Self {
            g,
            token,
            status: Status::New,
            conn: None,
            attempt: 0,
            failures: 0,
            conn_started_ns: 0,
            online_since_ns: 0,
            go_away_ms: None,
            storm: None,
            ever_live: false,
            reconnected: false,
            inbox: Inbox::default(),
            outbox: Outbox::default(),
            next_msg: 0,
            chat_msgs: HashMap::new(),
            pending: BTreeMap::new(),
            unacked: Vec::new(),
            ack_armed: false,
            next_ack: 0,
            mask_state: splitmix(u64::from(g)) | 1,
        }
    }

    /// Whether it can send now.
    pub(crate) fn is_live(&self) -> bool {
        self.status == Status::Live && self.conn.is_some()
    }

    /// Stamps a new message to `chat` and writes it; returns its stamp.
    pub(crate) fn send(
        &mut self,
        enc: &mut Encoder,
        chat: ChatId,
        intended_ns: u64,
        body_len: usize,
        body: &mut Vec<u8>,
    ) -> Stamp {
        self.next_msg += 1;
        let chat_msg = self.chat_msgs.entry(chat).or_default();
        *chat_msg += 1;
        let stamp = Stamp {
            sender: self.g,
            msg: self.next_msg,
            chat_msg: *chat_msg,
            intended_ns,
            resent: false,
        };
        let pending = Pending {
            chat,
            stamp,
            body_len,
        };
        self.pending.insert(stamp.msg, pending);
        self.write_send(enc, &pending, body);
        stamp
    }

    /// Writes every unanswered send again, same `client_msg_id` (PROTOCOL.md §6.3); returns
    /// how many.
    pub(crate) fn resend_pending(&mut self, enc: &mut Encoder, body: &mut Vec<u8>) -> u64 {
        for p in self.pending.values_mut() {
            p.stamp.resent = true;
        }
        let pending: Vec<Pending> = self.pending.values().copied().collect();
        for p in &pending {
            self.write_send(enc, p, body);
        }
        pending.len() as u64
    }

    fn write_send(&mut self, enc: &mut Encoder, p: &Pending, body: &mut Vec<u8>) {
        p.stamp.encode(p.body_len, body);
        let request = Request::SendMessage(SendMessage {
            chat: p.chat,
            client_msg_id: p.stamp.msg,
            body: Body::Opaque(body),
            attachments: &[],
        });
        self.write(enc, p.stamp.msg, request);
    }

    /// Writes `CreateChat` for group `group` with the other `members`.
    pub(crate) fn create_group(&mut self, enc: &mut Encoder, group: u32, members: &[UserId]) {
        let name = format!("loadgen {group}");
        let request = Request::CreateChat(CreateChat {
            name: &name,
            members,
            history: false,
        });
        self.write(enc, CREATE_TAG | u64::from(group), request);
    }

    /// Acks every chat with new deliveries (`Delivered`, and `Read` when `read`); returns
    /// how many requests it wrote.
    pub(crate) fn ack(&mut self, enc: &mut Encoder, read: bool) -> u64 {
        let mut sent = 0;
        for chat in std::mem::take(&mut self.unacked) {
            let Some(up_to_seq) = self.inbox.applied_max(chat) else {
                continue;
            };
            let ack = Ack { chat, up_to_seq };
            self.next_ack += 1;
            self.write(enc, ACK_TAG | self.next_ack, Request::Delivered(ack));
            sent += 1;
            if read {
                self.next_ack += 1;
                self.write(enc, ACK_TAG | self.next_ack, Request::Read(ack));
                sent += 1;
            }
        }
        sent
    }

    /// Writes a pong (or a close echo) for the server.
    pub(crate) fn control(&mut self, opcode: u8, payload: &[u8]) {
        let mask = self.mask();
        if let Some(conn) = self.conn.as_mut() {
            wire::ws::write_frame(conn.out(), opcode, payload, Some(mask));
        }
    }

    fn write(&mut self, enc: &mut Encoder, request_id: u64, request: Request<'_>) {
        let mask = self.mask();
        let Some(conn) = self.conn.as_mut() else {
            return; // offline: a pending send goes out again on reconnect
        };
        let frame = ClientFrame {
            request_id,
            request,
        };
        // Every frame loadgen builds is far under frame_bytes_max (bodies are validated
        // against body_bytes_max, group sizes against the gateway's), so this cannot fail.
        enc.encode_ws_client(&frame, mask, conn.out())
            .expect("loadgen's frames fit frame_bytes_max");
    }

    /// The next masking key from a xorshift64 generator (on loopback there is no
    /// intermediary to protect, so a cheap generator is enough).
    fn mask(&mut self) -> [u8; 4] {
        let s = &mut self.mask_state;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s as u32).to_le_bytes()
    }
}
