//! `loadgen live`: open-loop load from real WebSocket clients, an exactly-once ledger, and an
//! SLO verdict a CI job can use (exit 0 met, 1 not met, 2 the run itself was invalid).
//!
//! Layout. The coordinator (this file: arguments, the run's phases; [`merge`] adds up the
//! workers' lines; [`report`] judges it, [`summary`] and [`output`] write it; [`plots`] draws it;
//! [`progress`] is the live line) spawns worker processes ([`worker`]), which speak
//! [`protocol`] on stdio. A worker is one [`engine`] thread over an epoll set: [`lifecycle`]
//! (connections), [`inbound`] (server frames), [`load`] (sends, churn, acks), [`finish`]
//! (final figures, ledger check), over [`device`] and [`conn`] ([`wsread`] frames). Pure
//! parts: [`scenario`], [`plan`], [`schedule`], [`body`], [`ledger`] ([`ranges`]), [`slo`],
//! [`hist`], [`stats`], [`clock`].
//!
//! Phases: workers start and mint tokens (`ready`) → `connect` (devices ramp up and sync) →
//! `setup` (groups created; their ids broadcast) → `go T0` (the open-loop schedule runs
//! warm-up then the measured window, with churn) → every worker `drained` → the grace period
//! → `finish` (final histograms, counters, the ledger's sender side) → the sender side goes
//! back out as `expect` lines → `check` (each worker checks its devices) → report, verdict.
//! The coordinator opens no WebSocket itself and never leaves a worker running.

pub(crate) mod body;
pub(crate) mod clock;
pub(crate) mod conn;
pub(crate) mod device;
pub(crate) mod engine;
pub(crate) mod finish;
pub(crate) mod hist;
pub(crate) mod inbound;
pub(crate) mod ledger;
pub(crate) mod lifecycle;
pub(crate) mod load;
pub(crate) mod merge;
pub(crate) mod output;
pub(crate) mod plan;
pub(crate) mod plots;
pub(crate) mod progress;
pub(crate) mod protocol;
pub(crate) mod ranges;
pub(crate) mod report;
pub(crate) mod scenario;
pub(crate) mod schedule;
pub(crate) mod slo;
pub(crate) mod stats;
pub(crate) mod summary;
pub(crate) mod worker;
pub(crate) mod wsread;

#[cfg(test)]
mod fake_gateway;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;

use crate::idle::fleet::{Fleet, Line, Message};
use crate::jwt::Minter;
use crate::source_ips::SourceIps;
use crate::target::Target;
use merge::Merge;
use plan::Plan;
use progress::Progress;
use protocol::{Command, WorkerLine};
use report::{Invalid, Run};
use scenario::Scenario;
use slo::Slo;

/// Devices per worker when `--workers` is not given: well under 20,000 descriptors.
const DEVICES_PER_WORKER_DEFAULT: u64 = 9_000;
/// How long workers may take to start and mint their tokens.
const READY_TIMEOUT: Duration = Duration::from_mins(2);
/// Slack on every phase's deadline beyond what the scenario says it takes.
const PHASE_SLACK: Duration = Duration::from_mins(1);
/// Workers start the schedule this long after `go` is sent, so all start together.
const GO_LEAD: Duration = Duration::from_millis(300);

/// `loadgen live` arguments.
#[derive(Debug, Args)]
pub(crate) struct LiveArgs {
    /// A gateway's WebSocket endpoint, `ws://IP:PORT/ws`; repeat for several (devices are
    /// spread over them round robin).
    #[arg(long, required = true)]
    pub(crate) target: Vec<String>,
    /// The scenario, a TOML file (presets in `loadgen/scenarios/`).
    #[arg(long)]
    pub(crate) scenario: PathBuf,
    /// Overrides a scenario key: `--set rate_per_s=500 --set groups.count=4`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) overrides: Vec<String>,
    /// Shorthand for `--set rate_per_s=R`.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Shorthand for `--set duration_s=S`.
    #[arg(long)]
    pub(crate) duration_s: Option<f64>,
    /// HS256 secret: the exact bytes of this file (e.g. `<data-dir>/dev-jwt.key`).
    #[arg(long)]
    pub(crate) jwt_secret_file: PathBuf,
    /// Worker processes [default: enough that each holds at most 9,000 devices].
    #[arg(long)]
    pub(crate) workers: Option<u32>,
    /// Source addresses to bind (`A-B`, `A`, or a comma-separated mix), round robin.
    #[arg(long, default_value = "127.0.0.2-127.0.0.40")]
    pub(crate) source_ips: String,
    /// The objective [default: the scenario's `slo`], e.g.
    /// `p99<=500ms,p999<=1s,loss=0,dup=0,order=0`.
    #[arg(long)]
    pub(crate) slo: Option<String>,
    /// Where the report goes (created; files in it are replaced).
    #[arg(long, default_value = "loadgen-report")]
    pub(crate) report: PathBuf,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub(crate) token_ttl_s: u64,
    /// How long one connection attempt may take from socket to `SyncDone`, in ms.
    #[arg(long, default_value_t = 30_000)]
    pub(crate) connect_timeout_ms: u64,
}

impl Line for WorkerLine {
    fn parse_line(line: &str) -> Result<Self> {
        Self::parse(line)
    }
}

/// Runs the benchmark; the exit code is the verdict.
pub(crate) fn run(args: &LiveArgs) -> ExitCode {
    match run_checked(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: live: the run is invalid: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_checked(args: &LiveArgs) -> Result<ExitCode> {
    let mut overrides = args.overrides.clone();
    overrides.extend(args.rate.map(|r| format!("rate_per_s={r}")));
    overrides.extend(args.duration_s.map(|d| format!("duration_s={d}")));
    let scenario = Scenario::load(&args.scenario, &overrides)?;
    let slo = Slo::parse(args.slo.as_deref().unwrap_or(&scenario.slo)).context("--slo")?;
    for t in &args.target {
        Target::websocket(t)?; // fail here, not in every worker
    }
    let source_ips = SourceIps::parse(&args.source_ips)?;
    Minter::from_file(&args.jwt_secret_file)?; // fail here, not in every worker
    let plan = Plan::new(&scenario);
    let workers = args.workers.unwrap_or_else(|| {
        scenario
            .devices()
            .div_ceil(DEVICES_PER_WORKER_DEFAULT)
            .max(1) as u32
    });
    let shares = plan.shares(workers)?;
    check_fd_limit(&shares)?;
    std::fs::create_dir_all(&args.report)
        .with_context(|| format!("creating {}", args.report.display()))?;
    let resolved = args.report.join("scenario.toml");
    std::fs::write(&resolved, toml::to_string(&scenario)?)
        .with_context(|| format!("writing {}", resolved.display()))?;
    let arg_lists: Vec<Vec<String>> = (0..workers)
        .map(|w| worker_args(args, &resolved, &source_ips, w, workers))
        .collect();
    let started = std::time::SystemTime::now();
    let mut fleet = Fleet::<WorkerLine>::spawn(&arg_lists)?;
    let mut merge = Merge::new(workers as usize, plan.groups.len());
    let mut progress = Progress::new(scenario.devices());
    let invalid = phases(&scenario, &mut fleet, &mut merge, &mut progress)?;
    fleet.release();
    progress.done();
    let run = Run {
        scenario: &scenario,
        slo: &slo,
        targets: &args.target,
        workers,
        source_ips: source_ips.len(),
        started,
        merge: &merge,
        invalid,
    };
    let report = report::build(&run);
    output::write_all(&args.report, &report, &merge)?;
    println!("{}", report.summary());
    eprintln!("loadgen: report in {}", args.report.display());
    Ok(ExitCode::from(report.exit_code))
}

/// The run's phases (see the module doc); returns the reasons the run is invalid, if any.
fn phases(
    s: &Scenario,
    fleet: &mut Fleet<WorkerLine>,
    merge: &mut Merge,
    progress: &mut Progress,
) -> Result<Vec<Invalid>> {
    let mut invalid = Vec::new();
    let secs = Duration::from_secs_f64;
    pump(fleet, merge, progress, READY_TIMEOUT, "ready")?;
    progress.phase("connecting");
    fleet.tell_all(&Command::Connect.to_string())?;
    let connect_time = secs(s.ramp_up_s) + PHASE_SLACK;
    pump(fleet, merge, progress, connect_time, "connected")?;
    if merge.connected_failed > 0 {
        invalid.push(Invalid::Unreachable {
            failed: merge.connected_failed,
            reasons: merge.connect_failures(),
        });
        return Ok(invalid);
    }
    progress.phase("setup");
    fleet.tell_all(&Command::Setup.to_string())?;
    pump(fleet, merge, progress, PHASE_SLACK, "setup")?;
    if !merge.groups.complete() {
        invalid.push(Invalid::Setup);
        return Ok(invalid);
    }
    let chats: Vec<String> = merge
        .groups
        .iter()
        .map(|(group, id)| Command::Chat { group, id }.to_string())
        .collect();
    fleet.tell_all_lines(&chats)?;
    let t0 = clock::now_ns() + GO_LEAD.as_nanos() as u64;
    fleet.tell_all(&Command::Go { t0_ns: t0 }.to_string())?;
    progress.phase("load");
    let run_time = secs(s.warmup_s + s.duration_s) + PHASE_SLACK + GO_LEAD;
    pump(fleet, merge, progress, run_time, "drained")?;
    progress.phase("grace");
    let grace_end = Instant::now() + secs(s.grace_s);
    while let Some(message) = fleet.next(grace_end) {
        take(merge, progress, message, "grace")?;
    }
    fleet.tell_all(&Command::Finish.to_string())?;
    pump(fleet, merge, progress, PHASE_SLACK, "final")?;
    progress.phase("checking");
    let expect: Vec<String> = merge.expect.iter().map(ToString::to_string).collect();
    fleet.tell_all_lines(&expect)?;
    fleet.tell_all(&Command::Check.to_string())?;
    pump(fleet, merge, progress, PHASE_SLACK, "checked")?;
    Ok(invalid)
}

/// Applies worker lines until every worker reached `stage`, or fails at `timeout`.
fn pump(
    fleet: &Fleet<WorkerLine>,
    merge: &mut Merge,
    progress: &mut Progress,
    timeout: Duration,
    stage: &str,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !merge.all(stage) {
        ensure!(
            Instant::now() < deadline,
            "workers did not reach {stage} within {timeout:?} (is the target reachable?)"
        );
        let tick = (Instant::now() + Duration::from_millis(250)).min(deadline);
        match fleet.next(tick) {
            Some(message) => take(merge, progress, message, stage)?,
            None => progress.redraw(merge),
        }
    }
    Ok(())
}

fn take(
    merge: &mut Merge,
    progress: &mut Progress,
    (index, message): (usize, Message<WorkerLine>),
    stage: &str,
) -> Result<()> {
    match message {
        Message::Line(line) => {
            let tick = matches!(line, WorkerLine::Tick(_));
            merge.apply(index, line)?;
            if tick {
                progress.redraw(merge);
            }
            Ok(())
        }
        Message::Garbled(line) => bail!("worker {index} said {line:?}"),
        Message::Gone => bail!("worker {index} exited before {stage} (its stderr is above)"),
    }
}

/// Each worker inherits our hard limit; refuse a split that cannot fit before starting any.
fn check_fd_limit(shares: &[(u32, u32)]) -> Result<()> {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    let largest = shares
        .iter()
        .map(|&(_, count)| u64::from(count))
        .max()
        .unwrap_or(0);
    if let Some(hard) = hard {
        let fits = hard.saturating_sub(worker::FDS_RESERVED);
        ensure!(
            largest <= fits,
            "a worker would hold {largest} connections but a process may open at most \
             {fits} here (hard limit {hard}); pass more --workers"
        );
    }
    Ok(())
}

fn worker_args(
    args: &LiveArgs,
    scenario: &std::path::Path,
    ips: &SourceIps,
    worker: u32,
    workers: u32,
) -> Vec<String> {
    let mut out = vec!["live-worker".to_owned()];
    let mut flag = |name: &str, value: String| {
        out.push(name.to_owned());
        out.push(value);
    };
    flag("--scenario", scenario.display().to_string());
    flag("--worker", worker.to_string());
    flag("--workers", workers.to_string());
    for t in &args.target {
        flag("--target", t.clone());
    }
    flag("--source-ips", ips.to_arg());
    flag(
        "--jwt-secret-file",
        args.jwt_secret_file.display().to_string(),
    );
    flag("--token-ttl-s", args.token_ttl_s.to_string());
    flag("--connect-timeout-ms", args.connect_timeout_ms.to_string());
    out
}
