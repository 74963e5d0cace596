//! Access to the index ([`super::engine`]): a read view ([`Snap`], a consistent snapshot
//! for reader threads) and a write transaction ([`Txn`], the applier's overlay over one
//! atomic batch), behind one [`View`] trait so the queries in this module serve both.
//!
//! Owns read-modify-write consistency for the applier: a [`Txn`] sees its own uncommitted
//! puts and deletes (point reads and prefix scans merge the overlay), and commits them as one
//! atomic index batch, so a crash leaves the index at a batch boundary (with `apply_from` in
//! the same batch saying which).

use std::collections::BTreeMap;

use lsm_tree::{Guard, Slice};
use wire::ids::{ChatId, DeviceId, UserId};

use super::codec::CodecError;
use super::engine::{Batch, EngineError, Index, Snapshot};
use super::hot::HotRows;
use super::layout::{self as l, ChatMeta, KeyParts};
use crate::model::{Member, Role, Seq};

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    #[error("index engine: {0}")]
    Engine(#[from] EngineError),
    #[error("index row: {0}")]
    Codec(#[from] CodecError),
}

pub(crate) type Result<T> = std::result::Result<T, IndexError>;

impl From<lsm_tree::Error> for IndexError {
    fn from(error: lsm_tree::Error) -> Self {
        Self::Engine(error.into())
    }
}

/// Read access to the index.
pub(crate) trait View {
    fn get(&self, key: &[u8]) -> Result<Option<Slice>>;
    /// Every row whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<(Slice, Slice)>>;
}

/// A consistent snapshot for one read.
pub(crate) struct Snap {
    pub(crate) snapshot: Snapshot,
}

impl Snap {
    pub(crate) fn new(index: &Index) -> Self {
        Self {
            snapshot: index.snapshot(),
        }
    }
}

impl View for Snap {
    fn get(&self, key: &[u8]) -> Result<Option<Slice>> {
        Ok(self.snapshot.get(key)?)
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<(Slice, Slice)>> {
        let mut rows = Vec::new();
        for guard in self.snapshot.prefix(prefix) {
            rows.push(guard.into_inner()?);
        }
        Ok(rows)
    }
}

/// The applier's transaction: buffered puts and deletes over the committed index.
pub(crate) struct Txn<'a> {
    index: &'a Index,
    overlay: BTreeMap<Vec<u8>, Option<Slice>>,
    /// Rows the applier writes but never reads back (log entries, idempotency rows): they
    /// skip the overlay and go straight into the batch.
    blind: Batch,
    /// The applier's copy of the rows it reads back, kept current by every commit.
    hot: Option<&'a mut HotRows>,
}

impl<'a> Txn<'a> {
    pub(crate) fn new(index: &'a Index) -> Self {
        Self {
            index,
            overlay: BTreeMap::new(),
            blind: Batch::default(),
            hot: None,
        }
    }

    /// A transaction whose reads of kept rows are served by `hot` and whose commits update
    /// it (see [`super::hot`]: every writer of the index must carry the same cache).
    pub(crate) fn with_hot(index: &'a Index, hot: &'a mut HotRows) -> Self {
        Self {
            hot: Some(hot),
            ..Self::new(index)
        }
    }

    /// This transaction, buffering its rows in `rows` (empty; its capacity is reused).
    pub(crate) fn reusing(mut self, rows: Batch) -> Self {
        debug_assert_eq!(rows.len(), 0, "a lent row buffer is empty");
        self.blind = rows;
        self
    }

    /// The row buffer, to lend to the next transaction (empty after a successful commit).
    pub(crate) fn into_rows(self) -> Batch {
        self.blind
    }

    /// Puts a row that this transaction never reads back and never deletes (it is not visible
    /// to [`View`] reads until committed).
    pub(crate) fn put_blind(&mut self, key: impl AsRef<[u8]>, value: impl Into<Slice>) {
        debug_assert!(
            !HotRows::keeps(key.as_ref()),
            "a row the applier reads back is never written blind"
        );
        self.blind.insert(key.as_ref(), value.into());
    }

    pub(crate) fn put(&mut self, key: impl AsRef<[u8]>, value: impl Into<Slice>) {
        self.overlay
            .insert(key.as_ref().to_vec(), Some(value.into()));
    }

    pub(crate) fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.overlay.insert(key.as_ref().to_vec(), None);
    }

    /// The index under the overlay (for streaming scans of rows this txn did not write).
    pub(crate) fn index(&self) -> &'a Index {
        self.index
    }

    /// Buffered changes.
    pub(crate) fn len(&self) -> usize {
        self.overlay.len() + self.blind.len()
    }

    /// Writes every buffered change as one atomic batch (not synced: the log is durable, and
    /// checkpoints persist the index before they let log segments go).
    pub(crate) fn commit(&mut self) -> Result<()> {
        if self.overlay.is_empty() && self.blind.len() == 0 {
            return Ok(());
        }
        let overlay = std::mem::take(&mut self.overlay);
        for (key, value) in &overlay {
            match value {
                Some(value) => self.blind.insert(key.as_slice(), value.clone()),
                None => self.blind.remove(key.as_slice()),
            }
        }
        self.index.commit(&mut self.blind)?;
        if let Some(hot) = self.hot.as_deref_mut() {
            for (key, value) in overlay {
                if HotRows::keeps(&key) {
                    hot.committed(&key, value);
                }
            }
        }
        Ok(())
    }
}

impl View for Txn<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Slice>> {
        if let Some(value) = self.overlay.get(key) {
            return Ok(value.clone());
        }
        if let Some(hot) = self.hot.as_deref().filter(|_| HotRows::keeps(key))
            && let Some(value) = hot.get(key)
        {
            return Ok(value.clone());
        }
        Ok(self.index.get(key)?)
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<(Slice, Slice)>> {
        let mut merged: BTreeMap<Vec<u8>, Option<Slice>> = BTreeMap::new();
        for guard in self.index.prefix(prefix) {
            let (k, v) = guard.into_inner()?;
            merged.insert(k.to_vec(), Some(v));
        }
        for (k, v) in self
            .overlay
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            merged.insert(k.clone(), v.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (Slice::from(k), v)))
            .collect())
    }
}

/// A chat's row with its current head, if the chat exists.
pub(crate) fn chat_meta(v: &impl View, chat: ChatId) -> Result<Option<ChatMeta>> {
    let Some(mut meta) = meta_row(v, chat)? else {
        return Ok(None);
    };
    if let Some(head) = head_row(v, chat)? {
        meta.head = head;
    }
    Ok(Some(meta))
}

/// A chat's head (its last seq), if the chat exists: its head row, or for a chat last
/// written before head rows existed (store format 1), its meta row's.
pub(crate) fn head(v: &impl View, chat: ChatId) -> Result<Option<Seq>> {
    match head_row(v, chat)? {
        Some(head) => Ok(Some(head)),
        None => Ok(meta_row(v, chat)?.map(|meta| meta.head)),
    }
}

fn meta_row(v: &impl View, chat: ChatId) -> Result<Option<ChatMeta>> {
    Ok(match v.get(l::chat(chat).as_ref())? {
        Some(bytes) => Some(ChatMeta::decode(&bytes)?),
        None => None,
    })
}

/// A chat's head row alone (absent for a chat last written by store format 1).
pub(crate) fn head_row(v: &impl View, chat: ChatId) -> Result<Option<Seq>> {
    Ok(match v.get(l::head(chat).as_ref())? {
        Some(bytes) => Some(l::read_vars::<1>(&bytes)?[0]),
        None => None,
    })
}

/// The lowest retained seq of a chat (1 if nothing was removed).
pub(crate) fn floor(v: &impl View, chat: ChatId) -> Result<Seq> {
    Ok(match v.get(l::floor(chat).as_ref())? {
        Some(bytes) => l::read_vars::<1>(&bytes)?[0],
        None => 1,
    })
}

/// Current members, by user id.
pub(crate) fn members(v: &impl View, chat: ChatId) -> Result<Vec<Member>> {
    let mut out = Vec::new();
    for (key, value) in v.scan(l::members(chat).as_ref())? {
        let user = KeyParts::new(&key, ChatId::SIZE)?.user()?;
        let (role, joined_seq) = l::read_member(&value)?;
        out.push(Member {
            user,
            role,
            joined_seq,
        });
    }
    Ok(out)
}

/// One current member's row.
pub(crate) fn member(v: &impl View, chat: ChatId, user: UserId) -> Result<Option<(Role, Seq)>> {
    Ok(match v.get(l::member(chat, user).as_ref())? {
        Some(bytes) => Some(l::read_member(&bytes)?),
        None => None,
    })
}

/// Former members still owed entries: (user, joined seq, left seq).
pub(crate) fn lefts(v: &impl View, chat: ChatId) -> Result<Vec<(UserId, Seq, Seq)>> {
    let mut out = Vec::new();
    for (key, value) in v.scan(l::lefts(chat).as_ref())? {
        let user = KeyParts::new(&key, ChatId::SIZE)?.user()?;
        let [joined, left] = l::read_vars(&value)?;
        out.push((user, joined, left));
    }
    Ok(out)
}

/// A user's devices: (device, registered, last seen).
pub(crate) fn devices(v: &impl View, user: UserId) -> Result<Vec<(DeviceId, u64, u64)>> {
    let mut out = Vec::new();
    for (key, value) in v.scan(l::devices(user).as_ref())? {
        let device = KeyParts::new(&key, UserId::SIZE)?.device()?;
        let [registered, seen] = l::read_vars(&value)?;
        out.push((device, registered, seen));
    }
    Ok(out)
}

/// One device's cursor row in one chat: (delivered, read).
pub(crate) fn cursor(
    v: &impl View,
    chat: ChatId,
    user: UserId,
    device: DeviceId,
) -> Result<Option<(Seq, Seq)>> {
    Ok(match v.get(l::cursor(chat, user, device).as_ref())? {
        Some(bytes) => {
            let [d, r] = l::read_vars(&bytes)?;
            Some((d, r))
        }
        None => None,
    })
}

/// The chats of a user: (chat, is current member).
pub(crate) fn user_chats(v: &impl View, user: UserId) -> Result<Vec<(ChatId, bool)>> {
    let mut out = Vec::new();
    for (key, value) in v.scan(l::user_chats(user).as_ref())? {
        let chat = KeyParts::new(&key, UserId::SIZE)?.chat()?;
        out.push((chat, value.first() == Some(&0)));
    }
    Ok(out)
}

/// An empty index in a temp dir, for tests.
#[cfg(test)]
pub(crate) fn temp() -> (tempfile::TempDir, Index) {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = Index::open(
        dir.path(),
        &super::engine::IndexOptions::for_tests(64 << 20),
    )
    .expect("index");
    (dir, index)
}
