//! `switchboard`: the chat connection gateway's command line (`serve`, `config`, `token`).

use clap::{Args, Parser, Subcommand};
use gateway::{auth, config, server};
use serde::Serialize;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long memory mimalloc has freed stays mapped before it goes back to the OS, unless
/// `MIMALLOC_PURGE_DELAY` says otherwise. mimalloc's default (1 s) is shorter than the store's
/// memtable cycle under load: a sealed memtable's memory was handed back and then faulted in
/// (and zeroed, 2 MiB at a time) again by the next one, ~5-8% of the gateway's CPU in the 1:1
/// `messaging` bench (docs/OPERATIONS.md, "Memory"). 10 s is jemalloc's default decay.
const PURGE_DELAY_MS: i64 = 10_000;

/// `mi_option_purge_delay` in mimalloc 3's option enum (`libmimalloc-sys` names no constant
/// for it); the test below checks it against mimalloc's documented default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Applies [`PURGE_DELAY_MS`]; runs first in `main`, before any thread starts (mimalloc's
/// option setter is not thread-safe).
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain store into mimalloc's option table, with no other thread running.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "The switchboard chat connection gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (prints `ready ws=<addr> ops=<addr> media=<addr>` once accepting).
    Serve(Settings),
    /// Print the effective configuration (defaults, file, environment, flags) as TOML.
    Config(Settings),
    /// Mint a development token signed with the configured (or development) HS256 secret.
    Token(TokenArgs),
}

/// Flags shared by every command; each overrides the config key of the same name.
#[derive(Args, Serialize, Default)]
struct Settings {
    /// TOML configuration file.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// WebSocket listen address.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Operations HTTP listen address.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ops_listen: Option<SocketAddr>,
    /// Media HTTP listen address (the built-in blob backend).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    media_listen: Option<SocketAddr>,
    /// Blob directory of the built-in backend (default `<data_dir>/media`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    media_dir: Option<PathBuf>,
    /// Base URL clients use for the media listener (default `http://<media address>`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    media_public_url: Option<String>,
    /// HMAC key file for media URLs (default: a development key in the data dir).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    media_key_file: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// Executors (0 = every CPU).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cores: Option<usize>,
    /// Most connections in the process.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    connections_max: Option<usize>,
    /// Most bytes queued for one connection.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    send_queue_bytes_max: Option<usize>,
    /// Time allowed for the HTTP upgrade.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    handshake_timeout_ms: Option<u64>,
    /// Inbound silence before a ping.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat_interval_ms: Option<u64>,
    /// Inbound silence before closing.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout_ms: Option<u64>,
    /// Wait for the peer's close frame before closing TCP.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    close_linger_ms: Option<u64>,
    /// Spread of `GoAway` reconnect delays on drain.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_window_ms: Option<u64>,
    /// Longest drain.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_timeout_ms: Option<u64>,
    /// HS256 secret file.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt_secret_file: Option<PathBuf>,
    /// Ed25519 public key (PEM) file.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt_public_key_file: Option<PathBuf>,
    /// Clock-skew leeway on `exp`, seconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt_leeway_s: Option<u64>,
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    settings: Settings,
    /// User id (the `sub` claim), 1 ..= 2^63-1.
    #[arg(long)]
    user: u64,
    /// Device id (the `dev` claim), nonzero.
    #[arg(long)]
    device: u64,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_s: u64,
}

fn main() -> ExitCode {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk, a closed pipe) is lost,
        // never fatal: by default the layer reports it with `eprintln!`, which panics when
        // stderr fails again, and a panic aborts this process.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`: it panics (and so aborts) when stderr cannot be written.
            let _ = writeln!(std::io::stderr(), "switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    let load = |s: &Settings| config::load(s.config.as_deref(), s);
    match command {
        Command::Serve(settings) => server::serve(load(&settings)?),
        Command::Config(settings) => {
            print!("{}", load(&settings)?.to_toml());
            Ok(())
        }
        Command::Token(args) => {
            let config = load(&args.settings)?;
            let user = wire::UserId::new(args.user)
                .ok_or_else(|| anyhow::anyhow!("--user must be 1..=2^63-1"))?;
            let device = wire::DeviceId::new(args.device)
                .ok_or_else(|| anyhow::anyhow!("--device must be nonzero"))?;
            println!("{}", auth::mint(&config, user, device, args.ttl_s)?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS};

    /// The option index is the purge delay's: it reads mimalloc's documented default (1 s)
    /// until set, and what was set afterwards.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads and one store into mimalloc's option table; no test here allocates
        // concurrently in a way that reads this option's value for correctness.
        unsafe {
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1_000);
            }
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
            assert_eq!(
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                PURGE_DELAY_MS
            );
        }
    }
}
