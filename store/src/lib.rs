//! What is durably kept (not built yet; DESIGN.md §3 and issue "Store").
//!
//! This crate will own one `Store` interface and its conformance suite: the chat log keyed
//! `(chat, seq)`, device cursors, idempotency keys, devices and the user → chats index, with
//! group commit on a dedicated thread so executor threads never block on disk. Backends: an
//! embedded default (a checksummed append-only log applied to an LSM) and ScyllaDB. A write is
//! reported durable only after it is. It depends on `wire` only.
