//! `loadgen`: switchboard's load generator (not built yet; DESIGN.md §4, issue "loadgen live").
//!
//! This binary will own `loadgen live` (real WebSocket clients over several worker processes and
//! source addresses, open-loop arrivals, HdrHistogram latency from the intended send time, a
//! loss/duplicate/order ledger and an SLO verdict) and `loadgen simulate` (a calibrated model of
//! a 200M-user fleet). It is a client: it depends on `wire` only, never on the gateway's crates.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("loadgen: not built yet (see docs/ARCHITECTURE.md)");
    ExitCode::from(2)
}
