//! `switchboard`: the chat connection gateway (not built yet; issue "Gateway").
//!
//! This binary will own the thread-per-core Glommio executors (one per core, each with its own
//! `SO_REUSEPORT` listener), the WebSocket connections and their bounded outbound queues, auth,
//! configuration, the operations HTTP endpoints and graceful drain. It is the only crate that
//! binds a socket. Until then it says so and exits non-zero, so no script mistakes it for a
//! running server.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "switchboard: the gateway is not built yet (see docs/ARCHITECTURE.md); nothing to run"
    );
    ExitCode::from(2)
}
