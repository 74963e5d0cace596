//! The ramp: a worker opens its share of authenticated connections as fast as it can.
//!
//! Owns connection setup (socket, bind to a source address with port 0, connect, WebSocket
//! handshake), the connect-latency histogram, and failure tallies. Several threads each run
//! sequential blocking handshakes: on loopback that keeps the gateway's accept path busy
//! without making this process the bottleneck. A connection's latency runs from `socket()` to
//! a validated 101 response. Failures are tallied by reason, never retried.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use hdrhistogram::Histogram;
use rustix::net::{AddressFamily, SocketFlags, SocketType, bind, connect, socket_with};

use crate::handshake;
use crate::idle::keeper::Handoff;
use crate::idle::protocol::WorkerLine;
use crate::idle::worker::say;
use crate::source_ips::SourceIps;
use crate::target::Target;

/// Latency histogram range: 1 µs to 10 min, 3 significant digits.
pub(crate) const LATENCY_US_MAX: u64 = 600_000_000;
/// How often a worker reports progress during the ramp.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What one worker connects, decided before the ramp starts.
pub(crate) struct Plan {
    pub(crate) target: Target,
    pub(crate) source_ips: SourceIps,
    /// Global index of `tokens[0]` (it picks the source address).
    pub(crate) first_index: u64,
    /// One pre-minted token per connection.
    pub(crate) tokens: Vec<String>,
    pub(crate) threads: usize,
    pub(crate) handshake_timeout: Duration,
}

/// A new latency histogram with loadgen's bounds.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant bounds are valid")
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn totals(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    fn progress(&self) -> WorkerLine {
        let (ok, failed) = self.totals();
        WorkerLine::Progress { ok, failed }
    }
}

struct ThreadResult {
    latency_us: Histogram<u64>,
    failures: BTreeMap<String, u64>,
}

/// Runs the ramp, handing each connection to the keeper, and reports totals on stdout.
/// `cpu_at_go_ms` is this process's CPU time when `go` arrived (minting is not counted).
pub(crate) fn ramp(plan: &Plan, handoffs: &Sender<Handoff>, cpu_at_go_ms: u64) -> Result<()> {
    let counters = Counters::default();
    let start = Instant::now();
    let results = std::thread::scope(|scope| {
        let (finished_tx, finished_rx) = mpsc::channel::<()>();
        let handles: Vec<_> = (0..plan.threads)
            .map(|t| {
                let (tx, finished, counters) = (handoffs.clone(), finished_tx.clone(), &counters);
                scope.spawn(move || {
                    let result = connect_thread(plan, t, counters, &tx);
                    let _ = finished.send(()); // the ramp's end is the last thread's end
                    result.map(|r| (r, Instant::now()))
                })
            })
            .collect();
        drop(finished_tx);
        // Wake on every thread's end (a panicked thread drops its sender) or to report.
        let mut running = plan.threads;
        while running > 0 {
            match finished_rx.recv_timeout(PROGRESS_EVERY) {
                Ok(()) => running -= 1,
                Err(RecvTimeoutError::Timeout) => say(&counters.progress()),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let joined = handles.into_iter().map(std::thread::ScopedJoinHandle::join);
        joined
            .map(|r| r.map_err(|_| anyhow!("a connect thread panicked"))?)
            .collect::<Result<Vec<_>>>()
    })?;
    let end = results.iter().map(|(_, end)| *end).max().unwrap_or(start);
    let cpu_ms = crate::kernel::self_cpu_ms()?.saturating_sub(cpu_at_go_ms);
    report(
        results.into_iter().map(|(r, _)| r),
        &counters,
        end - start,
        cpu_ms,
    )
}

/// Says the ramp's failures, latency histogram and totals.
fn report(
    results: impl Iterator<Item = ThreadResult>,
    counters: &Counters,
    ramp: Duration,
    cpu_ms: u64,
) -> Result<()> {
    let mut latency_us = latency_histogram();
    let mut failures = BTreeMap::<String, u64>::new();
    for result in results {
        latency_us
            .add(&result.latency_us)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        for (reason, count) in result.failures {
            *failures.entry(reason).or_default() += count;
        }
    }
    for (reason, count) in failures {
        say(&WorkerLine::Fail { count, reason });
    }
    let pairs = latency_us
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()));
    say(&WorkerLine::Latency(pairs.collect()));
    let (ok, failed) = counters.totals();
    let ramp_us = ramp.as_micros() as u64;
    say(&WorkerLine::Done {
        ok,
        failed,
        ramp_us,
        cpu_ms,
    });
    Ok(())
}

/// Connects tokens `t, t + threads, ...` one after another.
fn connect_thread(
    plan: &Plan,
    t: usize,
    counters: &Counters,
    handoffs: &Sender<Handoff>,
) -> Result<ThreadResult> {
    let mut latency_us = latency_histogram();
    let mut failures = BTreeMap::new();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    for i in (t..plan.tokens.len()).step_by(plan.threads) {
        let global = plan.first_index + i as u64;
        let started = Instant::now();
        match connect_one(plan, global, &plan.tokens[i], nonce(seed ^ global)) {
            Ok(handoff) => {
                latency_us.saturating_record(started.elapsed().as_micros() as u64);
                counters.ok.fetch_add(1, Ordering::Relaxed);
                if handoffs.send(handoff).is_err() {
                    bail!("the idle keeper stopped during the ramp");
                }
            }
            Err(reason) => {
                *failures.entry(reason).or_default() += 1;
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(ThreadResult {
        latency_us,
        failures,
    })
}

/// Opens connection number `global`; the error is the failure reason to tally.
fn connect_one(plan: &Plan, global: u64, token: &str, nonce: [u8; 16]) -> Result<Handoff, String> {
    let source = SocketAddr::new(plan.source_ips.pick(global).into(), 0);
    let family = match plan.target.addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)
        .map_err(|e| format!("socket: {e}"))?;
    bind(&fd, &source).map_err(|e| format!("bind: {e}"))?;
    connect(&fd, &plan.target.addr).map_err(|e| format!("connect: {e}"))?;
    let mut stream = TcpStream::from(fd);
    let setup = |s: &TcpStream| -> std::io::Result<()> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(plan.handshake_timeout))?;
        s.set_write_timeout(Some(plan.handshake_timeout))
    };
    setup(&stream).map_err(|e| format!("socket options: {e}"))?;
    let key = handshake::key(nonce);
    let request = handshake::request(&plan.target.host, &plan.target.path, &key, token);
    let leftover =
        handshake::perform(&mut stream, &request, &key).map_err(|e| format!("handshake: {e}"))?;
    stream
        .set_nonblocking(true)
        .map_err(|e| format!("socket options: {e}"))?;
    Ok(Handoff { stream, leftover })
}

/// 16 well-mixed bytes from `x` (splitmix64 twice): a handshake key, not a secret.
fn nonce(x: u64) -> [u8; 16] {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let a = mix(x.wrapping_add(0x9E37_79B9_7F4A_7C15));
    let mut out = [0; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&mix(a).to_le_bytes());
    out
}
