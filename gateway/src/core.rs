//! One core's state: its connections, its metrics, its encoder, its clock, and the tasks that
//! look after all connections at once (heartbeats, idle timeouts, drain).
//!
//! Owns everything a core shares between its tasks, in `Cell`/`RefCell` (one thread only).
//! Invariants: a connection is in `conns` exactly while its task runs past the upgrade;
//! `active` counts this core's accepted connections still alive (handshaking or upgraded);
//! `Process::connections` counts them over all cores and never exceeds `connections_max`; no
//! per-connection timer exists (one sweep per core).

use crate::auth::{Authenticator, Identity};
use crate::config::Config;
use crate::metrics::CoreMetrics;
use crate::outbound::{Frame, Outbound};
use crate::signal::Signal;
use std::cell::{Cell, RefCell};
use std::os::fd::{BorrowedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wire::UserId;
use wire::ws::{self, close};

/// A server ping with an empty payload (RFC 6455 control frame, unmasked).
static PING: [u8; 2] = [0x80 | ws::OPCODE_PING, 0];

/// A reason to close a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    /// The WebSocket close code (`wire::ws::close`).
    pub code: u16,
    /// A short reason for the close frame.
    pub reason: &'static str,
}

impl Close {
    /// A close with `code` and `reason`.
    pub const fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason }
    }
}

/// One upgraded connection, as the rest of the core sees it.
pub struct Conn {
    /// Who is connected.
    pub identity: Identity,
    /// Frames waiting to be written.
    pub outbound: RefCell<Outbound>,
    /// Wakes the connection's task (new outbound frames, a close request).
    pub wake: Signal,
    /// When bytes last arrived (ms on the core's clock).
    pub last_inbound_ms: Cell<u64>,
    /// A ping was sent since bytes last arrived.
    pub pinged: Cell<bool>,
    /// Set once the connection must close; the task sends the close frame and exits.
    pub closing: Cell<Option<Close>>,
    /// Where answers for this connection go (`Origin::reply_to`: core and id); 0 until the
    /// messaging hub attaches it.
    pub id: Cell<u64>,
    /// Its socket while it is registered (`None` once unregistered, before the socket
    /// closes): lets a push that finds the queue full write out what the socket takes first
    /// ([`Core::send`]).
    pub fd: Cell<Option<RawFd>>,
    /// Its stream state (sync merged with live), while attached.
    pub session: RefCell<Option<Box<router::session::Session>>>,
    /// When the hub attached it (µs since the epoch), to tell older connections of the same
    /// device from newer ones.
    pub attached_us: Cell<u64>,
    /// Users whose presence this connection subscribed to (sorted).
    pub presence_subs: RefCell<Vec<UserId>>,
    /// The device's send rate limit bucket (`send_burst`, `send_per_s`).
    pub send_bucket: Cell<crate::messaging::limits::Bucket>,
}

impl Conn {
    /// Asks the connection's task to close with `close` (the first request wins).
    pub fn request_close(&self, close: Close) {
        if self.closing.get().is_none() {
            self.closing.set(Some(close));
        }
        self.wake.raise();
    }
}

/// What all cores share: two atomics, touched once per connection or once per drain, never
/// per message.
#[derive(Default)]
pub struct Process {
    /// Set by the signal thread when the drain starts; read by every core and `/readyz`.
    pub draining: AtomicBool,
    /// Accepted connections alive in the whole process (for `connections_max`).
    pub connections: AtomicUsize,
}

/// A core.
pub struct Core {
    /// This core's index, `0..cores`.
    pub index: usize,
    /// The configuration (lives as long as the process).
    pub config: &'static Config,
    /// Token verification.
    pub auth: Authenticator,
    /// This core's metric handles.
    pub metrics: CoreMetrics,
    /// A reusable encoder (frames are built one at a time on a core).
    pub encoder: RefCell<wire::Encoder>,
    /// Where [`Core::encode`] frames a message before it is copied into its shared buffer
    /// (one allocation per frame, sized exactly, instead of a growing `Vec` and a copy).
    scratch: RefCell<Vec<u8>>,
    /// State shared by every core.
    pub process: Arc<Process>,
    /// This core's accepted connections still alive (handshaking or upgraded).
    pub active: Cell<usize>,
    /// Raised once when this core starts draining (the accept loop waits on it).
    pub drain_started: Signal,
    /// Messaging (set once at start, after the cores joined their mesh).
    pub hub: std::cell::OnceCell<Rc<crate::messaging::Hub>>,
    conns: RefCell<Vec<Option<Rc<Conn>>>>,
    free: RefCell<Vec<usize>>,
    epoch: Instant,
}

impl Core {
    /// A core with no connections.
    pub fn new(
        index: usize,
        config: &'static Config,
        auth: Authenticator,
        metrics: CoreMetrics,
        process: Arc<Process>,
    ) -> Self {
        Self {
            index,
            config,
            auth,
            metrics,
            encoder: RefCell::new(wire::Encoder::new(&config.limits)),
            scratch: RefCell::new(Vec::new()),
            process,
            active: Cell::new(0),
            drain_started: Signal::default(),
            hub: std::cell::OnceCell::new(),
            conns: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            epoch: Instant::now(),
        }
    }

    /// Whether the process is draining (no new upgrades; connections get `GoAway`).
    pub fn draining(&self) -> bool {
        self.process.draining.load(Ordering::Relaxed)
    }

    /// Counts an accepted connection against `connections_max`; false (and nothing counted)
    /// if the process is full. Every `true` is paired with one [`Core::release`].
    pub fn admit(&self) -> bool {
        let before = self.process.connections.fetch_add(1, Ordering::Relaxed);
        if before >= self.config.connections_max {
            self.process.connections.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        self.active.set(self.active.get() + 1);
        true
    }

    /// An admitted connection has ended.
    pub fn release(&self) {
        self.active.set(self.active.get() - 1);
        self.process.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Milliseconds on this core's clock.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers an upgraded connection; returns its slot.
    pub fn register(&self, identity: Identity, fd: RawFd) -> (usize, Rc<Conn>) {
        let conn = Rc::new(Conn {
            identity,
            fd: Cell::new(Some(fd)),
            outbound: RefCell::new(Outbound::default()),
            wake: Signal::default(),
            last_inbound_ms: Cell::new(self.now_ms()),
            pinged: Cell::new(false),
            closing: Cell::new(None),
            id: Cell::new(0),
            attached_us: Cell::new(0),
            presence_subs: RefCell::new(Vec::new()),
            session: RefCell::new(None),
            send_bucket: Cell::default(),
        });
        let mut conns = self.conns.borrow_mut();
        let slot = if let Some(slot) = self.free.borrow_mut().pop() {
            conns[slot] = Some(conn.clone());
            slot
        } else {
            conns.push(Some(conn.clone()));
            conns.len() - 1
        };
        self.metrics.connections_open.inc();
        (slot, conn)
    }

    /// Removes a connection whose task is ending.
    pub fn unregister(&self, slot: usize) {
        let removed = self.conns.borrow_mut()[slot].take();
        debug_assert!(removed.is_some(), "slot {slot} unregistered twice");
        if let Some(conn) = removed {
            // Other holders of the `Rc` must not write to a socket that is about to close.
            conn.fd.set(None);
        }
        self.free.borrow_mut().push(slot);
        self.metrics.connections_open.dec();
    }

    /// Upgraded connections now.
    pub fn open(&self) -> usize {
        self.conns.borrow().len() - self.free.borrow().len()
    }

    /// Queues `frame` for `conn`, or closes it as a slow consumer when its queue is full.
    /// A connection that is closing takes nothing more (its close frame is queued last).
    ///
    /// A full queue is first written out as far as the socket takes it: a queue fills without
    /// any fault of the peer when this core fell behind (a stall) and then hands one
    /// connection a burst of frames faster than its task gets to write them. Only a peer
    /// whose socket takes no more, one that is not reading, is closed as slow.
    pub fn send(&self, conn: &Conn, frame: Frame) {
        if conn.closing.get().is_some() {
            return;
        }
        let max = self.config.send_queue_bytes_max;
        let mut outbound = conn.outbound.borrow_mut();
        if !outbound.has_room(&frame, max) {
            self.write_ahead(conn, &mut outbound);
        }
        let pushed = outbound.push(frame, max);
        drop(outbound);
        if pushed.is_err() {
            self.metrics.queue_drops.inc();
            conn.request_close(Close::new(close::POLICY_VIOLATION, "slow consumer"));
            return;
        }
        self.metrics.frames_out.inc();
        conn.wake.raise();
    }

    /// Writes `conn`'s queue as far as its socket takes it now, without waiting (errors are
    /// left to the connection's task, which sees them on its next write or read).
    fn write_ahead(&self, conn: &Conn, outbound: &mut Outbound) {
        let Some(fd) = conn.fd.get() else {
            return;
        };
        // SAFETY: `fd` is the connection's socket, open while the connection is registered:
        // `unregister` clears it before the connection's task drops the socket, and both run
        // on this thread.
        #[allow(unsafe_code)]
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Ok((written, _)) = outbound.flush(fd)
            && written > 0
        {
            self.metrics.bytes_out.inc_by(written as u64);
            self.metrics.queue_write_aheads.inc();
        }
    }

    /// Pings connections silent for `heartbeat_interval_ms`, closes those silent for
    /// `idle_timeout_ms` (4000) and those whose token expired (4003); runs until the core
    /// drains.
    pub async fn sweep_forever(&self) {
        let (beat, idle) = (
            self.config.heartbeat_interval_ms,
            self.config.idle_timeout_ms,
        );
        // Four sweeps per heartbeat interval bound the lateness of a ping to a quarter of it.
        let tick = Duration::from_millis((beat / 4).clamp(10, 5_000));
        while !self.draining() {
            glommio::timer::sleep(tick).await;
            let now = self.now_ms();
            let unix_s = crate::clock::unix_s();
            // `send` and `request_close` never touch `conns`, so the borrow is safe to hold.
            for conn in self.conns.borrow().iter().flatten() {
                let silent = now.saturating_sub(conn.last_inbound_ms.get());
                if unix_s > conn.identity.valid_until_s {
                    conn.request_close(Close::new(close::TOKEN_EXPIRED, "token expired"));
                } else if silent >= idle {
                    conn.request_close(Close::new(close::IDLE_TIMEOUT, "idle timeout"));
                } else if silent >= beat && !conn.pinged.get() {
                    conn.pinged.set(true);
                    self.send(conn, Frame::Static(&PING));
                }
            }
        }
    }

    /// Starts the drain: stop accepting, send every client `GoAway` with a jittered reconnect
    /// delay, then close each with 1001. Returns once every connection of the process is gone
    /// or the drain timeout passes.
    pub async fn drain(&self) {
        self.drain_started.raise();
        let window = self.config.drain_window_ms.max(1);
        for conn in self.conns.borrow().iter().flatten() {
            let delay = rand::random_range(0..window);
            let goaway = wire::ServerFrame::GoAway(wire::GoAway {
                reconnect_after_ms: u32::try_from(delay).unwrap_or(u32::MAX),
            });
            if let Some(frame) = self.encode(&goaway) {
                self.send(conn, frame);
            }
            conn.request_close(Close::new(close::GOING_AWAY, "server draining"));
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.drain_timeout_ms);
        // Every core waits for the whole process (not just its own connections): core 0 also
        // serves `/readyz`, which must answer 503 until the last connection is gone.
        while self.process.connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Encodes a server frame as a complete WebSocket frame, ready to share on this core.
    pub fn encode(&self, frame: &wire::ServerFrame<'_>) -> Option<Frame> {
        self.encode_with(frame, |bytes| Frame::Local(Rc::from(bytes)))
    }

    /// Encodes a server frame as a complete WebSocket frame, to share across cores.
    pub fn encode_shared(&self, frame: &wire::ServerFrame<'_>) -> Option<Arc<[u8]>> {
        self.encode_with(frame, |bytes| Arc::from(bytes))
    }

    fn encode_with<T>(
        &self,
        frame: &wire::ServerFrame<'_>,
        share: impl FnOnce(&[u8]) -> T,
    ) -> Option<T> {
        let mut out = self.scratch.borrow_mut();
        out.clear();
        match self.encoder.borrow_mut().encode_ws(frame, &mut out) {
            Ok(()) => Some(share(&out)),
            Err(e) => {
                // Our own frames are bounded by the limits; this is a bug, not input.
                tracing::error!(error = %e, "cannot encode a server frame");
                None
            }
        }
    }
}
