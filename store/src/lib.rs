//! What is durably kept (DESIGN.md §3 and issue 5, "Store").
//!
//! Layout:
//! - [`api`]: the [`Store`] trait every backend implements, and [`StoreError`].
//! - [`model`]: the data: a chat's gap-free log of messages and membership updates, device
//!   cursors, idempotency keys, devices, retention settings.
//! - [`reply`]: the [`reply::Reply`] future through which backend threads answer executors.
//! - [`log`]: the write-ahead log on the embedded backend's acknowledgement path: checksummed,
//!   segmented, group commit on one writer thread (one `fdatasync` per batch), recovery that
//!   cuts a torn tail and refuses other damage, replay, checkpoints.
//! - [`memory`]: an in-memory backend (tests and the router's simulation; not durable).
//! - [`conformance`]: the suite every backend must pass, as a macro that stamps out one test
//!   per case.
//!
//! A write is reported durable only after it is. This crate depends on `wire` only.

pub mod api;
pub mod conformance;
pub mod embedded;
pub mod log;
pub mod memory;
pub mod model;
pub mod reply;

pub use api::{Store, StoreError, StoreReply};
