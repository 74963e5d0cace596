//! Proves the gateway's heartbeats (docs/PROTOCOL.md §1 "Liveness"), with a real gateway set to
//! `--heartbeat-interval-ms 200 --idle-timeout-ms 1000`: after inbound silence it pings; a client
//! that never answers is closed with 4000 once the idle timeout passes (not before), then the TCP
//! connection ends; a client that answers pings, or one that keeps sending requests, stays open
//! well past the idle timeout and keeps working. A connection whose token expires is closed
//! with 4003.

use std::time::{Duration, Instant};

use switchboard_tests::gateway::{Gateway, IO_TIMEOUT};
use switchboard_tests::ws::{Closed, Incoming, op};
use wire::ws::close;
use wire::{ClientFrame, Request, SetPresence};

const HEARTBEAT_MS: u64 = 200;
const IDLE_MS: u64 = 1000;

fn gateway() -> Gateway {
    Gateway::builder()
        .flag("--heartbeat-interval-ms", HEARTBEAT_MS)
        .flag("--idle-timeout-ms", IDLE_MS)
        .start()
}

#[test]
fn a_client_that_never_answers_pings_is_closed_with_4000() {
    let gw = gateway();
    let mut client = gw.connect(1, 1);
    let silent_since = Instant::now();
    let mut pings = Vec::new();
    let closed_at = loop {
        match client.recv(Duration::from_secs(5)) {
            Ok(Incoming::Frame(f)) if f.opcode == op::PING => pings.push(silent_since.elapsed()),
            Ok(Incoming::Frame(f)) if f.opcode == op::CLOSE => {
                assert_eq!(f.close_code(), Some(close::IDLE_TIMEOUT), "{f:?}");
                break silent_since.elapsed();
            }
            other => panic!("expected pings then close 4000, got {other:?} after {pings:?}"),
        }
    };
    assert!(
        !pings.is_empty(),
        "closed after {closed_at:?} without a ping first"
    );
    let first = pings[0];
    assert!(
        first >= Duration::from_millis(HEARTBEAT_MS / 2),
        "first ping after {first:?} of silence, heartbeat {HEARTBEAT_MS} ms"
    );
    assert!(
        closed_at >= Duration::from_millis(IDLE_MS * 8 / 10),
        "closed after {closed_at:?} of silence, idle timeout {IDLE_MS} ms"
    );
    assert!(
        closed_at <= Duration::from_millis(IDLE_MS * 3),
        "closed only after {closed_at:?}"
    );
    match client.expect_close(IO_TIMEOUT) {
        Ok((Closed::Eof | Closed::Error(_), _)) => {}
        other => panic!("the TCP connection did not end after close 4000: {other:?}"),
    }
}

#[test]
fn a_client_that_answers_pings_stays_open() {
    let gw = gateway();
    let mut client = gw.connect(1, 1);
    let start = Instant::now();
    let stay = Duration::from_millis(IDLE_MS * 3);
    let mut pings = 0;
    while start.elapsed() < stay {
        match client.recv(stay.saturating_sub(start.elapsed())) {
            Ok(Incoming::Frame(f)) if f.opcode == op::PING => {
                pings += 1;
                client
                    .send_frame(true, op::PONG, true, &f.payload)
                    .expect("pong");
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            other => panic!("after {:?} and {pings} pings: {other:?}", start.elapsed()),
        }
    }
    assert!(
        pings >= 3,
        "{pings} pings in {stay:?} with a {HEARTBEAT_MS} ms heartbeat"
    );
    client.assert_served(1, IO_TIMEOUT);
}

#[test]
fn a_client_that_keeps_sending_is_not_idle() {
    let gw = gateway();
    let mut client = gw.connect(1, 1);
    let start = Instant::now();
    let mut n = 0;
    // Requests every 300 ms, never a pong: inbound traffic is not silence.
    while start.elapsed() < Duration::from_millis(IDLE_MS * 3) {
        n += 1;
        let frame = ClientFrame {
            request_id: n,
            request: Request::SetPresence(SetPresence { online: true }),
        };
        client.send_request(&frame).expect("send");
        let deadline = Instant::now() + Duration::from_millis(300);
        loop {
            match client.recv(deadline.saturating_duration_since(Instant::now())) {
                Ok(Incoming::Frame(f)) if f.opcode == op::PING || f.opcode == op::BINARY => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                other => panic!("after {:?}: {other:?}", start.elapsed()),
            }
        }
    }
    client.assert_served(u64::MAX, IO_TIMEOUT);
}

/// A connection does not outlive its token: once `exp` (plus leeway) passes, the gateway closes
/// it with 4003 so the client reconnects with a fresh token.
#[test]
fn a_connection_whose_token_expires_is_closed_with_4003() {
    use switchboard_tests::token;
    use switchboard_tests::ws::Handshake;
    let gw = Gateway::builder()
        .flag("--heartbeat-interval-ms", HEARTBEAT_MS)
        .flag("--idle-timeout-ms", 60_000)
        .flag("--jwt-leeway-s", 0)
        .start();
    let exp = token::now_s() + 2;
    let jwt = token::sign(&gw.secret(), &token::claims(7, 1, exp));
    let Ok(Handshake::Upgraded(mut client)) = gw.upgrade_with(&jwt) else {
        panic!("a token valid for 2 s upgrades");
    };
    client.assert_served(1, IO_TIMEOUT);
    let (closed, _) = client
        .expect_close(Duration::from_secs(10))
        .expect("the connection ends after the token expires");
    assert!(
        token::now_s() > exp,
        "closed before the token expired: {closed:?}"
    );
    match closed {
        Closed::Frame { code, .. } => assert_eq!(code, Some(close::TOKEN_EXPIRED), "{closed:?}"),
        other => panic!("expected close 4003, got {other:?}"),
    }
}
