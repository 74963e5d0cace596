//! Crash safety under SIGKILL: a helper process (`log-crash-harness`) appends from two
//! threads and prints every acknowledgement; the test kills it at a seeded random moment,
//! starts it again on the same log (recovering the tail), kills it again, then checks that
//! every acknowledged record is present exactly once at its LSN, in each producer's order.
//!
//! Runs 50 seeds by default; `SWITCHBOARD_CRASH_RUNS=n` for more, `SWITCHBOARD_CRASH_SEED=s`
//! to start from another seed. A failure names its seed, and that seed reproduces the kill
//! delays (the process's timing does not repeat exactly, of course).

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use store::log::{LogOptions, Lsn};

use common::replay_all;

const HARNESS: &str = env!("CARGO_BIN_EXE_log-crash-harness");

/// Restarts that found (and cut) a torn tail, for the summary line.
static TAILS_CUT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn acknowledged_records_survive_sigkill() {
    let runs = env_u64("SWITCHBOARD_CRASH_RUNS", 50);
    let first_seed = env_u64("SWITCHBOARD_CRASH_SEED", 0x5EED);
    let mut total_acks = 0;
    for seed in first_seed..first_seed + runs {
        match crash_run(seed) {
            Ok(acks) => total_acks += acks,
            Err(why) => panic!(
                "crash run failed; reproduce with SWITCHBOARD_CRASH_SEED={seed} \
                                SWITCHBOARD_CRASH_RUNS=1: {why}"
            ),
        }
    }
    let tails_cut = TAILS_CUT.load(std::sync::atomic::Ordering::Relaxed);
    println!("{runs} crash runs, {total_acks} acks checked, {tails_cut} restarts cut a torn tail");
    assert!(
        total_acks > 0,
        "the harness acknowledged nothing in {runs} runs"
    );
}

/// Two kill-and-restart rounds on one log; returns how many acknowledgements were checked.
fn crash_run(seed: u64) -> Result<usize, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut acked = Vec::new();
    for round in ["a", "b"] {
        let delay = Duration::from_millis(rng.random_range(10..=200));
        acked.extend(run_and_kill(dir.path(), round, delay)?);
    }
    check(dir.path(), &acked)?;
    Ok(acked.len())
}

/// Starts the harness, SIGKILLs it after `delay`, and returns the `(lsn, id)` it acked.
fn run_and_kill(dir: &Path, tag: &str, delay: Duration) -> Result<Vec<(Lsn, String)>, String> {
    let mut child = Command::new(HARNESS)
        .arg(dir)
        .arg(tag)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawning {HARNESS}: {e}"))?;
    std::thread::sleep(delay);
    child.kill().map_err(|e| format!("SIGKILL: {e}"))?; // std sends SIGKILL on Unix.
    let mut out = String::new();
    let stdout = child.stdout.as_mut().ok_or("no stdout")?;
    stdout.read_to_string(&mut out).map_err(|e| e.to_string())?;
    child.wait().map_err(|e| e.to_string())?;
    let mut acked = Vec::new();
    for line in out.lines() {
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some("ack"), Some(lsn), Some(id)) => {
                let lsn = lsn.parse().map_err(|_| format!("bad line {line:?}"))?;
                acked.push((lsn, id.to_owned()));
            }
            // A partial last line was being written when the process died: not acked output.
            (Some("open"), Some(_), Some(dropped)) if dropped != "0" => {
                TAILS_CUT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (Some("ack" | "open"), ..) => {}
            _ => return Err(format!("harness {tag} said {line:?}")),
        }
    }
    Ok(acked)
}

/// Every acked id is at its LSN; no id appears twice; each producer's ids rise with LSN.
fn check(dir: &Path, acked: &[(Lsn, String)]) -> Result<(), String> {
    let records = replay_all(dir, LogOptions::default());
    for (i, (lsn, _)) in records.iter().enumerate() {
        if *lsn != i as Lsn {
            return Err(format!("replay gave LSN {lsn} at position {i}"));
        }
    }
    let mut last_per_producer: HashMap<&str, u64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for (lsn, payload) in &records {
        let id = std::str::from_utf8(payload).map_err(|_| format!("LSN {lsn}: not utf-8"))?;
        if !seen.insert(id) {
            return Err(format!("{id} appears twice (again at LSN {lsn})"));
        }
        let (producer, n) = id
            .rsplit_once('-')
            .ok_or(format!("LSN {lsn}: bad id {id}"))?;
        let n: u64 = n.parse().map_err(|_| format!("LSN {lsn}: bad id {id}"))?;
        if last_per_producer
            .insert(producer, n)
            .is_some_and(|last| last >= n)
        {
            return Err(format!("{id} at LSN {lsn} is out of its producer's order"));
        }
    }
    for (lsn, id) in acked {
        let found = records.get(usize::try_from(*lsn).map_err(|e| e.to_string())?);
        if found.map(|(_, p)| p.as_slice()) != Some(id.as_bytes()) {
            return Err(format!(
                "acked {id} at LSN {lsn} is missing (log has {})",
                records.len()
            ));
        }
    }
    Ok(())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
