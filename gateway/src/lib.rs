//! switchboard's gateway: the chat connection tier (thread-per-core io_uring WebSocket server).
//!
//! Layout: `config` (file/env/flags), `server` (startup, cores, drain), `listener` (sockets,
//! accept loop), `handshake` (HTTP upgrade, auth), `auth` (JWT), `conn` (a connection's task),
//! `inbound` (WebSocket frame parsing), `outbound` (bounded, shared, vectored send queue),
//! `messaging` (requests, the chat owner, fan-out, sync; see its doc), `core` (per-core state,
//! heartbeats, drain), `signal` (task wake-ups), `metrics`, `ops` (HTTP endpoints), `media`
//! (blob storage behind one interface and the media listener; see its doc), `http_io` (Glommio
//! streams as hyper's IO). The binary `switchboard` (`main.rs`) is a thin CLI over
//! [`server::serve`]. This is the only crate that binds a socket.

pub mod auth;
pub mod clock;
pub mod config;
pub mod conn;
pub mod core;
pub mod handshake;
pub mod http_io;
pub mod inbound;
pub mod keyfile;
pub mod listener;
pub mod media;
pub mod messaging;
pub mod metrics;
pub mod ops;
pub mod outbound;
pub mod server;
pub mod signal;
pub mod store_metrics;
