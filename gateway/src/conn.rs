//! One WebSocket connection's task: the upgrade, then the frame loop until it closes.
//!
//! Owns the connection's socket and its inbound bytes. Memory: an idle connection holds its
//! `Conn` (empty queue) and the socket, nothing more: inbound bytes are read, once the socket
//! is readable, into a buffer on the thread's stack and kept only while a frame is incomplete;
//! outbound frames are shared buffers.
//! Invariants: every complete inbound message is answered or closes the connection with the
//! right code; the task never blocks its thread; it unregisters itself on every exit path.

use crate::core::{Close, Conn, Core};
use crate::inbound::{Inbound, Message};
use crate::outbound::{Flushed, Frame};
use futures_lite::AsyncRead as _;
use futures_lite::AsyncReadExt as _;
use futures_lite::AsyncWrite as _;
use glommio::net::TcpStream;
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use wire::ws::{self, close};

/// Bytes per read (on the thread's stack, not the task's). Zeroed at every poll, also the ones
/// that find nothing to read (a wake to write): small enough that this costs little, large
/// enough for a burst of chat frames per read (a larger frame takes a few reads).
const READ_BYTES: usize = 4 * 1024;
/// Bytes per read while waiting for the peer's close frame (in the closing task's state).
const CLOSE_WAIT_READ_BYTES: usize = 32;
/// Most bytes read from a peer after our close frame while waiting for its own.
const CLOSING_READ_BYTES_MAX: usize = 64 * 1024;

/// Serves one accepted connection to the end; it was admitted ([`Core::admit`]) and is
/// released here.
pub async fn serve(core: Rc<Core>, mut stream: TcpStream) {
    // Boxed: the handshake's buffers are freed before the long-lived frame loop starts.
    if let Some(upgraded) = Box::pin(crate::handshake::upgrade(&core, &mut stream)).await {
        let (slot, conn) = core.register(upgraded.identity, stream.as_raw_fd());
        if let Some(hub) = core.hub.get() {
            hub.attach(&core, &conn);
        }
        session(&core, &conn, &mut stream, upgraded.leftover).await;
        if let Some(hub) = core.hub.get() {
            hub.detach(&conn);
        }
        core.unregister(slot);
    }
    core.release();
}

enum Event {
    /// Bytes arrived and were handled; false if the peer ended the stream.
    Read(bool),
    Woken,
    Gone,
}

async fn session(core: &Core, conn: &Conn, stream: &mut TcpStream, mut leftover: Vec<u8>) {
    let mut inbound = Inbound::new(core.config.limits.frame_bytes_max);
    if !leftover.is_empty() && !absorb(core, conn, &mut inbound, &mut leftover) {
        // Boxed: the closing state is needed once, not in every idle connection.
        return Box::pin(finish(core, conn, stream, &mut inbound)).await;
    }
    drop(leftover);
    loop {
        if conn.closing.get().is_some() {
            // Boxed: the closing state is needed once, not in every idle connection.
            return Box::pin(finish(core, conn, stream, &mut inbound)).await;
        }
        let event =
            std::future::poll_fn(|cx| poll_event(cx, core, conn, stream, &mut inbound)).await;
        match event {
            Event::Gone | Event::Read(false) => return,
            Event::Woken => {}
            // A client that always has bytes ready would otherwise never let other tasks run.
            Event::Read(true) => glommio::yield_if_needed().await,
        }
    }
}

/// Takes what else has arrived without waiting, bounded so one client cannot monopolize the
/// core; stops at a short read (the socket was empty then). False if the peer is gone.
fn read_available(
    core: &Core,
    conn: &Conn,
    stream: &TcpStream,
    inbound: &mut Inbound,
    buf: &mut [u8],
) -> bool {
    for _ in 0..4 {
        if conn.closing.get().is_some() {
            break;
        }
        match read_now(stream, buf) {
            Some(0) => return false,
            Some(n) => {
                if !absorb(core, conn, inbound, &mut buf[..n]) || n < buf.len() {
                    break;
                }
            }
            None => break,
        }
    }
    true
}

/// Feeds received bytes to the frame parser and handles each complete message. False if the
/// peer is gone (its close was answered) or the connection must close.
fn absorb(core: &Core, conn: &Conn, inbound: &mut Inbound, bytes: &mut [u8]) -> bool {
    core.metrics.bytes_in.inc_by(bytes.len() as u64);
    conn.last_inbound_ms.set(core.now_ms());
    conn.pinged.set(false);
    let mut open = true;
    let result = inbound.feed(bytes, |message| match message {
        Message::Binary(payload) => {
            core.metrics.frames_in.inc();
            crate::messaging::handle_request(core, conn, payload);
        }
        Message::Ping(payload) => {
            let mut pong = Vec::with_capacity(payload.len() + 2);
            ws::write_frame(&mut pong, ws::OPCODE_PONG, payload, None);
            core.send(conn, Frame::Local(Rc::from(pong)));
        }
        Message::Close => {
            conn.request_close(Close::new(close::NORMAL, "bye"));
            open = false;
        }
    });
    if let Err(close) = result {
        conn.request_close(close);
        return false;
    }
    open
}

/// One non-blocking read: `Some(n)` bytes (0 = peer closed), `None` if nothing is there.
fn read_now(stream: &TcpStream, buf: &mut [u8]) -> Option<usize> {
    match rustix::net::recv(fd(stream), buf, rustix::net::RecvFlags::DONTWAIT) {
        Ok((n, _)) => Some(n),
        Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::INTR => None,
        Err(_) => Some(0),
    }
}

/// Polls everything a connection waits on at once: writing its queue, reading, being woken.
///
/// Reads go into a buffer on the thread's stack, handled before this returns, so an idle
/// connection keeps no read buffer: Glommio's `poll_read` waits for readiness, not for a
/// read into the buffer, and a short read arms that wait at once. So one readiness costs one
/// `recv`, not a short read, a second read and a failing third.
fn poll_event(
    cx: &mut Context<'_>,
    core: &Core,
    conn: &Conn,
    stream: &mut TcpStream,
    inbound: &mut Inbound,
) -> Poll<Event> {
    if poll_flush(cx, core, conn, stream).is_err() {
        return Poll::Ready(Event::Gone);
    }
    if conn.closing.get().is_some() {
        return Poll::Ready(Event::Woken);
    }
    let mut buf = [0u8; READ_BYTES];
    match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
        Poll::Ready(Err(_) | Ok(0)) => return Poll::Ready(Event::Gone),
        Poll::Ready(Ok(n)) => {
            // A refused frame or a close request is no reason to stop here: the loop sends
            // the close frame (`finish`). Only the peer's end of the stream is.
            let open = !absorb(core, conn, inbound, &mut buf[..n])
                || n < buf.len()
                || read_available(core, conn, stream, inbound, &mut buf);
            return Poll::Ready(Event::Read(open));
        }
        Poll::Pending => {}
    }
    if conn.wake.poll_take(cx).is_ready() {
        return Poll::Ready(Event::Woken);
    }
    Poll::Pending
}

/// Writes the queue with vectored non-blocking sends; when the socket is full, registers for
/// writability through Glommio (its `poll_write` of the front frame).
fn poll_flush(
    cx: &mut Context<'_>,
    core: &Core,
    conn: &Conn,
    stream: &mut TcpStream,
) -> std::io::Result<Flushed> {
    let mut outbound = conn.outbound.borrow_mut();
    loop {
        if outbound.is_empty() {
            return Ok(Flushed::All);
        }
        let (written, state) = outbound.flush(fd(stream))?;
        core.metrics.bytes_out.inc_by(written as u64);
        if state == Flushed::All {
            return Ok(Flushed::All);
        }
        let front = outbound.front().expect("a blocked queue is not empty");
        match Pin::new(&mut *stream).poll_write(cx, front) {
            Poll::Ready(Ok(n)) => {
                core.metrics.bytes_out.inc_by(n as u64);
                outbound.advance(n);
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(Flushed::WouldBlock),
        }
    }
}

/// Sends the close frame after what is queued (a slow consumer's queue is dropped first),
/// gives the peer `close_linger_ms` to answer it, and returns (the socket closes on drop).
async fn finish(core: &Core, conn: &Conn, stream: &mut TcpStream, inbound: &mut Inbound) {
    let Some(reason) = conn.closing.get() else {
        return;
    };
    if reason.code == close::POLICY_VIOLATION {
        conn.outbound.borrow_mut().clear();
    }
    let mut frame = Vec::with_capacity(2 + 2 + reason.reason.len());
    ws::write_close(&mut frame, reason.code, reason.reason, None);
    // The close frame goes in even over the limit: it is small and the last.
    let _ = conn
        .outbound
        .borrow_mut()
        .push(Frame::Local(Rc::from(frame)), usize::MAX);
    core.metrics.close(reason.code);
    // The closing handshake (RFC 6455 §7.1.1): wait for the peer's close frame (or EOF), then
    // close the TCP connection ourselves. A peer that never answers gets `close_linger_ms`.
    let linger = Duration::from_millis(core.config.close_linger_ms);
    let _ = glommio::timer::timeout(linger, async {
        std::future::poll_fn(|cx| match poll_flush(cx, core, conn, stream) {
            Ok(Flushed::All) | Err(_) => Poll::Ready(()),
            Ok(Flushed::WouldBlock) => Poll::Pending,
        })
        .await;
        await_peer_close(stream, inbound).await;
        Ok(())
    })
    .await;
    let _ = stream.shutdown(std::net::Shutdown::Both).await;
}

/// Reads (and ignores) what the peer still sends until its close frame or EOF, at most
/// `CLOSING_READ_BYTES_MAX` (a peer that keeps sending is not closing).
async fn await_peer_close(stream: &mut TcpStream, inbound: &mut Inbound) {
    let mut buf = [0u8; CLOSE_WAIT_READ_BYTES];
    let mut budget = CLOSING_READ_BYTES_MAX;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        budget = match budget.checked_sub(n) {
            Some(left) => left,
            None => return,
        };
        // Reads that are always ready never yield by themselves.
        glommio::yield_if_needed().await;
        let mut closed = false;
        let parsed = inbound.feed(&mut buf[..n], |m| closed |= matches!(m, Message::Close));
        if closed || parsed.is_err() {
            return;
        }
    }
}

/// The socket's descriptor, borrowed for a system call.
#[allow(unsafe_code)]
fn fd(stream: &TcpStream) -> BorrowedFd<'_> {
    // SAFETY: `stream` owns the descriptor and outlives the returned borrow (its lifetime).
    unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;
    use crate::config::Config;
    use crate::metrics::Metrics;

    /// The per-connection task is part of every idle connection's memory: keep it small (the
    /// handshake's buffers are boxed and freed; the frame loop keeps only small state).
    #[test]
    fn a_connection_task_stays_small() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config: &'static Config = Box::leak(Box::new(Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        }));
        let auth = Authenticator::from_config(config).expect("auth");
        let size = glommio::LocalExecutor::default().run(async move {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            let stream = listener.accept().await.expect("accept");
            let process = std::sync::Arc::default();
            let core = Rc::new(Core::new(0, config, auth, Metrics::new().core(0), process));
            std::mem::size_of_val(&serve(core, stream))
        });
        assert!(size <= 1024, "connection task is {size} bytes");
        eprintln!("connection task: {size} bytes");
    }
}
