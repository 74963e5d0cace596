//! One device's WebSocket connection, non-blocking: connect, upgrade, then frames both ways.
//!
//! Owns the socket and its two buffers. Opening binds a source address and starts a
//! non-blocking connect; once writable, the upgrade request (already queued) goes out and the
//! response is checked with [`crate::handshake::check_response`]; bytes after the response
//! head are the first frames. Outgoing frames are appended to one buffer and written when
//! [`Conn::flush`] is called, so a burst costs one `write`. Never blocks; never decides what
//! to send or what a frame means (the engine does). Invariant: `out[out_at..]` is exactly
//! what is still to be written, in order.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, bind, connect, socket_with, sockopt};

use crate::handshake;
use crate::live::wsread::WsReader;
use crate::target::Target;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent; reading the response head.
    Upgrading,
    /// Upgraded: frames flow (the engine tracks sync on top).
    Open,
}

/// What a read brought.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Readable {
    /// Bytes (if any) are buffered; nothing changed phase.
    More,
    /// The upgrade just completed (frames may already be buffered).
    Upgraded,
    /// The peer closed the connection.
    Eof,
}

/// One connection; see the module doc.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    pub(crate) phase: Phase,
    key: String,
    head: Vec<u8>,
    pub(crate) reader: WsReader,
    out: Vec<u8>,
    out_at: usize,
}

impl Conn {
    /// Starts connecting from `source` (port 0) to `target`, with the upgrade request for
    /// `token` queued. `nonce` makes the handshake key.
    pub(crate) fn open(
        target: &Target,
        source: Ipv4Addr,
        token: &str,
        nonce: [u8; 16],
        frame_bytes_max: usize,
    ) -> io::Result<Self> {
        let family = match target.addr {
            SocketAddr::V4(_) => AddressFamily::INET,
            SocketAddr::V6(_) => AddressFamily::INET6,
        };
        let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
        let fd = socket_with(family, SocketType::STREAM, flags, None)?;
        if target.addr.is_ipv4() {
            bind(&fd, &SocketAddr::new(source.into(), 0))?;
        }
        match connect(&fd, &target.addr) {
            Ok(()) | Err(Errno::INPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        let stream = TcpStream::from(fd);
        stream.set_nodelay(true)?;
        let key = handshake::key(nonce);
        let request = handshake::request(&target.host, &target.path, &key, token);
        Ok(Self {
            stream,
            phase: Phase::Connecting,
            key,
            head: Vec::new(),
            reader: WsReader::new(frame_bytes_max),
            out: request.into_bytes(),
            out_at: 0,
        })
    }

    /// The socket, for epoll.
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Whether there is something to write (or a connect to complete).
    pub(crate) fn wants_write(&self) -> bool {
        self.phase == Phase::Connecting || self.out_at < self.out.len()
    }

    /// The buffer frames are appended to (written on the next [`Conn::flush`]).
    pub(crate) fn out(&mut self) -> &mut Vec<u8> {
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        &mut self.out
    }

    /// Writes what it can. While connecting, first checks whether the connect completed
    /// (call on writability, or it may find the connect still in progress and do nothing).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.phase == Phase::Connecting {
            match sockopt::socket_error(&self.stream)? {
                Ok(()) => {}
                Err(e) => return Err(e.into()),
            }
            if self.stream.peer_addr().is_err() {
                return Ok(()); // still connecting
            }
            self.phase = Phase::Upgrading;
        }
        while self.out_at < self.out.len() {
            match self.stream.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        Ok(())
    }

    /// Reads what is there (at most `budget` bytes) into the frame reader, completing the
    /// upgrade on the way. An invalid upgrade response is an error.
    pub(crate) fn read(&mut self, scratch: &mut [u8], budget: usize) -> io::Result<Readable> {
        let mut taken = 0;
        let mut outcome = Readable::More;
        while taken < budget {
            let n = match self.stream.read(scratch) {
                Ok(0) => return Ok(Readable::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            taken += n;
            let data = &scratch[..n];
            match self.phase {
                Phase::Open => self.reader.extend(data),
                Phase::Connecting | Phase::Upgrading => {
                    self.phase = Phase::Upgrading;
                    self.head.extend_from_slice(data);
                    match handshake::check_response(&self.head, &self.key) {
                        Ok(Some(len)) => {
                            self.reader.extend(&self.head[len..]);
                            self.head = Vec::new();
                            self.phase = Phase::Open;
                            outcome = Readable::Upgraded;
                        }
                        Ok(None) if self.head.len() > 8192 => {
                            return Err(io::Error::other("upgrade response head too long"));
                        }
                        Ok(None) => {}
                        Err(e) => return Err(io::Error::other(format!("upgrade: {e}"))),
                    }
                }
            }
        }
        Ok(outcome)
    }
}

/// 16 well-mixed bytes from `x` (splitmix64 twice): a handshake key or a mask, not a secret.
pub(crate) fn mix16(x: u64) -> [u8; 16] {
    let a = splitmix(x);
    let mut out = [0; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&splitmix(a).to_le_bytes());
    out
}

/// One splitmix64 step: a cheap, well-mixed 64-bit value from `x`.
pub(crate) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
