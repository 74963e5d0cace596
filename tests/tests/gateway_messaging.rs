//! Proves messaging end to end (docs/PROTOCOL.md §4.3–§4.12, §5, §6) against the real
//! `switchboard` binary, one gateway per test on port 0 with its own data dir: direct and group
//! chats numbered 1, 2, 3…; fan-out to every device of every member but the sending one;
//! idempotent sends; membership changes and who may make them; the request errors; receipts;
//! typing and send throttles; history pages; sync on connect (in seq order, then exactly one
//! `SyncDone`, with `Truncated` after retention); the device limit (4001) and replacement
//! (4002); a 1,024-member group; and a `Sent` message surviving SIGKILL.
//!
//! Waits are upper bounds ([`WAIT`]); absence is shown by one quiet period ([`QUIET`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard_tests::chat::{
    ChatClient, Event, Message, Payload, QUIET, WAIT, assert_silent, device, direct, sync_done,
    user,
};
use switchboard_tests::gateway::{Gateway, Signal};
use wire::ChatUpdateKind::{Created, MemberLeft, MembersAdded, MembersPromoted, MembersRemoved};
use wire::ws::close;
use wire::{AttachmentId, Body, BodyKind, ChatId, ChatKind, ErrorCode, ReceiptKind, Role, Sent};

const ALICE: u64 = 1001;
const BOB: u64 = 1002;
const CAROL: u64 = 1003;
const DAVE: u64 = 1004;
/// How far a `ts_ms` may be from this process's clock (same host, so only scheduling delay).
const CLOCK_SLACK_MS: u64 = 2_000;

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

/// The `NewMessage` every recipient of a `Text` message answered by `sent` must get.
fn text_message(
    chat: ChatId,
    sent: Sent,
    from: (u64, u64),
    client_msg_id: u64,
    body: &str,
) -> Message {
    Message {
        chat,
        seq: sent.seq,
        server_msg_id: sent.server_msg_id,
        sender: user(from.0),
        sender_device: device(from.1),
        client_msg_id,
        ts_ms: sent.ts_ms,
        kind: BodyKind::Text,
        body: body.as_bytes().to_vec(),
        attachments: Vec::new(),
    }
}

/// One `ModifyParticipants`: the users to add, remove and promote.
#[derive(Clone, Copy, Debug, Default)]
struct Change {
    add: &'static [u64],
    remove: &'static [u64],
    promote: &'static [u64],
}

impl Change {
    fn add(users: &'static [u64]) -> Self {
        Self {
            add: users,
            ..Self::default()
        }
    }

    fn remove(users: &'static [u64]) -> Self {
        Self {
            remove: users,
            ..Self::default()
        }
    }

    fn promote(users: &'static [u64]) -> Self {
        Self {
            promote: users,
            ..Self::default()
        }
    }

    /// Sends it to `chat` from `client`; returns the request id.
    fn send(self, client: &mut ChatClient, chat: ChatId) -> u64 {
        client.modify(chat, self.add, self.remove, self.promote)
    }
}

/// A new group of `creator` and `members`, with every listed client's `Created` consumed.
fn group(
    creator: &mut ChatClient,
    members: &[u64],
    history: bool,
    online: &mut [&mut ChatClient],
) -> ChatId {
    let chat = creator.create_group("g", members, history);
    let created = creator.wait_update(WAIT);
    assert_eq!(
        (created.chat, created.seq, created.kind),
        (chat, 1, Created)
    );
    for client in online.iter_mut() {
        let u = client.wait_update(WAIT);
        assert_eq!(u, created, "{client:?} got another Created");
    }
    chat
}

// ---- Sync on connect -------------------------------------------------------------------------

#[test]
fn a_device_with_nothing_to_sync_gets_sync_done_0_0_and_nothing_else() {
    let gw = Gateway::start();
    let mut alice = ChatClient::connect(&gw, ALICE, 1);
    let (before, done) = alice.expect_sync_done(WAIT);
    assert_eq!(before, vec![], "events before SyncDone");
    assert_eq!(done, sync_done(0, 0));
    assert_eq!(alice.drain(QUIET), vec![], "after SyncDone");
}

#[test]
fn an_offline_device_syncs_missed_messages_in_order_until_it_acks_them() {
    let gw = Gateway::start();
    ChatClient::register(&gw, BOB, 1);
    ChatClient::register(&gw, BOB, 2);
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let chat = direct(ALICE, BOB);
    let want: Vec<Message> = (1..=5)
        .map(|i| {
            let body = format!("m{i}");
            let sent = alice.send_ok(chat, i, &body);
            assert_eq!(sent.seq, i, "seqs count from 1 without gaps");
            text_message(chat, sent, (ALICE, 1), i, &body)
        })
        .collect();
    let want_events: Vec<Event> = want.iter().cloned().map(Event::NewMessage).collect();
    let synced = sync_done(1, 5);

    let mut bob = ChatClient::connect(&gw, BOB, 1);
    assert_eq!(
        bob.expect_sync_done(WAIT),
        (want_events.clone(), synced),
        "first sync"
    );
    let ack = bob.delivered(chat, 5);
    assert_eq!(bob.wait_code(ack), ErrorCode::Ok);
    bob.close();
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    assert_silent(&mut [&mut bob], "bob's device 1 after acking everything");

    // Device 2 has its own cursor; without an ack it gets everything again (§6.2).
    let mut bob2 = ChatClient::connect(&gw, BOB, 2);
    assert_eq!(
        bob2.expect_sync_done(WAIT),
        (want_events.clone(), synced),
        "device 2"
    );
    bob2.close();
    let mut bob2 = ChatClient::connect(&gw, BOB, 2);
    assert_eq!(
        bob2.expect_sync_done(WAIT),
        (want_events, synced),
        "device 2 again"
    );
}

#[test]
fn sync_sends_each_chats_entries_in_seq_order_and_counts_them() {
    let gw = Gateway::start();
    ChatClient::register(&gw, BOB, 1);
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let g = group(&mut alice, &[BOB], false, &mut []);
    let g2 = alice.send_ok(g, 1, "g2");
    let g3 = alice.send_ok(g, 2, "g3");
    let d = direct(ALICE, BOB);
    let d1 = alice.send_ok(d, 3, "d1");
    assert_eq!((g2.seq, g3.seq, d1.seq), (2, 3, 1));

    let mut bob = ChatClient::connect(&gw, BOB, 1);
    let (events, done) = bob.expect_sync_done(WAIT);
    assert_eq!(done, sync_done(2, 4), "{events:#?}");
    let of = |chat: ChatId| -> Vec<Event> {
        events
            .iter()
            .filter(|e| e.entry().is_some_and(|(c, _)| c == chat))
            .cloned()
            .collect()
    };
    let group_entries = of(g);
    assert_eq!(group_entries.len(), 3, "{events:#?}");
    let Event::ChatUpdate(created) = &group_entries[0] else {
        panic!("the group's seq 1 is its Created: {group_entries:#?}")
    };
    assert_eq!(created.summary(), (g, 1, Created, ALICE, vec![ALICE, BOB]));
    assert_eq!(
        group_entries[1..],
        [
            Event::NewMessage(text_message(g, g2, (ALICE, 1), 1, "g2")),
            Event::NewMessage(text_message(g, g3, (ALICE, 1), 2, "g3")),
        ]
    );
    assert_eq!(
        of(d),
        [Event::NewMessage(text_message(d, d1, (ALICE, 1), 3, "d1"))]
    );
}

/// A sync reads the pages of several chats at once (`gateway/src/messaging/sync.rs`): three
/// chats of more than one page each (256 entries) arrive whole, each in seq order, with one
/// `SyncDone` counting them all.
#[test]
fn a_sync_of_several_chats_past_one_page_each_arrives_whole_and_in_seq_order() {
    const PER_CHAT: u64 = 300;
    let gw = Gateway::builder().send_limits(1_000).start();
    ChatClient::register(&gw, BOB, 1);
    let mut want: Vec<(ChatId, Vec<Event>)> = Vec::new();
    for sender in [ALICE, CAROL, DAVE] {
        let mut client = ChatClient::connect_fresh(&gw, sender, 1);
        let chat = direct(sender, BOB);
        let events = (1..=PER_CHAT)
            .map(|i| {
                let body = format!("{sender}:{i}");
                let sent = client.send_ok(chat, i, &body);
                Event::NewMessage(text_message(chat, sent, (sender, 1), i, &body))
            })
            .collect();
        want.push((chat, events));
        client.close();
    }

    let mut bob = ChatClient::connect(&gw, BOB, 1);
    let (events, done) = bob.expect_sync_done(WAIT);
    assert_eq!(done, sync_done(3, 3 * PER_CHAT));
    assert_eq!(
        events.len(),
        3 * PER_CHAT as usize,
        "nothing but the entries"
    );
    for (chat, want) in want {
        let got: Vec<Event> = events
            .iter()
            .filter(|e| e.entry().is_some_and(|(c, _)| c == chat))
            .cloned()
            .collect();
        assert_eq!(got, want, "chat {chat:?}");
    }
}

#[test]
fn a_devices_own_messages_are_not_synced_back_but_its_other_devices_get_them() {
    let gw = Gateway::start();
    ChatClient::register(&gw, ALICE, 2);
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let chat = direct(ALICE, BOB);
    let sent = alice.send_ok(chat, 1, "note");
    alice.close();

    let mut alice = ChatClient::connect(&gw, ALICE, 1);
    let (events, done) = alice.expect_sync_done(WAIT);
    assert_eq!(events, vec![], "the sending device's own message came back");
    // `chats` is not asserted: PROTOCOL.md does not say whether a chat whose only new entry is
    // the device's own message counts as "brought up to its head".
    assert_eq!(done.events, 0, "{done:?}");

    let mut alice2 = ChatClient::connect(&gw, ALICE, 2);
    let want = Event::NewMessage(text_message(chat, sent, (ALICE, 1), 1, "note"));
    assert_eq!(alice2.expect_sync_done(WAIT), (vec![want], sync_done(1, 1)));
}

#[test]
fn a_device_offline_past_the_offline_ttl_gets_truncated_for_the_lost_range() {
    let gw = Gateway::builder()
        .env("SWITCHBOARD_OFFLINE_TTL_MS", "300")
        .env("SWITCHBOARD_SWEEP_INTERVAL_MS", "100")
        .start();
    ChatClient::register(&gw, BOB, 1);
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let chat = direct(ALICE, BOB);
    for i in 1..=3 {
        assert_eq!(alice.send_ok(chat, i, "soon gone").seq, i);
    }
    // Past the TTL plus several sweeps: waiting for retention, not asserting absence.
    std::thread::sleep(Duration::from_secs(1));

    let mut bob = ChatClient::connect(&gw, BOB, 1);
    let (events, done) = bob.expect_sync_done(WAIT);
    let truncated = wire::Truncated {
        chat,
        from_seq: 1,
        to_seq: 3,
    };
    assert_eq!(events, vec![Event::Truncated(truncated)]);
    // Nothing was sent but the Truncated; whether its chat counts in `chats` is not specified.
    assert_eq!(done.events, 0, "{done:?}");
    assert!(done.chats <= 1, "{done:?}");

    let sent = alice.send_ok(chat, 4, "still here");
    assert_eq!(sent.seq, 4, "the chat's seq goes on after retention");
    assert_eq!(
        bob.wait_message(WAIT),
        text_message(chat, sent, (ALICE, 1), 4, "still here")
    );
}

// ---- Direct chats and sends ------------------------------------------------------------------

#[test]
fn a_direct_message_reaches_every_device_of_both_users_but_the_sending_one() {
    let gw = Gateway::start();
    let mut a1 = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut a2 = ChatClient::connect_fresh(&gw, ALICE, 2);
    let mut b1 = ChatClient::connect_fresh(&gw, BOB, 1);
    let mut b2 = ChatClient::connect_fresh(&gw, BOB, 2);
    let chat = direct(BOB, ALICE);
    assert_eq!(chat, direct(ALICE, BOB), "either user derives the same id");

    let before = now_ms();
    let first = a1.send_ok(chat, 11, "hello bob");
    let after = now_ms();
    assert_eq!(first.seq, 1, "the first message creates the chat at seq 1");
    assert!(
        (before - CLOCK_SLACK_MS..=after + CLOCK_SLACK_MS).contains(&first.ts_ms),
        "ts_ms {} is not the server's now ({before}..={after})",
        first.ts_ms
    );
    let want = text_message(chat, first, (ALICE, 1), 11, "hello bob");
    for (name, client) in [("a2", &mut a2), ("b1", &mut b1), ("b2", &mut b2)] {
        assert_eq!(client.wait_message(WAIT), want, "{name}");
    }

    let opaque = [0x00, 0xFF, 0xFE, 0x80, 0x01];
    let id = b2.send_opaque(chat, 1, &opaque);
    let second = b2.wait_result(id, WAIT).sent();
    assert_eq!(second.seq, 2);
    assert_ne!(second.server_msg_id, first.server_msg_id);
    assert!(
        second.ts_ms >= first.ts_ms,
        "{second:?} sequenced before {first:?}"
    );
    let want = Message {
        kind: BodyKind::Opaque,
        body: opaque.to_vec(),
        ..text_message(chat, second, (BOB, 2), 1, "")
    };
    for (name, client) in [("a1", &mut a1), ("a2", &mut a2), ("b1", &mut b1)] {
        assert_eq!(client.wait_message(WAIT), want, "{name}");
    }
    assert_silent(
        &mut [&mut a1, &mut a2, &mut b1, &mut b2],
        "after two messages",
    );
}

#[test]
fn pipelined_sends_get_seqs_1_to_5_and_arrive_in_seq_order() {
    let gw = Gateway::start();
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let chat = direct(ALICE, BOB);
    let ids: Vec<u64> = (1..=5)
        .map(|i| alice.send(chat, i, &format!("p{i}")))
        .collect();
    let mut want: Vec<Message> = ids
        .iter()
        .zip(1..)
        .map(|(&id, i)| {
            let sent = alice.wait_result(id, WAIT).sent();
            text_message(chat, sent, (ALICE, 1), i, &format!("p{i}"))
        })
        .collect();
    want.sort_by_key(|m| m.seq);
    assert_eq!(
        want.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let got: Vec<Message> = (0..5).map(|_| bob.wait_message(WAIT)).collect();
    assert_eq!(got, want, "bob gets every message once, in seq order");
    assert_silent(&mut [&mut alice, &mut bob], "after five messages");
}

#[test]
fn a_retried_send_gets_the_same_sent_and_is_delivered_once() {
    let gw = Gateway::start();
    let mut a1 = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut a2 = ChatClient::connect_fresh(&gw, ALICE, 2);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let chat = direct(ALICE, BOB);
    let first = a1.send_ok(chat, 7, "once");
    assert_eq!(
        a1.send_ok(chat, 7, "once"),
        first,
        "a retry on the same connection"
    );
    let want = text_message(chat, first, (ALICE, 1), 7, "once");
    assert_eq!(bob.wait_message(WAIT), want);
    assert_eq!(a2.wait_message(WAIT), want);

    // A retry after a reconnect (§6.10: resend unanswered sends) is the same message too.
    a1.close();
    let mut a1 = ChatClient::connect(&gw, ALICE, 1);
    let (events, done) = a1.expect_sync_done(WAIT);
    assert_eq!(
        (events, done.events),
        (vec![], 0),
        "own message synced back: {done:?}"
    );
    assert_eq!(
        a1.send_ok(chat, 7, "once"),
        first,
        "a retry after reconnecting"
    );

    // The same client_msg_id from another device is another message.
    let other = a2.send_ok(chat, 7, "from device 2");
    assert_eq!(other.seq, 2);
    let want2 = text_message(chat, other, (ALICE, 2), 7, "from device 2");
    assert_eq!(bob.wait_message(WAIT), want2);
    assert_eq!(a1.wait_message(WAIT), want2);
    assert_silent(&mut [&mut a1, &mut a2, &mut bob], "after the retries");
}

#[test]
fn a_body_over_body_bytes_max_or_body_chars_max_is_refused_and_one_at_the_limit_is_sent() {
    let gw = Gateway::start();
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let chat = direct(ALICE, BOB);
    let opaque_4097 = vec![0xA5; 4097];
    let id = alice.send_opaque(chat, 1, &opaque_4097);
    assert_eq!(alice.wait_code(id), ErrorCode::BodyTooLong, "4,097 bytes");
    let id = alice.send(chat, 2, &"a".repeat(1001));
    assert_eq!(
        alice.wait_code(id),
        ErrorCode::BodyTooLong,
        "1,001 characters"
    );
    let id = alice.send(chat, 3, "");
    assert_eq!(
        alice.wait_code(id),
        ErrorCode::InvalidArgument,
        "an empty message"
    );
    let id = alice.send(chat, 0, "zero id");
    assert_eq!(
        alice.wait_code(id),
        ErrorCode::InvalidArgument,
        "client_msg_id 0"
    );
    assert_silent(&mut [&mut bob], "after refused sends");

    let opaque_4096 = vec![0x5A; 4096];
    let id = alice.send_opaque(chat, 4, &opaque_4096);
    let sent = alice.wait_result(id, WAIT).sent();
    assert_eq!(sent.seq, 1, "refused sends take no seq");
    let want = Message {
        kind: BodyKind::Opaque,
        body: opaque_4096,
        ..text_message(chat, sent, (ALICE, 1), 4, "")
    };
    assert_eq!(bob.wait_message(WAIT), want);
    // 1,000 characters of 2 bytes each: at both limits' edge, under body_bytes_max.
    let accents = "é".repeat(1000);
    let sent = alice.send_ok(chat, 5, &accents);
    assert_eq!(sent.seq, 2);
    assert_eq!(
        bob.wait_message(WAIT),
        text_message(chat, sent, (ALICE, 1), 5, &accents)
    );
}

#[test]
fn attachments_are_refused_while_uploads_do_not_exist() {
    let gw = Gateway::start();
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let chat = direct(ALICE, BOB);
    let atts: Vec<AttachmentId> = (1..=11)
        .map(|i| AttachmentId::new(i).expect("nonzero"))
        .collect();
    for (n, want) in [
        (11, ErrorCode::TooManyAttachments),
        (10, ErrorCode::AttachmentNotReady),
        (1, ErrorCode::AttachmentNotReady),
    ] {
        let id = alice.send_body(chat, n as u64, Body::Text("see attached"), &atts[..n]);
        assert_eq!(alice.wait_code(id), want, "{n} attachments");
    }
    assert_silent(&mut [&mut alice, &mut bob], "nothing was sent");
}

#[test]
fn sends_over_send_burst_are_rate_limited_until_the_bucket_refills() {
    let gw = Gateway::builder()
        .env("SWITCHBOARD_LIMITS__SEND_BURST", "3")
        .env("SWITCHBOARD_LIMITS__SEND_PER_S", "1")
        .start();
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let chat = direct(ALICE, BOB);
    let ids: Vec<u64> = (1..=4).map(|i| alice.send(chat, i, "quick")).collect();
    let replies: Vec<_> = ids.iter().map(|&id| alice.wait_result(id, WAIT)).collect();
    let seqs: Vec<u64> = replies[..3].iter().map(|r| r.sent().seq).collect();
    assert_eq!(seqs, [1, 2, 3], "the burst of 3 goes through");
    let limited = &replies[3];
    limited.assert_code(ErrorCode::RateLimited, "the 4th quick send");
    assert!(
        (1..=1000).contains(&limited.retry_after_ms),
        "retry_after_ms within one refill at 1/s: {limited:?}"
    );
    for seq in 1..=3 {
        assert_eq!(bob.wait_message(WAIT).seq, seq);
    }
    assert_silent(&mut [&mut bob], "the limited send was not delivered");

    std::thread::sleep(Duration::from_millis(
        u64::from(limited.retry_after_ms) + 50,
    ));
    let sent = alice.send_ok(chat, 4, "quick");
    assert_eq!(
        sent.seq, 4,
        "after retry_after_ms the same send goes through"
    );
    assert_eq!(
        bob.wait_message(WAIT),
        text_message(chat, sent, (ALICE, 1), 4, "quick")
    );
}

// ---- Groups ----------------------------------------------------------------------------------

#[test]
fn a_new_group_announces_itself_at_seq_1_to_every_member_device_including_the_creators() {
    let gw = Gateway::start();
    let mut a1 = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut a2 = ChatClient::connect_fresh(&gw, ALICE, 2);
    let mut b1 = ChatClient::connect_fresh(&gw, BOB, 1);
    let mut c1 = ChatClient::connect_fresh(&gw, CAROL, 1);
    let mut outsider = ChatClient::connect_fresh(&gw, DAVE, 1);

    let id = a1.create_chat("team", &[BOB, CAROL], false);
    let reply = a1.wait_result(id, WAIT);
    let chat = reply.chat_created();
    assert_eq!(chat.kind(), ChatKind::Group, "{reply:?}");
    let mut created = Vec::new();
    for (name, client) in [
        ("a1", &mut a1),
        ("a2", &mut a2),
        ("b1", &mut b1),
        ("c1", &mut c1),
    ] {
        let u = client.wait_update(WAIT);
        assert_eq!(
            (
                u.chat,
                u.seq,
                u.kind,
                u.actor.get(),
                u.name.as_str(),
                u.history
            ),
            (chat, 1, Created, ALICE, "team", false),
            "{name}: {u:?}"
        );
        let roles = [
            (ALICE, Role::Admin),
            (BOB, Role::Member),
            (CAROL, Role::Member),
        ];
        assert_eq!(u.member_roles(), roles, "{name}");
        created.push(u);
    }
    assert!(
        created.windows(2).all(|w| w[0] == w[1]),
        "one entry, one value: {created:#?}"
    );

    let sent = b1.send_ok(chat, 1, "hi team");
    assert_eq!(sent.seq, 2, "after the Created at seq 1");
    let want = text_message(chat, sent, (BOB, 1), 1, "hi team");
    for (name, client) in [("a1", &mut a1), ("a2", &mut a2), ("c1", &mut c1)] {
        assert_eq!(client.wait_message(WAIT), want, "{name}");
    }
    assert_silent(
        &mut [&mut a1, &mut a2, &mut b1, &mut c1, &mut outsider],
        "after one message",
    );
}

#[test]
fn an_admin_adds_promotes_and_removes_with_one_update_per_change() {
    let gw = Gateway::start();
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let mut carol = ChatClient::connect_fresh(&gw, CAROL, 1);
    let mut dave = ChatClient::connect_fresh(&gw, DAVE, 1);
    let chat = group(&mut alice, &[BOB], false, &mut [&mut bob]);

    let steps = [
        (Change::add(&[CAROL]), MembersAdded, CAROL, Role::Member),
        (Change::promote(&[BOB]), MembersPromoted, BOB, Role::Admin),
        (
            Change::remove(&[CAROL]),
            MembersRemoved,
            CAROL,
            Role::Member,
        ),
    ];
    for (seq, (change, kind, subject, role)) in (2..).zip(steps) {
        let id = change.send(&mut alice, chat);
        let reply = alice.wait_result(id, WAIT);
        assert_eq!(
            (reply.code, &reply.payload),
            (ErrorCode::Ok, &Payload::None)
        );
        // Carol is a member for all three: added, then told of the promotion and her removal.
        for client in [&mut alice, &mut bob, &mut carol] {
            let u = client.wait_update(WAIT);
            assert_eq!(u.summary(), (chat, seq, kind, ALICE, vec![subject]));
            // The role "after the change" of a removed user is not specified.
            if kind != MembersRemoved {
                assert_eq!(u.member_roles(), [(subject, role)], "{u:?}");
            }
        }
    }

    // Bob is an admin now: he may add.
    let id = Change::add(&[DAVE]).send(&mut bob, chat);
    assert_eq!(bob.wait_code(id), ErrorCode::Ok);
    for client in [&mut alice, &mut bob, &mut dave] {
        let u = client.wait_update(WAIT);
        assert_eq!(u.summary(), (chat, 5, MembersAdded, BOB, vec![DAVE]));
    }
    assert_silent(&mut [&mut carol], "carol was removed");
}

#[test]
fn one_change_of_two_kinds_makes_two_updates_at_consecutive_seqs() {
    let gw = Gateway::start();
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let mut carol = ChatClient::connect_fresh(&gw, CAROL, 1);
    let chat = group(&mut alice, &[BOB], false, &mut [&mut bob]);
    let change = Change {
        add: &[CAROL],
        promote: &[BOB],
        ..Change::default()
    };
    let id = change.send(&mut alice, chat);
    assert_eq!(alice.wait_code(id), ErrorCode::Ok);
    for client in [&mut alice, &mut bob] {
        let mut got = [client.wait_update(WAIT), client.wait_update(WAIT)];
        assert_eq!([got[0].seq, got[1].seq], [2, 3], "in seq order: {got:#?}");
        // Which change takes the lower seq is not specified.
        got.sort_by_key(|u| u.kind.raw());
        assert_eq!(
            got[0].summary(),
            (chat, got[0].seq, MembersAdded, ALICE, vec![CAROL])
        );
        assert_eq!(
            got[1].summary(),
            (chat, got[1].seq, MembersPromoted, ALICE, vec![BOB])
        );
    }
    // Carol gets her addition (and the promotion only if it came after it).
    let added = carol.wait_update(WAIT);
    assert_eq!(
        added.summary(),
        (chat, added.seq, MembersAdded, ALICE, vec![CAROL])
    );
    assert_silent(&mut [&mut alice, &mut bob], "after the two updates");
}

#[test]
fn a_member_may_leave_but_only_an_admin_may_add_remove_others_or_promote() {
    let gw = Gateway::start();
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let mut carol = ChatClient::connect_fresh(&gw, CAROL, 1);
    let chat = group(
        &mut alice,
        &[BOB, CAROL],
        false,
        &mut [&mut bob, &mut carol],
    );
    for change in [
        Change::add(&[DAVE]),
        Change::remove(&[CAROL]),
        Change::promote(&[BOB]),
    ] {
        let id = change.send(&mut bob, chat);
        assert_eq!(bob.wait_code(id), ErrorCode::NotAdmin, "bob: {change:?}");
    }
    let everyone = &mut [&mut alice, &mut bob, &mut carol];
    assert_silent(everyone, "refused changes change nothing");

    let id = Change::remove(&[BOB]).send(&mut bob, chat);
    assert_eq!(bob.wait_code(id), ErrorCode::Ok, "leaving");
    for client in [&mut alice, &mut bob, &mut carol] {
        let u = client.wait_update(WAIT);
        assert_eq!(u.summary(), (chat, 2, MemberLeft, BOB, vec![BOB]));
    }
    let id = bob.send(chat, 1, "still here?");
    assert_eq!(
        bob.wait_code(id),
        ErrorCode::NotMember,
        "sending after leaving"
    );
    let id = Change::remove(&[BOB]).send(&mut bob, chat);
    assert_eq!(bob.wait_code(id), ErrorCode::NotMember, "leaving twice");

    let sent = alice.send_ok(chat, 1, "after bob left");
    assert_eq!(sent.seq, 3);
    let want = text_message(chat, sent, (ALICE, 1), 1, "after bob left");
    assert_eq!(carol.wait_message(WAIT), want);
    let everyone = &mut [&mut alice, &mut bob, &mut carol];
    assert_silent(everyone, "bob gets nothing after leaving");
}

#[test]
fn a_member_removed_while_offline_syncs_the_removal_and_nothing_later() {
    let gw = Gateway::start();
    let mut a = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut b = ChatClient::connect_fresh(&gw, BOB, 1);
    let mut c = ChatClient::connect_fresh(&gw, CAROL, 1);
    let chat = group(&mut a, &[BOB, CAROL], false, &mut [&mut b, &mut c]);
    let id = c.delivered(chat, 1);
    assert_eq!(c.wait_code(id), ErrorCode::Ok);
    c.close();

    let id = a.modify(chat, &[], &[CAROL], &[]);
    assert_eq!(a.wait_code(id), ErrorCode::Ok);
    let removed = a.wait_update(WAIT);
    assert_eq!(
        removed.summary(),
        (chat, 2, MembersRemoved, ALICE, vec![CAROL])
    );
    let sent = a.send_ok(chat, 1, "carol is gone");
    assert_eq!(sent.seq, 3);
    assert_eq!(b.wait_update(WAIT), removed);
    assert_eq!(
        b.wait_message(WAIT),
        text_message(chat, sent, (ALICE, 1), 1, "carol is gone")
    );

    let mut c = ChatClient::connect(&gw, CAROL, 1);
    let (events, done) = c.expect_sync_done(WAIT);
    assert_eq!(events, vec![Event::ChatUpdate(removed)]);
    assert_eq!(done, sync_done(1, 1));
    assert_silent(&mut [&mut c], "carol after her removal");
}

#[test]
fn a_new_member_gets_the_addition_and_later_messages_but_no_earlier_ones() {
    let gw = Gateway::start();
    ChatClient::register(&gw, DAVE, 1);
    let mut a = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut c = ChatClient::connect_fresh(&gw, CAROL, 1);
    let chat = group(&mut a, &[BOB], false, &mut []);
    assert_eq!(a.send_ok(chat, 1, "before").seq, 2);

    let id = a.modify(chat, &[CAROL, DAVE], &[], &[]);
    assert_eq!(a.wait_code(id), ErrorCode::Ok);
    let added = c.wait_update(WAIT);
    assert_eq!(
        added.summary(),
        (chat, 3, MembersAdded, ALICE, vec![CAROL, DAVE])
    );
    let sent = a.send_ok(chat, 2, "after");
    let want = text_message(chat, sent, (ALICE, 1), 2, "after");
    assert_eq!(sent.seq, 4);
    assert_eq!(c.wait_message(WAIT), want);
    assert_silent(&mut [&mut c], "carol got nothing from before she joined");

    // Dave was offline (registered before): his sync starts at his addition.
    let mut d = ChatClient::connect(&gw, DAVE, 1);
    let (events, done) = d.expect_sync_done(WAIT);
    assert_eq!(
        events,
        vec![Event::ChatUpdate(added), Event::NewMessage(want)]
    );
    assert_eq!(done, sync_done(1, 2));
}

#[test]
fn a_group_cannot_grow_past_group_members_max() {
    let gw = Gateway::builder()
        .env("SWITCHBOARD_LIMITS__GROUP_MEMBERS_MAX", "5")
        .start();
    let mut a = ChatClient::connect_fresh(&gw, ALICE, 1);
    let id = a.create_chat("six", &[2001, 2002, 2003, 2004, 2005], false);
    assert_eq!(
        a.wait_code(id),
        ErrorCode::TooManyMembers,
        "5 others and the creator"
    );

    let chat = group(&mut a, &[2001, 2002, 2003], false, &mut []);
    let id = a.modify(chat, &[2004, 2005], &[], &[]);
    assert_eq!(a.wait_code(id), ErrorCode::GroupFull, "4 + 2 members");
    let id = a.modify(chat, &[2004], &[], &[]);
    assert_eq!(a.wait_code(id), ErrorCode::Ok, "the 5th member");
    assert_eq!(
        a.wait_update(WAIT).summary(),
        (chat, 2, MembersAdded, ALICE, vec![2004])
    );
    let id = a.modify(chat, &[2005], &[], &[]);
    assert_eq!(a.wait_code(id), ErrorCode::GroupFull, "a 6th member");
    assert_silent(&mut [&mut a], "refused additions change nothing");

    let id = a.modify(chat, &[], &[2001], &[]);
    assert_eq!(a.wait_code(id), ErrorCode::Ok);
    assert_eq!(
        a.wait_update(WAIT).summary(),
        (chat, 3, MembersRemoved, ALICE, vec![2001])
    );
    let id = a.modify(chat, &[2005], &[], &[]);
    assert_eq!(a.wait_code(id), ErrorCode::Ok, "room again after a removal");
    assert_eq!(
        a.wait_update(WAIT).summary(),
        (chat, 4, MembersAdded, ALICE, vec![2005])
    );
}

#[test]
fn an_outsider_gets_not_member_for_every_request_on_a_chat() {
    let gw = Gateway::start();
    let mut a = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut d = ChatClient::connect_fresh(&gw, DAVE, 1);
    let chat = group(&mut a, &[BOB], true, &mut []);
    let ids = [
        ("add", d.modify(chat, &[DAVE], &[], &[])),
        ("leave", d.modify(chat, &[], &[DAVE], &[])),
        ("send", d.send(chat, 1, "let me in")),
        ("delivered", d.delivered(chat, 1)),
        ("read", d.read(chat, 1)),
        ("typing", d.typing(chat)),
        ("fetch history", d.fetch_history(chat, 0, 10)),
    ];
    for (what, id) in ids {
        assert_eq!(d.wait_code(id), ErrorCode::NotMember, "{what}");
    }
    // A direct chat of two other users, existing or not.
    let others = direct(ALICE, BOB);
    a.send_ok(others, 1, "just us");
    let id = d.send(others, 1, "me too");
    assert_eq!(
        d.wait_code(id),
        ErrorCode::NotMember,
        "another pair's direct chat"
    );
    let id = d.send(direct(ALICE, CAROL), 2, "me too");
    assert_eq!(
        d.wait_code(id),
        ErrorCode::NotMember,
        "a direct chat not yet created"
    );
    assert_silent(&mut [&mut a, &mut d], "refused requests change nothing");
}

#[test]
fn requests_on_a_group_that_does_not_exist_are_not_found() {
    let gw = Gateway::start();
    let mut a = ChatClient::connect_fresh(&gw, ALICE, 1);
    let nowhere = ChatId::group(0x0123_4567_89AB_CDEF_0123_4567_89AB_CDEF);
    let ids = [
        ("send", a.send(nowhere, 1, "anyone?")),
        ("modify", a.modify(nowhere, &[BOB], &[], &[])),
        ("delivered", a.delivered(nowhere, 1)),
        ("read", a.read(nowhere, 1)),
        ("typing", a.typing(nowhere)),
        ("fetch history", a.fetch_history(nowhere, 0, 10)),
    ];
    for (what, id) in ids {
        assert_eq!(a.wait_code(id), ErrorCode::NotFound, "{what}");
    }
}

#[test]
fn a_group_of_1024_members_is_created_and_each_connected_member_gets_a_message_once() {
    const CREATOR: u64 = 1;
    const ONLINE: u64 = 50;
    let gw = Gateway::start();
    let members: Vec<u64> = (2..=1024).collect();
    let mut online: Vec<ChatClient> = (2..2 + ONLINE)
        .map(|u| ChatClient::connect_fresh(&gw, u, 1))
        .collect();
    let mut creator = ChatClient::connect_fresh(&gw, CREATOR, 1);
    let chat = creator.create_group("everyone", &members, false);

    let created = creator.wait_update(WAIT);
    assert_eq!(
        (created.chat, created.seq, created.kind),
        (chat, 1, Created)
    );
    let roles: Vec<(u64, Role)> = (1..=1024)
        .map(|u| {
            (
                u,
                if u == CREATOR {
                    Role::Admin
                } else {
                    Role::Member
                },
            )
        })
        .collect();
    assert_eq!(created.member_roles(), roles);
    for client in &mut online {
        assert_eq!(client.wait_update(WAIT), created, "{client:?}");
    }

    let sent = creator.send_ok(chat, 1, "hello, all 1024");
    assert_eq!(sent.seq, 2);
    let want = text_message(chat, sent, (CREATOR, 1), 1, "hello, all 1024");
    for client in &mut online {
        assert_eq!(client.wait_message(WAIT), want, "{client:?}");
    }
    let mut everyone: Vec<&mut ChatClient> = online.iter_mut().collect();
    everyone.push(&mut creator);
    assert_silent(&mut everyone, "one message, once each");
}

// ---- Receipts and typing ---------------------------------------------------------------------

/// Receipts for `chat` of `kind` until one reaches `up_to_seq`; each must be from (user,
/// device), cumulative and never past `up_to_seq`.
fn receipts_until(
    client: &mut ChatClient,
    chat: ChatId,
    kind: ReceiptKind,
    from: (u64, u64),
    up_to_seq: u64,
) {
    let mut last = 0;
    while last < up_to_seq {
        let event = client.wait_for(WAIT, |e| matches!(e, Event::Receipt(r) if r.kind == kind));
        let Event::Receipt(r) = event else {
            unreachable!()
        };
        assert_eq!(
            (r.chat, r.user.get(), r.device.get()),
            (chat, from.0, from.1),
            "{r:?}"
        );
        assert!(
            r.up_to_seq >= last && r.up_to_seq <= up_to_seq,
            "after {last}: {r:?}"
        );
        last = r.up_to_seq;
    }
}

#[test]
fn delivered_and_read_acks_reach_the_senders_devices_as_cumulative_receipts() {
    let gw = Gateway::start();
    let mut a1 = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut a2 = ChatClient::connect_fresh(&gw, ALICE, 2);
    let mut b = ChatClient::connect_fresh(&gw, BOB, 1);
    let chat = direct(ALICE, BOB);
    for i in 1..=3 {
        a1.send_ok(chat, i, "ack me");
        assert_eq!(b.wait_message(WAIT).seq, i);
        assert_eq!(a2.wait_message(WAIT).seq, i);
    }

    let acks: Vec<u64> = (1..=3).map(|seq| b.delivered(chat, seq)).collect();
    for id in acks {
        assert_eq!(b.wait_code(id), ErrorCode::Ok);
    }
    for client in [&mut a1, &mut a2] {
        receipts_until(client, chat, ReceiptKind::Delivered, (BOB, 1), 3);
    }
    let id = b.read(chat, 2);
    assert_eq!(b.wait_code(id), ErrorCode::Ok);
    for client in [&mut a1, &mut a2] {
        receipts_until(client, chat, ReceiptKind::Read, (BOB, 1), 2);
    }
    // Coalescing may repeat the highest seq, never report a lower one after it.
    for client in [&mut a1, &mut a2] {
        assert_receipts_stay_at(client, 3, 2);
    }
    assert_silent(
        &mut [&mut b],
        "the acking device gets no receipts of its own",
    );
}

/// Drains `client` (after one [`QUIET`]): anything left must be a receipt repeating the
/// highest `Delivered` or `Read` seq already reported.
fn assert_receipts_stay_at(client: &mut ChatClient, delivered: u64, read: u64) {
    std::thread::sleep(QUIET);
    for event in client.drain(Duration::from_millis(20)) {
        let Event::Receipt(r) = &event else {
            panic!("{client:?} got {event:?}")
        };
        let want = match r.kind {
            ReceiptKind::Delivered => delivered,
            ReceiptKind::Read => read,
        };
        assert_eq!(r.up_to_seq, want, "a receipt went back: {r:?}");
    }
}

#[test]
fn an_ack_below_the_cursor_is_accepted_and_moves_nothing() {
    let gw = Gateway::start();
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let chat = direct(ALICE, BOB);
    for i in 1..=3 {
        alice.send_ok(chat, i, "ack me");
        assert_eq!(bob.wait_message(WAIT).seq, i);
    }
    let id = bob.delivered(chat, 3);
    assert_eq!(bob.wait_code(id), ErrorCode::Ok);
    let id = bob.read(chat, 3);
    assert_eq!(bob.wait_code(id), ErrorCode::Ok);
    receipts_until(&mut alice, chat, ReceiptKind::Delivered, (BOB, 1), 3);
    receipts_until(&mut alice, chat, ReceiptKind::Read, (BOB, 1), 3);

    // Cursors never move back (§4.8): older acks are Ok, change nothing, report nothing lower.
    let id = bob.delivered(chat, 1);
    assert_eq!(
        bob.wait_code(id),
        ErrorCode::Ok,
        "Delivered below the cursor"
    );
    let id = bob.read(chat, 2);
    assert_eq!(bob.wait_code(id), ErrorCode::Ok, "Read below the cursor");
    assert_receipts_stay_at(&mut alice, 3, 3);
    bob.close();
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    assert_silent(&mut [&mut bob], "delivered_seq stayed at 3");
}

#[test]
fn typing_reaches_the_other_members_and_is_throttled_per_user_per_chat() {
    let gw = Gateway::start();
    let mut a1 = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut a2 = ChatClient::connect_fresh(&gw, ALICE, 2);
    let mut b = ChatClient::connect_fresh(&gw, BOB, 1);
    let mut c = ChatClient::connect_fresh(&gw, CAROL, 1);
    let chat = group(
        &mut a1,
        &[BOB, CAROL],
        false,
        &mut [&mut a2, &mut b, &mut c],
    );

    let id = a1.typing(chat);
    assert_eq!(a1.wait_code(id), ErrorCode::Ok);
    let alice_typing = wire::TypingNotice {
        chat,
        user: user(ALICE),
        device: device(1),
    };
    for client in [&mut b, &mut c] {
        assert_eq!(
            client.wait_for(WAIT, |e| matches!(e, Event::Typing(_))),
            Event::Typing(alice_typing)
        );
    }
    for (what, client) in [("again", &mut a1), ("from another device", &mut a2)] {
        let id = client.typing(chat);
        let reply = client.wait_result(id, WAIT);
        reply.assert_code(ErrorCode::RateLimited, what);
        assert!(
            (1..=3000).contains(&reply.retry_after_ms),
            "{what}: {reply:?}"
        );
    }
    let id = b.typing(chat);
    assert_eq!(
        b.wait_code(id),
        ErrorCode::Ok,
        "another user in the same chat"
    );
    let bob_typing = wire::TypingNotice {
        chat,
        user: user(BOB),
        device: device(1),
    };
    for client in [&mut a1, &mut a2, &mut c] {
        assert_eq!(
            client.wait_for(WAIT, |e| *e == Event::Typing(bob_typing)),
            Event::Typing(bob_typing)
        );
    }
    assert_silent(
        &mut [&mut a1, &mut b, &mut c],
        "one notice per accepted Typing",
    );
    // Whether Alice's other device sees her own typing is not specified ("other members").
    let rest = a2.drain(Duration::from_millis(20));
    assert!(
        rest.iter().all(|e| *e == Event::Typing(alice_typing)),
        "{rest:?}"
    );
}

#[test]
fn typing_is_accepted_again_after_typing_interval_ms() {
    let gw = Gateway::builder()
        .env("SWITCHBOARD_LIMITS__TYPING_INTERVAL_MS", "300")
        .start();
    let mut a = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut b = ChatClient::connect_fresh(&gw, BOB, 1);
    let chat = direct(ALICE, BOB);
    a.send_ok(chat, 1, "hi");
    b.wait_message(WAIT);
    let id = a.typing(chat);
    assert_eq!(a.wait_code(id), ErrorCode::Ok);
    let id = a.typing(chat);
    let limited = a.wait_result(id, WAIT);
    limited.assert_code(ErrorCode::RateLimited, "within the interval");
    assert!((1..=300).contains(&limited.retry_after_ms), "{limited:?}");
    std::thread::sleep(Duration::from_millis(
        u64::from(limited.retry_after_ms) + 50,
    ));
    let id = a.typing(chat);
    assert_eq!(a.wait_code(id), ErrorCode::Ok, "after retry_after_ms");
    let notice = Event::Typing(wire::TypingNotice {
        chat,
        user: user(ALICE),
        device: device(1),
    });
    assert_eq!(
        b.drain(QUIET),
        vec![notice.clone(), notice],
        "two accepted, two notices"
    );
}

// ---- History ---------------------------------------------------------------------------------

#[test]
fn history_pages_back_from_the_newest_message_oldest_first() {
    let gw = Gateway::start();
    let mut a = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut b = ChatClient::connect_fresh(&gw, BOB, 1);
    let mut d = ChatClient::connect_fresh(&gw, DAVE, 1);
    let chat = group(&mut a, &[BOB], true, &mut [&mut b]);
    let want: Vec<Message> = (1..=3)
        .map(|i| {
            let body = format!("h{i}");
            let sent = a.send_ok(chat, i, &body);
            assert_eq!(sent.seq, i + 1);
            text_message(chat, sent, (ALICE, 1), i, &body)
        })
        .collect();

    let id = a.fetch_history(chat, 0, 2);
    let reply = a.wait_result(id, WAIT);
    let page = reply.page();
    assert_eq!((page.chat, page.more), (chat, true), "{page:?}");
    assert_eq!(page.messages, want[1..], "the newest two, oldest first");

    // Page on from the oldest seq of the last page; a member other than the sender may read.
    let id = b.fetch_history(chat, page.messages[0].seq, 2);
    let reply = b.wait_result(id, WAIT);
    let page = reply.page();
    assert_eq!((page.chat, page.more), (chat, false), "{page:?}");
    assert_eq!(
        page.messages,
        want[..1],
        "no ChatUpdate in a page, so no more messages"
    );

    for (limit, what) in [
        (0, "limit 0"),
        (101, "limit over history_page_messages_max"),
    ] {
        let id = a.fetch_history(chat, 0, limit);
        assert_eq!(a.wait_code(id), ErrorCode::InvalidArgument, "{what}");
    }
    let id = d.fetch_history(chat, 0, 2);
    assert_eq!(d.wait_code(id), ErrorCode::NotMember, "an outsider");
    let off = group(&mut a, &[BOB], false, &mut [&mut b]);
    a.send_ok(off, 1, "not kept");
    let id = a.fetch_history(off, 0, 2);
    assert_eq!(
        a.wait_code(id),
        ErrorCode::HistoryDisabled,
        "a group with history off"
    );
}

// ---- Devices ---------------------------------------------------------------------------------

#[test]
fn a_fifth_device_is_closed_with_4001_after_the_upgrade() {
    let gw = Gateway::start();
    let mut d1 = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut d2 = ChatClient::connect_fresh(&gw, ALICE, 2);
    ChatClient::register(&gw, ALICE, 3);
    ChatClient::register(&gw, ALICE, 4);

    let mut d5 = ChatClient::connect(&gw, ALICE, 5);
    let (code, before) = d5.expect_close(WAIT);
    assert_eq!(code, Some(close::TOO_MANY_DEVICES), "before it: {before:?}");
    assert_eq!(before, vec![], "no sync for a refused device");

    // The four devices keep their slots: connected ones keep working, registered ones return.
    ChatClient::connect_fresh(&gw, ALICE, 3).close();
    let sent = d1.send_ok(direct(ALICE, BOB), 1, "still here");
    assert_eq!(sent.seq, 1);
    assert_eq!(d2.wait_message(WAIT).server_msg_id, sent.server_msg_id);
}

#[test]
fn connecting_the_same_device_again_closes_the_older_connection_with_4002() {
    let gw = Gateway::start();
    let mut old = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut new = ChatClient::connect_fresh(&gw, ALICE, 1);
    let (code, before) = old.expect_close(WAIT);
    assert_eq!((code, before), (Some(close::REPLACED), vec![]));
    assert_eq!(
        new.send_ok(direct(ALICE, BOB), 1, "from the new one").seq,
        1
    );
}

// ---- Durability ------------------------------------------------------------------------------

#[test]
fn a_sent_message_survives_sigkill_and_is_synced_after_the_restart() {
    let data = tempfile::tempdir().expect("a temp dir");
    let mut first = Gateway::builder().data_dir(data.path()).start();
    ChatClient::register(&first, BOB, 1);
    let mut alice = ChatClient::connect_fresh(&first, ALICE, 1);
    let chat = direct(ALICE, BOB);
    let sent = alice.send_ok(chat, 1, "durable");
    // Sent means durable (§6.4): kill at once, no chance to flush anything more.
    first.signal(Signal::KILL);
    assert!(
        first.wait_exit(WAIT).is_some(),
        "SIGKILL did not end the gateway"
    );
    drop(alice);

    let second = Gateway::builder().data_dir(data.path()).start();
    let mut bob = ChatClient::connect(&second, BOB, 1);
    let want = Event::NewMessage(text_message(chat, sent, (ALICE, 1), 1, "durable"));
    assert_eq!(bob.expect_sync_done(WAIT), (vec![want], sync_done(1, 1)));
    // Idempotence is durable too: a retry after the crash is the same message (§6.3).
    let mut alice = ChatClient::connect(&second, ALICE, 1);
    let (events, _) = alice.expect_sync_done(WAIT);
    assert_eq!(events, vec![], "own message synced back");
    assert_eq!(alice.send_ok(chat, 1, "durable"), sent);
    assert_silent(&mut [&mut bob], "the retry is not delivered again");
}
