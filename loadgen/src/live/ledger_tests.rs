//! The ledger against a deliberately faulty fake peer: a model gateway that sequences every
//! sender's messages into one chat log and delivers it to a recipient, with one fault injected
//! at a time. Each fault must be caught, counted exactly once, and nothing else reported.

use rand::{Rng, SeedableRng, rngs::StdRng};
use wire::{ChatId, UserId};

use super::*;

/// The recipient under test.
const ME: u32 = 0;

fn chat() -> ChatId {
    let user = |n| UserId::new(n).expect("valid");
    ChatId::direct(user(1), user(2))
}

/// What the fake peer does to one recipient's stream.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// Never deliver event `i`.
    Drop(usize),
    /// Deliver event `i` twice on the same connection.
    Duplicate(usize),
    /// Swap events `i` and `i + 1`.
    Reorder(usize),
    /// Store event `i`'s message a second time at a new seq (a failed idempotency check).
    StoreTwice(usize),
    /// Deliver a message that was refused (never acknowledged).
    Phantom,
    /// Drop the connection after event `i` and, on the new one, send everything again.
    ReconnectAfter(usize),
}

/// A correct chat log: a `ChatUpdate` at seq 1, then `n` messages from senders 1..=3 in a
/// seeded interleaving, each sender's per-chat counter ascending from 1.
fn log(n: usize, seed: u64) -> (Vec<(u64, Option<Stamp>)>, Expected) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next = [0_u64; 4];
    let mut outboxes: Vec<Outbox> = (0..4).map(|_| Outbox::default()).collect();
    let mut events = vec![(1, None)];
    for i in 0..n {
        let sender = rng.random_range(1..=3_u32);
        next[sender as usize] += 1;
        let stamp = Stamp {
            sender,
            msg: 1000 + i as u64,
            chat_msg: next[sender as usize],
            intended_ns: i as u64,
            resent: false,
        };
        outboxes[sender as usize].acked(chat(), stamp.chat_msg);
        events.push((events.len() as u64 + 1, Some(stamp)));
    }
    let mut expected = Expected::default();
    for (sender, outbox) in outboxes.into_iter().enumerate() {
        for (chat, sent) in outbox.chats {
            expected.insert(chat, sender as u32, sent);
        }
    }
    (events, expected)
}

/// Runs the fake peer with `fault` and returns what the ledger found.
fn run(fault: Fault, seed: u64) -> Faults {
    let (mut events, mut expected) = log(40, seed);
    let mut inbox = Inbox::default();
    inbox.on_connect();
    match fault {
        Fault::None | Fault::ReconnectAfter(_) => {}
        Fault::Drop(i) => {
            events.remove(i);
        }
        Fault::Duplicate(i) => events.insert(i + 1, events[i]),
        Fault::Reorder(i) => events.swap(i, i + 1),
        Fault::StoreTwice(i) => {
            let again = (events.len() as u64 + 1, events[i].1);
            events.push(again);
        }
        Fault::Phantom => {
            let stamp = Stamp {
                sender: 3,
                msg: 1,
                chat_msg: 999,
                intended_ns: 0,
                resent: false,
            };
            events.push((events.len() as u64 + 1, Some(stamp)));
            // Refused: the sender knows it was not stored, so it is in neither set.
            let mut refused = SentSet::default();
            refused.maybe.insert(1_000); // an unrelated unanswered one must not excuse it
            expected.insert(chat(), 4, refused);
        }
    }
    for (i, (seq, stamp)) in events.iter().enumerate() {
        inbox.on_event(chat(), *seq, stamp.as_ref());
        if let Fault::ReconnectAfter(at) = fault
            && i == at
        {
            inbox.on_connect();
            // Nothing was acked: the new connection's sync starts from the beginning.
            for (seq, stamp) in &events[..=i] {
                assert_eq!(
                    inbox.on_event(chat(), *seq, stamp.as_ref()),
                    Arrival::Redelivered
                );
            }
        }
    }
    let faults = inbox.check(ME, [chat()], &expected);
    faults.get(&chat()).copied().expect("the chat is checked")
}

#[test]
fn a_correct_peer_shows_no_fault() {
    for seed in 0..20 {
        let f = run(Fault::None, seed);
        assert!(!f.any(), "seed {seed}: {f:?}");
        assert_eq!(f.delivered, 40);
    }
    let f = run(Fault::ReconnectAfter(20), 1);
    assert!(!f.any(), "redelivery after a reconnect is allowed: {f:?}");
    assert_eq!((f.delivered, f.redelivered), (40, 21));
}

#[test]
fn catches_each_injected_fault() {
    for seed in 0..20 {
        let lost = run(Fault::Drop(7), seed);
        assert_eq!(
            (lost.lost, lost.dup, lost.order, lost.phantom),
            (1, 0, 0, 0),
            "{seed}"
        );
        let dup = run(Fault::Duplicate(7), seed);
        assert_eq!(
            (dup.lost, dup.dup, dup.order, dup.phantom),
            (0, 1, 0, 0),
            "{seed}"
        );
        let order = run(Fault::Reorder(7), seed);
        assert_eq!(
            (order.lost, order.dup, order.order, order.phantom),
            (0, 0, 1, 0),
            "seed {seed}"
        );
        let twice = run(Fault::StoreTwice(7), seed);
        assert_eq!((twice.lost, twice.dup, twice.phantom), (0, 1, 0), "{seed}");
        let phantom = run(Fault::Phantom, seed);
        assert_eq!(
            (phantom.lost, phantom.dup, phantom.phantom),
            (0, 0, 1),
            "{seed}"
        );
    }
}

#[test]
fn a_missing_chat_counts_everything_lost() {
    let (_, expected) = log(10, 3);
    let inbox = Inbox::default();
    let f = inbox.check(ME, [chat()], &expected);
    assert_eq!(f[&chat()].lost, 10);
}

#[test]
fn the_sender_is_not_expected_to_get_its_own() {
    let (events, expected) = log(30, 4);
    let mut inbox = Inbox::default();
    inbox.on_connect();
    let me = 2;
    for (seq, stamp) in &events {
        if stamp.is_none_or(|s| s.sender != me) {
            inbox.on_event(chat(), *seq, stamp.as_ref());
        }
    }
    let f = inbox.check(me, [chat()], &expected);
    assert!(!f[&chat()].any(), "{:?}", f[&chat()]);
}
