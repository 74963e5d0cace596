//! Shared helpers for switchboard's end-to-end tests in `tests/tests/`.
//!
//! The tests here drive real parts: the real `switchboard` binary over real sockets, a real
//! `redis-server`, the real store on disk, and independent clients (Python generated from the
//! same schema). `scripts/test` prepares what they need (the `.venv` with pinned packages).

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
