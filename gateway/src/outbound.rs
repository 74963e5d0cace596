//! A connection's outbound queue: shared, pre-encoded frames waiting to be written, bounded in
//! bytes, written with vectored non-blocking sends.
//!
//! Owns the bytes a client has not yet received. Invariants: `queued_bytes` is the sum of the
//! unwritten bytes of every queued frame and never exceeds `bytes_max` (a push that would is
//! refused, and the caller closes the connection as a slow consumer); frames are written in
//! queue order and each exactly once; a frame's buffer is shared, never copied per connection.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::rc::Rc;
use std::sync::Arc;

/// Most frames handed to one `sendmsg` (the kernel's `UIO_MAXIOV` is 1024).
const IOV_MAX: usize = 64;

/// One complete WebSocket frame (header included), shared by every recipient.
#[derive(Clone, Debug)]
pub enum Frame {
    /// Encoded on this core (`Rc`: no atomics).
    Local(Rc<[u8]>),
    /// Encoded on another core (`Arc`); used once fan-out crosses cores.
    Shared(Arc<[u8]>),
    /// A constant (pings, common closes).
    Static(&'static [u8]),
}

impl Frame {
    fn bytes(&self) -> &[u8] {
        match self {
            Frame::Local(b) => b,
            Frame::Shared(b) => b,
            Frame::Static(b) => b,
        }
    }
}

/// Whether the queue was emptied.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    All,
    /// The socket's send buffer is full; wait until it is writable.
    WouldBlock,
}

/// The queue.
#[derive(Debug, Default)]
pub struct Outbound {
    frames: VecDeque<Frame>,
    /// Bytes of the front frame already written.
    written: usize,
    queued_bytes: usize,
}

/// A push refused because it would take the queue over its limit.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Outbound {
    /// Queues `frame` unless that would exceed `bytes_max`.
    ///
    /// # Errors
    /// `Full`: the consumer is too slow; the frame was not queued.
    pub fn push(&mut self, frame: Frame, bytes_max: usize) -> Result<(), Full> {
        if !self.has_room(&frame, bytes_max) {
            return Err(Full);
        }
        self.queued_bytes += frame.bytes().len();
        self.frames.push_back(frame);
        Ok(())
    }

    /// Whether `frame` fits under `bytes_max` now.
    pub fn has_room(&self, frame: &Frame, bytes_max: usize) -> bool {
        self.queued_bytes + frame.bytes().len() <= bytes_max
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Drops everything queued (the connection is closing and cannot deliver it).
    pub fn clear(&mut self) {
        *self = Self {
            frames: VecDeque::new(),
            written: 0,
            queued_bytes: 0,
        };
    }

    /// The unwritten part of the front frame (to wait on writability with).
    pub fn front(&self) -> Option<&[u8]> {
        self.frames.front().map(|f| &f.bytes()[self.written..])
    }

    /// Marks `n` bytes as written, releasing frames that are done.
    pub fn advance(&mut self, mut n: usize) {
        debug_assert!(
            n <= self.queued_bytes,
            "advanced {n} past {} queued",
            self.queued_bytes
        );
        self.queued_bytes -= n;
        while n > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.bytes().len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            self.frames.pop_front();
        }
        if self.frames.is_empty() {
            // An idle connection keeps no queue memory.
            self.frames = VecDeque::new();
        }
    }

    /// Writes as much as the socket takes now, up to `IOV_MAX` frames per system call, without
    /// blocking. Returns the bytes written and whether the queue is now empty.
    ///
    /// # Errors
    /// The socket failed (reset, broken pipe).
    pub fn flush(&mut self, fd: BorrowedFd<'_>) -> io::Result<(usize, Flushed)> {
        let mut total = 0;
        while !self.frames.is_empty() {
            let mut iov = [IoSlice::new(&[]); IOV_MAX];
            let mut count = 0;
            for (i, frame) in self.frames.iter().take(IOV_MAX).enumerate() {
                let skip = if i == 0 { self.written } else { 0 };
                iov[i] = IoSlice::new(&frame.bytes()[skip..]);
                count += 1;
            }
            let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
            let sent = rustix::net::sendmsg(
                fd,
                &iov[..count],
                &mut rustix::net::SendAncillaryBuffer::default(),
                flags,
            );
            match sent {
                Ok(n) => {
                    total += n;
                    self.advance(n);
                }
                Err(e) if e == rustix::io::Errno::AGAIN => return Ok((total, Flushed::WouldBlock)),
                Err(e) if e == rustix::io::Errno::INTR => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok((total, Flushed::All))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &'static [u8]) -> Frame {
        Frame::Static(bytes)
    }

    #[test]
    fn pushes_are_bounded_in_bytes() {
        let mut q = Outbound::default();
        assert_eq!(q.push(frame(b"0123"), 6), Ok(()));
        assert_eq!(q.push(frame(b"456"), 6), Err(Full));
        assert_eq!(q.push(frame(b"45"), 6), Ok(()));
        assert_eq!(q.queued_bytes(), 6);
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let mut q = Outbound::default();
        q.push(frame(b"abc"), 100).expect("fits");
        q.push(frame(b"de"), 100).expect("fits");
        q.advance(2);
        assert_eq!(q.front(), Some(&b"c"[..]));
        q.advance(2);
        assert_eq!(q.front(), Some(&b"e"[..]));
        q.advance(1);
        assert!(q.is_empty());
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn flush_writes_every_frame_in_order_through_a_socket() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut q = Outbound::default();
        let shared: Rc<[u8]> = Rc::from(&b"hello "[..]);
        q.push(Frame::Local(shared.clone()), 100).expect("fits");
        q.push(Frame::Shared(Arc::from(&b"wide "[..])), 100)
            .expect("fits");
        q.push(frame(b"world"), 100).expect("fits");
        let fd = std::os::fd::AsFd::as_fd(&a);
        assert_eq!(q.flush(fd).expect("flush"), (16, Flushed::All));
        drop(a);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut &b, &mut got).expect("read");
        assert_eq!(got, "hello wide world");
    }
}
