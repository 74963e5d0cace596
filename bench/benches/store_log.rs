//! The store's write-ahead log on this machine's disk: durable append throughput from two
//! producer threads handing over batches of 100-byte records (as two gateway cores would), and
//! ack latency at a fixed offered rate of 100,000 records/s (printed after criterion's runs).
//!
//! Goals (issue 5): at least 100,000 records/s; ack p99 at most 10 ms at 100,000/s.
//!
//! Printed last: what one sync costs on this disk when the write grows the file (as a log
//! segment that is not prepared does: `fdatasync` then writes the inode too) against
//! overwriting a file already zero-filled and synced (data only: what the log's prepared
//! segments give); sync latency and the syncing thread's CPU per sync, two rounds alternated.
//! The log lives under cargo's target tmp dir (a real disk, not tmpfs: fdatasync must cost
//! what it costs). Compare figures as ratios within one run; this machine is noisy.
// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use futures_lite::future::block_on;
use hdrhistogram::Histogram;
use std::ops::Range;

use store::log::{Completion, Log, LogHandle, LogOptions, Lsn, STALL};

/// An append in flight.
type InFlight = Completion<Range<Lsn>>;

const PRODUCERS: usize = 2;
const RECORD_BYTES: usize = 100;
/// Batches each producer keeps in flight: a gateway core hands over the next tick's batch
/// without waiting for the previous one to be durable.
const IN_FLIGHT_MAX: usize = 4;

fn open_log() -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir on disk");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open log");
    (dir, log)
}

/// One producer: `batches` batches of `batch` records, `IN_FLIGHT_MAX` in flight.
fn produce(handle: &LogHandle, batches: u64, batch: usize) {
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(IN_FLIGHT_MAX);
    for _ in 0..batches {
        if in_flight.len() == IN_FLIGHT_MAX {
            block_on(in_flight.pop_front().expect("full")).expect("append");
        }
        let payloads = (0..batch).map(|_| vec![0x5a; RECORD_BYTES]).collect();
        in_flight.push_back(handle.append_batch(payloads));
    }
    for done in in_flight {
        block_on(done).expect("append");
    }
}

fn durable_append(c: &mut Criterion) {
    let (_dir, log) = open_log();
    let mut group = c.benchmark_group("store_log/durable_append_100b_2_producers");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for batch in [16_usize, 64, 256] {
        group.throughput(Throughput::Elements((PRODUCERS * batch) as u64));
        group.bench_function(BenchmarkId::new("records_per_batch", batch), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                thread::scope(|s| {
                    for _ in 0..PRODUCERS {
                        let handle = log.handle();
                        s.spawn(move || produce(&handle, iters, batch));
                    }
                });
                let elapsed = start.elapsed();
                // Keep the disk from filling: the records were only there to be synced.
                block_on(log.handle().checkpoint(u64::MAX)).expect("checkpoint");
                elapsed
            });
        });
    }
    group.finish();
}

/// Offers `rate` records/s for `secs` from two producers, each handing over one batch per
/// millisecond, and prints ack latency measured from each batch's intended send time.
fn ack_latency_at_fixed_rate(rate: u64, secs: u64) {
    let (_dir, log) = open_log();
    let per_tick = usize::try_from(rate / 1000 / PRODUCERS as u64).expect("small");
    let ticks = secs * 1000;
    let start = Instant::now() + Duration::from_millis(10);
    let histograms: Vec<Histogram<u64>> = thread::scope(|s| {
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|_| {
                let handle = log.handle();
                s.spawn(move || paced_producer(&handle, start, ticks, per_tick))
            })
            .collect();
        producers
            .into_iter()
            .map(|p| p.join().expect("producer"))
            .collect()
    });
    let mut all =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram: 1 µs to 60 s");
    for h in &histograms {
        all.add(h).expect("same bounds");
    }
    let at = |q: f64| Duration::from_micros(all.value_at_quantile(q));
    let syncs = log.sync_stats().snapshot();
    println!(
        "store_log/ack_latency_100b_2_producers offered {rate} records/s for {secs} s in \
         batches of {per_tick} per ms per producer: p50 {:.2?}, p99 {:.2?}, \
         p99.9 {:.2?}, max {:.2?} ({} batches); log syncs {}: p99 <= {:.2?}, max {:.2?}, \
         time in syncs over {:?}: {:.2?}",
        at(0.5),
        at(0.99),
        at(0.999),
        Duration::from_micros(all.max()),
        all.len(),
        syncs.syncs,
        syncs.quantile_at_most(0.99),
        syncs.max,
        STALL,
        syncs.stalled
    );
}

/// Sends one batch per millisecond on schedule; a second thread waits for the acks (in
/// order) and records the latency from the intended send time, in microseconds.
fn paced_producer(
    handle: &LogHandle,
    start: Instant,
    ticks: u64,
    per_tick: usize,
) -> Histogram<u64> {
    let (tx, rx) = mpsc::channel::<(Instant, InFlight)>();
    let waiter = thread::spawn(move || {
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram: 1 µs to 60 s");
        for (intended, done) in rx {
            block_on(done).expect("append");
            let latency = Instant::now().duration_since(intended);
            histogram.saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        }
        histogram
    });
    for tick in 0..ticks {
        let intended = start + Duration::from_millis(tick);
        if let Some(wait) = intended.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let payloads = (0..per_tick).map(|_| vec![0x5a; RECORD_BYTES]).collect();
        tx.send((intended, handle.append_batch(payloads)))
            .expect("waiter alive");
    }
    drop(tx);
    waiter.join().expect("waiter")
}

/// Bytes per write in the sync-cost comparison (a batch of about 20 framed records).
const SYNC_WRITE_BYTES: usize = 4096;

/// The calling thread's CPU time so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// `syncs` × (one write + `fdatasync`), growing a new file or overwriting a zero-filled one.
fn sync_cost(syncs: usize) {
    for round in 1..=2 {
        for preallocated in [false, true] {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir on disk");
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dir.path().join("segment"))
                .expect("create");
            if preallocated {
                let zeros = vec![0u8; 1 << 20];
                for _ in 0..(syncs * SYNC_WRITE_BYTES).div_ceil(zeros.len()) {
                    file.write_all(&zeros).expect("zero-fill");
                }
                file.sync_all().expect("sync the zeros");
                file.seek(SeekFrom::Start(0)).expect("rewind");
            }
            let block = [0x5a_u8; SYNC_WRITE_BYTES];
            let mut us = Histogram::<u64>::new(3).expect("histogram");
            let cpu = thread_cpu();
            for _ in 0..syncs {
                file.write_all(&block).expect("write");
                let start = Instant::now();
                file.sync_data().expect("fdatasync");
                us.saturating_record(
                    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
                );
            }
            let cpu_per_sync = thread_cpu().saturating_sub(cpu).as_micros() / syncs as u128;
            println!(
                "store_log/sync_cost {} (round {round}): {syncs} × ({SYNC_WRITE_BYTES} B write + \
                 fdatasync): sync p50 {} µs, p99 {} µs, max {} µs; CPU per sync {cpu_per_sync} µs",
                if preallocated {
                    "overwriting a zero-filled file"
                } else {
                    "appending (file grows)"
                },
                us.value_at_quantile(0.5),
                us.value_at_quantile(0.99),
                us.max(),
            );
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    durable_append(&mut criterion);
    criterion.final_summary();
    // Only under `cargo bench` (which passes --bench), not when `cargo test` smoke-runs this.
    if std::env::args().any(|a| a == "--bench") {
        let secs = std::env::var("SWITCHBOARD_BENCH_LATENCY_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        ack_latency_at_fixed_rate(100_000, secs);
        sync_cost(3000);
    }
}
