//! What is durably kept (DESIGN.md §3 and issue 5, "Store").
//!
//! Layout: `log/` (built): the write-ahead log on the acknowledgement path: a checksummed,
//! segmented append-only log with group commit on one dedicated writer thread (one
//! `fdatasync` per batch), recovery that cuts a torn tail and refuses any other damage,
//! replay from an LSN, and checkpoints that delete old segments. `src/bin/log-crash-harness.rs`
//! is the helper process of the SIGKILL crash test.
//!
//! Still to come: the `Store` interface and its conformance suite (the chat log keyed
//! `(chat, seq)`, device cursors, idempotency keys, devices and the user → chats index,
//! retention and TTLs); the embedded backend that applies the log in the background to an
//! LSM (fjall) serving indexes and reads, checkpointing the log as it goes; and ScyllaDB.
//! A write is reported durable only after it is. This crate depends on `wire` only.

pub mod log;
