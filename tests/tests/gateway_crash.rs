//! Proves that a crash loses and duplicates nothing that was acknowledged (docs/PROTOCOL.md
//! §6.1–§6.4), against the real `switchboard` binary: users 1–4 with two devices each, in one
//! group and the six direct chats; three devices send pipelined messages until the gateway is
//! killed with SIGKILL at a seeded moment; it restarts on the same data dir; every sender
//! retries each send that got no `Result`, with the same `client_msg_id` and body (§6.3),
//! twice, and re-asks every answered one; then all eight devices sync, acking nothing, so each
//! is owed its whole log.
//!
//! Checks, per round: (a) every acknowledged message reaches every member device but the
//! sending one exactly once, at the seq of its `Sent`, as sent; (b) per chat and device, the
//! seqs are strictly increasing with no gap but the device's own messages (the group's seq 1 is
//! its `Created`); (c) no (device, `client_msg_id`) is at two seqs, and a retry returns the same
//! `Sent` every time; (d) nothing arrives that no `Sent` acknowledged.
//!
//! A round's seed picks the kill moment and each sender's chats and pipeline depth; socket
//! timing is the machine's. `CRASH_SEED=<0xhex or decimal>` runs just that round.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchboard_tests::chat::{
    ChatClient, Event, Message, Update, WAIT, assert_silent, device, direct, user,
};
use switchboard_tests::gateway::{Gateway, Signal};
use wire::{
    Body, BodyKind, ChatId, ChatUpdateKind, ClientFrame, ErrorCode, Request, SendMessage, Sent,
};

const USERS: [u64; 4] = [1, 2, 3, 4];
const DEVICES: [u64; 2] = [1, 2];
/// The devices that send, as (user, device).
const SENDERS: [(u64, u64); 3] = [(1, 1), (2, 1), (3, 1)];
/// One round per seed, each on a fresh data dir.
const SEEDS: [u64; 3] = [0x5EED_C8A5_0001, 0x5EED_C8A5_0002, 0x5EED_C8A5_0003];
/// The kill comes this long after the senders start, plus a seeded part of the span.
const KILL_AFTER_MIN_MS: u64 = 200;
const KILL_AFTER_SPAN_MS: u64 = 500;
/// A sender keeps 2 to 2 + `PIPELINE_SPAN` − 1 sends unanswered (seeded per sender).
const PIPELINE_MIN: u64 = 2;
const PIPELINE_SPAN: u64 = 5;
/// How long a sender waits for more answers before it tops its pipeline up again.
const POLL: Duration = Duration::from_millis(2);
/// Retries go out this many at a time.
const RETRY_WINDOW: usize = 64;
/// Upper bound for a sync of a few thousand events from a debug build on a busy machine.
const SYNC_WAIT: Duration = Duration::from_secs(20);
/// The send rate limit (§6.8) far above what the senders reach, so no send is `RateLimited`.
const SEND_LIMIT: u64 = 1_000_000;

#[test]
fn acknowledged_messages_survive_sigkill_once_each_and_retries_are_stored_once() {
    let seeds = match std::env::var("CRASH_SEED") {
        Ok(s) => vec![parse_seed(&s)],
        Err(_) => SEEDS.to_vec(),
    };
    let started = Instant::now();
    let mut total = Summary::default();
    for seed in seeds {
        let round = round(seed);
        println!("crash seed {seed:#x}: {round}");
        total.add(&round);
    }
    println!("crash total: {total}; {:.1?} in all", started.elapsed());
}

/// One crash and restart on a fresh data dir; panics, naming the seed, on a failed check.
fn round(seed: u64) -> Summary {
    let started = Instant::now();
    let data = tempfile::tempdir().expect("a temp dir");
    let mut rng = Rng(seed);
    let mut gw = start(data.path());
    let mut truth = set_up(&gw);
    let kill_after = Duration::from_millis(KILL_AFTER_MIN_MS + rng.below(KILL_AFTER_SPAN_MS));
    let logs = send_until_killed(&gw, truth.group, &mut rng, kill_after, seed);
    assert!(
        gw.wait_exit(WAIT).is_some(),
        "SIGKILL did not end the gateway"
    );
    drop(gw);

    // Anything sequenced before the kill has an earlier `ts_ms` than this.
    let restarted_ms = now_ms();
    let gw = start(data.path());
    let mut summary = Summary {
        kill_after,
        ..Summary::default()
    };
    for log in &logs {
        retry(&gw, log, restarted_ms, seed, &mut summary, &mut truth);
    }
    truth.assert_gap_free(seed);
    summary.messages = truth.messages();
    summary.deliveries = sync_all(&gw, &truth, seed);
    summary.elapsed = started.elapsed();
    summary
}

/// A gateway on `data` that never rate-limits these senders.
fn start(data: &Path) -> Gateway {
    Gateway::builder()
        .data_dir(data)
        .send_limits(SEND_LIMIT)
        .start()
}

/// Registers all eight devices (so each is owed every later entry of its chats), then user 1
/// creates the group of all four; the truth so far is that group's `Created`.
fn set_up(gw: &Gateway) -> Truth {
    for u in USERS {
        for d in DEVICES {
            ChatClient::register(gw, u, d);
        }
    }
    let mut creator = ChatClient::connect_fresh(gw, 1, 1);
    let group = creator.create_group("crash", &USERS[1..], false);
    let created = creator.wait_update(WAIT);
    assert_eq!(
        (created.chat, created.seq, created.kind),
        (group, 1, ChatUpdateKind::Created)
    );
    creator.close();
    Truth::new(group, created)
}

// ---- Before the crash ------------------------------------------------------------------------

/// One message as a sender sends it (and resends it, unchanged).
#[derive(Clone, Debug)]
struct Outgoing {
    chat: ChatId,
    client_msg_id: u64,
    body: String,
}

/// What one sender saw before the crash.
#[derive(Debug)]
struct SendLog {
    from: (u64, u64),
    answered: Vec<(Outgoing, Sent)>,
    /// Sent (or at least written) with no `Result` before the connection died.
    unanswered: Vec<Outgoing>,
}

/// Runs the senders, SIGKILLs the gateway `kill_after` later and returns what each saw.
fn send_until_killed(
    gw: &Gateway,
    group: ChatId,
    rng: &mut Rng,
    kill_after: Duration,
    seed: u64,
) -> Vec<SendLog> {
    // Connected before the clock starts, so every sender is sending when the kill comes.
    let senders: Vec<_> = SENDERS
        .iter()
        .map(|&(u, d)| {
            let mut chats = vec![group];
            chats.extend(USERS.iter().filter(|&&v| v != u).map(|&v| direct(u, v)));
            let depth = (PIPELINE_MIN + rng.below(PIPELINE_SPAN)) as usize;
            (ChatClient::connect(gw, u, d), chats, depth, Rng(rng.next()))
        })
        .collect();
    // The kill comes no earlier than this (the sleep starts after it is taken).
    let kill_at = Instant::now() + kill_after;
    let threads: Vec<_> = senders
        .into_iter()
        .map(|(client, chats, depth, rng)| {
            std::thread::spawn(move || send(client, &chats, depth, rng, kill_at, seed))
        })
        .collect();
    std::thread::sleep(kill_after);
    gw.signal(Signal::KILL);
    threads
        .into_iter()
        .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}

/// Sends to random chats of `chats` with `depth` requests in flight until the connection dies,
/// which must be the SIGKILL at `kill_at`. The request id is the `client_msg_id`.
fn send(
    mut client: ChatClient,
    chats: &[ChatId],
    depth: usize,
    mut rng: Rng,
    kill_at: Instant,
    seed: u64,
) -> SendLog {
    let from = (client.user(), client.device());
    let mut log = SendLog {
        from,
        answered: Vec::new(),
        unanswered: Vec::new(),
    };
    let mut in_flight: BTreeMap<u64, Outgoing> = BTreeMap::new();
    let mut next_id = 1;
    let mut alive = true;
    while alive {
        while alive && in_flight.len() < depth {
            let out = Outgoing {
                chat: chats[rng.below(chats.len() as u64) as usize],
                client_msg_id: next_id,
                body: format!("from user {} device {} message {next_id}", from.0, from.1),
            };
            // A write that fails may still have reached the server: it counts as unanswered.
            alive = client.ws().send_request(&send_frame(&out)).is_ok();
            in_flight.insert(next_id, out);
            next_id += 1;
        }
        // The sync and the other senders' messages are checked after the restart, not here.
        for event in client.drain(POLL) {
            match event {
                Event::Result(reply) => {
                    let out = in_flight.remove(&reply.request_id).unwrap_or_else(|| {
                        panic!("seed {seed:#x}: {from:?} got an unasked-for {reply:?}")
                    });
                    assert_eq!(
                        reply.code,
                        ErrorCode::Ok,
                        "seed {seed:#x}: {from:?} sent {out:?}: {reply:?}"
                    );
                    log.answered.push((out, reply.sent()));
                }
                Event::Close(code) => {
                    // A killed process sends no close frame: a code means a live server closed.
                    let killed = code.is_none() && Instant::now() >= kill_at;
                    assert!(
                        killed,
                        "seed {seed:#x}: {from:?} closed ({code:?}) before the kill"
                    );
                    alive = false;
                }
                _ => {}
            }
        }
        assert!(
            Instant::now() < kill_at + WAIT,
            "seed {seed:#x}: {from:?}'s connection outlived the SIGKILL"
        );
    }
    log.unanswered = in_flight.into_values().collect();
    log
}

fn send_frame(out: &Outgoing) -> ClientFrame<'_> {
    ClientFrame {
        request_id: out.client_msg_id,
        request: Request::SendMessage(SendMessage {
            chat: out.chat,
            client_msg_id: out.client_msg_id,
            body: Body::Text(&out.body),
            attachments: &[],
        }),
    }
}

// ---- After the restart -----------------------------------------------------------------------

/// Retries every unanswered send of `log` twice (the same `Sent` both times), re-asks every
/// answered one (the `Sent` it got before the crash), and adds them all to `truth`.
fn retry(
    gw: &Gateway,
    log: &SendLog,
    restarted_ms: u64,
    seed: u64,
    summary: &mut Summary,
    truth: &mut Truth,
) {
    let from = log.from;
    let mut client = ChatClient::connect(gw, from.0, from.1);
    client.expect_sync_done(SYNC_WAIT);
    let retried = send_all(&mut client, &log.unanswered);
    let again = send_all(&mut client, &log.unanswered);
    for ((out, first), second) in log.unanswered.iter().zip(&retried).zip(&again) {
        assert_eq!(
            first, second,
            "seed {seed:#x}: {from:?} retried {out:?} twice and got two answers"
        );
        // Sequenced before the kill: it was durable, only its `Sent` was lost.
        if first.ts_ms < restarted_ms {
            summary.durable_on_retry += 1;
        }
        truth.add(from, out, *first, seed);
    }
    summary.in_flight += log.unanswered.len();

    let outs: Vec<Outgoing> = log.answered.iter().map(|(out, _)| out.clone()).collect();
    let reasked = send_all(&mut client, &outs);
    for ((out, before), after) in log.answered.iter().zip(&reasked) {
        assert_eq!(
            before, after,
            "seed {seed:#x}: {from:?} re-asked {out:?} after the restart: another answer"
        );
        truth.add(from, out, *before, seed);
    }
    summary.reasked += outs.len();
    client.close();
}

/// Sends `outs` again, [`RETRY_WINDOW`] at a time, and returns their `Sent`s in order.
fn send_all(client: &mut ChatClient, outs: &[Outgoing]) -> Vec<Sent> {
    let mut sents = Vec::with_capacity(outs.len());
    for window in outs.chunks(RETRY_WINDOW) {
        let ids: Vec<u64> = window
            .iter()
            .map(|o| client.send(o.chat, o.client_msg_id, &o.body))
            .collect();
        sents.extend(
            ids.into_iter()
                .map(|id| client.wait_result(id, WAIT).sent()),
        );
    }
    sents
}

/// Connects all eight devices; each must sync exactly its share of `truth`, and then nothing
/// more may come. Returns the number of events checked.
fn sync_all(gw: &Gateway, truth: &Truth, seed: u64) -> usize {
    let mut clients = Vec::new();
    let mut checked = 0;
    for u in USERS {
        for d in DEVICES {
            let mut client = ChatClient::connect(gw, u, d);
            let (events, done) = client.expect_sync_done(SYNC_WAIT);
            assert_eq!(
                done.events,
                events.len() as u64,
                "seed {seed:#x}: device ({u}, {d}): SyncDone counts other than what came"
            );
            checked += truth.check_device((u, d), events, seed);
            clients.push(client);
        }
    }
    assert_silent(
        &mut clients.iter_mut().collect::<Vec<_>>(),
        "nothing is left to deliver after the sync",
    );
    checked
}

// ---- The reference ---------------------------------------------------------------------------

/// Every acknowledged entry, by chat and seq, as the devices must receive it.
struct Truth {
    group: ChatId,
    log: BTreeMap<ChatId, BTreeMap<u64, Event>>,
}

impl Truth {
    fn new(group: ChatId, created: Update) -> Self {
        let log = BTreeMap::from([(group, BTreeMap::from([(1, Event::ChatUpdate(created))]))]);
        Self { group, log }
    }

    /// `out` from `from`, acknowledged with `sent`. Two entries at one seq fail (c).
    fn add(&mut self, from: (u64, u64), out: &Outgoing, sent: Sent, seed: u64) {
        let want = Event::NewMessage(Message {
            chat: out.chat,
            seq: sent.seq,
            server_msg_id: sent.server_msg_id,
            sender: user(from.0),
            sender_device: device(from.1),
            client_msg_id: out.client_msg_id,
            ts_ms: sent.ts_ms,
            kind: BodyKind::Text,
            body: out.body.clone().into_bytes(),
            attachments: Vec::new(),
        });
        match self.log.entry(out.chat).or_default().entry(sent.seq) {
            Entry::Vacant(slot) => {
                slot.insert(want);
            }
            Entry::Occupied(slot) => panic!(
                "seed {seed:#x}: two acknowledged entries at one seq:\n{:?}\n{want:?}",
                slot.get()
            ),
        }
    }

    /// Every seq of a chat was acknowledged to someone: 1 to the head, no gap (§6.1).
    fn assert_gap_free(&self, seed: u64) {
        for (chat, log) in &self.log {
            let head = log.len() as u64;
            let gaps: Vec<u64> = (1..=head).filter(|s| !log.contains_key(s)).collect();
            assert!(
                gaps.is_empty(),
                "seed {seed:#x}: chat {chat:?} acknowledged {head} entries up to seq {:?}, \
                 none at {gaps:?}",
                log.keys().last()
            );
        }
    }

    fn messages(&self) -> usize {
        self.log.values().map(BTreeMap::len).sum::<usize>() - 1
    }

    fn members(&self, chat: ChatId) -> Vec<u64> {
        if chat == self.group {
            return USERS.to_vec();
        }
        let pair = USERS
            .iter()
            .flat_map(|&a| USERS.iter().map(move |&b| (a, b)));
        let found = pair
            .filter(|&(a, b)| a < b)
            .find(|&(a, b)| direct(a, b) == chat);
        let (a, b) = found.expect("every chat is the group or a direct chat of two users");
        vec![a, b]
    }

    /// Checks (a), (b) and (d) for what one device synced; returns how many events it got.
    fn check_device(&self, (u, d): (u64, u64), events: Vec<Event>, seed: u64) -> usize {
        let count = events.len();
        let mut got: BTreeMap<ChatId, Vec<u64>> = BTreeMap::new();
        for event in events {
            let Some((chat, seq)) = event.entry() else {
                panic!("seed {seed:#x}: device ({u}, {d}) synced {event:?}")
            };
            let want = self.log.get(&chat).and_then(|log| log.get(&seq));
            assert_eq!(
                Some(&event),
                want,
                "seed {seed:#x}: device ({u}, {d}) got an entry that no Sent acknowledged \
                 (right: what is acknowledged at that seq)"
            );
            got.entry(chat).or_default().push(seq);
        }
        let me = (user(u), device(d));
        let own =
            |e: &Event| matches!(e, Event::NewMessage(m) if (m.sender, m.sender_device) == me);
        for (&chat, log) in &self.log {
            let want: Vec<u64> = if self.members(chat).contains(&u) {
                log.iter()
                    .filter(|(_, e)| !own(e))
                    .map(|(&s, _)| s)
                    .collect()
            } else {
                Vec::new()
            };
            let have = got.remove(&chat).unwrap_or_default();
            assert!(
                have == want,
                "seed {seed:#x}: device ({u}, {d}) in chat {chat:?}: {}",
                SeqDiff(&have, &want)
            );
        }
        assert!(
            got.is_empty(),
            "seed {seed:#x}: device ({u}, {d}) got entries of unknown chats: {got:?}"
        );
        count
    }
}

/// What differs between the seqs a device got (in arrival order) and the ones it is owed.
struct SeqDiff<'a>(&'a [u64], &'a [u64]);

impl fmt::Display for SeqDiff<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (have, want) = (self.0, self.1);
        let missing: Vec<u64> = want.iter().filter(|s| !have.contains(s)).copied().collect();
        let extra: Vec<u64> = have.iter().filter(|s| !want.contains(s)).copied().collect();
        let mut distinct = have.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let repeated = have.len() - distinct.len();
        let backwards = have.windows(2).find(|w| w[1] <= w[0]);
        write!(
            f,
            "got {} seqs, owed {}; missing {missing:?}; not owed {extra:?}; \
             {repeated} repeated; first step not upwards {backwards:?}",
            have.len(),
            want.len()
        )
    }
}

// ---- Small things ----------------------------------------------------------------------------

/// What one round (or all of them) amounted to.
#[derive(Debug, Default)]
struct Summary {
    kill_after: Duration,
    /// Distinct acknowledged messages, each checked on every device that is owed it.
    messages: usize,
    /// Entries synced and checked, across devices.
    deliveries: usize,
    /// Sends unanswered at the kill, all retried after the restart.
    in_flight: usize,
    /// Of those, the ones the retry found durable from before the kill.
    durable_on_retry: usize,
    /// Answered sends asked again after the restart.
    reasked: usize,
    elapsed: Duration,
}

impl Summary {
    fn add(&mut self, round: &Self) {
        self.messages += round.messages;
        self.deliveries += round.deliveries;
        self.in_flight += round.in_flight;
        self.durable_on_retry += round.durable_on_retry;
        self.reasked += round.reasked;
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.kill_after.is_zero() {
            write!(f, "killed after {:?}; ", self.kill_after)?;
        }
        write!(
            f,
            "{} messages checked ({} deliveries); {} in flight at the kill, {} of them already \
             durable on retry; {} answered sends re-asked",
            self.messages, self.deliveries, self.in_flight, self.durable_on_retry, self.reasked
        )?;
        if !self.elapsed.is_zero() {
            write!(f, "; {:.1?}", self.elapsed)?;
        }
        Ok(())
    }
}

/// splitmix64: a seeded schedule that replays from its seed (STYLE §6), with no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn parse_seed(s: &str) -> u64 {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.unwrap_or_else(|e| panic!("CRASH_SEED={s:?}: {e}"))
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}
