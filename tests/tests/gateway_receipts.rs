//! Proves that receipts reach a sender who was away when they happened (docs/PROTOCOL.md
//! §6.6): at its next connect, before `SyncDone`, it gets the other members' devices'
//! cursors as `Receipt`s, in a direct chat and in a small group; and that in a group a live
//! receipt reaches a sender whose message is older than the owner's last 64 messages.

use switchboard_tests::chat::{ChatClient, Event, WAIT, direct};
use switchboard_tests::gateway::Gateway;
use wire::{ChatId, ReceiptKind};

const ALICE: u64 = 3001;
const BOB: u64 = 3002;
const CAROL: u64 = 3003;

/// The receipts among `events` as `(chat, user, device, kind, up_to_seq)`, sorted.
fn receipts(events: &[Event]) -> Vec<(ChatId, u64, u64, ReceiptKind, u64)> {
    let mut out: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Receipt(r) => Some((r.chat, r.user.get(), r.device.get(), r.kind, r.up_to_seq)),
            _ => None,
        })
        .collect();
    out.sort_by_key(|r| (r.0, r.1, r.2, r.3 as u8, r.4));
    out
}

#[test]
fn a_sender_away_when_its_messages_were_read_gets_the_receipts_before_sync_done() {
    let gw = Gateway::start();
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let mut carol = ChatClient::connect_fresh(&gw, CAROL, 1);
    let dm = direct(ALICE, BOB);
    let group = alice.create_group("trio", &[BOB, CAROL], false);
    let s1 = alice.send_ok(dm, 1, "one");
    let s2 = alice.send_ok(group, 2, "two");
    alice.close();

    assert_eq!(bob.wait_message(WAIT).seq, s1.seq);
    let id = bob.delivered(dm, s1.seq);
    bob.wait_result(id, WAIT)
        .assert_code(wire::ErrorCode::Ok, "ack");
    let id = bob.read(dm, s1.seq);
    bob.wait_result(id, WAIT)
        .assert_code(wire::ErrorCode::Ok, "ack");
    assert_eq!(carol.wait_message(WAIT).seq, s2.seq);
    let id = carol.read(group, s2.seq);
    carol
        .wait_result(id, WAIT)
        .assert_code(wire::ErrorCode::Ok, "ack");

    let mut alice = ChatClient::connect(&gw, ALICE, 1);
    let (before, _) = alice.expect_sync_done(WAIT);
    let got = receipts(&before);
    let want = [
        (dm, BOB, 1, ReceiptKind::Delivered, s1.seq),
        (dm, BOB, 1, ReceiptKind::Read, s1.seq),
        // Read implies delivered (§4.7).
        (group, CAROL, 1, ReceiptKind::Delivered, s2.seq),
        (group, CAROL, 1, ReceiptKind::Read, s2.seq),
    ];
    for w in &want {
        assert!(got.contains(w), "missing {w:?} in {got:?}");
    }
    assert!(
        got.iter().all(|r| r.1 != ALICE),
        "never Alice's own cursors: {got:?}"
    );
}

#[test]
fn a_live_receipt_reaches_a_group_sender_older_than_the_last_64_messages() {
    let gw = Gateway::builder()
        .env("SWITCHBOARD_LIMITS__SEND_BURST", "1000")
        .env("SWITCHBOARD_LIMITS__SEND_PER_S", "1000")
        .start();
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let mut carol = ChatClient::connect_fresh(&gw, CAROL, 1);
    let group = alice.create_group("busy", &[BOB, CAROL], false);
    let first = alice.send_ok(group, 1, "early");
    for i in 0..100 {
        bob.send_ok(group, 100 + i, "chatter");
    }
    // Carol reads everything at once: Alice's message is 100 messages back.
    let head = first.seq + 100;
    let id = carol.read(group, head);
    carol
        .wait_result(id, WAIT)
        .assert_code(wire::ErrorCode::Ok, "ack");
    let event = alice.wait_for(
        WAIT,
        |e| matches!(e, Event::Receipt(r) if r.kind == ReceiptKind::Read && r.chat == group),
    );
    let Event::Receipt(r) = event else {
        unreachable!("the predicate matched only receipts")
    };
    assert_eq!(
        (r.user.get(), r.device.get(), r.up_to_seq),
        (CAROL, 1, head)
    );
}
