//! One `loadgen live` worker process: the hidden `live-worker` subcommand.
//!
//! Owns the process around an [`Engine`]: reads the resolved scenario the coordinator wrote,
//! computes the same plan, raises its open-files limit, mints its devices' tokens before
//! anything is timed, says `ready`, then runs the engine with commands from stdin (read by a
//! thread into a channel) and lines to stdout. Exits when stdin closes. Diagnostics go to
//! stderr; stdout carries only protocol lines.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;

use crate::jwt::Minter;
use crate::live::engine::{Engine, Setup};
use crate::live::plan::Plan;
use crate::live::protocol::{Command, WorkerLine};
use crate::live::scenario::Scenario;
use crate::source_ips::SourceIps;
use crate::target::Target;

/// File descriptors a worker needs besides its connections: stdio, epoll, slack.
pub(crate) const FDS_RESERVED: u64 = 64;

/// Arguments of the hidden `live-worker` subcommand (the coordinator writes them).
#[derive(Debug, Args)]
pub(crate) struct LiveWorkerArgs {
    /// The resolved scenario (overrides applied).
    #[arg(long)]
    pub(crate) scenario: PathBuf,
    /// This worker's number, `0..workers`.
    #[arg(long)]
    pub(crate) worker: u32,
    #[arg(long)]
    pub(crate) workers: u32,
    /// Gateways, `ws://IP:PORT/ws`; device `g` uses `target[g % len]`.
    #[arg(long, required = true)]
    pub(crate) target: Vec<String>,
    /// Source addresses, comma-separated.
    #[arg(long)]
    pub(crate) source_ips: String,
    #[arg(long)]
    pub(crate) jwt_secret_file: PathBuf,
    #[arg(long)]
    pub(crate) token_ttl_s: u64,
    #[arg(long)]
    pub(crate) connect_timeout_ms: u64,
}

/// Writes one protocol line to stdout (flushed, so the coordinator sees it at once).
fn say(line: &WorkerLine) {
    let mut out = std::io::stdout().lock();
    // If the coordinator is gone there is nobody to tell; stdin EOF ends this process.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// The worker's main.
pub(crate) fn run(args: &LiveWorkerArgs) -> Result<()> {
    let scenario = Scenario::load(&args.scenario, &[])?;
    let plan = Plan::new(&scenario);
    let shares = plan.shares(args.workers)?;
    let &(first, count) = shares
        .get(args.worker as usize)
        .context("worker number out of range")?;
    crate::kernel::raise_fd_limit(u64::from(count), FDS_RESERVED)?;
    let targets = args
        .target
        .iter()
        .map(|t| Target::websocket(t))
        .collect::<Result<Vec<_>>>()?;
    let tokens = mint_tokens(args, &plan, first, count)?;
    let setup = Setup {
        scenario,
        plan,
        worker: args.worker,
        workers: args.workers,
        first,
        tokens,
        targets,
        source_ips: SourceIps::parse(&args.source_ips)?,
        limits: wire::Limits::default(),
        connect_timeout_ns: args.connect_timeout_ms * 1_000_000,
    };
    let mut engine = Engine::new(setup)?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                match Command::parse(&line) {
                    Ok(command) => {
                        if tx.send(command).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        eprintln!("loadgen live-worker: bad command {line:?}: {e:#}");
                        return; // dropping the sender ends the engine
                    }
                }
            }
        })?;
    say(&WorkerLine::Ready);
    engine.run(&rx, &mut |line| say(&line))
}

fn mint_tokens(args: &LiveWorkerArgs, plan: &Plan, first: u32, count: u32) -> Result<Vec<String>> {
    let minter = Minter::from_file(&args.jwt_secret_file)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?;
    let exp = now.as_secs() + args.token_ttl_s;
    (first..first + count)
        .map(|g| {
            let user = plan.user_id(plan.user_of(g)).get();
            minter.mint(user, plan.device_id(g).get(), exp)
        })
        .collect()
}
