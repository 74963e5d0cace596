//! Cases about the log itself: order and bytes kept exactly, seqs checked, batches
//! all-or-nothing, idempotency answers, paging through `read_log` and `history`, and volume.

use wire::ids::{AttachmentId, ChatKind};

use super::{
    Harness, RETENTION, Subject, T0, append, append_texts, assert_refused, created, delivered, dev,
    direct, group, member, message, must, read, seen, sent_record, seqs, text, update, user, users,
};
use crate::model::{BodyKind, Change, ChatState, Entry, LogPage, Role, Seq};
use crate::{Store, StoreError};

/// Entries come back ascending, exactly as written (bodies byte for byte, attachments, kinds,
/// timestamps), from one read and from a range, before and after a reopen; the head survives
/// the reopen, so the next seq is still checked.
pub fn ordering_survives_reopen<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    let chat = direct(2, 1);
    let written: Vec<(Seq, Entry)> = (1..=40).map(|seq| (seq, varied_message(seq))).collect();
    let mut rest = written.as_slice();
    let mut size = 1;
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        s.write(
            batch
                .iter()
                .map(|(seq, e)| append(chat, *seq, e.clone()))
                .collect(),
        );
        rest = tail;
        size += 1;
    }
    let want_state = ChatState {
        chat,
        kind: ChatKind::Direct,
        name: String::new(),
        history: false,
        created_ms: T0,
        head: 40,
        floor: 1,
        members: vec![member(1, Role::Member, 1), member(2, Role::Member, 1)],
    };
    let check = |s: &Subject<H>| {
        let all = LogPage {
            truncated: None,
            entries: written.clone(),
            more: false,
        };
        assert_eq!(s.read_log(chat, 0, Seq::MAX, 1000), all);
        let middle = s.read_log(chat, 10, 20, 1000);
        assert_eq!(middle.entries, written[10..20].to_vec());
        assert!(!middle.more);
        assert_eq!(s.state(chat), want_state);
    };
    check(&s);
    s.reopen();
    check(&s);
    let next = text(1, 41, T0 + 50);
    s.write(vec![append(chat, 41, next.clone())]);
    let again = s.try_write(vec![append(chat, 41, text(1, 42, T0 + 50))]);
    assert_refused(again, &conflict(chat, 42, 41));
    assert_eq!(s.read_log(chat, 40, Seq::MAX, 10).entries, vec![(41, next)]);
}

/// A seq past head + 1 is `SeqConflict` with the expected and the offered seq, also inside
/// one batch; the refused batch's other mutations (another chat's creation, a device, a
/// cursor) did not happen.
pub fn seq_gap_refused<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let chat = direct(1, 2);
    let other = direct(1, 3);
    append_texts(&s, chat, 1, 1..=3, T0);
    s.write(vec![seen(1, 1, T0)]);
    let devices = [(user(1), dev(1)), (user(2), dev(1)), (user(3), dev(1))];
    let keys = [
        (user(1), dev(1), 3),
        (user(1), dev(1), 4),
        (user(3), dev(1), 60),
    ];
    let before = s.observe(&[chat, other], &devices, &keys);
    let refused = s.try_write(vec![
        append(other, 1, text(3, 60, T0 + 1)),
        seen(3, 1, T0 + 1),
        read(chat, 2, 1, 3),
        append(chat, 5, text(1, 5, T0 + 1)),
    ]);
    assert_refused(refused, &conflict(chat, 4, 5));
    assert_eq!(s.observe(&[chat, other], &devices, &keys), before);
    let refused = s.try_write(vec![
        append(chat, 4, text(1, 4, T0 + 1)),
        append(chat, 6, text(1, 6, T0 + 1)),
    ]);
    assert_refused(refused, &conflict(chat, 5, 6));
    assert_eq!(s.observe(&[chat, other], &devices, &keys), before);
    s.write(vec![append(chat, 4, text(1, 4, T0 + 2))]);
    assert_eq!(s.state(chat).head, 4);
}

/// A seq at or below the head is `SeqConflict` (also a second `Created` and a seq repeated
/// within one batch), and the stored entry keeps its original content.
pub fn seq_duplicate_refused<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let chat = direct(1, 2);
    let written = append_texts(&s, chat, 1, 1..=3, T0);
    let refused = s.try_write(vec![append(chat, 3, text(2, 99, T0))]);
    assert_refused(refused, &conflict(chat, 4, 3));
    assert_refused(
        s.try_write(vec![append(chat, 1, text(2, 98, T0))]),
        &conflict(chat, 4, 1),
    );
    let twice = vec![
        append(chat, 4, text(2, 97, T0)),
        append(chat, 4, text(2, 96, T0)),
    ];
    assert_refused(s.try_write(twice), &conflict(chat, 5, 4));
    let all = s.read_log(chat, 0, Seq::MAX, 100);
    assert_eq!(all.entries, written);
    for id in 96..=99 {
        assert_eq!(s.sent(user(2), dev(1), id), None, "client id {id}");
    }
    let g = group(9);
    s.write(vec![append(g, 1, created(1, T0, false, &[2]))]);
    let again = s.try_write(vec![append(g, 1, created(1, T0, false, &[3]))]);
    assert_refused(again, &conflict(g, 2, 1));
    assert_eq!(s.state(g).head, 1);
    assert_eq!(s.user_chats(user(3)), vec![]);
}

/// A group whose first entry is not `Created`, a first entry past seq 1, and a cursor or a
/// read of a chat that does not exist are `UnknownChat`; the refused batch changed nothing.
pub fn unknown_chat_refused<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let g = group(7);
    let dm = direct(1, 2);
    let missing = direct(1, 3);
    let unknown = |c| StoreError::UnknownChat(c);
    assert_refused(s.try_write(vec![append(g, 1, text(1, 1, T0))]), &unknown(g));
    let added = update(1, T0, Change::Added(users(&[1, 2])));
    assert_refused(s.try_write(vec![append(g, 1, added)]), &unknown(g));
    let late_create = append(g, 2, created(1, T0, false, &[2]));
    assert_refused(s.try_write(vec![late_create]), &unknown(g));
    let late_first = append(dm, 2, text(1, 2, T0));
    assert_refused(s.try_write(vec![late_first]), &unknown(dm));
    assert_refused(
        s.try_write(vec![delivered(missing, 1, 1, 1)]),
        &unknown(missing),
    );
    let mixed = vec![append(dm, 1, text(1, 1, T0)), delivered(missing, 1, 1, 1)];
    assert_refused(s.try_write(mixed), &unknown(missing));
    for chat in [g, dm, missing] {
        assert_eq!(s.chat(chat), None);
        assert_refused(
            super::wait(s.store().read_log(chat, 0, 10, 10)),
            &unknown(chat),
        );
        assert_refused(super::wait(s.store().history(chat, 0, 10)), &unknown(chat));
        assert_refused(super::wait(s.store().cursors(chat)), &unknown(chat));
    }
    assert_eq!(s.user_chats(user(1)), vec![]);
    assert_eq!(s.sync_plan(user(1), dev(1)), vec![]);
    assert_eq!(s.sent(user(1), dev(1), 1), None);
    // A cursor may name a chat the same batch created.
    s.write(vec![append(dm, 1, text(1, 1, T0)), delivered(dm, 2, 1, 1)]);
    assert_eq!(s.cursors(dm), vec![super::cursor(2, 1, 1, 0)]);
}

/// `Created` in a direct chat, or at a seq past 1, is `Invalid`, alone or inside a batch,
/// and nothing of the batch is written.
pub fn invalid_create_refused<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let dm = direct(1, 2);
    let g = group(8);
    let g2 = group(10);
    let invalid = StoreError::Invalid(String::new());
    let in_direct = append(dm, 1, created(1, T0, false, &[2]));
    assert_refused(s.try_write(vec![in_direct.clone()]), &invalid);
    assert_eq!(s.chat(dm), None);
    s.write(vec![append(g, 1, created(1, T0, false, &[2]))]);
    let late = append(g, 2, created(1, T0, false, &[3]));
    assert_refused(s.try_write(vec![late]), &invalid);
    let state = s.state(g);
    assert_eq!(state.head, 1);
    let founders = vec![member(1, Role::Admin, 1), member(2, Role::Member, 1)];
    assert_eq!(state.members, founders);
    let batch = vec![
        append(g2, 1, created(1, T0, false, &[4])),
        append(g2, 2, text(1, 2, T0)),
        in_direct,
    ];
    assert_refused(s.try_write(batch), &invalid);
    assert_eq!(s.chat(g2), None);
    assert_eq!(s.chat(dm), None);
    assert_eq!(s.user_chats(user(4)), vec![]);
    s.write(vec![append(dm, 1, text(1, 1, T0))]);
    let into_existing = append(dm, 2, created(1, T0, false, &[2]));
    assert_refused(s.try_write(vec![into_existing]), &invalid);
    assert_eq!(s.state(dm).head, 1);
}

/// A batch refused by its last mutation leaves no trace of the others (a device, a group and
/// its messages, a cursor, a membership change, idempotency keys); the same batch without it
/// applies in order, each mutation seeing the ones before.
pub fn batch_all_or_nothing<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let g = group(1);
    let dm = direct(1, 2);
    let good = vec![
        seen(1, 1, T0),
        append(g, 1, created(1, T0, false, &[2, 3])),
        append(g, 2, text(1, 10, T0)),
        read(g, 1, 1, 2),
        append(g, 3, update(1, T0, Change::Added(users(&[4])))),
        append(g, 4, text(4, 11, T0)),
        append(dm, 1, text(2, 12, T0)),
    ];
    let mut bad = good.clone();
    bad.push(append(dm, 3, text(2, 13, T0)));
    let devices: Vec<_> = (1..=4).map(|u| (user(u), dev(1))).collect();
    let keys = [
        (user(1), dev(1), 10),
        (user(4), dev(1), 11),
        (user(2), dev(1), 12),
    ];
    let before = s.observe(&[g, dm], &devices, &keys);
    assert_refused(s.try_write(bad), &conflict(dm, 2, 3));
    assert_eq!(s.observe(&[g, dm], &devices, &keys), before);
    s.write(good);
    let want = ChatState {
        chat: g,
        kind: ChatKind::Group,
        name: "group".into(),
        history: false,
        created_ms: T0,
        head: 4,
        floor: 1,
        members: vec![
            member(1, Role::Admin, 1),
            member(2, Role::Member, 1),
            member(3, Role::Member, 1),
            member(4, Role::Member, 3),
        ],
    };
    assert_eq!(s.state(g), want);
    assert_eq!(s.cursors(g), vec![super::cursor(1, 1, 2, 2)]);
    let plan = vec![super::sync(dm, 0, 0, 1), super::sync(g, 2, 2, 4)];
    assert_eq!(s.sync_plan(user(1), dev(1)), plan);
    let want_sent = sent_record(g, 4, &text(4, 11, T0));
    assert_eq!(s.sent(user(4), dev(1), 11), Some(want_sent));
    assert_eq!(s.user_chats(user(4)), vec![g]);
}

/// `sent` answers each idempotency key with its chat, seq, server id and time, also after a
/// reopen; a key that differs in user, device or client id is unknown.
pub fn idempotency_answers<H: Harness>(h: H) {
    let mut s = Subject::open(h, RETENTION);
    let chat = direct(1, 2);
    let first = message(user(1), dev(1), 10, T0, b"a");
    let second = message(user(2), dev(5), 10, T0 + 1, b"b");
    let third = message(user(1), dev(2), 11, T0 + 2, b"c");
    s.write(vec![
        append(chat, 1, first.clone()),
        append(chat, 2, second.clone()),
    ]);
    s.write(vec![append(chat, 3, third.clone())]);
    let check = |s: &Subject<H>| {
        assert_eq!(
            s.sent(user(1), dev(1), 10),
            Some(sent_record(chat, 1, &first))
        );
        assert_eq!(
            s.sent(user(2), dev(5), 10),
            Some(sent_record(chat, 2, &second))
        );
        assert_eq!(
            s.sent(user(1), dev(2), 11),
            Some(sent_record(chat, 3, &third))
        );
        for (u, d, id) in [(1, 1, 11), (1, 2, 10), (2, 1, 10), (3, 1, 10), (1, 1, 9)] {
            assert_eq!(s.sent(user(u), dev(d), id), None, "key ({u}, {d}, {id})");
        }
        // The same answers in one call, in key order.
        let keys = vec![
            (user(1), dev(2), 11),
            (user(3), dev(1), 10),
            (user(1), dev(1), 10),
            (user(2), dev(5), 10),
        ];
        let want = vec![
            Some(sent_record(chat, 3, &third)),
            None,
            Some(sent_record(chat, 1, &first)),
            Some(sent_record(chat, 2, &second)),
        ];
        assert_eq!(must("sent_many", s.store().sent_many(keys)), want);
    };
    check(&s);
    s.reopen();
    check(&s);
}

/// `read_log` honours `limit` (with `more`), `until` (clamped to the head), and an empty range.
pub fn read_log_limits<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let chat = direct(1, 2);
    let written = append_texts(&s, chat, 1, 1..=10, T0);
    let page = |from: Seq, to: Seq, more: bool| LogPage {
        truncated: None,
        entries: written[(from - 1) as usize..to as usize].to_vec(),
        more,
    };
    assert_eq!(s.read_log(chat, 0, 10, 3), page(1, 3, true));
    assert_eq!(s.read_log(chat, 3, 10, 3), page(4, 6, true));
    assert_eq!(s.read_log(chat, 9, 10, 3), page(10, 10, false));
    assert_eq!(s.read_log(chat, 0, 5, 10), page(1, 5, false));
    assert_eq!(s.read_log(chat, 0, 5, 5), page(1, 5, false));
    assert_eq!(s.read_log(chat, 0, 100, 100), page(1, 10, false));
    assert_eq!(s.read_log(chat, 2, Seq::MAX, 100), page(3, 10, false));
    for (after, until) in [(10, 10), (12, 100), (5, 3), (4, 4)] {
        assert_eq!(
            s.read_log(chat, after, until, 10),
            LogPage::default(),
            "({after}, {until})"
        );
    }
    let none = LogPage {
        truncated: None,
        entries: vec![],
        more: true,
    };
    assert_eq!(s.read_log(chat, 0, 10, 0), none);
}

/// `history` pages newest first through messages only (updates skipped), `before` exclusive
/// (`0` = from the head), `more` while older messages remain; chats without history answer
/// with what is retained.
pub fn history_pages_newest_first<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let g = group(3);
    let log = [
        created(1, T0, true, &[2]),
        text(1, 2, T0),
        text(2, 3, T0),
        update(1, T0, Change::Added(users(&[3]))),
        text(3, 5, T0),
        update(1, T0, Change::Promoted(users(&[2]))),
        text(1, 7, T0),
        text(2, 8, T0),
    ];
    s.write(
        (1..)
            .zip(&log)
            .map(|(seq, e)| append(g, seq, e.clone()))
            .collect(),
    );
    let page = |want: &[Seq], more: bool| LogPage {
        truncated: None,
        entries: want
            .iter()
            .map(|&q| (q, log[(q - 1) as usize].clone()))
            .collect(),
        more,
    };
    assert_eq!(s.history(g, 0, 2), page(&[8, 7], true));
    assert_eq!(s.history(g, 7, 2), page(&[5, 3], true));
    assert_eq!(s.history(g, 3, 2), page(&[2], false));
    assert_eq!(s.history(g, 2, 5), page(&[], false));
    assert_eq!(s.history(g, 0, 10), page(&[8, 7, 5, 3, 2], false));
    assert_eq!(s.history(g, 8, 3), page(&[7, 5, 3], true));
    assert_eq!(s.history(g, 100, 1), page(&[8], true));
    assert_eq!(s.history(g, 0, 0), page(&[], true));
    let dm = direct(1, 2);
    let written = append_texts(&s, dm, 1, 1..=3, T0);
    let newest_first: Vec<_> = written.into_iter().rev().collect();
    assert_eq!(s.history(dm, 0, 10).entries, newest_first);
}

/// One batch of 1,000 messages is all there, in order, in one read and page by page.
pub fn large_batch<H: Harness>(h: H) {
    let s = Subject::open(h, RETENTION);
    let chat = direct(1, 2);
    let written = append_texts(&s, chat, 2, 1..=1000, T0);
    assert_eq!(s.state(chat).head, 1000);
    let all = s.read_log(chat, 0, Seq::MAX, 10_000);
    assert_eq!(all.entries, written);
    assert!(!all.more);
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = s.read_log(chat, after, Seq::MAX, 128);
        after = *seqs(&page).last().expect("a page with more has entries");
        paged.extend(page.entries);
        if !page.more {
            break;
        }
    }
    assert_eq!(paged, written);
    let last = sent_record(chat, 1000, &text(2, 1000, T0));
    assert_eq!(s.sent(user(2), dev(1), 1000), Some(last));
}

/// 10,000 messages over 1,000 batches, each batch touching 10 of 100 chats (half direct,
/// half groups), all read back exactly, also after a reopen.
pub fn many_chats<H: Harness>(h: H) {
    const CHATS: u64 = 100;
    const ROUNDS: u64 = 100;
    let mut s = Subject::open(h, RETENTION);
    let chats: Vec<_> = (0..CHATS)
        .map(|i| {
            if i % 2 == 0 {
                direct(1, 2 + i)
            } else {
                group(1000 + u128::from(i))
            }
        })
        .collect();
    let mut logs: Vec<Vec<(Seq, Entry)>> = vec![Vec::new(); chats.len()];
    let mut creates = Vec::new();
    for (i, &chat) in (0..).zip(&chats) {
        if chat.kind() == ChatKind::Group {
            let entry = created(1, T0, false, &[2 + i]);
            logs[i as usize].push((1, entry.clone()));
            creates.push(append(chat, 1, entry));
        }
    }
    s.write(creates);
    for round in 0..ROUNDS {
        for chunk in (0..chats.len()).collect::<Vec<_>>().chunks(10) {
            let mut batch = Vec::new();
            for &i in chunk {
                let seq = logs[i].len() as Seq + 1;
                let body = format!("chat {i} round {round}");
                let id = round * CHATS + i as u64 + 1;
                let entry = message(user(1), dev(1), id, T0 + round, body.as_bytes());
                logs[i].push((seq, entry.clone()));
                batch.push(append(chats[i], seq, entry));
            }
            s.write(batch);
        }
    }
    let check = |s: &Subject<H>| {
        for (chat, log) in chats.iter().zip(&logs) {
            let page = s.read_log(*chat, 0, Seq::MAX, usize::MAX);
            assert_eq!(&page.entries, log, "{chat:?}");
            assert_eq!(s.state(*chat).head, log.len() as Seq);
        }
        let mut sorted = chats.clone();
        sorted.sort();
        assert_eq!(s.user_chats(user(1)), sorted);
    };
    check(&s);
    s.reopen();
    check(&s);
}

fn conflict(chat: wire::ids::ChatId, expected: Seq, got: Seq) -> StoreError {
    StoreError::SeqConflict {
        chat,
        expected,
        got,
    }
}

/// Message `seq` of a 40-message log with bodies of every shape: empty, every byte value,
/// multi-byte text, 64 KiB, with and without attachments.
fn varied_message(seq: Seq) -> Entry {
    let body: Vec<u8> = match seq % 5 {
        0 => Vec::new(),
        1 => (0..=255).collect(),
        2 => format!("héllo ✓✓ {seq}").into_bytes(),
        3 => (0..65_536u64)
            .map(|i| ((i * 7 + seq) % 251) as u8)
            .collect(),
        _ => vec![0; seq as usize],
    };
    let attachments = (0..seq % 3)
        .map(|i| AttachmentId::new(u128::from(seq * 10 + i + 1)).expect("nonzero"))
        .collect();
    let Entry::Message(mut m) = message(
        user(1 + seq % 2),
        dev(1 + seq % 3),
        100 + seq,
        T0 + seq / 3,
        &[],
    ) else {
        unreachable!("message() builds a message")
    };
    m.kind = if seq % 5 == 2 {
        BodyKind::Text
    } else {
        BodyKind::Opaque
    };
    m.body = body;
    m.attachments = attachments;
    Entry::Message(m)
}
