//! Proves graceful drain (docs/PROTOCOL.md §6.10) on a real process: `/healthz` and `/readyz`
//! are 200 while running; on SIGTERM or SIGINT `/readyz` turns 503 at once, no new client is
//! upgraded, every connected client gets `GoAway{reconnect_after_ms}` with the delay under
//! `drain_window_ms` and then a close frame 1001, and the process exits 0 within
//! `drain_timeout_ms`, also when a client neither reads nor answers the close; the store is
//! checkpointed on the way out, so the next start replays nothing and keeps every message.

use std::time::{Duration, Instant};

use switchboard_tests::chat::{ChatClient, WAIT, direct};
use switchboard_tests::gateway::{Gateway, IO_TIMEOUT, Signal};
use switchboard_tests::ws::{Handshake, Incoming, ServerMsg, WsClient, decode, op};
use wire::ws::close;
use wire::{ClientFrame, Request, SetPresence};

const DRAIN_WINDOW_MS: u64 = 1500;
const DRAIN_TIMEOUT_MS: u64 = 5000;
/// Process teardown after the drain timeout, on a busy machine.
const EXIT_SLACK: Duration = Duration::from_secs(3);

/// A client that does not answer the close holds the drain this long: long enough for the test
/// to see `/readyz` say 503 on a busy machine.
const CLOSE_LINGER_MS: u64 = 3000;

fn draining_gateway() -> Gateway {
    Gateway::builder()
        .flag("--close-linger-ms", CLOSE_LINGER_MS)
        .flag("--drain-window-ms", DRAIN_WINDOW_MS)
        .flag("--drain-timeout-ms", DRAIN_TIMEOUT_MS)
        .start()
}

fn connected(gw: &Gateway, user: u64) -> WsClient {
    let mut client = gw.connect(user, 1);
    let frame = ClientFrame {
        request_id: user,
        request: Request::SetPresence(SetPresence { online: true }),
    };
    assert_eq!(client.request(&frame, IO_TIMEOUT).0, user);
    client
}

fn status(gw: &Gateway, path: &str) -> u16 {
    gw.get(path)
        .unwrap_or_else(|e| panic!("GET {path}: {e}\nstderr:\n{}", gw.stderr()))
        .status
}

/// Polls `/readyz` for up to a second after the signal until it says 503.
fn assert_readyz_turns_503(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut seen = Vec::new();
    loop {
        match gw.get("/readyz") {
            Ok(r) if r.status == 503 => return,
            Ok(r) => seen.push(format!("{}", r.status)),
            Err(e) => seen.push(e.to_string()),
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never said 503 while draining: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn drain_on(signal: Signal) {
    let mut gw = draining_gateway();
    assert_eq!(status(&gw, "/healthz"), 200);
    assert_eq!(status(&gw, "/readyz"), 200);
    let mut clients: Vec<WsClient> = (1..=3).map(|u| connected(&gw, u)).collect();

    let signalled = Instant::now();
    gw.signal(signal);
    assert_readyz_turns_503(&gw);

    let wait = Duration::from_millis(DRAIN_TIMEOUT_MS) + EXIT_SLACK;
    for (i, client) in clients.iter_mut().enumerate() {
        match client.expect_msg(wait) {
            ServerMsg::GoAway { reconnect_after_ms } => assert!(
                u64::from(reconnect_after_ms) < DRAIN_WINDOW_MS,
                "client {i}: reconnect_after_ms {reconnect_after_ms} >= drain window"
            ),
            other => panic!("client {i}: expected GoAway, got {other:?}"),
        }
        let (closed, skipped) = client
            .expect_close(wait)
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(
            closed.code(),
            Some(close::GOING_AWAY),
            "client {i}: {closed:?}"
        );
        assert!(
            skipped.is_empty(),
            "client {i}: frames after GoAway: {skipped:?}"
        );
        let _ = client.send_close(close::GOING_AWAY);
    }

    let status = gw
        .wait_exit(wait)
        .unwrap_or_else(|| panic!("still running {wait:?} after {signal:?}"));
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "{signal:?}: exit {status}\nstderr:\n{}",
        gw.stderr()
    );
    assert!(
        took <= wait,
        "{signal:?}: exited after {took:?}, drain timeout {DRAIN_TIMEOUT_MS} ms"
    );
}

#[test]
fn sigterm_drains_with_goaway_then_1001_and_exits_0() {
    drain_on(Signal::TERM);
}

#[test]
fn sigint_drains_with_goaway_then_1001_and_exits_0() {
    drain_on(Signal::INT);
}

/// PROTOCOL.md §6.10: "On shutdown the gateway stops accepting". A client must not be upgraded
/// once `/readyz` says 503 (refused, an HTTP error or no answer are all fine).
#[test]
fn no_new_client_is_upgraded_while_draining() {
    let gw = draining_gateway();
    let _connected = connected(&gw, 1);
    gw.signal(Signal::TERM);
    assert_readyz_turns_503(&gw);
    match gw.upgrade_with(&gw.sign(99, 1)) {
        Ok(Handshake::Upgraded(mut late)) => {
            let first = match late.next_message(IO_TIMEOUT) {
                Ok(Incoming::Frame(f)) if f.opcode == op::BINARY => {
                    format!("{:?}", decode(&f.payload))
                }
                other => format!("{other:?}"),
            };
            panic!("a new client was upgraded while draining; it then got {first}")
        }
        Ok(Handshake::Refused(_)) | Err(_) => {}
    }
}

#[test]
fn a_client_that_ignores_the_drain_does_not_hold_the_process_past_the_drain_timeout() {
    const TIMEOUT_MS: u64 = 2000;
    let mut gw = Gateway::builder()
        .flag("--drain-window-ms", 500)
        .flag("--drain-timeout-ms", TIMEOUT_MS)
        .start();
    // Connected, then never reads and never answers the close.
    let _deaf = connected(&gw, 1);
    let signalled = Instant::now();
    gw.signal(Signal::TERM);
    let wait = Duration::from_millis(TIMEOUT_MS) + EXIT_SLACK;
    let status = gw
        .wait_exit(wait)
        .unwrap_or_else(|| panic!("still running {wait:?} after SIGTERM with a deaf client"));
    assert!(status.success(), "exit {status}\nstderr:\n{}", gw.stderr());
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
}

/// A drained gateway closes its store on the way out (its last writes checkpointed, its
/// index written out), so starting again on the same data directory replays nothing from the
/// log, and every message sent before the drain is still there.
#[test]
fn after_a_drain_the_next_start_replays_nothing_and_keeps_every_message() {
    const MESSAGES: u64 = 50;
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data");
    let mut gw = Gateway::builder().data_dir(&data).send_limits(100).start();
    let (alice, bob) = (1, 2);
    ChatClient::register(&gw, bob, 1);
    let mut sender = ChatClient::connect_fresh(&gw, alice, 1);
    for id in 1..=MESSAGES {
        sender.send_ok(direct(alice, bob), id, "before the drain");
    }
    drop(sender);
    gw.signal(Signal::TERM);
    let status = gw
        .wait_exit(Duration::from_secs(30))
        .expect("the gateway exits within 30 s of SIGTERM");
    assert!(status.success(), "exit after SIGTERM: {status}");

    let gw = Gateway::builder().data_dir(&data).start();
    let opened = gw
        .stderr()
        .lines()
        .find(|l| l.contains("store open"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        opened.contains("replayed=0 "),
        "the store was not closed cleanly on drain: {opened:?}"
    );
    let mut recipient = ChatClient::connect(&gw, bob, 1);
    let (events, done) = recipient.expect_sync_done(WAIT);
    assert_eq!(
        done.events, MESSAGES,
        "bob's sync after the restart: {events:?}"
    );
}
