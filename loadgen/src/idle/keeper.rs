//! A worker's idle keeper: one thread that owns every established connection of its process,
//! answers the server's pings, and notices connections the server drops.
//!
//! Owns the connections after their handshake (handed over on a channel) and an epoll set over
//! them. Never writes anything but pongs and close replies, so the connections stay idle as far
//! as the gateway can tell. Invariant: a connection is in the epoll set exactly while it is in
//! `conns` (closing its socket removes it from the set).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{Receiver, TryRecvError};

use anyhow::{Context, Result};
use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};

use crate::frame::{Event, FrameReader};
use crate::idle::protocol::WorkerLine;
use crate::idle::worker::say;

/// How often the keeper looks for new connections while the ramp is on.
const RAMP_POLL: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 20_000_000,
};
/// How long it sleeps in epoll once every connection has been handed over.
const IDLE_POLL: Timespec = Timespec {
    tv_sec: 1,
    tv_nsec: 0,
};
/// Events taken per epoll wait.
const EVENTS_PER_WAIT: usize = 1024;
/// Bytes read per `read` call; idle traffic is a ping now and then.
const READ_CHUNK_BYTES: usize = 4096;

/// A connection whose handshake is done, with the bytes the server sent after its response.
pub(crate) struct Handoff {
    pub(crate) stream: TcpStream,
    pub(crate) leftover: Vec<u8>,
}

struct Conn {
    stream: TcpStream,
    reader: FrameReader,
}

/// Totals reported to the coordinator whenever they change.
#[derive(Default, Clone, PartialEq, Eq)]
struct Stats {
    pings: u64,
    frames: u64,
    lost: BTreeMap<String, u64>,
    last_loss: String,
}

/// The keeper's state: see the module doc.
pub(crate) struct Keeper {
    epoll: OwnedFd,
    conns: Vec<Option<Conn>>,
    stats: Stats,
    reported: Stats,
    /// Outgoing control frames for the connection being serviced.
    out: Vec<u8>,
    /// xorshift state for client masks (RFC 6455 wants them unpredictable to intermediaries;
    /// on loopback there are none, so a cheap generator is enough).
    mask_state: u64,
}

impl Keeper {
    /// A keeper with room for `capacity` connections.
    pub(crate) fn new(capacity: usize) -> Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).context("epoll_create")?;
        Ok(Self {
            epoll,
            conns: Vec::with_capacity(capacity),
            stats: Stats::default(),
            reported: Stats::default(),
            out: Vec::with_capacity(256),
            mask_state: 0x9E37_79B9_7F4A_7C15,
        })
    }

    /// Runs until the process exits (the coordinator closes stdin).
    pub(crate) fn run(mut self, handoffs: &Receiver<Handoff>) -> Result<()> {
        let mut events = Vec::with_capacity(EVENTS_PER_WAIT);
        let mut ramp_on = true;
        loop {
            loop {
                match handoffs.try_recv() {
                    Ok(handoff) => self.adopt(handoff)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        ramp_on = false;
                        break;
                    }
                }
            }
            let timeout = if ramp_on { RAMP_POLL } else { IDLE_POLL };
            events.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut events), Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e).context("epoll_wait"),
            }
            for event in &events {
                // Slots are indices into `conns`, registered by `adopt`.
                self.service(event.data.u64() as usize);
            }
            if self.stats != self.reported {
                let lost = self.stats.lost.values().sum();
                let s = &self.stats;
                let last_loss = s.last_loss.clone();
                say(&WorkerLine::Keeper {
                    pings: s.pings,
                    frames: s.frames,
                    lost,
                    last_loss,
                });
                self.reported = self.stats.clone();
            }
        }
    }

    fn adopt(&mut self, handoff: Handoff) -> Result<()> {
        let slot = self.conns.len();
        epoll::add(
            &self.epoll,
            &handoff.stream,
            epoll::EventData::new_u64(slot as u64),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        )
        .context("epoll_ctl ADD")?;
        self.conns.push(Some(Conn {
            stream: handoff.stream,
            reader: FrameReader::default(),
        }));
        if !handoff.leftover.is_empty() {
            self.consume(slot, &handoff.leftover);
        }
        Ok(())
    }

    /// Reads everything the socket in `slot` holds and acts on it.
    fn service(&mut self, slot: usize) {
        let mut chunk = [0_u8; READ_CHUNK_BYTES];
        loop {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            match conn.stream.read(&mut chunk) {
                Ok(0) => return self.drop_conn(slot, "closed without a close frame".into()),
                Ok(n) => self.consume(slot, &chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.drop_conn(slot, format!("read: {e}")),
            }
        }
    }

    /// Feeds `data` to the connection's frame reader, answering pings and closes.
    fn consume(&mut self, slot: usize, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let (out, stats, mask_state) = (&mut self.out, &mut self.stats, &mut self.mask_state);
        let mut close = None;
        let fed = conn.reader.feed(data, &mut |event| match event {
            Event::Ping(payload) => {
                stats.pings += 1;
                wire::ws::write_frame(out, wire::ws::OPCODE_PONG, payload, Some(mask(mask_state)));
            }
            Event::Close(code) => close = Some(code),
            Event::Data => stats.frames += 1,
        });
        if let Some(code) = close {
            let echo = code.unwrap_or(wire::ws::close::NORMAL);
            wire::ws::write_close(&mut self.out, echo, "", Some(mask(&mut self.mask_state)));
        }
        let wrote = self.flush(slot);
        match (fed, close, wrote) {
            (Err(e), _, _) => self.drop_conn(slot, format!("protocol: {e}")),
            (Ok(()), Some(code), _) => {
                let code = code.map_or_else(|| "without code".into(), |c| c.to_string());
                self.drop_conn(slot, format!("server close {code}"));
            }
            (Ok(()), None, Err(e)) => self.drop_conn(slot, format!("write: {e}")),
            (Ok(()), None, Ok(())) => {}
        }
    }

    /// Writes the queued control frames; a full send buffer on an idle socket means trouble.
    fn flush(&mut self, slot: usize) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = match self.conns.get_mut(slot).and_then(Option::as_mut) {
            Some(conn) => conn.stream.write_all(&self.out),
            None => Ok(()),
        };
        self.out.clear();
        result
    }

    fn drop_conn(&mut self, slot: usize, reason: String) {
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) {
            drop(conn.stream); // closing the socket also removes it from the epoll set
            *self.stats.lost.entry(reason.clone()).or_default() += 1;
            self.stats.last_loss = reason;
        }
    }
}

/// The next masking key from a xorshift64 generator.
fn mask(state: &mut u64) -> [u8; 4] {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state as u32).to_le_bytes()
}
