//! `loadgen idle`: memory per idle authenticated connection, and connection rate.
//!
//! Layout: this file is the coordinator (arguments, the run's phases, readings);
//! [`fleet`] runs the worker processes, [`protocol`] is what they say, [`tally`] adds it up,
//! [`report`] prints it, [`split`] divides the connections among workers. The worker side is
//! [`worker`] (process main), [`connect`] (the ramp) and [`keeper`] (holding connections idle,
//! answering pings).
//!
//! Phases: read gateway RSS and kernel socket memory; start the workers, which mint their
//! tokens and say `ready`; send `go` and time the ramp until every worker is `done`; wait for
//! the gateway to count every connection open; hold `--hold-s` for RSS to settle; read again;
//! close the workers' stdin so they exit; report. The coordinator never opens a WebSocket
//! itself, and never leaves workers running (see [`fleet::Fleet`]).

pub(crate) mod connect;
pub(crate) mod fleet;
pub(crate) mod keeper;
pub(crate) mod protocol;
pub(crate) mod report;
mod split;
pub(crate) mod tally;
pub(crate) mod worker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use clap::Args;

use crate::jwt::Minter;
use crate::kernel::{self, KernelSample, page_bytes};
use crate::metrics::GatewaySample;
use crate::source_ips::SourceIps;
use crate::target::Target;
use fleet::{Fleet, Message};
use protocol::WorkerLine;
use report::{IdleReport, Latency, per_conn, rate};
use split::{check_fd_limit, shares, worker_args};
use tally::Tally;

/// How long workers may take to start and mint their tokens.
const READY_TIMEOUT: Duration = Duration::from_mins(2);
/// How long the gateway may take to count every connection open (or closed, at the end).
const COUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the gateway's metrics are polled while waiting for it to count connections.
const METRICS_POLL: Duration = Duration::from_millis(100);
/// How often ramp progress is printed on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// `loadgen idle` arguments.
#[derive(Debug, Args)]
pub(crate) struct IdleArgs {
    /// The gateway's WebSocket endpoint, `ws://IP:PORT/ws`.
    #[arg(long)]
    pub(crate) target: String,
    /// The gateway's operations address, `http://IP:PORT` (its `/metrics` is read).
    #[arg(long)]
    pub(crate) ops: String,
    /// HS256 secret: the exact bytes of this file (e.g. `<data-dir>/dev-jwt.key`).
    #[arg(long)]
    pub(crate) jwt_secret_file: PathBuf,
    /// Connections to open.
    #[arg(long)]
    pub(crate) conns: u64,
    /// Worker processes [default: enough that each holds at most 9,000].
    #[arg(long)]
    pub(crate) workers: Option<u64>,
    /// Threads per worker, each doing blocking handshakes one after another (so workers ×
    /// threads handshakes are in flight at once).
    #[arg(long, default_value_t = 8)]
    pub(crate) threads: usize,
    /// Source addresses to bind (`A-B`, `A`, or a comma-separated mix), round robin.
    #[arg(long, default_value = "127.0.0.2-127.0.0.40")]
    pub(crate) source_ips: String,
    /// Seconds to hold every connection idle before the second reading.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) hold_s: f64,
    /// Connection `i` authenticates as user `user_base + i`, device 1.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) user_base: u64,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub(crate) token_ttl_s: u64,
    /// Per-connection handshake timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) handshake_timeout_ms: u64,
    /// Give up if the ramp takes longer than this many seconds.
    #[arg(long, default_value_t = 300)]
    pub(crate) timeout_s: u64,
    /// The gateway's process id, to read its CPU time during the ramp from `/proc` [default:
    /// `process_cpu_seconds_total` from its metrics, if it exports it].
    #[arg(long)]
    pub(crate) gateway_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs the benchmark and prints its report on stdout.
pub(crate) fn run(args: &IdleArgs) -> Result<()> {
    let ops = Target::ops(&args.ops)?;
    let source_ips = SourceIps::parse(&args.source_ips)?;
    let shares = check_args(args)?;
    let kernel_before = KernelSample::read()?;
    let gateway_before = GatewaySample::fetch(&ops)?;
    warn_if_used(&gateway_before);
    let arg_lists: Vec<Vec<String>> = shares
        .iter()
        .map(|&(first, count)| worker_args(args, &source_ips, first, count))
        .collect();
    let mut fleet = Fleet::spawn(&arg_lists)?;
    let mut tally = Tally::new(fleet.len());
    let before = (kernel_before, gateway_before);
    let readings = measure(args, &ops, &mut fleet, &mut tally, before)?;
    let report = build_report(args, &shares, source_ips.len(), &tally, &readings);
    println!(
        "{}",
        if args.json {
            report.json()
        } else {
            report.text()
        }
    );
    ensure!(
        report.conns_failed == 0 && report.conns_lost == 0,
        "{} connections failed and {} were lost: the figures above cover the rest",
        report.conns_failed,
        report.conns_lost
    );
    Ok(())
}

/// Checks what can be checked before any process starts; returns the workers' shares.
fn check_args(args: &IdleArgs) -> Result<Vec<(u64, u64)>> {
    let target = Target::websocket(&args.target)?;
    ensure!(
        target.addr.is_ipv4(),
        "the source addresses are IPv4, so --target must be too"
    );
    ensure!(args.conns > 0, "--conns must be at least 1");
    ensure!(
        args.hold_s >= 0.0 && args.hold_s.is_finite(),
        "--hold-s must be ≥ 0"
    );
    let shares = shares(args.conns, args.workers)?;
    check_fd_limit(&shares)?;
    Minter::from_file(&args.jwt_secret_file)?; // fail here, not in every worker
    Ok(shares)
}

/// A gateway that already served connections skews the RSS figure: say so.
fn warn_if_used(gateway: &GatewaySample) {
    if gateway.connections_open != 0 {
        let open = gateway.connections_open;
        eprintln!("loadgen: note: the gateway already has {open} connections open");
    }
    if let Some(accepted) = gateway.accepts_total.filter(|&n| n > 0) {
        eprintln!(
            "loadgen: warning: the gateway has accepted {accepted} connections before; memory \
             they freed will be reused, so use a fresh gateway for the RSS figure"
        );
    }
}

/// The run's phases from started workers to released ones (see the module doc).
fn measure(
    args: &IdleArgs,
    ops: &Target,
    fleet: &mut Fleet<WorkerLine>,
    tally: &mut Tally,
    (kernel_before, gateway_before): (KernelSample, GatewaySample),
) -> Result<Readings> {
    pump(
        fleet,
        tally,
        Instant::now() + READY_TIMEOUT,
        "starting workers",
        Tally::all_ready,
    )?;
    let timeout = Duration::from_secs(args.timeout_s);
    let (ramp, gateway_cpu_ramp_s) = run_ramp(args, ops, fleet, tally, timeout)?;
    let expected_open = gateway_before.connections_open + tally.ok();
    let open_wait = wait_open(fleet, tally, ops, expected_open)?;
    let hold = Duration::from_secs_f64(args.hold_s);
    pump_idle(fleet, tally, Instant::now() + hold)?;
    let gateway_after = GatewaySample::fetch(ops)?;
    let kernel_after = KernelSample::read()?;
    fleet.release();
    Ok(Readings {
        kernel: [kernel_before, kernel_after],
        gateway: [gateway_before, gateway_after],
        gateway_cpu_ramp_s,
        after_close: wait_closed(ops, gateway_before.connections_open),
        ramp,
        open_wait,
        hold,
    })
}

/// Sends `go` and waits for every worker's `done`: the ramp's time (the longest any worker
/// measured, from its `go` to its last handshake) and, if known, the gateway's CPU seconds
/// from `go` until the coordinator heard the last `done`.
fn run_ramp(
    args: &IdleArgs,
    ops: &Target,
    fleet: &mut Fleet<WorkerLine>,
    tally: &mut Tally,
    timeout: Duration,
) -> Result<(Duration, Option<f64>)> {
    let cpu_at_go = gateway_cpu_s(ops, args.gateway_pid)?;
    fleet.tell_all(protocol::GO)?;
    pump(
        fleet,
        tally,
        Instant::now() + timeout,
        "ramp",
        Tally::all_done,
    )?;
    let cpu_at_end = gateway_cpu_s(ops, args.gateway_pid)?;
    Ok((
        tally.ramp,
        cpu_at_go.zip(cpu_at_end).map(|(go, end)| end - go),
    ))
}

/// The gateway's CPU seconds so far: from `/proc/PID/stat` given a pid, else from its metrics.
fn gateway_cpu_s(ops: &Target, pid: Option<u32>) -> Result<Option<f64>> {
    Ok(match pid {
        Some(pid) => Some(Duration::from_millis(kernel::pid_cpu_ms(pid)?).as_secs_f64()),
        None => GatewaySample::fetch(ops)?.cpu_s,
    })
}

/// Applies worker messages until `done(tally)`; an error if `deadline` passes first.
fn pump(
    fleet: &Fleet<WorkerLine>,
    tally: &mut Tally,
    deadline: Instant,
    phase: &str,
    done: fn(&Tally) -> bool,
) -> Result<()> {
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    while !done(tally) {
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "{phase} did not finish in time ({} ok, {} failed)",
                tally.ok(),
                tally.failed()
            );
        }
        if phase == "ramp" && now >= next_progress {
            eprintln!(
                "loadgen: ramp: {} connected, {} failed",
                tally.ok(),
                tally.failed()
            );
            next_progress = now + PROGRESS_EVERY;
        }
        if let Some(message) = fleet.next(deadline.min(next_progress)) {
            take(tally, message, phase)?;
        }
    }
    Ok(())
}

/// Applies worker messages until `deadline` (the hold: workers only report their keepers).
fn pump_idle(fleet: &Fleet<WorkerLine>, tally: &mut Tally, deadline: Instant) -> Result<()> {
    while let Some(message) = fleet.next(deadline) {
        take(tally, message, "hold")?;
    }
    Ok(())
}

fn take(
    tally: &mut Tally,
    (index, message): (usize, Message<WorkerLine>),
    phase: &str,
) -> Result<()> {
    match message {
        Message::Line(line) => tally.apply(index, line),
        Message::Garbled(line) => bail!("worker {index} said {line:?}"),
        Message::Gone => bail!("worker {index} exited during {phase} (its stderr is above)"),
    }
}

/// Polls the gateway until it counts `expected` connections open; returns how long it took.
fn wait_open(
    fleet: &Fleet<WorkerLine>,
    tally: &mut Tally,
    ops: &Target,
    expected: u64,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let open = GatewaySample::fetch(ops)?.connections_open;
        if open >= expected {
            return Ok(start.elapsed());
        }
        if start.elapsed() > COUNT_TIMEOUT {
            bail!("the gateway counts {open} connections open, expected {expected}");
        }
        pump(fleet, tally, Instant::now() + METRICS_POLL, "hold", |_| {
            false
        })?;
    }
}

/// After the workers exit: the gateway's RSS once it counts `baseline` open again, if it
/// does within [`COUNT_TIMEOUT`] (a reading for the report, so failures are not errors).
fn wait_closed(ops: &Target, baseline: u64) -> Option<GatewaySample> {
    let start = Instant::now();
    while start.elapsed() < COUNT_TIMEOUT {
        match GatewaySample::fetch(ops) {
            Ok(sample) if sample.connections_open <= baseline => return Some(sample),
            Ok(_) => std::thread::sleep(METRICS_POLL),
            Err(e) => {
                eprintln!("loadgen: note: reading metrics after close: {e:#}");
                return None;
            }
        }
    }
    None
}

/// Everything read from the system during a run.
struct Readings {
    /// Before the ramp, after the hold.
    kernel: [KernelSample; 2],
    /// Before the ramp, after the hold.
    gateway: [GatewaySample; 2],
    /// Gateway CPU seconds from `go` to the last worker's `done`, if known.
    gateway_cpu_ramp_s: Option<f64>,
    after_close: Option<GatewaySample>,
    ramp: Duration,
    open_wait: Duration,
    hold: Duration,
}

fn build_report(
    args: &IdleArgs,
    shares: &[(u64, u64)],
    source_ips: usize,
    tally: &Tally,
    r: &Readings,
) -> IdleReport {
    let n = tally.ok();
    let [kb, ka] = r.kernel;
    let [gb, ga] = r.gateway;
    let rss_per_conn = per_conn(gb.rss_bytes, ga.rss_bytes, n);
    let gateway_cpu = r.gateway_cpu_ramp_s;
    let (pings, frames, lost) = tally.keeper_totals();
    IdleReport {
        conns_requested: args.conns,
        conns_ok: n,
        conns_failed: tally.failed(),
        failures: tally.failures.clone(),
        workers: shares.len(),
        threads_per_worker: args.threads,
        source_ips,
        gateway_accepts_before: gb.accepts_total,
        gateway_conns_open_before: gb.connections_open,
        gateway_conns_open_after: ga.connections_open,
        gateway_rss_before_bytes: gb.rss_bytes,
        gateway_rss_after_bytes: ga.rss_bytes,
        gateway_rss_per_conn_bytes: rss_per_conn,
        gateway_rss_per_conn_kib: rss_per_conn / 1024.0,
        gateway_rss_after_close_bytes: r.after_close.map(|s| s.rss_bytes),
        kernel_tcp_mem_before_pages: kb.tcp_mem_pages,
        kernel_tcp_mem_after_pages: ka.tcp_mem_pages,
        kernel_tcp_mem_per_conn_bytes: per_conn(
            kb.tcp_mem_pages * page_bytes(),
            ka.tcp_mem_pages * page_bytes(),
            n,
        ),
        kernel_slab_before_bytes: kb.slab_bytes,
        kernel_slab_after_bytes: ka.slab_bytes,
        kernel_slab_per_conn_bytes: per_conn(kb.slab_bytes, ka.slab_bytes, n),
        sockets_used_before: kb.sockets_used,
        sockets_used_after: ka.sockets_used,
        ramp_s: r.ramp.as_secs_f64(),
        connect_rate_per_s: rate(n, r.ramp.as_secs_f64()).unwrap_or(0.0),
        gateway_cpu_ramp_s: gateway_cpu,
        conns_per_gateway_cpu_s: gateway_cpu.and_then(|cpu| rate(n, cpu)),
        client_cpu_s: Duration::from_millis(tally.client_cpu_ms()).as_secs_f64(),
        connect_latency_us: Latency::of(&tally.latency_us),
        open_wait_s: r.open_wait.as_secs_f64(),
        hold_s: r.hold.as_secs_f64(),
        pings_answered: pings,
        data_frames_received: frames,
        conns_lost: lost,
        last_loss: tally.last_loss().map(str::to_owned),
    }
}
