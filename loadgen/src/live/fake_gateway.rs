//! Tests of the engine against a small fake gateway in-process: open loop with no coordinated
//! omission (a target that stalls for 1 s shows ~1 s at the top percentiles), and the whole
//! path from body stamp to ledger catching faults the fake injects (a drop, a duplicate, a
//! reorder).
//!
//! The fake speaks just enough of the protocol for direct chats: the upgrade (any token; the
//! JWT's claims are read, not verified), `SyncDone`, `SendMessage` → a seq per chat, `Sent`,
//! and one `NewMessage` to every other device of the chat's two users; any other request is
//! answered `Ok`. It notes, for every `Delivered`, how long after the earliest delivery it
//! covers it came (a device's receipt timer; exact when each device has one chat). One thread
//! per connection reads the client's masked frames; deliveries are written from the sender's
//! thread under a lock per connection.

// Latencies become f64 only to be compared in ms.
#![allow(clippy::cast_precision_loss)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hdrhistogram::Histogram;
use wire::{
    ChatId, DeviceId, Encoder, ErrorCode, Limits, MessageId, NewMessage, Payload, Request,
    RequestResult, Sent, ServerFrame, SyncDone, UserId,
};

use crate::jwt::Minter;
use crate::live::engine::{Engine, Setup};
use crate::live::ledger::Faults;
use crate::live::plan::Plan;
use crate::live::protocol::{Command, WorkerLine};
use crate::live::scenario::Scenario;
use crate::source_ips::SourceIps;
use crate::target::Target;

/// Faults and stalls the fake injects.
#[derive(Debug, Clone, Default)]
struct Mischief {
    /// Stop reading every connection during `[from, to)`.
    stall: Option<(Instant, Instant)>,
    /// Never deliver the delivery with this number (counted from 1, over all recipients).
    drop: Option<u64>,
    /// Deliver this one twice.
    duplicate: Option<u64>,
    /// Hold this one back until after the next delivery to the same device.
    reorder: Option<u64>,
}

type Writer = Arc<Mutex<TcpStream>>;
/// Per device (user, device): the seqs written to it and not yet covered by a `Delivered`, and
/// when.
type Unacked = HashMap<(u64, u64), Vec<(u64, Instant)>>;
/// A delivery held back: its recipient (user, device) and frame.
type Held = ((u64, u64), Vec<u8>);

#[derive(Default)]
struct Shared {
    conns: Mutex<HashMap<(u64, u64), Writer>>,
    seqs: Mutex<HashMap<ChatId, u64>>,
    deliveries: AtomicU64,
    held: Mutex<Option<Held>>,
    unacked: Mutex<Unacked>,
    /// Per `Delivered`: its device and how long after the earliest delivery it covers it came.
    acks: Mutex<Vec<((u64, u64), Duration)>>,
}

/// Starts the fake on 127.0.0.1:0; it lives until the test process ends.
fn start(mischief: Mischief) -> SocketAddr {
    start_shared(mischief).0
}

/// [`start`], also returning what the fake records.
fn start_shared(mischief: Mischief) -> (SocketAddr, Arc<Shared>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shared = Arc::new(Shared::default());
    let recorded = Arc::clone(&shared);
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let (shared, mischief) = (Arc::clone(&shared), mischief.clone());
            std::thread::spawn(move || serve(stream, &shared, &mischief));
        }
    });
    (addr, recorded)
}

fn serve(stream: TcpStream, shared: &Shared, mischief: &Mischief) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let Some((key, me)) = upgrade_request(&mut reader) else {
        return;
    };
    let writer: Writer = Arc::new(Mutex::new(stream));
    let accept = crate::handshake::accept_for(&key);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    let mut enc = Encoder::new(&Limits::default());
    let mut out = response.into_bytes();
    let done = ServerFrame::SyncDone(SyncDone {
        chats: 0,
        events: 0,
    });
    enc.encode_ws(&done, &mut out).expect("encodes");
    lock(&writer).write_all(&out).expect("write");
    lock(&shared.conns).insert(me, Arc::clone(&writer));
    while let Some(payload) = client_frame(&mut reader) {
        if let Some((from, to)) = mischief.stall {
            let now = Instant::now();
            if now >= from && now < to {
                std::thread::sleep(to - now);
            }
        }
        let Ok(frame) = wire::decode_client(&payload, &Limits::default()) else {
            return;
        };
        let mut result = RequestResult {
            request_id: frame.request_id,
            code: ErrorCode::Ok,
            reason: "",
            retry_after_ms: 0,
            payload: Payload::None,
        };
        if let Request::SendMessage(m) = frame.request {
            let seq = {
                let mut seqs = lock(&shared.seqs);
                let seq = seqs.entry(m.chat).or_default();
                *seq += 1;
                *seq
            };
            let id = MessageId::new(u128::from(seq) << 64 | 1).expect("nonzero");
            result.payload = Payload::Sent(Sent {
                server_msg_id: id,
                seq,
                ts_ms: 0,
            });
            let message = NewMessage {
                chat: m.chat,
                seq,
                server_msg_id: id,
                sender: UserId::new(me.0).expect("valid"),
                sender_device: DeviceId::new(me.1).expect("valid"),
                client_msg_id: m.client_msg_id,
                ts_ms: 0,
                body: m.body,
                attachments: &[],
            };
            let mut frame = Vec::new();
            enc.encode_ws(&ServerFrame::NewMessage(message), &mut frame)
                .expect("encodes");
            deliver(shared, mischief, (m.chat, seq), me, &frame);
        } else if let Request::Delivered(ack) = frame.request {
            let mut unacked = lock(&shared.unacked);
            let pending = unacked.entry(me).or_default();
            let earliest = pending
                .iter()
                .filter(|(seq, _)| *seq <= ack.up_to_seq)
                .map(|(_, at)| *at)
                .min();
            pending.retain(|(seq, _)| *seq > ack.up_to_seq);
            if let Some(at) = earliest {
                lock(&shared.acks).push((me, at.elapsed()));
            }
        }
        let mut answer = Vec::new();
        enc.encode_ws(&ServerFrame::Result(result), &mut answer)
            .expect("encodes");
        if lock(&writer).write_all(&answer).is_err() {
            return;
        }
    }
}

/// Sends `frame` (entry `seq` of `chat`) to every device of the chat's users but the
/// sender's, with the mischief.
fn deliver(
    shared: &Shared,
    mischief: &Mischief,
    (chat, seq): (ChatId, u64),
    sender: (u64, u64),
    frame: &[u8],
) {
    let (a, b) = chat
        .direct_users()
        .expect("the fake serves direct chats only");
    let recipients: Vec<((u64, u64), Writer)> = lock(&shared.conns)
        .iter()
        .filter(|(k, _)| (k.0 == a.get() || k.0 == b.get()) && **k != sender)
        .map(|(k, w)| (*k, Arc::clone(w)))
        .collect();
    for (device, writer) in recipients {
        let n = shared.deliveries.fetch_add(1, Ordering::SeqCst) + 1;
        let mut w = lock(&writer);
        if mischief.drop == Some(n) {
            continue;
        }
        if mischief.reorder == Some(n) {
            *lock(&shared.held) = Some((device, frame.to_vec()));
            continue;
        }
        lock(&shared.unacked)
            .entry(device)
            .or_default()
            .push((seq, Instant::now()));
        let _ = w.write_all(frame);
        if mischief.duplicate == Some(n) {
            let _ = w.write_all(frame);
        }
        let mut held = lock(&shared.held);
        if held.as_ref().is_some_and(|(d, _)| *d == device)
            && let Some((_, late)) = held.take()
        {
            let _ = w.write_all(&late);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads the upgrade request: the key, and (user, device) from the token's claims.
fn upgrade_request(reader: &mut BufReader<TcpStream>) -> Option<(String, (u64, u64))> {
    let (mut key, mut me) = (None, None);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            return Some((key?, me?));
        }
        let Some((name, value)) = line.split_once(':') else {
            continue; // the request line
        };
        match name.to_ascii_lowercase().as_str() {
            "sec-websocket-key" => key = Some(value.trim().to_owned()),
            "authorization" => {
                let token = value.trim().strip_prefix("Bearer ")?;
                let claims = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
                let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
                let num = |k: &str| claims[k].as_str()?.parse::<u64>().ok();
                me = Some((num("sub")?, num("dev")?));
            }
            _ => {}
        }
    }
}

/// The next binary frame's payload, unmasked (pings and pongs skipped); `None` at the end.
fn client_frame(reader: &mut impl Read) -> Option<Vec<u8>> {
    loop {
        let mut head = [0; 2];
        reader.read_exact(&mut head).ok()?;
        let len = match head[1] & 0x7F {
            126 => {
                let mut be = [0; 2];
                reader.read_exact(&mut be).ok()?;
                u64::from(u16::from_be_bytes(be))
            }
            127 => {
                let mut be = [0; 8];
                reader.read_exact(&mut be).ok()?;
                u64::from_be_bytes(be)
            }
            n => u64::from(n),
        };
        let mut mask = [0; 4];
        reader.read_exact(&mut mask).ok()?;
        let mut payload = vec![0; usize::try_from(len).ok()?];
        reader.read_exact(&mut payload).ok()?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        match head[0] & 0x0F {
            wire::ws::OPCODE_BINARY => return Some(payload),
            wire::ws::OPCODE_CLOSE => return None,
            _ => {}
        }
    }
}

/// What an in-process run found.
struct Outcome {
    e2e: Histogram<u64>,
    lateness: Histogram<u64>,
    ledger: Faults,
}

/// Runs one engine (one worker holding every device) against `addr`, doing what the
/// coordinator does: connect, setup, go, drain, finish, expect, check.
fn run_in_process(addr: SocketAddr, scenario: &str, grace: Duration) -> Outcome {
    let scenario = Scenario::from_toml(scenario, &[]).expect("valid scenario");
    let plan = Plan::new(&scenario);
    let minter = Minter::from_secret(b"fake");
    let tokens = (0..plan.devices())
        .map(|g| {
            minter.mint(
                plan.user_id(plan.user_of(g)).get(),
                plan.device_id(g).get(),
                1 << 40,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .expect("tokens");
    let all = u64::from(plan.devices());
    let setup = Setup {
        scenario,
        plan,
        worker: 0,
        workers: 1,
        first: 0,
        tokens,
        targets: vec![Target::websocket(&format!("ws://{addr}/ws")).expect("target")],
        source_ips: SourceIps::parse("127.0.0.1").expect("ips"),
        limits: Limits::default(),
        connect_timeout_ns: 5_000_000_000,
    };
    let (commands, command_rx) = mpsc::channel();
    let (line_tx, lines) = mpsc::channel();
    let engine = std::thread::spawn(move || {
        let mut engine = Engine::new(setup).expect("engine");
        let mut say = |line| {
            let _ = line_tx.send(line);
        };
        engine.run(&command_rx, &mut say).expect("engine runs");
    });
    let until = |lines: &Receiver<WorkerLine>, want: fn(&WorkerLine) -> bool| {
        let mut seen = Vec::new();
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(20))
                .expect("a line in time");
            let done = want(&line);
            seen.push(line);
            if done {
                return seen;
            }
        }
    };
    let send = |c: Command| commands.send(c).expect("engine alive");
    send(Command::Connect);
    let connected = until(&lines, |l| matches!(l, WorkerLine::Connected { .. }));
    let want = WorkerLine::Connected { ok: all, failed: 0 };
    assert!(connected.contains(&want), "{connected:?}");
    send(Command::Setup);
    until(&lines, |l| *l == WorkerLine::SetupDone);
    let t0 = crate::live::clock::now_ns() + 100_000_000;
    send(Command::Go { t0_ns: t0 });
    until(&lines, |l| *l == WorkerLine::Drained);
    std::thread::sleep(grace);
    send(Command::Finish);
    let finals = until(&lines, |l| *l == WorkerLine::Final);
    let (mut e2e, mut lateness) = (None, None);
    for line in finals {
        match line {
            WorkerLine::Hist { name, hist } if name == "e2e" => e2e = Some(hist),
            WorkerLine::Hist { name, hist } if name == "lateness" => lateness = Some(hist),
            WorkerLine::Acked {
                device,
                chat,
                acked,
                maybe,
            } => {
                send(Command::Expect {
                    device,
                    chat,
                    acked,
                    maybe,
                });
            }
            _ => {}
        }
    }
    send(Command::Check);
    let checked = until(&lines, |l| *l == WorkerLine::Checked);
    let ledger = checked
        .iter()
        .find_map(|l| match l {
            WorkerLine::Ledger { chat: None, faults } => Some(*faults),
            _ => None,
        })
        .expect("a ledger total");
    drop(commands);
    engine.join().expect("engine thread");
    let decode = |h: Option<String>| crate::live::hist::decode(&h.expect("sent")).expect("valid");
    Outcome {
        e2e: decode(e2e),
        lateness: decode(lateness),
        ledger,
    }
}

/// Two users, one device each, one direct chat between them; no receipts, no groups.
fn pair(rate: u32, duration_s: f64) -> String {
    format!(
        "users = 2\ncontacts_per_user = 1\ndirect_share = 1.0\nrate_per_s = {rate}\n\
         arrivals = \"uniform\"\nramp_up_s = 0.1\nwarmup_s = 0\nduration_s = {duration_s}\n\
         receipts = \"none\"\n"
    )
}

#[test]
fn a_one_second_stall_shows_at_the_top_percentiles() {
    // Open loop at 200/s for 3 s; the target stops reading for 1 s from 1.1 s after start.
    let start = Instant::now() + Duration::from_millis(1_100 + 300);
    let addr = start_with_stall(start);
    let out = run_in_process(addr, &pair(200, 3.0), Duration::from_millis(300));
    let ms = |q: f64| out.e2e.value_at_quantile(q) as f64 / 1e3;
    let max = out.e2e.max() as f64 / 1e3;
    // Messages meant for the stalled second wait for its end: latencies spread evenly
    // from 0 to 1 s, a sixth of all messages. Measured from the intended send time they all
    // count, so p99 is near 1 s. (Measured from when a closed-loop sender got round to
    // sending, one message would show the stall and p99 would stay at a few ms.)
    assert!((900.0..1_500.0).contains(&max), "max {max} ms");
    assert!(
        ms(0.99) >= 900.0,
        "p99 {} ms should show the stall",
        ms(0.99)
    );
    assert!(ms(0.9) >= 300.0, "p90 {} ms should show the stall", ms(0.9));
    let over_half_s = out.e2e.count_between(500_000, u64::MAX);
    assert!(
        (60..=140).contains(&over_half_s),
        "{over_half_s} of {} messages took over 0.5 s; ~100 expected (200/s × 0.5 s)",
        out.e2e.len()
    );
    assert!(out.e2e.len() >= 550, "{} messages delivered", out.e2e.len());
    let late = out.lateness.value_at_quantile(0.99);
    assert!(
        late < 100_000,
        "the sender kept its schedule through the stall ({late} µs)"
    );
    assert!(!out.ledger.any(), "{:?}", out.ledger);
}

fn start_with_stall(from: Instant) -> SocketAddr {
    start(Mischief {
        stall: Some((from, from + Duration::from_secs(1))),
        ..Mischief::default()
    })
}

#[test]
fn the_ledger_catches_what_a_faulty_gateway_does() {
    let clean = start(Mischief::default());
    let out = run_in_process(clean, &pair(100, 1.0), Duration::from_millis(300));
    assert!(
        !out.ledger.any(),
        "a correct fake shows no fault: {:?}",
        out.ledger
    );
    assert_eq!(out.ledger.delivered, out.e2e.len());
    let faulty = start(Mischief {
        drop: Some(10),
        duplicate: Some(20),
        reorder: Some(30),
        ..Mischief::default()
    });
    let out = run_in_process(faulty, &pair(100, 1.0), Duration::from_millis(300));
    let f = out.ledger;
    assert_eq!((f.lost, f.dup, f.order, f.phantom), (1, 1, 1, 0), "{f:?}");
}

#[test]
fn each_device_acks_on_its_own_timer_after_its_first_unacked_delivery() {
    // Two users in one direct chat at 100 msg/s for 1.5 s, acking every 200 ms. A device acks `receipt_interval_ms` after the earliest delivery its ack
    // covers, never sooner: a tick shared by every device would ack some deliveries within a
    // few ms of their arrival (and send every device's acks in one burst).
    let (addr, shared) = start_shared(Mischief::default());
    let scenario = "users = 2\ncontacts_per_user = 1\ndirect_share = 1.0\nrate_per_s = 100\n\
                    arrivals = \"uniform\"\nramp_up_s = 0.1\nwarmup_s = 0\nduration_s = 1.5\n\
                    receipts = \"delivered\"\nreceipt_interval_ms = 200\n";
    let out = run_in_process(addr, scenario, Duration::from_millis(500));
    assert!(!out.ledger.any(), "{:?}", out.ledger);
    let acks = lock(&shared.acks).clone();
    let devices: std::collections::HashSet<_> = acks.iter().map(|(d, _)| *d).collect();
    assert_eq!(devices.len(), 2, "both devices acked: {acks:?}");
    assert!(
        acks.len() >= 2 * 4,
        "each device acked repeatedly: {acks:?}"
    );
    let early: Vec<_> = acks
        .iter()
        .filter(|(_, gap)| *gap < Duration::from_millis(200))
        .collect();
    assert!(early.is_empty(), "acked sooner than its timer: {early:?}");
}
