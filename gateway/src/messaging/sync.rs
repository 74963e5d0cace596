//! Sync on connect: the device limit, the device's registration, then every entry it is owed,
//! chat by chat in pages, merged with live entries by its `router::session::Session`, then the
//! other members' cursors as receipts, then `SyncDone` (docs/PROTOCOL.md §6.5, §6.6, §6.9).
//!
//! Owns the connect-time conversation with the store. Pages of up to eight chats are read at
//! once, and the cursors for the receipts are read while the pages are (each read of an
//! active chat waits for the applier; issued one after another, a device with five active
//! chats waited six times). Flow control: a page is sent only while
//! the connection's outbound queue is under half its limit, so a large backlog streams at the
//! client's pace instead of closing it as a slow consumer.
//! Invariant: the connection was registered for live entries (`Hub::attach`) before the plan
//! is read.

use std::rc::Rc;
use std::time::Duration;

use router::session::Event;
use router::types::ReceiptNotice;
use store::StoreReply;
use store::model::{DeviceCursor, Mutation, ReceiptKind, SyncChat, WriteBatch};
use wire::ids::ChatId;
use wire::ws::close;

use super::{Hub, frames, send_event};
use crate::core::{Close, Conn, Core};

/// Entries read per store call during a sync.
const PAGE_ENTRIES: usize = 256;
/// Chats with more device cursors than this (groups of more than 16 users with 4 devices
/// each) send no receipts at sync: one `Receipt` per device and kind would flood the device.
const RECEIPT_SYNC_CURSORS_MAX: usize = 64;
/// How long to wait for the client to take its queue down before sending the next page.
const BACKOFF: Duration = Duration::from_millis(2);
/// Chats whose next page is read at once (each page is sent only while the connection's
/// queue is under half its limit, so this bounds the pages held, not what is queued).
const CHATS_READ_TOGETHER: usize = 8;

/// Runs one connection's sync; closes it when the store cannot serve it.
pub(super) async fn run(hub: &Rc<Hub>, core: &Rc<Core>, conn: &Rc<Conn>) {
    if let Err(close) = sync(hub, core, conn).await {
        conn.request_close(close);
    }
}

async fn sync(hub: &Hub, core: &Core, conn: &Conn) -> Result<(), Close> {
    let (user, device) = (conn.identity.user, conn.identity.device);
    let store = hub.store();
    let unavailable = |e: store::StoreError| {
        tracing::warn!(error = %e, "sync: the store failed");
        Close::new(close::TRY_AGAIN_LATER, "store unavailable")
    };
    let devices = store.devices(user).await.map_err(unavailable)?;
    let max = core.config.limits.devices_per_user_max;
    if !devices.iter().any(|d| d.device == device) && devices.len() >= max {
        return Err(Close::new(close::TOO_MANY_DEVICES, "too many devices"));
    }
    let seen = WriteBatch {
        mutations: vec![Mutation::DeviceSeen {
            user,
            device,
            at_ms: super::unix_ms(),
        }],
    };
    store.write(seen).await.map_err(unavailable)?;
    let plan = store.sync_plan(user, device).await.map_err(unavailable)?;
    // Issued now, read while the pages are: each waits for the applier too.
    let cursors = read_cursors(hub, &plan);
    let mut events = Vec::new();
    with_session(conn, |s| s.plan(&plan, &mut events));
    let mut done = send(core, conn, &mut events);
    while done.is_none() {
        let Some(wanted) = with_session(conn, |s| s.wanted()) else {
            return Ok(()); // The connection closed.
        };
        if wanted.is_empty() {
            return Ok(());
        }
        // The next page of several chats at once: a read of an active chat waits for the
        // applier to hold that chat's acknowledged appends, and reads issued together wait
        // together instead of one after another.
        let reads: Vec<_> = wanted
            .iter()
            .take(CHATS_READ_TOGETHER)
            .map(|&(chat, after, until)| (chat, store.read_log(chat, after, until, PAGE_ENTRIES)))
            .collect();
        for (chat, read) in reads {
            while conn.outbound.borrow().queued_bytes() > core.config.send_queue_bytes_max / 2 {
                if conn.closing.get().is_some() {
                    return Ok(());
                }
                glommio::timer::sleep(BACKOFF).await;
            }
            let page = read.await.map_err(unavailable)?;
            with_session(conn, |s| s.synced(chat, page, &mut events));
            done = send(core, conn, &mut events);
        }
    }
    receipts(core, conn, cursors).await.map_err(unavailable)?;
    if let Some(done) = done {
        send_event(core, conn, &done);
    }
    Ok(())
}

/// The cursor reads of every chat of `plan` with entries, issued together (the reader pool
/// serves them in parallel), for [`receipts`].
fn read_cursors(hub: &Hub, plan: &[SyncChat]) -> Vec<(ChatId, StoreReply<Vec<DeviceCursor>>)> {
    let store = hub.store();
    plan.iter()
        .filter(|c| c.until_seq > 0)
        .map(|c| (c.chat, store.cursors(c.chat)))
        .collect()
}

/// Sends the receipts a device may have missed while away, before `SyncDone`: in each of its
/// chats with at most [`RECEIPT_SYNC_CURSORS_MAX`] device cursors, every other user's
/// devices' cursors as `Receipt`s (cumulative, so one the device already had, or got live
/// meanwhile, changes nothing). Larger groups get receipts live only.
async fn receipts(
    core: &Core,
    conn: &Conn,
    reads: Vec<(ChatId, StoreReply<Vec<DeviceCursor>>)>,
) -> Result<(), store::StoreError> {
    let user = conn.identity.user;
    for (chat, read) in reads {
        let cursors = read.await?;
        if cursors.len() > RECEIPT_SYNC_CURSORS_MAX {
            continue;
        }
        for c in cursors.iter().filter(|c| c.user != user) {
            for (kind, up_to_seq) in [
                (ReceiptKind::Delivered, c.delivered_seq),
                (ReceiptKind::Read, c.read_seq),
            ] {
                if up_to_seq == 0 {
                    continue;
                }
                let notice = ReceiptNotice {
                    chat,
                    user: c.user,
                    device: c.device,
                    kind,
                    up_to_seq,
                    to: user,
                };
                if let Some(frame) = core.encode(&frames::receipt(&notice)) {
                    core.send(conn, frame);
                }
            }
        }
    }
    Ok(())
}

fn with_session<R>(conn: &Conn, f: impl FnOnce(&mut router::session::Session) -> R) -> Option<R> {
    conn.session.borrow_mut().as_deref_mut().map(f)
}

/// Sends `events` but `SyncDone`, which it returns (the receipts go before it).
fn send(core: &Core, conn: &Conn, events: &mut Vec<Event>) -> Option<Event> {
    let mut done = None;
    for event in events.drain(..) {
        if matches!(event, Event::SyncDone { .. }) {
            done = Some(event);
        } else {
            send_event(core, conn, &event);
        }
    }
    done
}
