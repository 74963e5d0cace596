//! Cases about sweeps, with the clock in the case's hands (the `now` passed to `sweep`): what
//! is deleted when, what a read below the floor reports, device pruning and key expiry.
//! [`RETENTION`]: offline TTL 10 s, history TTL 50 s, prune age 20 s; TTLs are exclusive
//! (an entry exactly `ttl` old is kept).

use super::{
    Harness, RETENTION, Subject, T0, append, append_texts, created, cursor, delivered, dev, direct,
    group, message, read, report, seen, sent_record, sync, update, user, users,
};
use crate::model::{Change, Device, LogPage, Millis, Seq};

/// Outside history chats, entries every member device has delivered are deleted (the floor
/// rises to one past the lowest delivered cursor, to `head + 1` once all have everything);
/// a second sweep deletes nothing more; the floor survives a reopen and appends continue.
pub fn retention_delivered_deleted<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    let chat = direct(1, 2);
    s.write(vec![seen(1, 1, T0), seen(2, 1, T0)]);
    let written = append_texts(&s, chat, 1, 1..=5, T0);
    assert_eq!(s.sweep(T0 + 1), report(0, 0, 0));
    assert_eq!(s.state(chat).floor, 1);
    s.write(vec![delivered(chat, 1, 1, 5), delivered(chat, 2, 1, 3)]);
    assert_eq!(s.sweep(T0 + 2), report(3, 0, 0));
    let state = s.state(chat);
    assert_eq!((state.head, state.floor), (5, 4));
    let rest = LogPage {
        truncated: None,
        entries: written[3..].to_vec(),
        more: false,
    };
    assert_eq!(s.read_log(chat, 3, Seq::MAX, 100), rest);
    assert_eq!(s.sweep(T0 + 3), report(0, 0, 0));
    s.write(vec![read(chat, 2, 1, 5)]);
    assert_eq!(s.sweep(T0 + 4), report(2, 0, 0));
    s.reopen();
    let state = s.state(chat);
    assert_eq!((state.head, state.floor), (5, 6));
    assert_eq!(s.read_log(chat, 5, Seq::MAX, 10), LogPage::default());
    let next = append_texts(&s, chat, 2, 6..=6, T0 + 5);
    let state = s.state(chat);
    assert_eq!((state.head, state.floor), (6, 6));
    let page = LogPage {
        truncated: None,
        entries: next,
        more: false,
    };
    assert_eq!(s.read_log(chat, 5, Seq::MAX, 10), page);
    assert_eq!(s.sync_plan(user(1), dev(1)), vec![sync(chat, 5, 0, 6)]);
}

/// A history chat keeps its entries, delivered or not, until the history TTL (not the
/// offline TTL), then deletes the expired prefix.
pub fn retention_history_ttl<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let g = group(60);
    s.write(vec![seen(1, 1, T0), seen(2, 1, T0)]);
    s.write(vec![append(g, 1, created(1, T0, true, &[2]))]);
    append_texts(&s, g, 1, 2..=4, T0 + 100);
    s.write(vec![delivered(g, 1, 1, 4)]);
    let sweep = |now: Millis| {
        s.write(vec![seen(1, 1, now), seen(2, 1, now)]);
        s.sweep(now)
    };
    // Undelivered on one device, past the offline TTL: kept (only the keys expire).
    assert_eq!(sweep(T0 + 20_000), report(0, 3, 0));
    s.write(vec![delivered(g, 2, 1, 4)]);
    assert_eq!(sweep(T0 + 40_000), report(0, 0, 0));
    assert_eq!(sweep(T0 + 50_000), report(0, 0, 0));
    assert_eq!(sweep(T0 + 50_001), report(1, 0, 0));
    assert_eq!(s.state(g).floor, 2);
    assert_eq!(sweep(T0 + 50_100), report(0, 0, 0));
    assert_eq!(sweep(T0 + 50_101), report(3, 0, 0));
    let state = s.state(g);
    assert_eq!((state.head, state.floor), (4, 5));
}

/// Entries nobody received are deleted once older than the offline TTL (a prefix, oldest
/// first), with their idempotency keys; the devices still owe them, and see the gap.
pub fn retention_offline_ttl<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let chat = direct(1, 2);
    s.write(vec![seen(1, 1, T0), seen(2, 1, T0)]);
    append_texts(&s, chat, 1, 1..=3, T0);
    let late = append_texts(&s, chat, 1, 4..=5, T0 + 5_000);
    assert_eq!(s.sweep(T0 + 10_000), report(0, 0, 0));
    assert_eq!(s.sweep(T0 + 10_001), report(3, 3, 0));
    assert_eq!(s.state(chat).floor, 4);
    assert_eq!(s.sync_plan(user(2), dev(1)), vec![sync(chat, 0, 0, 5)]);
    let page = LogPage {
        truncated: Some((1, 3)),
        entries: late,
        more: false,
    };
    assert_eq!(s.read_log(chat, 0, Seq::MAX, 100), page);
    assert_eq!(s.sweep(T0 + 15_000), report(0, 0, 0));
    assert_eq!(s.sweep(T0 + 15_001), report(2, 2, 0));
    let state = s.state(chat);
    assert_eq!((state.head, state.floor), (5, 6));
}

/// A member with no registered device holds nothing back: only devices count.
pub fn retention_user_without_devices<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let chat = direct(1, 2);
    s.write(vec![seen(1, 1, T0), seen(3, 1, T0)]);
    append_texts(&s, chat, 1, 1..=4, T0);
    s.write(vec![delivered(chat, 1, 1, 4)]);
    assert_eq!(s.sweep(T0 + 1), report(4, 0, 0));
    assert_eq!(s.state(chat).floor, 5);
    let g = group(70);
    s.write(vec![append(g, 1, created(1, T0, false, &[2, 3]))]);
    append_texts(&s, g, 1, 2..=4, T0);
    s.write(vec![delivered(g, 1, 1, 4), delivered(g, 3, 1, 2)]);
    assert_eq!(s.sweep(T0 + 2), report(2, 0, 0));
    assert_eq!(s.state(g).floor, 3);
}

/// A removed member's device holds entries only up to its removal: below it, it holds the
/// floor at its cursor; once it has the removal, later entries go as soon as the members have
/// them, and the former member is owed nothing.
pub fn retention_former_member<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let g = group(80);
    s.write(vec![seen(1, 1, T0), seen(2, 1, T0)]);
    s.write(vec![append(g, 1, created(1, T0, false, &[2]))]);
    append_texts(&s, g, 1, 2..=5, T0);
    s.write(vec![delivered(g, 2, 1, 2)]);
    s.write(vec![append(
        g,
        6,
        update(1, T0, Change::Removed(users(&[2]))),
    )]);
    append_texts(&s, g, 1, 7..=8, T0);
    s.write(vec![delivered(g, 1, 1, 8)]);
    assert_eq!(s.sweep(T0 + 1), report(2, 0, 0));
    assert_eq!(s.state(g).floor, 3);
    assert_eq!(s.sync_plan(user(2), dev(1)), vec![sync(g, 2, 0, 6)]);
    s.write(vec![delivered(g, 2, 1, 4)]);
    assert_eq!(s.sweep(T0 + 2), report(2, 0, 0));
    assert_eq!(s.state(g).floor, 5);
    s.write(vec![delivered(g, 2, 1, 6)]);
    assert_eq!(s.sweep(T0 + 3), report(4, 0, 0));
    let state = s.state(g);
    assert_eq!((state.head, state.floor), (8, 9));
    assert_eq!(s.sync_plan(user(2), dev(1)), vec![]);
    append_texts(&s, g, 1, 9..=10, T0);
    s.write(vec![delivered(g, 1, 1, 10)]);
    assert_eq!(s.sweep(T0 + 4), report(2, 0, 0));
    assert_eq!(s.state(g).floor, 11);
    assert_eq!(s.sync_plan(user(2), dev(1)), vec![]);
}

/// A read from below the floor reports exactly the removed part of the requested range
/// (capped at `until`), then the retained entries; `chat` shows the floor, `head + 1` once
/// everything is removed; it all survives a reopen.
pub fn truncation_reported<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    let chat = direct(1, 2);
    s.write(vec![seen(1, 1, T0), seen(2, 1, T0)]);
    append_texts(&s, chat, 1, 1..=10, T0);
    let late = append_texts(&s, chat, 1, 11..=12, T0 + 9_000);
    s.write(vec![delivered(chat, 1, 1, 12), delivered(chat, 2, 1, 3)]);
    assert_eq!(s.sweep(T0 + 10_001), report(10, 10, 0));
    let state = s.state(chat);
    assert_eq!((state.head, state.floor), (12, 11));
    let page = |truncated, entries: &[(Seq, crate::model::Entry)], more| LogPage {
        truncated,
        entries: entries.to_vec(),
        more,
    };
    assert_eq!(
        s.read_log(chat, 3, Seq::MAX, 100),
        page(Some((4, 10)), &late, false)
    );
    assert_eq!(s.read_log(chat, 3, 8, 100), page(Some((4, 8)), &[], false));
    assert_eq!(
        s.read_log(chat, 3, Seq::MAX, 1),
        page(Some((4, 10)), &late[..1], true)
    );
    assert_eq!(
        s.read_log(chat, 10, Seq::MAX, 100),
        page(None, &late, false)
    );
    assert_eq!(
        s.read_log(chat, 0, Seq::MAX, 100),
        page(Some((1, 10)), &late, false)
    );
    assert_eq!(
        s.read_log(chat, 9, 11, 100),
        page(Some((10, 10)), &late[..1], false)
    );
    assert_eq!(s.sync_plan(user(2), dev(1)), vec![sync(chat, 3, 0, 12)]);
    s.write(vec![delivered(chat, 2, 1, 12)]);
    assert_eq!(s.sweep(T0 + 10_002), report(2, 0, 0));
    let check = |s: &Subject<H>| {
        let state = s.state(chat);
        assert_eq!((state.head, state.floor), (12, 13));
        assert_eq!(
            s.read_log(chat, 3, Seq::MAX, 100),
            page(Some((4, 12)), &[], false)
        );
        assert_eq!(s.read_log(chat, 12, Seq::MAX, 100), LogPage::default());
        assert_eq!(s.history(chat, 0, 10), LogPage::default());
    };
    check(&s);
    s.reopen();
    check(&s);
}

/// A device unseen for longer than the prune age is removed with its cursors and stops
/// holding entries back; one seen recently stays; seen again, it registers afresh at the head.
pub fn device_pruning<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let chat = direct(1, 2);
    let t = T0 + 15_000;
    s.write(vec![seen(1, 1, T0), seen(2, 1, T0), seen(2, 2, T0)]);
    s.write(vec![seen(1, 1, t), seen(2, 1, t)]);
    append_texts(&s, chat, 1, 1..=4, t);
    s.write(vec![delivered(chat, 1, 1, 4), delivered(chat, 2, 1, 4)]);
    assert_eq!(s.sweep(t + 1), report(0, 0, 0));
    assert_eq!(s.sweep(T0 + 20_000), report(0, 0, 0));
    s.write(vec![delivered(chat, 2, 2, 1)]);
    let rows = vec![cursor(1, 1, 4, 0), cursor(2, 1, 4, 0), cursor(2, 2, 1, 0)];
    assert_eq!(s.cursors(chat), rows);
    assert_eq!(s.sweep(T0 + 20_001), report(4, 0, 1));
    let device = |d, registered_ms, last_seen_ms| Device {
        device: dev(d),
        registered_ms,
        last_seen_ms,
    };
    assert_eq!(s.devices(user(1)), vec![device(1, T0, t)]);
    assert_eq!(s.devices(user(2)), vec![device(1, T0, t)]);
    assert_eq!(
        s.cursors(chat),
        vec![cursor(1, 1, 4, 0), cursor(2, 1, 4, 0)]
    );
    assert_eq!(s.state(chat).floor, 5);
    s.write(vec![seen(2, 2, T0 + 20_002)]);
    let again = vec![device(1, T0, t), device(2, T0 + 20_002, T0 + 20_002)];
    assert_eq!(s.devices(user(2)), again);
    assert_eq!(s.sync_plan(user(2), dev(2)), vec![]);
    let rows = vec![cursor(1, 1, 4, 0), cursor(2, 1, 4, 0), cursor(2, 2, 4, 4)];
    assert_eq!(s.cursors(chat), rows);
}

/// Idempotency keys are kept for the offline TTL (also across a reopen, and after their
/// entries are gone) and deleted once older.
pub fn idempotency_keys_expire<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    let chat = direct(1, 2);
    let first = message(user(1), dev(1), 1, T0, b"one");
    let second = message(user(1), dev(1), 2, T0 + 5_000, b"two");
    s.write(vec![append(chat, 1, first.clone())]);
    s.write(vec![append(chat, 2, second.clone())]);
    // Nobody has a device, so the entries themselves go at once.
    assert_eq!(s.sweep(T0 + 10_000), report(2, 0, 0));
    assert_eq!(
        s.sent(user(1), dev(1), 1),
        Some(sent_record(chat, 1, &first))
    );
    assert_eq!(
        s.sent(user(1), dev(1), 2),
        Some(sent_record(chat, 2, &second))
    );
    s.reopen();
    assert_eq!(s.sweep(T0 + 10_001), report(0, 1, 0));
    assert_eq!(s.sent(user(1), dev(1), 1), None);
    assert_eq!(
        s.sent(user(1), dev(1), 2),
        Some(sent_record(chat, 2, &second))
    );
    assert_eq!(s.sweep(T0 + 15_000), report(0, 0, 0));
    assert_eq!(s.sweep(T0 + 15_001), report(0, 1, 0));
    assert_eq!(s.sent(user(1), dev(1), 2), None);
}

/// Idempotency keys written in one batch expire each at its own time: a sweep between their
/// times deletes only the older ones, and the younger one is answered (also after a reopen)
/// until its own turn.
pub fn idempotency_keys_expire_within_one_batch<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    let (a, b) = (direct(1, 2), direct(1, 3));
    let oldest = message(user(1), dev(1), 1, T0, b"oldest");
    let young = message(user(1), dev(2), 7, T0 + 5_000, b"young");
    let middle = message(user(1), dev(1), 2, T0 + 2_000, b"middle");
    s.write(vec![
        append(a, 1, oldest.clone()),
        append(b, 1, young.clone()),
        append(a, 2, middle.clone()),
    ]);
    // Nobody has a device, so the entries themselves go at once; no key is old enough yet.
    assert_eq!(s.sweep(T0 + 10_000), report(3, 0, 0));
    assert_eq!(s.sweep(T0 + 12_001), report(0, 2, 0));
    assert_eq!(s.sent(user(1), dev(1), 1), None);
    assert_eq!(s.sent(user(1), dev(1), 2), None);
    assert_eq!(s.sent(user(1), dev(2), 7), Some(sent_record(b, 1, &young)));
    s.reopen();
    assert_eq!(s.sweep(T0 + 12_002), report(0, 0, 0));
    assert_eq!(s.sent(user(1), dev(2), 7), Some(sent_record(b, 1, &young)));
    assert_eq!(s.sweep(T0 + 15_000), report(0, 0, 0));
    assert_eq!(s.sweep(T0 + 15_001), report(0, 1, 0));
    assert_eq!(s.sent(user(1), dev(2), 7), None);
    assert_eq!(s.sweep(T0 + 30_000), report(0, 0, 0));
}
