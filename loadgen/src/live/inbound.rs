//! What a device does with each frame the server sends it.
//!
//! Owns the reading of server frames: control frames (ping → pong, close → reconnect),
//! `SyncDone` (live), `NewMessage`/`ChatUpdate` (the ledger, latency from the body's intended
//! time), `Result` (a send acknowledged or refused, a group created, an ack refused),
//! `Receipt`, `GoAway`. A frame is first reduced to an owned [`Inbound`] so the socket's
//! buffer is released before the engine's state is touched. Unknown frames from a newer
//! server are skipped (PROTOCOL.md §5.6); invalid ones are counted as errors and skipped.

use wire::ws::{OPCODE_BINARY, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG};
use wire::{ChatId, DeviceId, ErrorCode, Payload, ServerFrame, UserId};

use crate::live::body::Stamp;
use crate::live::clock::us_between;
use crate::live::device::{ACK_TAG, CREATE_TAG};
use crate::live::engine::Engine;
use crate::live::ledger::Arrival;
use crate::live::protocol::WorkerLine;
use crate::live::scenario::Receipts;

/// The parts of a server frame the engine acts on, owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inbound {
    SyncDone,
    Message {
        chat: ChatId,
        seq: u64,
        sender: UserId,
        device: DeviceId,
        stamp: Option<Stamp>,
    },
    Update {
        chat: ChatId,
        seq: u64,
    },
    Result {
        request_id: u64,
        code: ErrorCode,
        created: Option<ChatId>,
        sent: bool,
    },
    Receipt,
    GoAway {
        ms: u32,
    },
    Other,
}

impl Inbound {
    /// Reduces a decoded frame.
    pub(crate) fn of(frame: &ServerFrame<'_>) -> Self {
        match frame {
            ServerFrame::SyncDone(_) => Self::SyncDone,
            ServerFrame::NewMessage(m) => Self::Message {
                chat: m.chat,
                seq: m.seq,
                sender: m.sender,
                device: m.sender_device,
                stamp: Stamp::parse(m.body.as_bytes()),
            },
            ServerFrame::ChatUpdate(u) => Self::Update {
                chat: u.chat,
                seq: u.seq,
            },
            ServerFrame::Result(r) => Self::Result {
                request_id: r.request_id,
                code: r.code,
                created: match r.payload {
                    Payload::ChatCreated(c) => Some(c.chat),
                    _ => None,
                },
                sent: matches!(r.payload, Payload::Sent(_)),
            },
            ServerFrame::Receipt(_) => Self::Receipt,
            ServerFrame::GoAway(g) => Self::GoAway {
                ms: g.reconnect_after_ms,
            },
            ServerFrame::Presence(_) | ServerFrame::Typing(_) | ServerFrame::Truncated(_) => {
                Self::Other
            }
        }
    }
}

impl Engine {
    /// Handles every whole frame buffered on `dev`'s connection.
    pub(crate) fn frames(&mut self, dev: u32, now: u64) {
        loop {
            let d = &mut self.devices[dev as usize];
            let Some(conn) = d.conn.as_mut() else { return };
            let frame = match conn.reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => return self.lost(dev, &format!("framing: {e}"), now),
            };
            let inbound = match frame.opcode {
                OPCODE_BINARY => match wire::decode_server(frame.payload, &self.setup.limits) {
                    Ok(decoded) => Inbound::of(&decoded),
                    Err(e) if e.code == ErrorCode::Unsupported => Inbound::Other,
                    Err(e) => {
                        self.stats
                            .fail(format!("bad frame from server: {}", e.reason));
                        continue;
                    }
                },
                OPCODE_PING => {
                    let payload = frame.payload.to_vec();
                    d.control(OPCODE_PONG, &payload);
                    self.dirty.push(dev);
                    continue;
                }
                OPCODE_CLOSE => {
                    let code = frame
                        .payload
                        .get(..2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]));
                    let echo = code.unwrap_or(wire::ws::close::NORMAL).to_be_bytes();
                    d.control(OPCODE_CLOSE, &echo);
                    if let Some(conn) = d.conn.as_mut() {
                        let _ = conn.flush(); // best effort: the socket closes next
                    }
                    let code = code.map_or_else(|| "without code".into(), |c| c.to_string());
                    return self.lost(dev, &format!("server close {code}"), now);
                }
                OPCODE_PONG => continue,
                other => return self.lost(dev, &format!("unexpected opcode {other}"), now),
            };
            self.inbound(dev, inbound, now);
        }
    }

    fn inbound(&mut self, dev: u32, inbound: Inbound, now: u64) {
        match inbound {
            Inbound::SyncDone => self.synced(dev, now),
            Inbound::Message {
                chat,
                seq,
                sender,
                device,
                stamp,
            } => self.message(dev, chat, seq, (sender, device), stamp, now),
            Inbound::Update { chat, seq } => {
                self.stats.counts.chat_updates += 1;
                let d = &mut self.devices[dev as usize];
                if d.inbox.on_event(chat, seq, None) == Arrival::New {
                    self.mark_unacked(dev, chat, now);
                }
            }
            Inbound::Result {
                request_id,
                code,
                created,
                sent,
            } => self.result(dev, request_id, code, created, sent, now),
            Inbound::Receipt => self.stats.counts.receipts_received += 1,
            Inbound::GoAway { ms } => self.devices[dev as usize].go_away_ms = Some(ms),
            Inbound::Other => {}
        }
    }

    fn message(
        &mut self,
        dev: u32,
        chat: ChatId,
        seq: u64,
        (sender, device): (UserId, DeviceId),
        stamp: Option<Stamp>,
        now: u64,
    ) {
        let plan = &self.setup.plan;
        let from = plan
            .user_index(sender)
            .and_then(|u| plan.device_index(u, device));
        // A body that names another device than the frame's sender is corrupted (or not
        // ours): the ledger sees it as an event with no message.
        let stamp = stamp.filter(|s| Some(s.sender) == from);
        if stamp.is_none() {
            self.stats.counts.foreign_messages += 1;
        }
        let d = &mut self.devices[dev as usize];
        if d.inbox.on_event(chat, seq, stamp.as_ref()) != Arrival::New {
            return;
        }
        if let Some(s) = stamp {
            if s.resent {
                self.stats.counts.resent_deliveries += 1;
            } else if s.intended_ns >= d.online_since_ns {
                self.stats
                    .on_delivery(s.intended_ns, us_between(s.intended_ns, now));
            } else {
                self.stats.counts.catchup_deliveries += 1;
            }
        }
        self.mark_unacked(dev, chat, now);
    }

    fn mark_unacked(&mut self, dev: u32, chat: ChatId, now: u64) {
        if self.setup.scenario.receipts == Receipts::None {
            return;
        }
        let d = &mut self.devices[dev as usize];
        if !d.unacked.contains(&chat) {
            d.unacked.push(chat);
        }
        if !d.ack_armed {
            self.arm_ack(dev, now);
        }
    }

    fn result(
        &mut self,
        dev: u32,
        request_id: u64,
        code: ErrorCode,
        created: Option<ChatId>,
        sent: bool,
        now: u64,
    ) {
        if request_id & CREATE_TAG != 0 {
            let group = (request_id & !CREATE_TAG) as u32;
            match created {
                Some(id) if code == ErrorCode::Ok && self.groups.set(group, id).is_ok() => {
                    self.lines.push(WorkerLine::Chat { group, id });
                }
                _ => self.stats.fail(format!("CreateChat: {code:?}")),
            }
            self.creates_left = self.creates_left.saturating_sub(1);
            return;
        }
        if request_id & ACK_TAG != 0 {
            if code != ErrorCode::Ok {
                self.stats.fail(format!("Delivered/Read: {code:?}"));
            }
            return;
        }
        let d = &mut self.devices[dev as usize];
        // An answer for a send no longer pending (a resend's twin) has nothing to add.
        let Some(p) = d.pending.remove(&request_id) else {
            return;
        };
        if code == ErrorCode::Ok && sent {
            d.outbox.acked(p.chat, p.stamp.chat_msg);
            let latency = us_between(p.stamp.intended_ns, now);
            if p.stamp.resent {
                self.stats.counts.acked += 1; // the sender's time offline is not the server's
            } else {
                self.stats.on_sent(p.stamp.intended_ns, latency);
            }
        } else {
            self.stats.counts.refused += 1;
            self.stats.fail(format!("SendMessage: {code:?}"));
        }
    }
}
