//! Listening sockets and the accept loop.
//!
//! Owns binding (one `SO_REUSEPORT` socket per core, built with socket2 so the backlog is ours
//! and a second server on the same address is refused) and accepting (which survives running
//! out of descriptors). Invariants: the accept loop never ends because of an accept error, only
//! because the core drains; a connection over `connections_max` (process-wide) gets 503.

use crate::core::Core;
use crate::metrics::AcceptError;
use anyhow::Context as _;
use futures_lite::future;
use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd as _, IntoRawFd as _};
use std::rc::Rc;
use std::time::Duration;

/// First pause after a resource error (EMFILE/ENFILE/ENOBUFS/ENOMEM) in the accept loop.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause: existing connections keep being served meanwhile.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Binds `count` `SO_REUSEPORT` sockets on `addr` (port 0: one free port for all). Refuses an
/// address something already listens on: a reuse-port bind would silently succeed and split
/// the traffic with the other process.
///
/// # Errors
/// The address is in use or cannot be bound.
pub fn bind_reuseport(addr: SocketAddr, count: usize, backlog: u32) -> anyhow::Result<Vec<Socket>> {
    if addr.port() != 0 {
        // A plain bind fails if any socket listens there, reuse-port or not.
        std::net::TcpListener::bind(addr).with_context(|| {
            format!(
                "cannot listen on {addr}: the address is in use (is another switchboard running?)"
            )
        })?;
    }
    let first = reuseport(addr, backlog).with_context(|| format!("binding {addr}"))?;
    let bound = first
        .local_addr()?
        .as_socket()
        .context("listener has an IP address")?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(reuseport(bound, backlog).with_context(|| format!("binding {bound}"))?);
    }
    Ok(sockets)
}

fn reuseport(addr: SocketAddr, backlog: u32) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket)
}

/// Hands a bound, listening socket to the current core's reactor.
#[allow(unsafe_code)]
pub fn into_glommio(socket: Socket) -> TcpListener {
    // SAFETY: `into_raw_fd` gives up ownership of a valid listening socket; the listener takes it.
    unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) }
}

/// Accepts until the core drains; each connection runs as its own task.
pub async fn accept_loop(core: Rc<Core>, listener: TcpListener) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            core.drain_started.wait().await;
            None
        })
        .await;
        let Some(accepted) = accepted else { return };
        match accepted {
            Ok(stream) => {
                backoff = BACKOFF_MIN;
                core.metrics.accepts.inc();
                let _ = stream.set_nodelay(true);
                if core.admit() {
                    glommio::spawn_local(crate::conn::serve(core.clone(), stream)).detach();
                } else {
                    let core = core.clone();
                    glommio::spawn_local(async move {
                        crate::handshake::refuse_busy(&core, stream).await;
                    })
                    .detach();
                }
            }
            Err(e) => {
                let error = std::io::Error::from(e);
                let kind = classify(&error);
                core.metrics.accept_error(kind);
                if matches!(kind, AcceptError::Other) {
                    // A connection that died before we took it (ECONNABORTED, …): next.
                    tracing::debug!(core = core.index, %error, "accept failed");
                    continue;
                }
                // Out of descriptors or memory: pause accepting (connections wait in the
                // backlog) while existing connections are served and release resources.
                tracing::warn!(core = core.index, %error, pause_ms = backoff.as_millis(), "accept failed; backing off");
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn classify(e: &std::io::Error) -> AcceptError {
    match e.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
        Some(rustix::io::Errno::MFILE) => AcceptError::Emfile,
        Some(rustix::io::Errno::NFILE) => AcceptError::Enfile,
        _ => AcceptError::Other,
    }
}
