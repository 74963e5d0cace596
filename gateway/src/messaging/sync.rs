//! Sync on connect: the device limit, the device's registration, then every entry it is owed,
//! chat by chat in pages, merged with live entries by its `router::session::Session`, then
//! `SyncDone` (docs/PROTOCOL.md §6.5, §6.9).
//!
//! Owns the connect-time conversation with the store. Flow control: a page is read only while
//! the connection's outbound queue is under half its limit, so a large backlog streams at the
//! client's pace instead of closing it as a slow consumer.
//! Invariant: the connection was registered for live entries (`Hub::attach`) before the plan
//! is read.

use std::rc::Rc;
use std::time::Duration;

use store::model::{Mutation, WriteBatch};
use wire::ws::close;

use super::{Hub, send_event};
use crate::core::{Close, Conn, Core};

/// Entries read per store call during a sync.
const PAGE_ENTRIES: usize = 256;
/// How long to wait for the client to take its queue down before reading the next page.
const BACKOFF: Duration = Duration::from_millis(2);

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
    let mut events = Vec::new();
    with_session(conn, |s| s.plan(&plan, &mut events));
    send(core, conn, &mut events);
    loop {
        let Some(wanted) = with_session(conn, |s| s.wanted()) else {
            return Ok(()); // The connection closed.
        };
        let Some(&(chat, after, until)) = wanted.first() else {
            return Ok(());
        };
        while conn.outbound.borrow().queued_bytes() > core.config.send_queue_bytes_max / 2 {
            if conn.closing.get().is_some() {
                return Ok(());
            }
            glommio::timer::sleep(BACKOFF).await;
        }
        let page = store
            .read_log(chat, after, until, PAGE_ENTRIES)
            .await
            .map_err(unavailable)?;
        with_session(conn, |s| s.synced(chat, page, &mut events));
        send(core, conn, &mut events);
    }
}

fn with_session<R>(conn: &Conn, f: impl FnOnce(&mut router::session::Session) -> R) -> Option<R> {
    conn.session.borrow_mut().as_deref_mut().map(f)
}

fn send(core: &Core, conn: &Conn, events: &mut Vec<router::session::Event>) {
    for event in events.drain(..) {
        send_event(core, conn, &event);
    }
}
