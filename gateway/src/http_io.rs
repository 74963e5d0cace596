//! A Glommio `TcpStream` as hyper's IO (`hyper::rt::{Read, Write}`), for the HTTP servers (ops,
//! media) and the HTTP client (the S3 backend's `HEAD`/`DELETE`).
//!
//! Owns the bridge between Glommio's `futures-lite` IO traits and hyper's, and an optional idle
//! timeout: hyper has no timer on Glommio (its `Timer` must be `Send`), so a connection that
//! makes no progress in either direction for that long fails with `TimedOut` instead.
//! Invariants: no `unsafe` (hyper's read buffer is filled by copying from a per-thread scratch
//! buffer, never written uninitialised); nothing here blocks the executor.

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use std::cell::RefCell;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

/// Bytes handed to hyper per read at most: large enough that a 100 MiB upload is not thousands
/// of tiny reads, small enough to copy cheaply. One scratch buffer per executor thread.
const READ_CHUNK_BYTES: usize = 64 * 1024;

thread_local! {
    /// The executor thread's read scratch (a thread runs one poll at a time).
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK_BYTES].into());
}

/// A Glommio stream as hyper's IO.
pub struct Io {
    stream: TcpStream,
    idle: Option<Idle>,
}

/// The idle deadline: `last` progress, and a timer that wakes the task to look at it.
struct Idle {
    limit: Duration,
    last: Instant,
    timer: Option<Timer>,
}

impl Io {
    /// `stream` with no idle timeout (the caller bounds the connection some other way).
    pub fn new(stream: TcpStream) -> Self {
        Self { stream, idle: None }
    }

    /// `stream`, failing with `TimedOut` once neither direction moved a byte for `limit`.
    pub fn with_idle_timeout(stream: TcpStream, limit: Duration) -> Self {
        let idle = Idle {
            limit,
            last: Instant::now(),
            timer: None,
        };
        Self {
            stream,
            idle: Some(idle),
        }
    }

    fn progressed(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.last = Instant::now();
        }
    }

    /// Called when the stream is not ready: `Ready(TimedOut)` once the connection has been
    /// idle too long, else `Pending` with the task also woken at the deadline.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let Some(idle) = &mut self.idle else {
            return Poll::Pending;
        };
        loop {
            let left = idle.limit.saturating_sub(idle.last.elapsed());
            if left.is_zero() {
                return Poll::Ready(std::io::ErrorKind::TimedOut.into());
            }
            let timer = idle.timer.get_or_insert_with(|| Timer::new(left));
            ready!(Pin::new(timer).poll(cx));
            // It fired: progress may have happened since it was set; re-arm for what is left.
            idle.timer = None;
        }
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let want = buf.remaining().min(READ_CHUNK_BYTES);
        let polled = SCRATCH.with_borrow_mut(|chunk| {
            let read = Pin::new(&mut this.stream).poll_read(cx, &mut chunk[..want]);
            if let Poll::Ready(Ok(n)) = read {
                buf.put_slice(&chunk[..n]);
            }
            read
        });
        match polled {
            Poll::Ready(result) => {
                this.progressed();
                Poll::Ready(result.map(drop))
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}
