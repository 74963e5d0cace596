//! `Gate`: the writer thread's hooks for a log's owner: admit a request before it is written,
//! and take the records once they are durable.
//!
//! Owns the two moments where the owner of the log (the embedded store) must act on the writer
//! thread, in LSN order, without another thread hop: checking an append against state that
//! only the writer thread can hold consistently (a chat's head), and handing durable records on
//! (to the index applier) before any waiter is told `Ok`.
//!
//! Invariants: `admit` is called once per append request, in queue order, before any of its
//! bytes are written; a refused request is completed with [`super::LogError::Refused`] and gets
//! no LSN. `durable` is called with every admitted record after its batch's sync returned `Ok`
//! and before the batch's waiters complete; never for a failed batch.

use super::Lsn;

/// Why a gate refused a request (downcast it to the owner's error type).
pub type Refusal = Box<dyn std::error::Error + Send + Sync>;

/// Hooks called on the writer thread. See the module invariants.
pub trait Gate: Send + 'static {
    /// Decides whether one request's records may be appended. An admitted request counts as
    /// written for the next `admit` (its effects are part of the gate's state), even though a
    /// failed sync may still fail it: the log is read-only after that anyway.
    ///
    /// # Errors
    /// A [`Refusal`] that the request's waiter receives inside `LogError::Refused`.
    fn admit(&mut self, records: &[&[u8]]) -> Result<(), Refusal>;

    /// Takes the records of a durable batch, `records[i]` having LSN `first_lsn + i`.
    fn durable(&mut self, first_lsn: Lsn, records: Vec<Vec<u8>>);
}

/// The gate of a log without an owner: admits everything, drops durable records.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenGate;

impl Gate for OpenGate {
    fn admit(&mut self, _records: &[&[u8]]) -> Result<(), Refusal> {
        Ok(())
    }

    fn durable(&mut self, _first_lsn: Lsn, _records: Vec<Vec<u8>>) {}
}
