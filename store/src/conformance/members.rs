//! Cases about who gets what: membership changes, cursors, sync plans and devices.

use wire::ids::ChatKind;

use super::{
    Harness, RETENTION, Subject, T0, append, append_texts, assert_refused, created, cursor,
    delivered, dev, direct, group, member, read, seen, sync, text, update, user, users,
};
use crate::StoreError;
use crate::model::{Change, ChatState, Device, Role};

/// `Created`, `Added` (a present user unchanged), `Promoted`, `Removed`, `Left` (also by a
/// non-member: nothing changes) and a re-add show in `chat` and `user_chats`, ordered by id;
/// a direct chat's members come from its id (one member for a note to self); all survive a
/// reopen.
pub fn membership_changes<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    let g = group(50);
    let g_low = group(5);
    let dm = direct(1, 2);
    let note = direct(6, 6);
    let members = vec![
        (user(1), Role::Admin),
        (user(2), Role::Member),
        (user(3), Role::Member),
    ];
    let create = Change::Created {
        name: "team".into(),
        history: false,
        members,
    };
    s.write(vec![append(g, 1, update(1, T0, create))]);
    let state = ChatState {
        chat: g,
        kind: ChatKind::Group,
        name: "team".into(),
        history: false,
        created_ms: T0,
        head: 1,
        floor: 1,
        members: vec![
            member(1, Role::Admin, 1),
            member(2, Role::Member, 1),
            member(3, Role::Member, 1),
        ],
    };
    assert_eq!(s.state(g), state);
    let change = |seq, actor, change| append(g, seq, update(actor, T0 + seq, change));
    s.write(vec![change(2, 1, Change::Added(users(&[4, 2])))]);
    let mut want = state.members.clone();
    want.push(member(4, Role::Member, 2));
    assert_eq!(s.state(g).members, want);
    s.write(vec![change(3, 1, Change::Promoted(users(&[2, 5])))]);
    want[1].role = Role::Admin;
    assert_eq!(s.state(g).members, want);
    s.write(vec![change(4, 1, Change::Removed(users(&[3, 6])))]);
    s.write(vec![change(5, 4, Change::Left)]);
    s.write(vec![change(6, 6, Change::Left)]);
    let after = s.state(g);
    assert_eq!((after.head, after.floor), (6, 1));
    assert_eq!(
        after.members,
        vec![member(1, Role::Admin, 1), member(2, Role::Admin, 1)]
    );
    for u in 3..=6 {
        assert_eq!(s.user_chats(user(u)), vec![], "user {u}");
    }
    s.write(vec![change(7, 1, Change::Added(users(&[3])))]);
    s.write(vec![append(dm, 1, text(2, 1, T0 + 10))]);
    s.write(vec![append(g_low, 1, created(1, T0 + 11, true, &[]))]);
    s.write(vec![append(note, 1, text(6, 1, T0 + 12))]);
    let direct_state = ChatState {
        chat: dm,
        kind: ChatKind::Direct,
        name: String::new(),
        history: false,
        created_ms: T0 + 10,
        head: 1,
        floor: 1,
        members: vec![member(1, Role::Member, 1), member(2, Role::Member, 1)],
    };
    let check = |s: &Subject<H>| {
        let members = vec![
            member(1, Role::Admin, 1),
            member(2, Role::Admin, 1),
            member(3, Role::Member, 7),
        ];
        assert_eq!(s.state(g).members, members);
        assert_eq!(s.state(dm), direct_state);
        let low = s.state(g_low);
        assert_eq!(
            (low.name.as_str(), low.history, low.created_ms),
            ("group", true, T0 + 11)
        );
        assert_eq!(s.state(note).members, vec![member(6, Role::Member, 1)]);
        assert_eq!(s.user_chats(user(1)), vec![dm, g_low, g]);
        assert_eq!(s.user_chats(user(2)), vec![dm, g]);
        assert_eq!(s.user_chats(user(3)), vec![g]);
        assert_eq!(s.user_chats(user(4)), vec![]);
        assert_eq!(s.user_chats(user(6)), vec![note]);
    };
    check(&s);
    s.reopen();
    check(&s);
}

/// Cursors only move forward: a lower value is ignored, `Read` also raises delivered, a
/// value past the head is clamped (to the head the batch's own appends made), rows come
/// ordered by (user, device), and a cursor for an unknown chat is refused.
pub fn cursor_monotonic<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    let chat = direct(1, 2);
    s.write(vec![
        seen(1, 1, T0),
        seen(1, 2, T0),
        seen(1, 9, T0),
        seen(2, 3, T0),
    ]);
    append_texts(&s, chat, 1, 1..=5, T0);
    let steps = [
        (delivered(chat, 1, 1, 3), (3, 0)),
        (delivered(chat, 1, 1, 2), (3, 0)),
        (read(chat, 1, 1, 2), (3, 2)),
        (read(chat, 1, 1, 4), (4, 4)),
        (delivered(chat, 1, 1, 100), (5, 4)),
        (read(chat, 1, 1, 3), (5, 4)),
        (read(chat, 1, 1, 100), (5, 5)),
        (delivered(chat, 1, 1, 0), (5, 5)),
    ];
    for (mutation, (d, r)) in steps {
        let described = format!("{mutation:?}");
        s.write(vec![mutation]);
        assert_eq!(
            s.cursors(chat),
            vec![cursor(1, 1, d, r)],
            "after {described}"
        );
    }
    s.write(vec![read(chat, 2, 3, 1)]);
    s.write(vec![delivered(chat, 1, 9, 1), delivered(chat, 1, 2, 2)]);
    let rows = vec![
        cursor(1, 1, 5, 5),
        cursor(1, 2, 2, 0),
        cursor(1, 9, 1, 0),
        cursor(2, 3, 1, 1),
    ];
    assert_eq!(s.cursors(chat), rows);
    s.write(vec![
        append(chat, 6, text(1, 6, T0)),
        delivered(chat, 2, 3, 60),
    ]);
    let rows = vec![
        cursor(1, 1, 5, 5),
        cursor(1, 2, 2, 0),
        cursor(1, 9, 1, 0),
        cursor(2, 3, 6, 1),
    ];
    assert_eq!(s.cursors(chat), rows);
    assert_eq!(s.sync_plan(user(2), dev(3)), vec![]);
    assert_eq!(s.sync_plan(user(1), dev(2)), vec![sync(chat, 2, 0, 6)]);
    let unknown = direct(1, 3);
    let refused = s.try_write(vec![delivered(unknown, 1, 1, 1)]);
    assert_refused(refused, &StoreError::UnknownChat(unknown));
    s.reopen();
    assert_eq!(s.cursors(chat), rows);
}

/// Members' devices sync from where they are: founders from the start, a member added later
/// from its `Added` entry, a device registered after messages from the head at registration;
/// fully delivered chats have nothing to sync but are listed with their cursors (a connection
/// needs them to drop live entries it already has); read cursors are reported; chats come
/// ordered by id.
pub fn sync_plan_members<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    let g = group(20);
    let dm = direct(2, 5);
    s.write(vec![
        seen(1, 1, T0),
        seen(2, 1, T0),
        seen(2, 2, T0),
        seen(3, 1, T0),
    ]);
    s.write(vec![append(g, 1, created(1, T0, false, &[2]))]);
    append_texts(&s, g, 1, 2..=4, T0);
    assert_eq!(s.sync_plan(user(1), dev(1)), vec![sync(g, 0, 0, 4)]);
    assert_eq!(s.sync_plan(user(3), dev(1)), vec![]);
    s.write(vec![append(
        g,
        5,
        update(1, T0, Change::Added(users(&[3]))),
    )]);
    assert_eq!(s.sync_plan(user(3), dev(1)), vec![sync(g, 4, 0, 5)]);
    append_texts(&s, g, 1, 6..=7, T0);
    assert_eq!(s.sync_plan(user(3), dev(1)), vec![sync(g, 4, 0, 7)]);
    s.write(vec![seen(2, 3, T0 + 1)]);
    assert_eq!(s.sync_plan(user(2), dev(3)), vec![]);
    assert_eq!(s.cursors(g), vec![cursor(2, 3, 7, 7)]);
    append_texts(&s, g, 1, 8..=8, T0);
    assert_eq!(s.sync_plan(user(2), dev(3)), vec![sync(g, 7, 7, 8)]);
    s.write(vec![delivered(g, 1, 1, 8)]);
    assert_eq!(s.sync_plan(user(1), dev(1)), vec![]);
    assert_eq!(s.sync_plan_all(user(1), dev(1)), vec![sync(g, 8, 0, 8)]);
    assert_eq!(s.sync_plan_all(user(6), dev(1)), vec![]);
    s.write(vec![read(g, 2, 1, 3)]);
    assert_eq!(s.sync_plan(user(2), dev(1)), vec![sync(g, 3, 3, 8)]);
    append_texts(&s, dm, 5, 1..=2, T0);
    let both = vec![sync(dm, 0, 0, 2), sync(g, 3, 3, 8)];
    assert_eq!(s.sync_plan(user(2), dev(1)), both);
    let new_device = vec![sync(dm, 0, 0, 2), sync(g, 7, 7, 8)];
    assert_eq!(s.sync_plan(user(2), dev(3)), new_device);
    assert_eq!(s.sync_plan(user(6), dev(1)), vec![]);
    s.reopen();
    assert_eq!(s.sync_plan(user(2), dev(1)), both);
    assert_eq!(s.sync_plan(user(2), dev(3)), new_device);
}

/// A removed or departed user's devices sync up to and including the change that ended the
/// membership and nothing later, until they have it; they are no longer members.
pub fn sync_plan_former_members<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    let g = group(30);
    s.write(vec![seen(1, 1, T0), seen(2, 1, T0), seen(3, 1, T0)]);
    s.write(vec![append(g, 1, created(1, T0, false, &[2, 3]))]);
    append_texts(&s, g, 1, 2..=3, T0);
    s.write(vec![delivered(g, 2, 1, 2)]);
    s.write(vec![append(
        g,
        4,
        update(1, T0, Change::Removed(users(&[2]))),
    )]);
    s.write(vec![append(g, 5, update(3, T0, Change::Left))]);
    append_texts(&s, g, 1, 6..=7, T0);
    assert_eq!(s.sync_plan(user(2), dev(1)), vec![sync(g, 2, 0, 4)]);
    assert_eq!(s.sync_plan(user(3), dev(1)), vec![sync(g, 0, 0, 5)]);
    assert_eq!(s.user_chats(user(2)), vec![]);
    assert_eq!(s.user_chats(user(3)), vec![]);
    assert_eq!(s.state(g).members, vec![member(1, Role::Admin, 1)]);
    assert_eq!(super::seqs(&s.read_log(g, 2, 4, 100)), vec![3, 4]);
    s.write(vec![delivered(g, 3, 1, 5)]);
    assert_eq!(s.sync_plan(user(3), dev(1)), vec![]);
    s.write(vec![delivered(g, 2, 1, 3)]);
    assert_eq!(s.sync_plan(user(2), dev(1)), vec![sync(g, 3, 0, 4)]);
    s.reopen();
    assert_eq!(s.sync_plan(user(2), dev(1)), vec![sync(g, 3, 0, 4)]);
    assert_eq!(s.sync_plan(user(3), dev(1)), vec![]);
    s.write(vec![delivered(g, 2, 1, 4)]);
    assert_eq!(s.sync_plan(user(2), dev(1)), vec![]);
}

/// A user removed and added again syncs from its new `Added` entry on every device, whatever
/// its devices had of its earlier membership: nothing sent while it was away is owed to it.
pub fn rejoin_starts_at_join<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let g = group(40);
    s.write(vec![seen(1, 1, T0), seen(2, 1, T0), seen(2, 2, T0)]);
    s.write(vec![append(g, 1, created(1, T0, false, &[2]))]);
    append_texts(&s, g, 1, 2..=3, T0);
    s.write(vec![delivered(g, 2, 1, 3)]);
    s.write(vec![append(
        g,
        4,
        update(1, T0, Change::Removed(users(&[2]))),
    )]);
    append_texts(&s, g, 1, 5..=6, T0);
    s.write(vec![delivered(g, 2, 1, 4)]);
    assert_eq!(s.sync_plan(user(2), dev(1)), vec![]);
    assert_eq!(s.sync_plan(user(2), dev(2)), vec![sync(g, 0, 0, 4)]);
    s.write(vec![append(
        g,
        7,
        update(1, T0, Change::Added(users(&[2]))),
    )]);
    append_texts(&s, g, 1, 8..=8, T0);
    assert_eq!(s.sync_plan(user(2), dev(1)), vec![sync(g, 6, 0, 8)]);
    assert_eq!(s.sync_plan(user(2), dev(2)), vec![sync(g, 6, 0, 8)]);
    let members = vec![member(1, Role::Admin, 1), member(2, Role::Member, 7)];
    assert_eq!(s.state(g).members, members);
    assert_eq!(s.user_chats(user(2)), vec![g]);
}

/// `DeviceSeen` registers a device (registered = last seen = the time) and then only moves
/// last seen forward; devices come ordered by id, per user, and survive a reopen.
pub fn devices_seen<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    for (u, d, at) in [(1, 5, 10), (1, 2, 20), (1, 5, 30), (1, 5, 25), (2, 5, 0)] {
        s.write(vec![seen(u, d, T0 + at)]);
    }
    s.write(vec![seen(3, 1, T0 + 100), seen(3, 1, T0 + 200)]);
    let device = |d, registered_ms, last_seen_ms| Device {
        device: dev(d),
        registered_ms,
        last_seen_ms,
    };
    let check = |s: &Subject<H>| {
        let first = vec![device(2, T0 + 20, T0 + 20), device(5, T0 + 10, T0 + 30)];
        assert_eq!(s.devices(user(1)), first);
        assert_eq!(s.devices(user(2)), vec![device(5, T0, T0)]);
        assert_eq!(s.devices(user(3)), vec![device(1, T0 + 100, T0 + 200)]);
        assert_eq!(s.devices(user(4)), vec![]);
    };
    check(&s);
    s.reopen();
    check(&s);
}
