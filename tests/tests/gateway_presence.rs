//! Presence end to end (DESIGN.md F10; docs/PROTOCOL.md §4.10, §4.11): a subscriber gets the
//! current presence of each user it subscribes to, then every change (connect, disconnect,
//! `SetPresence`), with `last_seen_ms` set when a user goes offline; an unsubscribed
//! connection gets nothing.

use std::time::Duration;

use switchboard_tests::chat::{ChatClient, Event};
use switchboard_tests::gateway::Gateway;
use wire::{ErrorCode, Request, SetPresence, SubscribePresence, UserId};

const WAIT: Duration = Duration::from_secs(5);

fn user(n: u64) -> UserId {
    UserId::new(n).expect("valid user")
}

fn subscribe(client: &mut ChatClient, users: &[u64]) {
    let users: Vec<UserId> = users.iter().map(|u| user(*u)).collect();
    let reply = client.call(Request::SubscribePresence(SubscribePresence {
        users: &users,
    }));
    reply.assert_code(ErrorCode::Ok, "SubscribePresence");
}

/// The next `Presence` for `of`.
fn presence_of(client: &mut ChatClient, of: u64) -> wire::Presence {
    match client.wait_for(
        WAIT,
        |e| matches!(e, Event::Presence(p) if p.user == user(of)),
    ) {
        Event::Presence(p) => p,
        other => panic!("expected a Presence, got {other:?}"),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[test]
fn a_subscriber_sees_the_current_state_then_each_change_with_last_seen() {
    let gw = Gateway::start();
    let mut watcher = ChatClient::connect_fresh(&gw, 1, 1);
    subscribe(&mut watcher, &[2]);
    let first = presence_of(&mut watcher, 2);
    assert!(!first.online, "user 2 never connected: {first:?}");

    let before = now_ms();
    let mut bob = ChatClient::connect_fresh(&gw, 2, 1);
    let online = presence_of(&mut watcher, 2);
    assert!(online.online, "{online:?}");

    // Showing as offline while connected, then online again.
    let reply = bob.call(Request::SetPresence(SetPresence { online: false }));
    reply.assert_code(ErrorCode::Ok, "SetPresence(false)");
    let hidden = presence_of(&mut watcher, 2);
    assert!(!hidden.online, "{hidden:?}");
    assert!(
        hidden.last_seen_ms >= before,
        "last seen when hidden: {hidden:?}"
    );
    let reply = bob.call(Request::SetPresence(SetPresence { online: true }));
    reply.assert_code(ErrorCode::Ok, "SetPresence(true)");
    assert!(presence_of(&mut watcher, 2).online);

    // Going away: offline, last seen between the connect and now.
    bob.close();
    let gone = presence_of(&mut watcher, 2);
    assert!(!gone.online, "{gone:?}");
    assert!(
        (before..=now_ms()).contains(&gone.last_seen_ms),
        "last seen {} not in {before}..=now",
        gone.last_seen_ms
    );
}

#[test]
fn a_user_with_two_devices_is_online_until_both_leave_and_unsubscribing_stops_updates() {
    let gw = Gateway::start();
    let mut watcher = ChatClient::connect_fresh(&gw, 1, 1);
    subscribe(&mut watcher, &[3]);
    assert!(!presence_of(&mut watcher, 3).online);
    let phone = ChatClient::connect_fresh(&gw, 3, 1);
    assert!(presence_of(&mut watcher, 3).online);
    let laptop = ChatClient::connect_fresh(&gw, 3, 2);
    phone.close();
    // Still online through the laptop: no offline presence may arrive.
    let events = watcher.drain(Duration::from_millis(1_200));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Presence(p) if !p.online)),
        "went offline while a device is connected: {events:?}"
    );
    subscribe(&mut watcher, &[]);
    laptop.close();
    let events = watcher.drain(Duration::from_millis(1_200));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Presence(_))),
        "presence after unsubscribing: {events:?}"
    );
}

#[test]
fn a_subscription_over_presence_subscriptions_max_is_refused() {
    let gw = Gateway::builder()
        .env("SWITCHBOARD_LIMITS__PRESENCE_SUBSCRIPTIONS_MAX", "3")
        .start();
    let mut watcher = ChatClient::connect_fresh(&gw, 1, 1);
    let users: Vec<UserId> = (2..=5).map(user).collect();
    let reply = watcher.call(Request::SubscribePresence(SubscribePresence {
        users: &users,
    }));
    reply.assert_code(ErrorCode::TooManyMembers, "4 users over a limit of 3");
}
