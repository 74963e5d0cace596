//! Attachments on the messaging side (DESIGN.md F8, docs/PROTOCOL.md §4.5–§4.7): reserving one
//! (`CreateAttachment`), checking the ones a `SendMessage` names, issuing download URLs
//! (`GetAttachmentUrl`), and deleting the blobs no retained message references.
//!
//! Owns the rules; the blob backends (`crate::media`) own the bytes and the URLs. Every step
//! that touches the store or a backend runs in a task on this core; nothing blocks.
//!
//! Invariants:
//! - A message references only attachments its sending device created and whose upload the
//!   backend confirmed (size and SHA-256); the confirmation is recorded once (`verified`).
//! - A download URL is issued only to a member of a chat with a retained message that
//!   references the attachment; every other case gets the same `Forbidden`, whether or not
//!   the attachment exists.
//! - A blob is deleted before its record, so a crash between the two leaves a record whose
//!   blob is gone (deleted again, harmlessly, by the next sweep), never a blob nobody tracks.

use std::sync::Arc;

use router::types::{Answer, Op, Origin};
use store::Store;
use store::model::{Attachment, Mutation, WriteBatch};
use wire::{AttachmentId, ChatId, ErrorCode};

use super::unix_ms;
use crate::core::Core;
use crate::media::Blobs;

/// Attachments deleted per sweep round (the next round takes the rest).
const SWEEP_BATCH: usize = 1_000;

/// What `CreateAttachment` declared.
#[derive(Debug, Clone)]
pub struct Declared {
    /// Exact size in bytes.
    pub size: u64,
    /// SHA-256 of the blob.
    pub sha256: wire::Sha256,
    /// MIME type.
    pub mime: String,
}

fn not_ready(reason: &'static str) -> Answer {
    Answer::error(ErrorCode::AttachmentNotReady, reason)
}

fn unavailable(origin: &Origin) -> impl Fn(store::StoreError) -> Answer + '_ {
    move |e| router::owner::store_failure(&e, origin)
}

/// `CreateAttachment`: records the attachment (durably), then answers with its upload URL.
pub(super) async fn create(
    store: &Arc<dyn Store>,
    blobs: &Blobs,
    origin: Origin,
    declared: Declared,
) -> Answer {
    let id = loop {
        if let Some(id) = AttachmentId::new(rand::random()) {
            break id;
        }
    };
    let now = unix_ms();
    let record = Attachment {
        id,
        user: origin.user,
        device: origin.device,
        size: declared.size,
        sha256: declared.sha256,
        mime: declared.mime,
        created_ms: now,
        verified: false,
    };
    let upload_url = blobs.upload_url(id, record.size, &record.sha256, &record.mime, now);
    let batch = WriteBatch {
        mutations: vec![Mutation::PutAttachment(record)],
    };
    if let Err(e) = store.write(batch).await {
        return unavailable(&origin)(e);
    }
    Answer::AttachmentCreated {
        attachment: id,
        upload_url,
        expires_at_ms: blobs.expires_at_ms(now),
    }
}

/// Runs [`create`] in a task on this core and answers the connection that asked (which
/// may be on another core).
pub(super) fn spawn_create(core: &Core, origin: Origin, declared: Declared) {
    let Some(hub) = core.hub.get().cloned() else {
        return;
    };
    let Some(core) = hub.core() else {
        return;
    };
    glommio::spawn_local(async move {
        let answer = create(hub.store(), hub.blobs(), origin, declared).await;
        hub.answer_to(&core, origin, answer);
    })
    .detach();
}

/// Checks every attachment a send names: created by the sending device and uploaded. The
/// first confirmation of an upload is recorded. `Err` is the answer that refuses the send.
pub(super) async fn check_send(
    store: &Arc<dyn Store>,
    blobs: &Blobs,
    origin: &Origin,
    attachments: &[AttachmentId],
) -> Result<(), Answer> {
    // The records are read together; the first confirmations are recorded in one write.
    let reads: Vec<_> = attachments.iter().map(|&id| store.attachment(id)).collect();
    let mut confirmed = Vec::new();
    for read in reads {
        let Some(mut a) = read.await.map_err(unavailable(origin))? else {
            return Err(not_ready("no such attachment (or it expired)"));
        };
        if (a.user, a.device) != (origin.user, origin.device) {
            return Err(not_ready("attachment created by another device"));
        }
        if a.verified {
            continue;
        }
        match blobs.confirm(a.id, a.size, &a.sha256).await {
            Ok(true) => {}
            Ok(false) => return Err(not_ready("attachment not uploaded (or not verified)")),
            Err(error) => {
                tracing::warn!(%error, "media: confirming an upload failed");
                return Err(Answer::error(
                    ErrorCode::Unavailable,
                    "blob storage unavailable",
                ));
            }
        }
        a.verified = true;
        confirmed.push(Mutation::PutAttachment(a));
    }
    if !confirmed.is_empty() {
        let batch = WriteBatch {
            mutations: confirmed,
        };
        store.write(batch).await.map_err(unavailable(origin))?;
    }
    Ok(())
}

/// Sends `op` (its send limit already taken) to its owner once its attachments check out,
/// or answers why not.
pub(super) fn send_with_attachments(core: &Core, origin: Origin, op: Op) {
    let Some(hub) = core.hub.get().cloned() else {
        return;
    };
    let Some(core) = hub.core() else {
        return;
    };
    glommio::spawn_local(async move {
        let attachments = match &op {
            Op::Send { attachments, .. } => attachments.as_slice(),
            _ => &[],
        };
        match check_send(hub.store(), hub.blobs(), &origin, attachments).await {
            Ok(()) => hub.submit(origin, op),
            Err(answer) => hub.answer_to(&core, origin, answer),
        }
    })
    .detach();
}

/// `GetAttachmentUrl`: a download URL for a member of `chat` where a retained message
/// references the attachment; `Forbidden` otherwise.
pub(super) async fn download_url(
    store: &Arc<dyn Store>,
    blobs: &Blobs,
    origin: &Origin,
    chat: ChatId,
    id: AttachmentId,
) -> Answer {
    let forbidden = Answer::error(
        ErrorCode::Forbidden,
        "not a member of a chat that references this attachment",
    );
    let (state, referenced, record) = (
        store.chat(chat),
        store.referenced_in(chat, id),
        store.attachment(id),
    );
    let state = match state.await {
        Ok(Some(state)) => state,
        Ok(None) => return forbidden,
        Err(e) => return unavailable(origin)(e),
    };
    if !state.members.iter().any(|m| m.user == origin.user) {
        return forbidden;
    }
    match (referenced.await, record.await) {
        (Ok(true), Ok(Some(a))) => {
            let now = unix_ms();
            Answer::AttachmentUrl {
                url: blobs.download_url(id, &a.mime, now),
                expires_at_ms: blobs.expires_at_ms(now),
            }
        }
        (Ok(_), Ok(_)) => forbidden,
        (Err(e), _) | (_, Err(e)) => unavailable(origin)(e),
    }
}

/// One round of attachment lifetime: deletes the blobs (then the records) of attachments
/// created at least `unreferenced_ms` ago that no retained message references. Returns how
/// many were deleted.
pub async fn sweep(store: &Arc<dyn Store>, blobs: &Blobs, unreferenced_ms: u64) -> usize {
    let before = unix_ms().saturating_sub(unreferenced_ms);
    let ids = match store.unreferenced_attachments(before, SWEEP_BATCH).await {
        Ok(ids) => ids,
        Err(error) => {
            tracing::warn!(%error, "media: listing unreferenced attachments failed");
            return 0;
        }
    };
    let mut deleted = Vec::with_capacity(ids.len());
    for id in ids {
        match blobs.delete(id).await {
            Ok(()) => deleted.push(Mutation::DeleteAttachment(id)),
            Err(error) => tracing::warn!(%error, "media: deleting a blob failed; retried later"),
        }
    }
    let n = deleted.len();
    if n > 0
        && let Err(error) = store.write(WriteBatch { mutations: deleted }).await
    {
        tracing::warn!(%error, "media: deleting attachment records failed; retried later");
        return 0;
    }
    n
}
