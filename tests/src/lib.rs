//! Shared helpers for switchboard's end-to-end tests in `tests/tests/`.
//!
//! The tests here drive real parts: the real `switchboard` binary over real sockets, and
//! independent clients (Python `websockets` and code generated from the same schema).
//! `scripts/test` prepares what they need (the binaries, the `.venv` with pinned packages).
//!
//! Layout: [`gateway`] (start/stop a real gateway), [`token`], [`http`] (ops endpoints),
//! [`prom`] (a strict Prometheus text parser), [`ws`] (a raw WebSocket client that can also
//! break the rules), [`chat`] (a chat client over it: requests by name, owned events). Every
//! wait has a deadline, so no test hangs.

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The project's Python with the pinned test packages: `$SWITCHBOARD_PYTHON`, else `.venv`.
///
/// # Panics
/// When neither exists: the suite is meant to run through `scripts/test`, which creates it.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHBOARD_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python test environment at {}: run ./scripts/test (it creates .venv)",
        venv.display()
    );
    venv
}

pub mod chat;
pub mod gateway;
pub mod http;
pub mod prom;
pub mod token;
pub mod ws;
