//! One `loadgen idle` worker process: the hidden `idle-worker` subcommand.
//!
//! Owns its share of the connections for the life of the process: raises its own open-files
//! limit, mints every token before the ramp (so signing is not timed), waits for the
//! coordinator's `go`, runs the ramp ([`crate::idle::connect`]), then hands the connections to
//! the [`Keeper`] and stays until its stdin closes. Talks to the coordinator only through
//! [`WorkerLine`]s on stdout; diagnostics go to stderr.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::idle::connect::{Plan, ramp};
use crate::idle::keeper::Keeper;
use crate::idle::protocol::{GO, WorkerLine};
use crate::jwt::Minter;
use crate::source_ips::SourceIps;
use crate::target::Target;

/// File descriptors a worker needs besides its connections: stdio, epoll, the binary, slack.
pub(crate) const FDS_RESERVED: u64 = 64;

/// Arguments of the hidden `idle-worker` subcommand (the coordinator writes them).
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// `ws://IP:PORT/path` of the gateway.
    #[arg(long)]
    pub(crate) target: String,
    /// HS256 secret file.
    #[arg(long)]
    pub(crate) jwt_secret_file: PathBuf,
    /// Global index of this worker's first connection.
    #[arg(long)]
    pub(crate) first_index: u64,
    /// Connections this worker opens.
    #[arg(long)]
    pub(crate) count: u64,
    /// User id of global connection 0; connection `i` is user `user_base + i`, device 1.
    #[arg(long)]
    pub(crate) user_base: u64,
    /// Source addresses, comma-separated; connection `i` binds `ips[i % len]`.
    #[arg(long)]
    pub(crate) source_ips: String,
    /// Threads doing blocking handshakes.
    #[arg(long)]
    pub(crate) threads: usize,
    /// Token lifetime in seconds.
    #[arg(long)]
    pub(crate) token_ttl_s: u64,
    /// Per-connection handshake timeout in milliseconds.
    #[arg(long)]
    pub(crate) handshake_timeout_ms: u64,
}

/// Writes one protocol line to stdout (line-buffered, so the coordinator sees it at once).
pub(crate) fn say(line: &WorkerLine) {
    let mut out = std::io::stdout().lock();
    // If the coordinator is gone there is nobody to tell; stdin EOF will end this process.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// The worker's main.
pub(crate) fn run(args: &WorkerArgs) -> Result<()> {
    crate::kernel::raise_fd_limit(args.count, FDS_RESERVED)?;
    let plan = Plan {
        target: Target::websocket(&args.target)?,
        source_ips: SourceIps::parse(&args.source_ips)?,
        first_index: args.first_index,
        tokens: mint_tokens(args)?,
        threads: args.threads.max(1),
        handshake_timeout: std::time::Duration::from_millis(args.handshake_timeout_ms),
    };
    say(&WorkerLine::Ready);
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .context("reading the coordinator's go")?;
    if line.trim() != GO {
        bail!(
            "expected {GO:?} from the coordinator, got {:?}",
            line.trim()
        );
    }
    drop(stdin);
    let cpu_at_go_ms = crate::kernel::self_cpu_ms()?;
    std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(exit_on_stdin_eof)?;

    let keeper = Keeper::new(plan.tokens.len())?;
    let (handoff_tx, handoff_rx) = mpsc::channel();
    let keeper_thread = std::thread::Builder::new()
        .name("keeper".into())
        .spawn(move || keeper.run(&handoff_rx))?;
    ramp(&plan, &handoff_tx, cpu_at_go_ms)?;
    drop(handoff_tx);
    // The keeper runs until the process exits; it returns only on an epoll failure.
    match keeper_thread.join() {
        Ok(result) => result.context("idle keeper"),
        Err(_) => bail!("idle keeper panicked"),
    }
}

fn mint_tokens(args: &WorkerArgs) -> Result<Vec<String>> {
    let minter = Minter::from_file(&args.jwt_secret_file)?;
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?;
    let exp = now_s.as_secs() + args.token_ttl_s;
    (0..args.count)
        .map(|i| {
            let global = args.first_index + i;
            let user = args
                .user_base
                .checked_add(global)
                .context("user id overflow")?;
            minter.mint(user, 1, exp)
        })
        .collect()
}

/// The coordinator closes our stdin to end the benchmark: exit, closing every socket at once.
fn exit_on_stdin_eof() {
    let mut sink = String::new();
    let mut stdin = std::io::stdin().lock();
    while matches!(stdin.read_line(&mut sink), Ok(n) if n > 0) {
        sink.clear();
    }
    std::process::exit(0);
}
