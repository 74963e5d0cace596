//! `loadgen`: switchboard's load generator, a client that measures the gateway from outside.
//!
//! Layout:
//! - `idle` (built): memory per idle authenticated connection, and connection rate; a
//!   coordinator process and worker processes (the hidden `idle-worker` subcommand).
//! - `live` and `simulate` come later (DESIGN.md §4, issue "loadgen live"): real WebSocket
//!   clients over several workers and source addresses with open-loop arrivals, HdrHistogram
//!   latency from the intended send time, a loss/duplicate/order ledger and an SLO verdict;
//!   and a calibrated model of a 200M-user fleet.
//! - Shared client parts: [`target`] (URLs), [`source_ips`], [`jwt`] (token minting),
//!   [`handshake`] (WebSocket upgrade), [`frame`] (reading server frames), [`metrics`] (the
//!   gateway's `/metrics`), [`kernel`] (`/proc` readings).
//!
//! It is a client: it depends on `wire` only, never on the gateway's crates, so it measures
//! the system as any client would.

mod frame;
mod handshake;
mod idle;
mod jwt;
mod kernel;
mod live;
mod metrics;
mod source_ips;
mod target;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// switchboard's load generator.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Memory per idle authenticated connection (gateway RSS and kernel socket memory) and
    /// the rate at which the gateway accepts authenticated connections.
    Idle(idle::IdleArgs),
    /// One worker process of `idle` (started by the coordinator; speaks a line protocol).
    #[command(hide = true)]
    IdleWorker(idle::worker::WorkerArgs),
    /// Open-loop load from real clients with an exactly-once ledger and an SLO verdict:
    /// exit 0 when the SLO is met, 1 when not, 2 when the run itself was invalid.
    Live(live::LiveArgs),
    /// One worker process of `live` (started by the coordinator; speaks a line protocol).
    #[command(hide = true)]
    LiveWorker(live::worker::LiveWorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Idle(args) => idle::run(args),
        Command::IdleWorker(args) => idle::worker::run(args),
        Command::Live(args) => return live::run(args),
        Command::LiveWorker(args) => live::worker::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
