//! Proves the gateway survives hostile or unlucky conditions with a real process and real
//! sockets: a slow consumer (small `SO_RCVBUF`, never reads, keeps asking) is closed (1008 or a
//! plain TCP close), its queue is freed (RSS does not grow without bound, a queue drop is
//! counted) and others keep working, while a client that reads gets a burst larger than its
//! queue whole (the queue is written out before anyone is judged slow); at the fd limit (`ulimit -n 256`) accepts stop, the
//! `emfile` accept error is counted, and accepts resume once fds are free; a client that sends
//! nothing, half a request, or a request one byte at a time is cut off after
//! `handshake_timeout_ms`; over `connections_max` an upgrade is HTTP 503; a second gateway on a
//! taken address exits non-zero at once, naming the address; a gateway whose log cannot be
//! written (stderr on `/dev/full`) serves and exits cleanly.

use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use switchboard_tests::chat::{ChatClient, WAIT, direct};
use switchboard_tests::gateway::{Gateway, IO_TIMEOUT, Signal, StartFailure};
use switchboard_tests::ws::{self, Closed, Handshake, WsClient};
use wire::ErrorCode;
use wire::ws::close;

/// RSS may grow this much while a slow consumer is handled, and no more.
const RSS_GROWTH_MAX_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

fn rss(gw: &Gateway) -> f64 {
    let m = gw.metrics();
    let rss = m.sum("process_resident_memory_bytes");
    assert!(
        rss > 0.0,
        "process_resident_memory_bytes: {}",
        m.show("process_resident_memory_bytes")
    );
    rss
}

/// A client whose socket buffers are as small as the kernel allows.
fn small_buffer_client(gw: &Gateway) -> WsClient {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .connect_timeout(&gw.ws.into(), IO_TIMEOUT)
        .expect("connect");
    let auth = format!("Bearer {}", gw.sign(1, 1));
    match ws::handshake_on(
        socket.into(),
        "/ws",
        &[("Authorization", &auth)],
        IO_TIMEOUT,
    ) {
        Ok(Handshake::Upgraded(c)) => c,
        other => panic!("upgrade: {other:?}"),
    }
}

#[test]
fn a_slow_consumer_is_closed_and_its_queue_freed() {
    let gw = Gateway::builder()
        .flag("--send-queue-bytes-max", 65_536)
        .start();
    let mut warm = gw.connect(2, 1);
    warm.assert_served(1, IO_TIMEOUT);
    let before = rss(&gw);

    let mut slow = small_buffer_client(&gw);
    // 1-byte garbage messages: 7 bytes in, a ~60-byte `Result{0, Malformed}` out, so the
    // answers pile up ~10x faster than we write. We never read.
    let one = ws::encode_frame(true, 0, ws::op::BINARY, Some(ws::random_bytes()), b"?");
    let batch: Vec<u8> = one.repeat(10_000);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let write_error = loop {
        match slow.write_raw(&batch) {
            Ok(()) => sent += 10_000,
            Err(e) => break e,
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the gateway still reads from a client that has not read {sent} answers"
        );
    };
    assert!(
        !matches!(
            write_error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "the gateway stopped reading from a slow consumer after {sent} requests but did not \
         close it: {write_error}"
    );
    // Whatever arrived before the end: answers, then a 1008 close frame or nothing.
    let (closed, skipped) = slow
        .expect_close(Duration::from_secs(10))
        .expect("the slow consumer's connection ends");
    match closed {
        Closed::Frame { code, .. } => assert_eq!(code, Some(close::POLICY_VIOLATION), "{closed:?}"),
        Closed::Eof | Closed::Error(_) => {}
    }
    eprintln!(
        "slow consumer: {sent} requests written, {} frames read back",
        skipped.len()
    );

    let m = gw.metrics_until(IO_TIMEOUT, |m| m.sum("switchboard_queue_drops_total") > 0.0);
    assert!(
        m.sum("switchboard_queue_drops_total") > 0.0,
        "no queue drop counted: {}",
        m.show("switchboard_queue_drops_total")
    );
    let after = rss(&gw);
    assert!(
        after - before < RSS_GROWTH_MAX_BYTES,
        "RSS grew from {before} to {after} bytes handling one slow consumer"
    );
    warm.assert_served(2, IO_TIMEOUT);
    let mut fresh = gw.connect(3, 1);
    fresh.assert_served(3, IO_TIMEOUT);
}

/// Messages in the burst of [`a_burst_larger_than_its_queue_to_a_reading_client_is_written`].
const BURST: u64 = 1_000;
/// Their body size: a `NewMessage` of ~1.1 KB, so the 64 KiB queue holds ~60 of them.
const BURST_BODY_BYTES: usize = 1_000;

/// A client that reads is no slow consumer, even when the gateway hands it far more at once
/// than its queue holds: 1,000 pipelined sends become durable in a few batches, and each batch's
/// `NewMessage`s are queued to the recipient at once. The full queue is written out to the
/// socket before the connection is judged slow, so the recipient gets all 1,000 in order and
/// nobody is closed; the write-aheads are counted (which also shows that the burst did
/// overflow the queue, so the test exercised that path).
#[test]
fn a_burst_larger_than_its_queue_to_a_reading_client_is_written() {
    let gw = Gateway::builder()
        .flag("--send-queue-bytes-max", 65_536)
        .send_limits(100_000)
        .start();
    let (alice, bob) = (1, 2);
    let mut recipient = ChatClient::connect_fresh(&gw, bob, 1);
    let mut sender = ChatClient::connect_fresh(&gw, alice, 1);
    let chat = direct(alice, bob);
    let body = vec![b'x'; BURST_BODY_BYTES];
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut seqs = Vec::new();
            while seqs.len() < BURST as usize {
                seqs.push(recipient.wait_message(WAIT).seq);
            }
            seqs
        });
        let requests: Vec<u64> = (1..=BURST)
            .map(|id| sender.send_opaque(chat, id, &body))
            .collect();
        for request in requests {
            let reply = sender.wait_result(request, WAIT);
            assert_eq!(reply.code, ErrorCode::Ok, "send {request}: {reply:?}");
        }
        let seqs = reader.join().expect("the recipient's reader");
        assert_eq!(
            seqs,
            (1..=BURST).collect::<Vec<_>>(),
            "the recipient got the burst out of order or with gaps"
        );
    });
    let m = gw.metrics();
    assert!(
        m.sum("switchboard_queue_drops_total") < 0.5,
        "a reading client was closed as slow: {}",
        m.show("switchboard_queue_drops_total")
    );
    assert!(
        m.sum("switchboard_queue_write_aheads_total") > 0.0,
        "the burst never filled a queue, so this test proved nothing: {}",
        m.show("switchboard_queue_write_aheads_total")
    );
}

/// A gateway whose log cannot be written (stderr on a full disk: `/dev/full` fails every
/// write with `ENOSPC`) loses those lines and nothing else: it starts (its startup logs
/// warnings about development keys), serves, and drains on SIGTERM with exit status 0. A
/// logger that reports its own write failure on the same stderr panics, and a panic aborts.
#[test]
fn a_gateway_whose_log_cannot_be_written_serves_and_exits_cleanly() {
    let mut gw = Gateway::builder().stderr_to("/dev/full").start();
    let mut client = gw.connect(1, 1);
    client.assert_served(1, IO_TIMEOUT);
    gw.signal(Signal::TERM);
    let status = gw
        .wait_exit(Duration::from_secs(30))
        .expect("the gateway exits within 30 s of SIGTERM");
    assert!(status.success(), "exit after SIGTERM: {status}");
}

/// A store that can write no more (here every file of the gateway is capped at 256 KiB, so
/// the log's next write fails with `EFBIG`, as on a full disk) refuses sends with
/// `Unavailable`, and the gateway says so where operators and load balancers look: `/readyz`
/// turns 503 naming the store, and `switchboard_store_failed` is 1. Before that, `/readyz` is
/// 200 and the gauge 0.
#[test]
fn a_store_that_can_write_no_more_turns_readyz_503_and_is_counted() {
    let gw = Gateway::builder()
        .file_blocks_max(512)
        .send_limits(100_000)
        .start();
    let ready = gw.get("/readyz").expect("GET /readyz");
    assert_eq!(ready.status, 200, "{ready:?}");
    assert!(gw.metrics().sum("switchboard_store_failed") < 0.5);

    let (alice, bob) = (1, 2);
    ChatClient::register(&gw, bob, 1);
    let mut sender = ChatClient::connect_fresh(&gw, alice, 1);
    let body = vec![b'x'; BURST_BODY_BYTES];
    // 256 KiB of log holds a few hundred of these; give up well past that.
    let refused = (1..=2_000).find_map(|id| {
        let request = sender.send_opaque(direct(alice, bob), id, &body);
        let reply = sender.wait_result(request, WAIT);
        (reply.code != ErrorCode::Ok).then_some((id, reply))
    });
    let Some((id, reply)) = refused else {
        panic!("2,000 sends of 1 KB were all stored under a 256 KiB file size limit");
    };
    assert_eq!(reply.code, ErrorCode::Unavailable, "send {id}: {reply:?}");

    let ready = gw.get("/readyz").expect("GET /readyz");
    let body = String::from_utf8_lossy(&ready.body);
    assert_eq!(ready.status, 503, "/readyz after the store failed: {body}");
    assert!(body.contains("store failed"), "/readyz body: {body}");
    let m = gw.metrics();
    assert!(
        m.sum("switchboard_store_failed") > 0.5,
        "{}",
        m.show("switchboard_store_failed")
    );
}

#[test]
fn accepts_stop_at_the_fd_limit_and_resume_after() {
    let gw = Gateway::builder().nofile(256).start();
    let mut open = Vec::new();
    let mut stalled = None;
    // Well above 256: the limit must be hit before this.
    for user in 1..=600 {
        let auth = format!("Bearer {}", gw.sign(user, 1));
        match ws::handshake(
            gw.ws,
            "/ws",
            &[("Authorization", &auth)],
            Duration::from_secs(1),
        ) {
            Ok(Handshake::Upgraded(client)) => open.push(client),
            other => {
                stalled = Some((user, format!("{other:?}")));
                break;
            }
        }
    }
    let (at, how) = stalled.expect("600 upgrades under ulimit -n 256: the fd limit was never hit");
    eprintln!(
        "accepts stopped at connection {at} ({} open): {how}",
        open.len()
    );
    drop(open);

    // Accepts resume: a new client upgrades (the gateway may need a moment to notice).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        let auth = format!("Bearer {}", gw.sign(10_000, 1));
        match ws::handshake(
            gw.ws,
            "/ws",
            &[("Authorization", &auth)],
            Duration::from_secs(2),
        ) {
            Ok(Handshake::Upgraded(client)) => break client,
            other => assert!(
                Instant::now() < deadline,
                "no upgrade 10 s after freeing every fd: {other:?}\nstderr:\n{}",
                gw.stderr()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    client.assert_served(1, IO_TIMEOUT);
    let m = gw.metrics();
    let emfile = m.sum_label("switchboard_accept_errors_total", "kind", "emfile");
    assert!(
        emfile > 0.0,
        "accept_errors_total{{kind=\"emfile\"}} is {emfile}:\n{}",
        m.show("switchboard_accept_errors_total")
    );
}

/// Reads until the server ends the connection; returns what it sent.
fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let start = Instant::now();
    let mut got = Vec::new();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "not disconnected within {timeout:?}; got {got:?}"
        );
        stream.set_read_timeout(Some(left)).expect("set timeout");
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return got, // reset: disconnected too
        }
    }
}

#[test]
fn a_client_that_does_not_finish_its_handshake_is_cut_off() {
    const TIMEOUT_MS: u64 = 500;
    let gw = Gateway::builder()
        .flag("--handshake-timeout-ms", TIMEOUT_MS)
        .start();
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        gw.sign(1, 1)
    );
    let half = &request.as_bytes()[..request.len() / 2];
    for (what, bytes) in [("silent", &b""[..]), ("half a request", half)] {
        let connected = Instant::now();
        let mut stream = TcpStream::connect(gw.ws).expect("connect");
        stream.write_all(bytes).expect("write");
        let got = read_until_closed(&mut stream, Duration::from_secs(5));
        let after = connected.elapsed();
        assert!(
            after >= Duration::from_millis(TIMEOUT_MS / 2),
            "{what}: cut off after {after:?}, before the {TIMEOUT_MS} ms timeout"
        );
        assert!(
            !String::from_utf8_lossy(&got).contains(" 101 "),
            "{what}: upgraded: {got:?}"
        );
    }

    // One byte every 50 ms never completes the ~400-byte request in time: the timeout is for
    // the whole handshake, not per read.
    let mut trickle = TcpStream::connect(gw.ws).expect("connect");
    let start = Instant::now();
    for byte in request.as_bytes() {
        if trickle.write_all(std::slice::from_ref(byte)).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a trickling client is still connected after {:?}",
            start.elapsed()
        );
    }
    let got = read_until_closed(&mut trickle, Duration::from_secs(5));
    assert!(
        !String::from_utf8_lossy(&got).contains(" 101 "),
        "trickle: upgraded: {got:?}"
    );
}

/// `connections_max` is the process's limit, whichever core a connection lands on.
#[test]
fn over_connections_max_an_upgrade_is_503() {
    const MAX: u64 = 2;
    let gw = Gateway::builder().flag("--connections-max", MAX).start();
    let mut clients: Vec<WsClient> = (1..=MAX).map(|user| gw.connect(user, 1)).collect();
    // Several attempts, so that a per-core count cannot pass by luck of the port hash.
    for user in MAX + 1..=MAX + 6 {
        let over = gw.upgrade_with(&gw.sign(user, 1)).expect("an HTTP answer");
        assert_eq!(
            over.status(),
            503,
            "connection {user} with connections_max {MAX}: {over:?}"
        );
    }
    clients[0].assert_served(1, IO_TIMEOUT);
    drop(clients.pop());
    // Once one leaves, a new client gets in (the gateway notices the close asynchronously).
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match gw.upgrade_with(&gw.sign(100, 1)).expect("an HTTP answer") {
            Handshake::Upgraded(mut c) => break c.assert_served(2, IO_TIMEOUT),
            Handshake::Refused(r) if Instant::now() < deadline => {
                assert_eq!(r.status, 503, "{r:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Handshake::Refused(r) => panic!("still refused after a client left: {r:?}"),
        }
    }
}

/// The failure of a second gateway that must not start (`what`: where it was started), after
/// checking that it exited with a non-zero status.
fn exited_non_zero(second: Result<Gateway, StartFailure>, what: &str) -> StartFailure {
    let failure = match second {
        Ok(g) => panic!("a second gateway started {what} (ready ws={})", g.ws),
        Err(f) => f,
    };
    let status = failure
        .status
        .unwrap_or_else(|| panic!("it did not exit: {failure}"));
    assert!(!status.success(), "{failure}");
    failure
}

/// Two gateways on one data directory would write the same store: the second exits at start,
/// naming the directory in use (`<data_dir>/LOCK`), and the first keeps serving.
#[test]
fn a_second_gateway_on_a_data_dir_in_use_exits_non_zero_naming_it() {
    let data = tempfile::tempdir().expect("data dir");
    let first = Gateway::builder().data_dir(data.path()).start();
    let failure = exited_non_zero(
        Gateway::builder().data_dir(data.path()).try_start(),
        "on the same data dir",
    );
    assert!(
        failure.stderr.contains("is in use by another switchboard"),
        "stderr: {}",
        failure.stderr
    );
    let mut client = first.connect(1, 1);
    client.assert_served(1, IO_TIMEOUT);
}

#[test]
fn a_second_gateway_on_a_taken_address_exits_non_zero_naming_it() {
    let first = Gateway::start();
    let failure = exited_non_zero(
        Gateway::builder().listen(first.ws).try_start(),
        &format!("on {}", first.ws),
    );
    assert!(
        failure.elapsed < Duration::from_secs(10),
        "it took {:?} to give up",
        failure.elapsed
    );
    assert!(
        failure.stderr.contains(&first.ws.to_string()),
        "stderr does not name {}: {}",
        first.ws,
        failure.stderr
    );
    let mut client = first.connect(1, 1);
    client.assert_served(1, IO_TIMEOUT);
}
