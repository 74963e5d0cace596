//! What the owner answers when the store fails (docs/PROTOCOL.md §7): `Unavailable` with a
//! `retry_after_ms` when waiting helps (overloaded, unreachable), spread so that refused
//! clients do not return together; `Unavailable` with no wait when the store is read-only;
//! and nothing of a failed write is delivered. Also what a late, repeated store answer does:
//! nothing.

use router::owner::{Input, Owner, OwnerLimits, RETRY_AFTER_MS};
use router::types::{Action, Answer, Op, Origin};
use store::StoreError;
use store::model::BodyKind;
use wire::{ChatId, DeviceId, ErrorCode, UserId};

const NOW: u64 = 1_000_000;

fn user(n: u64) -> UserId {
    UserId::new(n).expect("valid user")
}

fn origin(request_id: u64) -> Origin {
    Origin {
        user: user(1),
        device: DeviceId::new(1).expect("valid device"),
        request_id,
        reply_to: 7,
    }
}

fn send(chat: ChatId, client_msg_id: u64) -> Op {
    Op::Send {
        chat,
        client_msg_id,
        kind: BodyKind::Text,
        body: b"hello".to_vec(),
        attachments: Vec::new(),
    }
}

/// Feeds `input` and the end of the tick; returns the actions.
fn step(owner: &mut Owner, input: Input) -> Vec<Action> {
    let mut out = Vec::new();
    owner.handle(input, NOW, &mut out);
    owner.handle(Input::Flush, NOW, &mut out);
    out
}

/// Sends `n` messages into a new direct chat and answers the owner's load and lookups, up to
/// the write it asks for; returns that write's id.
fn up_to_write(owner: &mut Owner, chat: ChatId, n: u64) -> u64 {
    let mut lookups = Vec::new();
    for id in 1..=n {
        for action in step(owner, Input::Request(origin(id), send(chat, id))) {
            if let Action::Lookup(key) = action {
                lookups.push(key);
            }
        }
    }
    let mut inputs: Vec<Input> = vec![Input::Loaded(chat, Ok(None))];
    inputs.extend(lookups.into_iter().map(|k| Input::LookedUp(k, Ok(None))));
    let mut write = None;
    for input in inputs {
        for action in step(owner, input) {
            if let Action::Write(id, _) = action {
                write = Some(id);
            }
        }
    }
    write.expect("the owner writes the sends")
}

fn errors(actions: &[Action]) -> Vec<(ErrorCode, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Answer(
                _,
                Answer::Error {
                    code,
                    retry_after_ms,
                    ..
                },
            ) => Some((*code, *retry_after_ms)),
            Action::Answer(..) => panic!("a failed write answered a send with success: {a:?}"),
            Action::Deliver(_) => panic!("a failed write delivered: {a:?}"),
            _ => None,
        })
        .collect()
}

#[test]
fn an_overloaded_store_fails_sends_with_a_spread_retry_after() {
    let mut owner = Owner::new(OwnerLimits::default());
    let chat = ChatId::direct(user(1), user(2));
    let write = up_to_write(&mut owner, chat, 64);
    let failed = Input::Written(write, Err(StoreError::Overloaded("queue full".into())));
    let answers = errors(&step(&mut owner, failed));
    assert_eq!(
        answers.len(),
        64,
        "every send of the write is answered once"
    );
    let window = RETRY_AFTER_MS..2 * RETRY_AFTER_MS;
    for (code, retry) in &answers {
        assert_eq!(*code, ErrorCode::Unavailable);
        assert!(window.contains(retry), "{retry} ms outside {window:?}");
    }
    let mut distinct: Vec<u32> = answers.iter().map(|(_, r)| *r).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() > 16,
        "the waits are spread, not one value: {distinct:?}"
    );
}

#[test]
fn a_read_only_store_fails_sends_without_a_wait_and_a_failed_load_with_one() {
    let mut owner = Owner::new(OwnerLimits::default());
    let chat = ChatId::direct(user(1), user(3));
    let write = up_to_write(&mut owner, chat, 2);
    let failed = Input::Written(write, Err(StoreError::ReadOnly("fsync failed".into())));
    assert_eq!(
        errors(&step(&mut owner, failed)),
        [(ErrorCode::Unavailable, 0); 2]
    );

    // The chat was forgotten; a new send loads it again, and that load fails.
    let actions = step(&mut owner, Input::Request(origin(9), send(chat, 9)));
    assert!(actions.contains(&Action::Load(chat)), "{actions:?}");
    let unreachable = Input::Loaded(chat, Err(StoreError::Unavailable("down".into())));
    let answers = errors(&step(&mut owner, unreachable));
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, ErrorCode::Unavailable);
    assert!((RETRY_AFTER_MS..2 * RETRY_AFTER_MS).contains(&answers[0].1));
}

/// A second answer to an idempotency lookup, arriving after the first one let the send go on
/// to its write, leaves that send alone: once the write is durable, its sender gets `Sent`.
#[test]
fn a_repeated_lookup_answer_does_not_forget_a_send_in_flight() {
    let mut owner = Owner::new(OwnerLimits::default());
    let chat = ChatId::direct(user(1), user(4));
    let write = up_to_write(&mut owner, chat, 1);
    let key = (user(1), DeviceId::new(1).expect("valid device"), 1);
    assert!(step(&mut owner, Input::LookedUp(key, Ok(None))).is_empty());
    let done = step(&mut owner, Input::Written(write, Ok(())));
    let sent: Vec<&Origin> = done
        .iter()
        .filter_map(|a| match a {
            Action::Answer(origin, Answer::Sent(_)) => Some(origin),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![&origin(1)], "{done:?}");
}
