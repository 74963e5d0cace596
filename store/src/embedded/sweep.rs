//! Retention on the index (DESIGN.md F6, F7, F9): prune devices unseen too long, delete the
//! prefix of each chat's log that every device has or that is past its TTL, drop former
//! members who have everything they are owed, and expire idempotency keys.
//!
//! Owns the floor rule. For a chat, the new floor is the highest of: the old floor; unless the
//! chat keeps history, one past the lowest delivered cursor of every device that is owed
//! entries (current members' devices, and former members' devices below their left seq; no
//! such device means everything is delivered); one past the longest prefix of entries past the
//! TTL (`history_ttl` with history on, else `offline_ttl`). Never above `head + 1`.
//!
//! Runs on the applier thread (the index's only writer), committing every few thousand
//! changes so a large sweep does not hold its changes in memory.

use crate::model::expired;
use fjall::Slice;
use wire::ids::{ChatId, UserId};

use super::apply::default_delivered;
use super::codec::decode_entry;
use super::index::{self, Result, Txn};
use super::layout::{self as l, ChatMeta, Key, KeyParts};
use crate::model::{Millis, Retention, Seq, SweepReport};

/// Changes buffered before a sweep commits a batch.
const COMMIT_EVERY: usize = 4096;

/// One sweep as of `now`.
pub(crate) fn sweep(txn: &mut Txn<'_>, retention: &Retention, now: Millis) -> Result<SweepReport> {
    let mut report = SweepReport::default();
    prune_devices(txn, retention, now, &mut report)?;
    let ks = txn.keyspace();
    for guard in ks.prefix([l::CHAT]) {
        let (key, value) = guard.into_inner()?;
        let chat = KeyParts::new(&key, 0)?.chat()?;
        let meta = ChatMeta::decode(&value)?;
        sweep_chat(txn, retention, now, chat, &meta, &mut report)?;
        if txn.len() >= COMMIT_EVERY {
            txn.commit()?;
        }
    }
    expire_sent(txn, retention, now, &mut report)?;
    txn.commit()?;
    Ok(report)
}

fn prune_devices(
    txn: &mut Txn<'_>,
    retention: &Retention,
    now: Millis,
    report: &mut SweepReport,
) -> Result<()> {
    let ks = txn.keyspace();
    for guard in ks.prefix([l::DEVICE]) {
        let (key, value) = guard.into_inner()?;
        let [_, seen] = l::read_vars(&value)?;
        if !expired(now, seen, retention.device_prune_ms) {
            continue;
        }
        let mut parts = KeyParts::new(&key, 0)?;
        let (user, device) = (parts.user()?, parts.device()?);
        txn.delete(&key);
        for (chat, _) in index::user_chats(txn, user)? {
            txn.delete(l::cursor(chat, user, device));
        }
        report.devices_pruned += 1;
    }
    Ok(())
}

/// The lowest delivered seq (+1) over every device still owed entries of `chat`, or `None`
/// if no device is owed anything.
fn cursor_floor(txn: &Txn<'_>, chat: ChatId) -> Result<Option<Seq>> {
    let mut lowest: Option<Seq> = None;
    let mut consider = |delivered: Seq| {
        lowest = Some(lowest.map_or(delivered, |l| l.min(delivered)));
    };
    for member in index::members(txn, chat)? {
        for (device, _, _) in index::devices(txn, member.user)? {
            consider(delivered_of(txn, chat, member.user, device)?);
        }
    }
    for (user, _, left) in index::lefts(txn, chat)? {
        for (device, _, _) in index::devices(txn, user)? {
            let delivered = delivered_of(txn, chat, user, device)?;
            if delivered < left {
                consider(delivered);
            }
        }
    }
    Ok(lowest.map(|d| d + 1))
}

fn delivered_of(
    txn: &Txn<'_>,
    chat: ChatId,
    user: UserId,
    device: wire::ids::DeviceId,
) -> Result<Seq> {
    match index::cursor(txn, chat, user, device)? {
        Some((delivered, _)) => Ok(delivered),
        None => default_delivered(txn, chat, user),
    }
}

fn sweep_chat(
    txn: &mut Txn<'_>,
    retention: &Retention,
    now: Millis,
    chat: ChatId,
    meta: &ChatMeta,
    report: &mut SweepReport,
) -> Result<()> {
    let old = index::floor(txn, chat)?;
    let end = meta.head + 1;
    let mut floor = old;
    if !meta.history {
        floor = floor.max(cursor_floor(txn, chat)?.unwrap_or(end));
    }
    let ttl = if meta.history {
        retention.history_ttl_ms
    } else {
        retention.offline_ttl_ms
    };
    let ks = txn.keyspace();
    let mut deletes: Vec<Slice> = Vec::new();
    for guard in ks.range(l::entry(chat, old)..l::entry(chat, end)) {
        let (key, value) = guard.into_inner()?;
        let seq = KeyParts::new(&key, ChatId::SIZE)?.u64()?;
        if seq < floor || expired(now, decode_entry(&value)?.ts_ms(), ttl) {
            floor = floor.max(seq + 1);
            deletes.push(key);
        } else {
            break;
        }
    }
    let floor = floor.min(end);
    for key in &deletes {
        txn.delete(key);
    }
    report.entries_deleted += deletes.len() as u64;
    if floor != old {
        txn.put(l::floor(chat), l::vars(&[floor]));
    }
    drop_settled_lefts(txn, chat)
}

/// Forgets former members whose every device has everything up to its left seq.
fn drop_settled_lefts(txn: &mut Txn<'_>, chat: ChatId) -> Result<()> {
    for (user, _, left) in index::lefts(txn, chat)? {
        let mut settled = true;
        for (device, _, _) in index::devices(txn, user)? {
            settled &= delivered_of(txn, chat, user, device)? >= left;
        }
        if settled {
            txn.delete(l::left(chat, user));
            txn.delete(l::user_chat(user, chat));
            for (device, _, _) in index::devices(txn, user)? {
                txn.delete(l::cursor(chat, user, device));
            }
        }
    }
    Ok(())
}

fn expire_sent(
    txn: &mut Txn<'_>,
    retention: &Retention,
    now: Millis,
    report: &mut SweepReport,
) -> Result<()> {
    // Expired means `now - ts > ttl`, i.e. `ts < now - ttl`.
    let cutoff = now.saturating_sub(retention.offline_ttl_ms);
    let ks = txn.keyspace();
    let end = Key::new(l::SENT_BY_TIME).with(&cutoff.to_be_bytes());
    for guard in ks.range(Key::new(l::SENT_BY_TIME)..end) {
        let key = guard.key()?;
        let mut parts = KeyParts::new(&key, 0)?;
        let (_ts, user, device, client_msg_id) =
            (parts.u64()?, parts.user()?, parts.device()?, parts.u64()?);
        txn.delete(&key);
        txn.delete(l::sent(user, device, client_msg_id));
        report.sent_records_deleted += 1;
        if txn.len() >= COMMIT_EVERY {
            txn.commit()?;
        }
    }
    Ok(())
}
