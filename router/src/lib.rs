//! Where a message goes (DESIGN.md §3; issue 6, "Messaging on one node").
//!
//! Sans-IO state machines that take inputs and `now` and return actions; they never bind a
//! socket, block, or read a clock:
//! - [`owner`]: the chat owner: gap-free seqs, membership and role checks, idempotency,
//!   batched durable writes, answers and deliveries only after durability.
//! - [`ownership`]: which owner a chat belongs to (on one node: `hash(chat) % cores`), behind
//!   a trait so fleet-wide ownership can replace it.
//! - [`session`]: one connected device's stream: sync merged with live deliveries.
//! - [`types`]: requests, answers, deliveries, actions.
//!
//! Depends on `wire` (ids, codes) and `store` (its data model and `Store` trait), never on the
//! gateway.

pub mod owner;
pub mod ownership;
pub mod session;
pub mod types;
