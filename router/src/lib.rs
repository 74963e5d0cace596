//! Where a message goes (not built yet; DESIGN.md §3 and issue "Messaging on one node").
//!
//! This crate will own, as sans-IO state machines that take inputs and `now` and return actions:
//! the per-chat owner (gap-free `seq`, membership and role checks, idempotency, batched appends,
//! `Sent` only after durability), the delivery planner (which device gets which pre-encoded
//! frame, receipts coalesced per chat per sender), per-core ownership (`hash(chat) % cores`) and
//! cross-core hand-off in batches, and later fleet-wide ownership over Redis. It will never bind
//! a socket or block; it depends on `wire` only.
