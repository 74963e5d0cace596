//! Proves the per-user rate limits (docs/PROTOCOL.md §6.8) against the real `switchboard`
//! binary: a user's devices share one send bucket wherever they are connected; chat changes
//! (`CreateChat`, `ModifyParticipants`) share one bucket per user; `CreateAttachment` has its
//! own. A refused request gets `RateLimited` with a `retry_after_ms` within one refill and
//! does nothing; the per-device send limit is in `gateway_messaging.rs`.

use std::time::{Duration, Instant};

use switchboard_tests::chat::{ChatClient, WAIT, assert_silent, direct};
use switchboard_tests::gateway::Gateway;
use wire::{ErrorCode, Request};

const ALICE: u64 = 2001;
const BOB: u64 = 2002;
const CAROL: u64 = 2003;

#[test]
fn a_users_devices_share_one_send_bucket() {
    let gw = Gateway::builder()
        .env("SWITCHBOARD_LIMITS__SEND_BURST", "100")
        .env("SWITCHBOARD_LIMITS__SEND_PER_S", "100")
        .env("SWITCHBOARD_LIMITS__USER_SEND_BURST", "5")
        .env("SWITCHBOARD_LIMITS__USER_SEND_PER_S", "1")
        .start();
    // Four devices, so that (with SO_REUSEPORT spreading them) they are very likely not all
    // on one core; the bucket must hold either way.
    let mut devices: Vec<ChatClient> = (1..=4)
        .map(|d| ChatClient::connect_fresh(&gw, ALICE, d))
        .collect();
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let chat = direct(ALICE, BOB);

    let started = Instant::now();
    let mut asked = Vec::new();
    for round in 0..3 {
        for (i, d) in devices.iter_mut().enumerate() {
            let client_msg_id = (round * 10 + i + 1) as u64;
            asked.push((i, client_msg_id, d.send(chat, client_msg_id, "hi")));
        }
    }
    let mut sent = 0;
    let mut limited = Vec::new();
    for &(i, client_msg_id, request) in &asked {
        let reply = devices[i].wait_result(request, WAIT);
        match reply.code {
            ErrorCode::Ok => sent += 1,
            ErrorCode::RateLimited => {
                assert!(
                    (1..=1000).contains(&reply.retry_after_ms),
                    "retry_after_ms within one refill at 1/s: {reply:?}"
                );
                limited.push((i, client_msg_id, reply.retry_after_ms));
            }
            _ => panic!("a send got {reply:?}"),
        }
    }
    // The bucket allows its burst plus one send per second that passed.
    let refills =
        usize::try_from(started.elapsed().as_millis().div_ceil(1000)).unwrap_or(usize::MAX);
    assert!(
        (5..=5 + refills).contains(&sent),
        "12 sends from 4 devices against a user burst of 5 over {refills} s: {sent} went through"
    );
    assert_eq!(sent + limited.len(), 12);
    for seq in 1..=sent as u64 {
        assert_eq!(bob.wait_message(WAIT).seq, seq);
    }
    assert_silent(&mut [&mut bob], "limited sends are not delivered");

    // After retry_after_ms the same send (same client_msg_id) goes through.
    let (i, client_msg_id, wait) = limited[0];
    std::thread::sleep(Duration::from_millis(u64::from(wait) + 50));
    let again = devices[i].send_ok(chat, client_msg_id, "hi");
    assert_eq!(again.seq, sent as u64 + 1);
    assert_eq!(bob.wait_message(WAIT).client_msg_id, client_msg_id);
}

#[test]
fn chat_changes_share_one_bucket_per_user() {
    let gw = Gateway::builder()
        .env("SWITCHBOARD_LIMITS__CREATE_BURST", "2")
        .env("SWITCHBOARD_LIMITS__CREATE_PER_MIN", "1")
        .start();
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let mut carol = ChatClient::connect_fresh(&gw, CAROL, 1);

    let first = alice.create_group("one", &[BOB], false);
    alice.create_group("two", &[BOB], false);
    let third = alice.create_chat("three", &[BOB], false);
    let reply = alice.wait_result(third, WAIT);
    reply.assert_code(ErrorCode::RateLimited, "a third CreateChat");
    assert!(
        (1..=60_000).contains(&reply.retry_after_ms),
        "retry_after_ms within one refill at 1/min: {reply:?}"
    );
    let add = alice.modify(first, &[CAROL], &[], &[]);
    let reply = alice.wait_result(add, WAIT);
    reply.assert_code(
        ErrorCode::RateLimited,
        "ModifyParticipants draws on the same bucket",
    );

    // Per user: Bob's bucket is his own.
    bob.create_group("bob's", &[CAROL], false);
    // Nothing of the refused requests happened: Carol was not added to the first group and no
    // third group exists (Bob sees two groups created, and his own).
    let mut created = 0;
    for event in bob.drain(Duration::from_millis(300)) {
        if let switchboard_tests::chat::Event::ChatUpdate(u) = event {
            assert_eq!(u.kind, wire::ChatUpdateKind::Created, "{u:?}");
            created += 1;
        }
    }
    assert_eq!(created, 3, "Alice's two groups and Bob's own");
    let mut carol_updates = 0;
    for event in carol.drain(Duration::from_millis(300)) {
        if let switchboard_tests::chat::Event::ChatUpdate(u) = event {
            assert_ne!(
                u.chat, first,
                "Carol was never added to Alice's first group"
            );
            carol_updates += 1;
        }
    }
    assert_eq!(carol_updates, 1, "Carol is only in Bob's group");
}

#[test]
fn create_attachment_has_its_own_bucket_per_user() {
    let gw = Gateway::builder()
        .env("SWITCHBOARD_LIMITS__UPLOAD_BURST", "1")
        .env("SWITCHBOARD_LIMITS__UPLOAD_PER_MIN", "1")
        .start();
    let mut a1 = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut a2 = ChatClient::connect_fresh(&gw, ALICE, 2);
    let create = || {
        Request::CreateAttachment(wire::CreateAttachment {
            size: 10,
            sha256: wire::Sha256::new([7; 32]),
            mime: "image/png",
        })
    };
    a1.call(create()).attachment_created();
    let reply = a2.call(create());
    reply.assert_code(
        ErrorCode::RateLimited,
        "the user's second upload, from another device",
    );
    assert!((1..=60_000).contains(&reply.retry_after_ms), "{reply:?}");
    // Sends are not uploads.
    a1.send_ok(direct(ALICE, BOB), 1, "still allowed");
}

/// A send with attachments counts against the user's send bucket before its attachments are
/// looked at: over the limit, it gets `RateLimited` (not the attachment's own error), so a
/// limited user cannot make the gateway read the store or the blob storage.
#[test]
fn sends_with_attachments_take_from_the_same_bucket_first() {
    let gw = Gateway::builder()
        .env("SWITCHBOARD_LIMITS__USER_SEND_BURST", "2")
        .env("SWITCHBOARD_LIMITS__USER_SEND_PER_S", "1")
        .start();
    let mut alice = ChatClient::connect_fresh(&gw, ALICE, 1);
    let chat = direct(ALICE, BOB);
    let unknown = wire::AttachmentId::new(12345).expect("nonzero");
    // Within the burst, the attachment is checked (and does not exist).
    let r = alice.send_body(chat, 1, wire::Body::Text("x"), &[unknown]);
    let within = alice.wait_result(r, WAIT).code;
    assert_ne!(within, ErrorCode::Ok);
    assert_ne!(within, ErrorCode::RateLimited);
    alice.send_ok(chat, 2, "hi");
    // The burst is spent. Three more, back to back: at most one token refills per second, so
    // at least one is refused by the limit, before its attachment is looked at.
    let asked: Vec<u64> = (3..6)
        .map(|id| alice.send_body(chat, id, wire::Body::Text("x"), &[unknown]))
        .collect();
    let codes: Vec<ErrorCode> = asked
        .into_iter()
        .map(|r| alice.wait_result(r, WAIT).code)
        .collect();
    assert!(codes.contains(&ErrorCode::RateLimited), "{codes:?}");
    assert!(!codes.contains(&ErrorCode::Ok), "{codes:?}");
}
