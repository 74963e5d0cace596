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
use lsm_tree::{Guard, Slice};
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
    let tree = txn.index();
    for guard in tree.prefix([l::CHAT]) {
        let (key, value) = guard.into_inner()?;
        let chat = KeyParts::new(&key, 0)?.chat()?;
        let mut meta = ChatMeta::decode(&value)?;
        if let Some(head) = index::head_row(txn, chat)? {
            meta.head = head;
        }
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
    let tree = txn.index();
    for guard in tree.prefix([l::DEVICE]) {
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
    let tree = txn.index();
    let mut deletes: Vec<Slice> = Vec::new();
    for guard in tree.range(l::entry(chat, old)..l::entry(chat, end)) {
        let (key, value) = guard.into_inner()?;
        let seq = KeyParts::new(&key, ChatId::SIZE)?.u64()?;
        if seq < floor || expired(now, decode_entry(&value, chat, seq)?.ts_ms(), ttl) {
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

/// Deletes the idempotency rows older than the offline TTL. Expiry rows hold a log record's
/// messages under the oldest one's time: a row the cutoff falls inside loses its expired
/// messages and is written back under the oldest remaining time (same LSN), past the cutoff,
/// so this scan does not meet it again.
fn expire_sent(
    txn: &mut Txn<'_>,
    retention: &Retention,
    now: Millis,
    report: &mut SweepReport,
) -> Result<()> {
    // Expired means `now - ts > ttl`, i.e. `ts < now - ttl`.
    let cutoff = now.saturating_sub(retention.offline_ttl_ms);
    let tree = txn.index();
    let end = Key::new(l::SENT_BY_TIME).with(&cutoff.to_be_bytes());
    let mut items = Vec::new();
    for guard in tree.range(Key::new(l::SENT_BY_TIME)..end) {
        let (key, value) = guard.into_inner()?;
        txn.delete(&key);
        let mut parts = KeyParts::new(&key, 0)?;
        let oldest = parts.u64()?;
        if key.len() == l::LEGACY_EXPIRING_KEY_LEN {
            let (user, device, client_msg_id) = (parts.user()?, parts.device()?, parts.u64()?);
            txn.delete(l::sent(user, device, client_msg_id));
            report.sent_records_deleted += 1;
        } else {
            let lsn = parts.u64()?;
            items.clear();
            l::read_expiring(&value, oldest, &mut items)?;
            items.retain(|item| {
                let expired = item.ts_ms < cutoff;
                if expired {
                    txn.delete(l::sent(item.user, item.device, item.client_msg_id));
                    report.sent_records_deleted += 1;
                }
                !expired
            });
            if let Some((key, value)) = l::expiring_row(&items, lsn) {
                txn.put(key, value);
            }
        }
        if txn.len() >= COMMIT_EVERY {
            txn.commit()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use wire::ids::{DeviceId, UserId};

    use super::*;

    fn user(id: u64) -> UserId {
        UserId::new(id).expect("valid user")
    }

    fn device(id: u64) -> DeviceId {
        DeviceId::new(id).expect("valid device")
    }

    /// User 1's device 1's message `client_msg_id`, sent at `ts_ms`.
    fn item(client_msg_id: u64, ts_ms: Millis) -> l::Expiring {
        l::Expiring {
            user: user(1),
            device: device(1),
            client_msg_id,
            ts_ms,
        }
    }

    /// Idempotency answers (any value: expiry never reads them) for user 1's device 1.
    fn put_answers(txn: &mut Txn<'_>, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            txn.put(l::sent(user(1), device(1), id), vec![1]);
        }
    }

    /// Expires with an offline TTL of 100 ms as of `now`, committed; the answers deleted.
    fn expire_at(txn: &mut Txn<'_>, now: Millis) -> u64 {
        let retention = Retention {
            offline_ttl_ms: 100,
            ..Retention::default()
        };
        let mut report = SweepReport::default();
        expire_sent(txn, &retention, now, &mut report).expect("sweep");
        txn.commit().expect("commit");
        report.sent_records_deleted
    }

    /// An index written before expiry rows were per record holds one `t` row per message
    /// (ts, user, device, `client_msg_id`; empty value): a sweep still expires those, beside
    /// rows of the current shape, and counts each message once.
    #[test]
    fn legacy_per_message_expiry_rows_still_expire() {
        let (_dir, tree) = index::temp();
        let mut txn = Txn::new(&tree);
        let legacy = Key::new(l::SENT_BY_TIME)
            .with(&1_000u64.to_be_bytes())
            .with(user(1).as_bytes())
            .with(device(1).as_bytes())
            .with(&5u64.to_be_bytes());
        assert_eq!(legacy.as_ref().len(), l::LEGACY_EXPIRING_KEY_LEN);
        txn.put(legacy, Vec::new());
        let (key, value) = l::expiring_row(&[item(6, 1_000)], 9).expect("a row");
        txn.put(key, value);
        put_answers(&mut txn, [5, 6]);
        txn.commit().expect("commit");

        assert_eq!(expire_at(&mut txn, 1_100), 0, "exactly the TTL old is kept");
        assert_eq!(expire_at(&mut txn, 1_101), 2);
        let left: Vec<_> = [l::SENT, l::SENT_BY_TIME]
            .iter()
            .flat_map(|&prefix| tree.prefix([prefix]))
            .map(|guard| guard.key().expect("key"))
            .collect();
        assert!(left.is_empty(), "rows left: {left:?}");
    }

    /// A row the cutoff falls inside keeps its younger messages under their oldest time (same
    /// LSN), past the cutoff, and their idempotency answers stay.
    #[test]
    fn a_partly_expired_row_is_written_back_under_its_oldest_remaining_time() {
        let (_dir, tree) = index::temp();
        let mut txn = Txn::new(&tree);
        let all = [item(1, 1_000), item(2, 1_300), item(3, 1_200)];
        let (key, value) = l::expiring_row(&all, 7).expect("a row");
        txn.put(key, value);
        put_answers(&mut txn, 1..=3);
        txn.commit().expect("commit");

        assert_eq!(expire_at(&mut txn, 1_101), 1);
        let rows: Vec<_> = tree
            .prefix([l::SENT_BY_TIME])
            .map(|guard| guard.into_inner().expect("row"))
            .collect();
        let (key, value) = l::expiring_row(&[item(2, 1_300), item(3, 1_200)], 7).expect("a row");
        assert_eq!(rows.len(), 1, "one row: {rows:?}");
        assert_eq!(rows[0].0.as_ref(), key.as_ref(), "keyed by 1,200 and LSN 7");
        assert_eq!(rows[0].1.as_ref(), value);
        let answered: Vec<u64> = (1..=3)
            .filter(|&id| {
                tree.get(l::sent(user(1), device(1), id))
                    .expect("get")
                    .is_some()
            })
            .collect();
        assert_eq!(answered, [2, 3]);
    }
}
