//! The writer thread's check of every write batch, and its hand-off to the applier.
//!
//! Owns the only copy of every chat's head that is exact at append time: the writer thread
//! admits batches in queue order, so checking "seq == head + 1" here, before the record is
//! written, makes the log itself gap-free per chat without any lock. The map holds one
//! entry per chat (about 40 bytes each); it is rebuilt from the index at open.
//!
//! Invariants: an admitted batch's appends were each exactly head + 1 and its cursors named
//! existing chats; a refused batch leaves the map as it was. After the applier failed, every
//! batch is refused (the index can no longer serve reads that match the log).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::Sender;
use foldhash::HashMap;
use wire::ids::ChatId;

use super::apply_thread::{Shared, ToApplier};
use super::codec::{Claim, decode_claims};
use crate::StoreError;
use crate::log::{Gate, Lsn, Refusal};
use crate::model::Seq;

/// Checks appends against chat heads; forwards durable records to the applier.
pub(crate) struct SeqGate {
    heads: HashMap<ChatId, Seq>,
    claims: Vec<Claim>,
    /// Heads changed by the batch being checked (rolled back if it is refused).
    staged: Vec<(ChatId, Seq)>,
    applier: Sender<ToApplier>,
    shared: Arc<Shared>,
    backlog_bytes_max: u64,
}

impl SeqGate {
    pub(crate) fn new(
        heads: HashMap<ChatId, Seq>,
        applier: Sender<ToApplier>,
        shared: Arc<Shared>,
        backlog_bytes_max: u64,
    ) -> Self {
        Self {
            heads,
            claims: Vec::new(),
            staged: Vec::new(),
            applier,
            shared,
            backlog_bytes_max,
        }
    }

    fn head(&self, chat: ChatId) -> Seq {
        // A chat changed earlier in this batch wins over the committed map.
        self.staged
            .iter()
            .rev()
            .find(|(c, _)| *c == chat)
            .map_or_else(|| self.heads.get(&chat).copied().unwrap_or(0), |(_, h)| *h)
    }

    fn check(&mut self, record: &[u8]) -> Result<(), StoreError> {
        decode_claims(record, &mut self.claims).map_err(|e| StoreError::Invalid(e.to_string()))?;
        for i in 0..self.claims.len() {
            match self.claims[i] {
                Claim::Append {
                    chat,
                    seq,
                    creates_group,
                } => {
                    crate::api::check_append(chat, self.head(chat), seq, creates_group)?;
                    self.staged.push((chat, seq));
                }
                Claim::Cursor { chat } => {
                    if self.head(chat) == 0 {
                        return Err(StoreError::UnknownChat(chat));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Gate for SeqGate {
    fn admit(&mut self, records: &[&[u8]]) -> Result<(), Refusal> {
        if let Some(reason) = self.shared.failure() {
            return Err(Box::new(StoreError::Unavailable(reason)));
        }
        self.staged.clear();
        for record in records {
            if let Err(error) = self.check(record) {
                self.staged.clear();
                return Err(Box::new(error));
            }
        }
        for (chat, head) in self.staged.drain(..) {
            self.heads.insert(chat, head);
        }
        Ok(())
    }

    fn durable(&mut self, first_lsn: Lsn, records: Vec<Vec<u8>>) {
        let next = first_lsn + records.len() as u64;
        let bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
        // Backpressure on the writer thread: if the applier is a whole backlog behind,
        // acknowledgements wait for it rather than memory growing without bound.
        while self.shared.backlog_bytes.load(Ordering::Acquire) > self.backlog_bytes_max
            && self.shared.failure().is_none()
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.shared.backlog_bytes.fetch_add(bytes, Ordering::AcqRel);
        if self
            .applier
            .send(ToApplier::Apply { first_lsn, records })
            .is_err()
        {
            tracing::error!("store: the applier thread is gone; reads will not see new writes");
        }
        self.shared.durable_next.store(next, Ordering::Release);
    }
}
