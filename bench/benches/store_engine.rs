//! The embedded store (issue 5) on this machine's disk, measured through the `Store` trait:
//!
//! - `store_engine/durable_write_100b_2_producers`: durable write throughput from two producer
//!   threads (as two gateway cores), each owning 500 direct chats and keeping 4 writes in
//!   flight; a write holds 1, 16 or 64 messages of 100 bytes (a core batches per tick).
//!   Goal: at least 100,000 messages/s.
//! - Printed after criterion's runs: ack latency at a fixed offered 100,000 messages/s from the
//!   same two producers (first the host's `vm.dirty_background_bytes`, which the tail depends
//!   on: `tuning/apply` sets 4 MiB), open-loop (one write per 1 ms tick with every message
//!   due, latency from the tick's intended time, so stalls count). Goal: p99 at most 10 ms.
//!   Three rounds each of two index shapes, alternated, with the medians of p99: what the
//!   gateway opens (the store's defaults with the applier at nice 10 and the index's flush and
//!   compaction threads at 19) and the store's defaults (nice 0). In each round also the floor
//!   under both: the store's log alone appending the same records (no index), whose tail is the disk's at that moment (the store's p99 over it is
//!   what the index costs). Each run also prints the log's syncs and the time spent in syncs
//!   over 10 ms (what the index's writes cost the acknowledgements), and the store's threads'
//!   CPU by thread (cores, µs per message: what the store costs the gateway that embeds it; on
//!   this VM, CPU headroom also sets the disk's tail). In the same run, the rejected
//!   alternative under the same load: fjall alone, one synced batch per write
//!   (`../shared/FACTS.md`: p99 ~376 ms; 13–151 ms, median 34 ms, over 27 runs in November
//!   2026). And the index's apply lag: from the last ack until a read (which waits for the
//!   applier) returns.
//! - `store_engine/sync_read_10k_msgs_100_chats`: one device's full sync (`sync_plan`, then
//!   every chat's `read_log`) over 100 chats × 100 messages it has not received; printed: heap
//!   allocations and bytes per full sync, on every thread (a counting global allocator).
//! - Printed last: recovery. Clean reopen of M messages until the first read returns (goal:
//!   ready in at most 5 s at M = 10,000,000), disk bytes per message, and the rate at which
//!   the log replays into an empty index, with the worst case it implies after a crash (at
//!   most a full applier backlog plus one checkpoint's worth of log is replayed).
//!
//! Bodies are 100 bytes of noise (end-to-end encrypted in practice: they do not compress), and
//! the heap is mimalloc behind an allocation counter, as in the gateway that embeds the store.
//! The stores live under cargo's target tmp dir (a real disk, not tmpfs: fdatasync must cost
//! what it costs). Compare figures as ratios within one run; this machine is noisy.
//! With `-- --test` (or under `cargo test`) everything runs once and small: 1 s of fixed-rate
//! load, 20,000 messages for recovery. `SWITCHBOARD_BENCH_LATENCY_SECS` (default 10) and
//! `SWITCHBOARD_BENCH_RECOVERY_MESSAGES` (default 10,000,000) override the sizes; `0` skips.
//! `SWITCHBOARD_BENCH_INDEX_DIR` puts the fixed-rate runs' indexes (`index_dir`) under that
//! directory, as on a host whose index has a disk of its own (on a one-disk machine, a tmpfs
//! such as `/dev/shm` stands in for that disk: not durable, only to compare).
// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]
// The counting allocator is the one `unsafe` here: a `GlobalAlloc` impl is unsafe by
// definition; it only forwards to `MiMalloc`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, Throughput};
use futures_lite::future::block_on;
use hdrhistogram::Histogram;
use mimalloc::MiMalloc;
use store::embedded::{EmbeddedOptions, EmbeddedStore, log_record};
use store::log::{STALL, SyncSnapshot};
use store::model::{BodyKind, Entry, Message, Mutation, Seq, WriteBatch};
use store::{Store, StoreReply};
use wire::ids::{ChatId, DeviceId, UserId};

const PRODUCERS: u64 = 2;
const CHATS_PER_PRODUCER: u64 = 500;
const BODY_BYTES: usize = 100;
/// Writes each producer keeps in flight: a gateway core hands over the next tick's batch
/// without waiting for the previous one to be durable.
const IN_FLIGHT_MAX: usize = 4;
/// The offered load of the fixed-rate runs, over both producers.
const FIXED_RATE_PER_S: u64 = 100_000;
/// Recovery builds its stores in writes of this many messages over this many chats.
const BUILD_WRITE_MESSAGES: u64 = 256;
const BUILD_CHATS: u64 = 10_000;

// ---- counting allocator -------------------------------------------------------------------

struct Counting;

/// Off except while [`count_allocations`] runs, so the other benches pay one relaxed load.
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

fn count(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards its arguments to `MiMalloc` unchanged, so its guarantees
// are ours; counting touches only atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract passes through to `MiMalloc`.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A growth counts as one allocation of the new size (what a fresh one would cost).
        count(new_size);
        // SAFETY: as above.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns the allocations and bytes every thread made meanwhile.
fn count_allocations(f: impl FnOnce()) -> (u64, u64) {
    let before = (
        ALLOCATIONS.load(Ordering::SeqCst),
        ALLOCATED_BYTES.load(Ordering::SeqCst),
    );
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    (
        ALLOCATIONS.load(Ordering::SeqCst) - before.0,
        ALLOCATED_BYTES.load(Ordering::SeqCst) - before.1,
    )
}

// ---- workload -----------------------------------------------------------------------------

fn user(id: u64) -> UserId {
    UserId::new(id).expect("a valid user id")
}

fn device(id: u64) -> DeviceId {
    DeviceId::new(id).expect("a nonzero device id")
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

/// `BODY_BYTES` of noise seeded by `seed`: bodies are end-to-end encrypted, so compression
/// in the index (fjall compresses its deeper levels) must not get them for free.
fn body(seed: u64) -> Vec<u8> {
    // xorshift64*; `| 1` keeps the state nonzero.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..BODY_BYTES)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// A 100-byte message from `sender`'s device 1 (`id` is unique in the store) as `chat`'s entry
/// `seq`, with the server id the router assigns (which the store derives instead of keeping).
fn message(chat: ChatId, seq: u64, sender: UserId, id: u64, ts_ms: u64) -> Entry {
    Entry::Message(Message {
        server_msg_id: store::model::message_id(chat, seq),
        sender,
        sender_device: device(1),
        client_msg_id: id,
        ts_ms,
        kind: BodyKind::Opaque,
        body: body(id),
        attachments: Vec::new(),
    })
}

/// What a gateway core knows about the chats it owns: their heads, and the next ids.
struct Producer {
    sender: UserId,
    chats: Vec<ChatId>,
    heads: Vec<Seq>,
    next_chat: usize,
    sent: u64,
    id_base: u64,
    ts_ms: u64,
}

impl Producer {
    /// Producer `index`'s 500 direct chats with peers no other producer talks to.
    fn new(index: u64) -> Self {
        let sender = user(1000 + index);
        let peer_base = 1_000_000 + index * CHATS_PER_PRODUCER;
        let chats = (0..CHATS_PER_PRODUCER)
            .map(|p| ChatId::direct(sender, user(peer_base + p)))
            .collect();
        Self {
            sender,
            chats,
            heads: vec![0; CHATS_PER_PRODUCER as usize],
            next_chat: 0,
            sent: 0,
            id_base: (index + 1) << 40,
            ts_ms: 0,
        }
    }

    fn all() -> Vec<Self> {
        (0..PRODUCERS).map(Self::new).collect()
    }

    /// The next message's chat and seq, round-robin over the producer's chats.
    fn next_seq(&mut self) -> (ChatId, Seq) {
        let i = self.next_chat;
        self.next_chat = (i + 1) % self.chats.len();
        self.heads[i] += 1;
        (self.chats[i], self.heads[i])
    }

    /// The next `n` messages as one write.
    fn write(&mut self, n: u64) -> WriteBatch {
        // Server time never goes backwards along a chat's log.
        self.ts_ms = self.ts_ms.max(now_ms());
        let mutations = (0..n)
            .map(|_| {
                let (chat, seq) = self.next_seq();
                self.sent += 1;
                let entry = message(chat, seq, self.sender, self.id_base + self.sent, self.ts_ms);
                Mutation::Append {
                    chat,
                    seq,
                    entry: entry.into(),
                }
            })
            .collect();
        WriteBatch { mutations }
    }
}

fn open_store(dir: &Path, options: EmbeddedOptions) -> EmbeddedStore {
    EmbeddedStore::open(dir, options).expect("open the store")
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir on disk")
}

// ---- 1. durable write throughput ----------------------------------------------------------

/// One producer: `writes` writes of `per_write` messages, `IN_FLIGHT_MAX` in flight.
fn produce(store: &EmbeddedStore, producer: &mut Producer, writes: u64, per_write: u64) {
    let mut in_flight: VecDeque<StoreReply<()>> = VecDeque::with_capacity(IN_FLIGHT_MAX);
    for _ in 0..writes {
        if in_flight.len() == IN_FLIGHT_MAX {
            block_on(in_flight.pop_front().expect("full")).expect("durable write");
        }
        in_flight.push_back(store.write(producer.write(per_write)));
    }
    for done in in_flight {
        block_on(done).expect("durable write");
    }
}

fn durable_write(c: &mut Criterion) {
    let dir = temp_dir();
    let store = open_store(dir.path(), EmbeddedOptions::default());
    let mut producers = Producer::all();
    let mut group = c.benchmark_group("store_engine/durable_write_100b_2_producers");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for per_write in [1_u64, 16, 64] {
        group.throughput(Throughput::Elements(PRODUCERS * per_write));
        group.bench_function(BenchmarkId::new("messages_per_write", per_write), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                thread::scope(|s| {
                    for producer in &mut producers {
                        let store = &store;
                        s.spawn(move || produce(store, producer, iters, per_write));
                    }
                });
                start.elapsed()
            });
        });
    }
    group.finish();
    drop(store);
}

// ---- 2. ack latency at a fixed rate, and the rejected alternative -------------------------

/// Where a paced producer's writes go.
trait Target: Sync {
    /// A write on its way to being durable.
    type Pending: Send;
    /// Hands over the next `n` messages of `producer` as one write.
    fn submit(&self, producer: &mut Producer, n: u64) -> Self::Pending;
    /// Returns once that write is durable.
    fn wait(pending: Self::Pending);
}

impl Target for EmbeddedStore {
    type Pending = StoreReply<()>;

    fn submit(&self, producer: &mut Producer, n: u64) -> Self::Pending {
        self.write(producer.write(n))
    }

    fn wait(pending: Self::Pending) {
        block_on(pending).expect("durable write");
    }
}

/// The rejected alternative: fjall alone, each write one batch synced with `fdatasync`.
struct FjallAlone {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Target for FjallAlone {
    /// The commit is synchronous: once `submit` returns, the write is durable.
    type Pending = ();

    fn submit(&self, producer: &mut Producer, n: u64) {
        let mut batch = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        for _ in 0..n {
            let (chat, seq) = producer.next_seq();
            let mut key = [0; ChatId::SIZE + 8];
            key[..ChatId::SIZE].copy_from_slice(chat.as_bytes());
            key[ChatId::SIZE..].copy_from_slice(&seq.to_be_bytes());
            batch.insert(&self.ks, key, body(seq));
        }
        batch.commit().expect("fjall commit");
    }

    fn wait((): ()) {}
}

/// The floor under the embedded store: its log alone (no index, no applier), appending the
/// same records. Whatever tail this has on the disk at the time, the store cannot beat; the
/// store's p99 over this one's is what the index costs the acknowledgements.
struct LogAlone {
    /// Kept open while the handle appends; its sync counters are read after the run.
    log: store::log::Log,
    handle: store::log::LogHandle,
}

impl Target for LogAlone {
    type Pending = store::log::Completion<store::log::Lsn>;

    fn submit(&self, producer: &mut Producer, n: u64) -> Self::Pending {
        self.handle.append(log_record(&producer.write(n)))
    }

    fn wait(pending: Self::Pending) {
        block_on(pending).expect("durable append");
    }
}

/// One fixed-rate run on a fresh log alone: the ack latency and the log's syncs.
fn log_alone_run(secs: u64) -> (Paced, SyncSnapshot) {
    let dir = temp_dir();
    let log = store::log::Log::open(dir.path().join("log"), store::log::LogOptions::default())
        .expect("open the log");
    let alone = LogAlone {
        handle: log.handle(),
        log,
    };
    let run = fixed_rate(&alone, FIXED_RATE_PER_S, secs);
    let syncs = alone.log.sync_stats().snapshot();
    (run, syncs)
}

/// What one paced producer saw.
struct Paced {
    /// Per message: from its tick's intended time to its write's ack, in microseconds.
    latency_us: Histogram<u64>,
    writes: u64,
    last_ack: Instant,
}

/// Offers `rate_per_s` messages/s over both producers for `secs` and returns the merged
/// per-message latency, the writes made, and when the last ack arrived.
fn fixed_rate<T: Target>(target: &T, rate_per_s: u64, secs: u64) -> Paced {
    let start = Instant::now() + Duration::from_millis(10);
    let ticks = secs * 1000;
    let mut producers = Producer::all();
    let runs: Vec<Paced> = thread::scope(|s| {
        let runs: Vec<_> = producers
            .iter_mut()
            .map(|p| s.spawn(move || paced(target, p, start, rate_per_s / PRODUCERS, ticks)))
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("producer"))
            .collect()
    });
    let mut all = Paced {
        latency_us: latency_histogram(),
        writes: 0,
        last_ack: start,
    };
    for run in runs {
        all.latency_us.add(&run.latency_us).expect("same bounds");
        all.writes += run.writes;
        all.last_ack = all.last_ack.max(run.last_ack);
    }
    all
}

/// One producer on a 1 ms tick: at each tick it writes every message due by then (after a
/// stall, the overdue ticks' messages go in one write), and a second thread waits for the
/// acks in order and records each message's latency from its tick's intended time.
fn paced<T: Target>(
    target: &T,
    producer: &mut Producer,
    start: Instant,
    rate_per_s: u64,
    ticks: u64,
) -> Paced {
    let tick = |i: u64| start + Duration::from_millis(i);
    let (tx, rx) = mpsc::channel::<(Vec<(Instant, u64)>, T::Pending)>();
    thread::scope(|s| {
        let waiter = s.spawn(move || {
            let mut latency_us = latency_histogram();
            let (mut writes, mut last_ack) = (0, start);
            for (due, pending) in rx {
                T::wait(pending);
                last_ack = Instant::now();
                writes += 1;
                for (intended, n) in due {
                    let us = last_ack.duration_since(intended).as_micros();
                    latency_us.saturating_record_n(u64::try_from(us).unwrap_or(u64::MAX), n);
                }
            }
            Paced {
                latency_us,
                writes,
                last_ack,
            }
        });
        let (mut next_tick, mut sent) = (0, 0);
        while next_tick < ticks {
            if let Some(wait) = tick(next_tick).checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let now = Instant::now();
            let (mut due, mut n) = (Vec::new(), 0);
            while next_tick < ticks && tick(next_tick) <= now {
                let total = (next_tick + 1) * rate_per_s / 1000;
                due.push((tick(next_tick), total - sent));
                n += total - sent;
                sent = total;
                next_tick += 1;
            }
            if n > 0 {
                let pending = target.submit(producer, n);
                tx.send((due, pending)).expect("waiter alive");
            }
        }
        drop(tx);
        waiter.join().expect("waiter")
    })
}

/// Microseconds up to a minute at 3 significant digits. (Not `Histogram::new`: an
/// auto-resizing histogram starts at 2,047 and `saturating_record` clamps rather than grows.)
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

fn percentiles(h: &Histogram<u64>) -> String {
    let at = |q: f64| Duration::from_micros(h.value_at_quantile(q));
    format!(
        "p50 {:.2?}, p99 {:.2?}, p99.9 {:.2?}, max {:.2?}",
        at(0.5),
        at(0.99),
        at(0.999),
        Duration::from_micros(h.max())
    )
}

/// Rounds of the fixed-rate load per index shape, alternated so that both shapes see the
/// same noise; medians are reported.
const SHAPE_ROUNDS: usize = 3;

/// How the index writes to the disk it shares with the log, and at what CPU priority.
#[derive(Clone, Copy)]
enum Shape {
    /// What `switchboard serve` opens: the store's defaults with its index threads at the
    /// gateway's `store_background_nice` (19) and `store_apply_nice` (10).
    Gateway,
    /// `EmbeddedOptions::default()`: the index threads at nice 0.
    Store,
}

impl Shape {
    const ALL: [Self; 2] = [Self::Gateway, Self::Store];

    fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway defaults",
            Self::Store => "store defaults",
        }
    }

    fn options(self) -> EmbeddedOptions {
        let defaults = EmbeddedOptions::default();
        match self {
            Self::Gateway => {
                let gateway = gateway::config::Config::default();
                EmbeddedOptions {
                    background_nice: gateway.store_background_nice,
                    apply_nice: gateway.store_apply_nice,
                    ..defaults
                }
            }
            Self::Store => defaults,
        }
    }
}

/// One fixed-rate run on a fresh store of `shape`: the ack latency histogram, the time from
/// the last ack until a read answers (index lag), the log's syncs during the run, and the
/// store's threads' CPU over it.
fn embedded_run(secs: u64, shape: Shape) -> (Paced, Duration, SyncSnapshot, String) {
    let dir = temp_dir();
    let index_parent = std::env::var_os("SWITCHBOARD_BENCH_INDEX_DIR").map(|parent| {
        tempfile::tempdir_in(parent).expect("a temp dir under SWITCHBOARD_BENCH_INDEX_DIR")
    });
    let options = EmbeddedOptions {
        index_dir: index_parent.as_ref().map(|p| p.path().join("index")),
        ..shape.options()
    };
    let store = open_store(dir.path(), options);
    let (threads_before, started) = (bench::thread_ticks("self"), Instant::now());
    let run = fixed_rate(&store, FIXED_RATE_PER_S, secs);
    // Until the applier has applied everything acknowledged before it (a read of one chat
    // waits only for that chat's appends).
    block_on(store.caught_up()).expect("the index catches up");
    let lag = run.last_ack.elapsed();
    // After the applier has caught up, so its whole cost of the run is counted.
    let cpu = store_cpu(
        &threads_before,
        &bench::thread_ticks("self"),
        started.elapsed(),
        run.latency_us.len(),
    );
    let syncs = store
        .log_sync_stats()
        .expect("the store is open")
        .snapshot();
    (run, lag, syncs, cpu)
}

/// The store's threads' CPU between two samples of this process's threads, by thread name:
/// cores, and CPU time per message (what the store costs the gateway that embeds it).
/// Tick and message counts are far below 2^52.
#[allow(clippy::cast_precision_loss)]
fn store_cpu(
    before: &HashMap<u64, (String, u64)>,
    after: &HashMap<u64, (String, u64)>,
    wall: Duration,
    messages: u64,
) -> String {
    let store_thread = |name: &str| {
        ["store-", "index-", "log-writer"]
            .iter()
            .any(|p| name.starts_with(p))
    };
    let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
    for (tid, (name, ticks)) in after {
        if store_thread(name) {
            let was = before.get(tid).map_or(0, |(_, t)| *t);
            *by_name.entry(name).or_default() += ticks.saturating_sub(was);
        }
    }
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let seconds = |ticks: u64| ticks as f64 / hz;
    let per_message_us = |ticks: u64| seconds(ticks) * 1e6 / messages.max(1) as f64;
    let mut out = String::from("store threads' CPU:");
    for (name, &ticks) in &by_name {
        let cores = seconds(ticks) / wall.as_secs_f64();
        let us = per_message_us(ticks);
        let _ = write!(out, " {name} {cores:.2} cores ({us:.1} µs/message),");
    }
    let total = per_message_us(by_name.values().sum());
    let _ = write!(out, " in all {total:.1} µs/message");
    out
}

/// The log's syncs over a run of `secs`: the disk time every acknowledgement waits for.
fn sync_summary(s: &SyncSnapshot, secs: u64) -> String {
    let share = s.stalled.as_secs_f64() / Duration::from_secs(secs.max(1)).as_secs_f64() * 100.0;
    format!(
        "log syncs {}: p50 <= {:.2?}, p99 <= {:.2?}, max {:.2?}; time in syncs over {:?}: \
         {:.2?} ({share:.1}% of the run)",
        s.syncs,
        s.quantile_at_most(0.5),
        s.quantile_at_most(0.99),
        s.max,
        STALL,
        s.stalled
    )
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn latency_at_fixed_rate(secs: u64) {
    let per_tick = FIXED_RATE_PER_S / PRODUCERS / 1000;
    println!("store_engine/ack_latency host: {}", writeback_setting());
    let rounds = if secs <= 1 { 1 } else { SHAPE_ROUNDS };
    let mut p99s: Vec<Vec<u64>> = vec![Vec::new(); Shape::ALL.len()];
    let mut log_p99s = Vec::new();
    for round in 0..rounds {
        for (i, &shape) in Shape::ALL.iter().enumerate() {
            let (run, lag, syncs, cpu) = embedded_run(secs, shape);
            println!(
                "store_engine/ack_latency_100b_2_producers embedded, {} (round {}): offered {FIXED_RATE_PER_S} messages/s for {secs} s ({per_tick} per \
                 ms per producer): {} ({} messages in {} writes); index lag after the last \
                 ack {lag:.2?}; {}; {cpu}",
                shape.name(),
                round + 1,
                percentiles(&run.latency_us),
                run.latency_us.len(),
                run.writes,
                sync_summary(&syncs, secs)
            );
            p99s[i].push(run.latency_us.value_at_quantile(0.99));
        }
        let (run, syncs) = log_alone_run(secs);
        println!(
            "store_engine/ack_latency_100b_2_producers the store's log alone (round {}), same \
             load and records: {} ({} messages in {} writes); {}",
            round + 1,
            percentiles(&run.latency_us),
            run.latency_us.len(),
            run.writes,
            sync_summary(&syncs, secs)
        );
        log_p99s.push(run.latency_us.value_at_quantile(0.99));
    }
    let log_p99 = median(log_p99s);
    let medians: Vec<u64> = p99s.into_iter().map(median).collect();
    let by_shape: Vec<String> = Shape::ALL
        .iter()
        .zip(&medians)
        .map(|(shape, &p99)| format!("{} {:.2?}", shape.name(), Duration::from_micros(p99)))
        .collect();
    println!(
        "store_engine/ack_latency p99 median over {rounds} round(s): {}, the log alone {:.2?} \
         (store / gateway {:.2}x, gateway / log alone {:.2}x)",
        by_shape.join(", "),
        Duration::from_micros(log_p99),
        ratio(medians[1], medians[0]),
        ratio(medians[0], log_p99)
    );
    let default_p99 = medians[0];
    let dir = temp_dir();
    let db = fjall::Database::builder(dir.path()).open().expect("fjall");
    let ks = db
        .keyspace("log", fjall::KeyspaceCreateOptions::default)
        .expect("keyspace");
    let alone = FjallAlone { db, ks };
    let rejected = fixed_rate(&alone, FIXED_RATE_PER_S, secs);
    println!(
        "store_engine/ack_latency_100b_2_producers fjall alone (SyncData batch per write), same \
         load: {} ({} messages in {} writes)",
        percentiles(&rejected.latency_us),
        rejected.latency_us.len(),
        rejected.writes
    );
    println!(
        "store_engine/ack_latency p99 ratio fjall alone / embedded (gateway defaults, median): \
         {:.1}x",
        ratio(
            rejected.latency_us.value_at_quantile(0.99),
            default_p99.max(1)
        )
    );
}

// ---- 3. one device's full sync ------------------------------------------------------------

const SYNC_CHATS: u64 = 100;
const SYNC_MESSAGES_PER_CHAT: u64 = 100;
/// Full syncs the allocation count is averaged over.
const SYNCS: u64 = 20;

/// User 1's device 1, registered before any message, so it has received nothing; then 100
/// direct chats of user 1 with 100 messages each from the peer.
fn sync_setup(store: &EmbeddedStore) -> (UserId, DeviceId) {
    let (me, my_device) = (user(1), device(1));
    let seen = Mutation::DeviceSeen {
        user: me,
        device: my_device,
        at_ms: now_ms(),
    };
    let mutations = vec![seen];
    block_on(store.write(WriteBatch { mutations })).expect("device registered");
    let writes: Vec<_> = (0..SYNC_CHATS)
        .map(|p| {
            let peer = user(2 + p);
            let chat = ChatId::direct(me, peer);
            let mutations = (1..=SYNC_MESSAGES_PER_CHAT)
                .map(|seq| Mutation::Append {
                    chat,
                    seq,
                    entry: message(chat, seq, peer, p * SYNC_MESSAGES_PER_CHAT + seq, now_ms())
                        .into(),
                })
                .collect();
            store.write(WriteBatch { mutations })
        })
        .collect();
    for write in writes {
        block_on(write).expect("durable write");
    }
    (me, my_device)
}

/// The sync plan, then each chat's log in turn (`pipelined`: every read issued at once, so
/// both reader threads work); returns the entries read.
fn full_sync(store: &EmbeddedStore, me: UserId, my_device: DeviceId, pipelined: bool) -> usize {
    let mut plan = block_on(store.sync_plan(me, my_device)).expect("sync plan");
    // The plan lists every chat; those the device is behind in are what it syncs.
    plan.retain(|c| c.delivered_seq < c.until_seq);
    assert_eq!(plan.len() as u64, SYNC_CHATS, "chats to sync");
    let read =
        |c: &store::model::SyncChat| store.read_log(c.chat, c.delivered_seq, c.until_seq, 10_000);
    let pages: Vec<_> = if pipelined {
        let pending: Vec<_> = plan.iter().map(read).collect();
        pending.into_iter().map(block_on).collect()
    } else {
        plan.iter().map(|c| block_on(read(c))).collect()
    };
    let entries = pages
        .into_iter()
        .map(|page| page.expect("read_log").entries.len())
        .sum();
    assert_eq!(
        entries as u64,
        SYNC_CHATS * SYNC_MESSAGES_PER_CHAT,
        "entries"
    );
    entries
}

fn sync_read(c: &mut Criterion) {
    let dir = temp_dir();
    let store = open_store(dir.path(), EmbeddedOptions::default());
    let (me, my_device) = sync_setup(&store);
    let mut group = c.benchmark_group("store_engine/sync_read_10k_msgs_100_chats");
    group.throughput(Throughput::Elements(SYNC_CHATS * SYNC_MESSAGES_PER_CHAT));
    for (name, pipelined) in [("sequential", false), ("pipelined", true)] {
        group.bench_function(name, |b| {
            b.iter(|| full_sync(&store, me, my_device, pipelined));
        });
    }
    group.finish();
    // Let the applier's timed checkpoint after the setup pass, so it is not counted.
    thread::sleep(Duration::from_millis(1200));
    for (name, pipelined) in [("sequential", false), ("pipelined", true)] {
        let (allocations, bytes) = count_allocations(|| {
            for _ in 0..SYNCS {
                full_sync(&store, me, my_device, pipelined);
            }
        });
        println!(
            "store_engine/sync_read_10k_msgs_100_chats/{name} allocations per full sync \
             (all threads): {} allocations, {} bytes ({:.1} allocations and {:.0} bytes per \
             message)",
            allocations / SYNCS,
            bytes / SYNCS,
            ratio(allocations, SYNCS * SYNC_CHATS * SYNC_MESSAGES_PER_CHAT),
            ratio(bytes, SYNCS * SYNC_CHATS * SYNC_MESSAGES_PER_CHAT),
        );
    }
    drop(store);
}

// ---- 4. recovery --------------------------------------------------------------------------

/// The chat of build message `k`: round-robin over `BUILD_CHATS` direct chats.
fn build_chat(i: u64) -> ChatId {
    ChatId::direct(user(2_000_000 + 2 * i), user(2_000_000 + 2 * i + 1))
}

/// Writes `messages` messages over `BUILD_CHATS` chats in writes of `BUILD_WRITE_MESSAGES`
/// from one thread with 16 writes in flight; returns the time it took.
fn build(store: &EmbeddedStore, messages: u64) -> Duration {
    const IN_FLIGHT: usize = 16;
    let start = Instant::now();
    let mut in_flight: VecDeque<StoreReply<()>> = VecDeque::with_capacity(IN_FLIGHT);
    let mut k = 0;
    while k < messages {
        let n = BUILD_WRITE_MESSAGES.min(messages - k);
        let ts_ms = now_ms();
        let mutations = (k..k + n)
            .map(|k| {
                let chat = build_chat(k % BUILD_CHATS);
                let sender = chat.direct_users().expect("direct").0;
                let seq = k / BUILD_CHATS + 1;
                let entry = message(chat, seq, sender, k + 1, ts_ms);
                Mutation::Append {
                    chat,
                    seq,
                    entry: entry.into(),
                }
            })
            .collect();
        if in_flight.len() == IN_FLIGHT {
            block_on(in_flight.pop_front().expect("full")).expect("durable write");
        }
        in_flight.push_back(store.write(WriteBatch { mutations }));
        k += n;
    }
    for done in in_flight {
        block_on(done).expect("durable write");
    }
    start.elapsed()
}

/// Opens `dir` and waits for the first read; returns the store, the open time and the time
/// until the read returned.
fn open_until_ready(dir: &Path, options: EmbeddedOptions) -> (EmbeddedStore, Duration, Duration) {
    let start = Instant::now();
    let store = open_store(dir, options);
    let opened = start.elapsed();
    let state = block_on(store.chat(build_chat(0))).expect("read");
    assert!(state.is_some(), "the first chat exists after reopening");
    (store, opened, start.elapsed())
}

/// Never checkpoints (not even at close), so the log keeps every record: a full memtable is a
/// checkpoint too, so the memtable is made larger than the 2 million messages built with this
/// ever fill (~1 GiB of memory).
fn no_checkpoints() -> EmbeddedOptions {
    EmbeddedOptions {
        checkpoint_bytes: u64::MAX,
        checkpoint_interval: Duration::from_hours(1),
        checkpoint_on_close: false,
        memtable_bytes: 16 << 30,
        ..EmbeddedOptions::default()
    }
}

fn recovery(messages: u64) {
    let dir = temp_dir();
    let store = open_store(dir.path(), EmbeddedOptions::default());
    println!("store_engine/recovery: building {messages} messages over {BUILD_CHATS} chats…");
    let built = build(&store, messages);
    // The applier's backlog after a bulk load.
    let caught_up = Instant::now();
    block_on(store.caught_up()).expect("the index catches up");
    let caught_up = caught_up.elapsed();
    let closing = Instant::now();
    drop(store);
    let closed = closing.elapsed();
    let disk = disk_bytes(dir.path());
    let (log, index) = (
        disk_bytes(&dir.path().join("log")),
        disk_bytes(&dir.path().join("index")),
    );
    let (store, opened, ready) = open_until_ready(dir.path(), EmbeddedOptions::default());
    let report = store.open_report();
    drop(store);
    println!(
        "store_engine/recovery clean reopen of {messages} messages: open {opened:.2?}, ready \
         (first read returned) {ready:.2?} ({} log records replayed, {} chats); built at \
         {:.0} messages/s (acks) in writes of {BUILD_WRITE_MESSAGES}, index caught up \
         {caught_up:.2?} after the last ack, close {closed:.2?}; disk {:.1} bytes/message \
         (log {:.1}, index {:.1})",
        report.replayed,
        report.chats,
        per_sec(messages, built),
        ratio(disk, messages),
        ratio(log, messages),
        ratio(index, messages),
    );
    drop(dir);

    let messages = messages.min(2_000_000);
    let dir = temp_dir();
    let store = open_store(dir.path(), no_checkpoints());
    build(&store, messages);
    drop(store);
    let log = disk_bytes(&dir.path().join("log"));
    std::fs::remove_dir_all(dir.path().join("index")).expect("delete the index");
    let (store, opened, ready) = open_until_ready(dir.path(), no_checkpoints());
    let records = store.open_report().replayed;
    drop(store);
    let per_s = per_sec(messages, ready);
    // A crash replays at most the applier's backlog plus one checkpoint's worth of log.
    let defaults = EmbeddedOptions::default();
    let worst_bytes = defaults.apply_backlog_bytes_max + defaults.checkpoint_bytes;
    let worst = ratio(worst_bytes * messages, log.max(1));
    println!(
        "store_engine/recovery full replay into an empty index: {messages} messages \
         ({records} log records, {:.1} log bytes/message) ready in {ready:.2?} (open \
         {opened:.2?}): {per_s:.0} messages/s; worst case after a crash (a full applier \
         backlog plus one checkpoint: {} MiB of log, ~{worst:.0} messages): ~{:.2?} of replay",
        ratio(log, messages),
        worst_bytes >> 20,
        Duration::from_secs_f64(worst / per_s.max(1.0)),
    );
}

/// What `du` counts under `path`: allocated blocks, in bytes.
fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    for entry in std::fs::read_dir(path).expect("list dir") {
        let entry = entry.expect("dir entry");
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// `a / b` for figures far below 2^52, where `f64` is exact.
#[allow(clippy::cast_precision_loss)]
fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b as f64
}

/// `count` per second over `elapsed` (counts far below 2^52).
#[allow(clippy::cast_precision_loss)]
fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The host's writeback threshold, which the ack tail depends on (`tuning/apply` sets 4 MiB;
/// `docs/OPERATIONS.md`, "Disk").
fn writeback_setting() -> String {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
            .map_or_else(|_| "?".to_owned(), |v| v.trim().to_owned())
    };
    match read("dirty_background_bytes").as_str() {
        "0" => format!(
            "vm.dirty_background_bytes 0 (writeback from {}% of memory: not tuned, \
             `tuning/apply` sets 4 MiB)",
            read("dirty_background_ratio")
        ),
        bytes => format!("vm.dirty_background_bytes {bytes}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    // As criterion decides: `cargo bench -- --test` and `cargo test --benches` run once.
    let quick = has("--test") || !has("--bench");
    let mut criterion = Criterion::default().configure_from_args();
    durable_write(&mut criterion);
    sync_read(&mut criterion);
    criterion.final_summary();
    if has("--list") {
        return;
    }
    let secs = env_u64("SWITCHBOARD_BENCH_LATENCY_SECS").unwrap_or(if quick { 1 } else { 10 });
    if secs > 0 {
        latency_at_fixed_rate(secs);
    }
    let messages = env_u64("SWITCHBOARD_BENCH_RECOVERY_MESSAGES").unwrap_or(if quick {
        20_000
    } else {
        10_000_000
    });
    if messages > 0 {
        recovery(messages);
    }
}
