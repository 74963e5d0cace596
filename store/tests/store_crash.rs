//! Crash safety of the whole embedded store under SIGKILL: a helper process
//! (`store-crash-harness`) sends messages from two threads through `Store::write` and prints
//! every acknowledgement; the test kills it at a seeded random moment, restarts it on the same
//! directory (replaying the log into the index) three times, then opens the store itself and
//! checks that every acknowledged message is present exactly once at its seq, that every
//! chat's log is gap-free from 1 to its head, and that every idempotency key answers with its
//! message's seq.
//!
//! Runs 50 seeds by default; `SWITCHBOARD_CRASH_RUNS=n` for more, `SWITCHBOARD_CRASH_SEED=s`
//! to start from another seed (a failure names its seed).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_lite::future::block_on;
use rand::{Rng, SeedableRng, rngs::StdRng};
use store::Store;
use store::embedded::{EmbeddedOptions, EmbeddedStore};
use store::model::Entry;
use wire::ids::{ChatId, DeviceId, UserId};

const HARNESS: &str = env!("CARGO_BIN_EXE_store-crash-harness");

#[test]
fn acknowledged_messages_survive_sigkill_exactly_once_and_gap_free() {
    let runs = env_u64("SWITCHBOARD_CRASH_RUNS", 50);
    let first_seed = env_u64("SWITCHBOARD_CRASH_SEED", 0x5EED);
    let (mut total_acks, mut replayed) = (0, 0);
    for seed in first_seed..first_seed + runs {
        match crash_run(seed) {
            Ok((acks, r)) => {
                total_acks += acks;
                replayed += r;
            }
            Err(why) => panic!(
                "store crash run failed; reproduce with SWITCHBOARD_CRASH_SEED={seed} \
                 SWITCHBOARD_CRASH_RUNS=1: {why}"
            ),
        }
    }
    println!(
        "{runs} store crash runs, {total_acks} acked messages checked, {replayed} log records replayed at restarts"
    );
    assert!(total_acks > 0, "the harness acknowledged nothing");
}

type Ack = (ChatId, u64, u64);

fn crash_run(seed: u64) -> Result<(usize, u64), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut acked = Vec::new();
    let mut replayed = 0;
    for round in 1..=3 {
        let delay = Duration::from_millis(rng.random_range(20..=250));
        let (acks, r) = run_and_kill(dir.path(), round, delay)?;
        acked.extend(acks);
        replayed += r;
    }
    check(dir.path(), &acked)?;
    Ok((acked.len(), replayed))
}

fn run_and_kill(dir: &Path, round: u64, delay: Duration) -> Result<(Vec<Ack>, u64), String> {
    let mut child = Command::new(HARNESS)
        .arg(dir)
        .arg(round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawning {HARNESS}: {e}"))?;
    std::thread::sleep(delay);
    child.kill().map_err(|e| format!("SIGKILL: {e}"))?;
    let mut out = String::new();
    let stdout = child.stdout.as_mut().ok_or("no stdout")?;
    stdout.read_to_string(&mut out).map_err(|e| e.to_string())?;
    child.wait().map_err(|e| e.to_string())?;
    let mut acked = Vec::new();
    let mut replayed = 0;
    for line in out.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["ack", chat, seq, id] => {
                let bytes = hex::decode(chat).map_err(|_| format!("bad line {line:?}"))?;
                let bytes: [u8; 16] = bytes.try_into().map_err(|_| format!("bad {line:?}"))?;
                let chat = ChatId::from_bytes(bytes).ok_or(format!("bad chat {line:?}"))?;
                let seq = seq.parse().map_err(|_| format!("bad line {line:?}"))?;
                let id = id.parse().map_err(|_| format!("bad line {line:?}"))?;
                acked.push((chat, seq, id));
            }
            ["open", r, _] => replayed = r.parse().map_err(|_| format!("bad {line:?}"))?,
            // A partial last line was being written when the process died.
            ["ack" | "open", ..] => {}
            _ => return Err(format!("harness round {round} said {line:?}")),
        }
    }
    Ok((acked, replayed))
}

fn check(dir: &Path, acked: &[Ack]) -> Result<(), String> {
    let store = EmbeddedStore::open(dir, EmbeddedOptions::default()).map_err(|e| e.to_string())?;
    let device = DeviceId::new(1).ok_or("device")?;
    let mut chats: Vec<ChatId> = Vec::new();
    for t in 0..2 {
        for p in 1..=5 {
            let me = UserId::new(100 + t).ok_or("user")?;
            chats.push(ChatId::direct(me, UserId::new(p).ok_or("user")?));
        }
    }
    let mut logs: HashMap<ChatId, HashMap<u64, u64>> = HashMap::new();
    for &chat in &chats {
        let Some(state) = block_on(store.chat(chat)).map_err(|e| e.to_string())? else {
            continue;
        };
        let page =
            block_on(store.read_log(chat, 0, state.head, usize::MAX)).map_err(|e| e.to_string())?;
        let seqs: Vec<u64> = page.entries.iter().map(|(s, _)| *s).collect();
        if seqs != (1..=state.head).collect::<Vec<_>>() {
            return Err(format!("{chat:?}: log is not 1..={}: {seqs:?}", state.head));
        }
        let mut ids = HashSet::new();
        let mut by_seq = HashMap::new();
        for (seq, entry) in page.entries {
            let Entry::Message(m) = entry else {
                return Err(format!("{chat:?} seq {seq}: not a message"));
            };
            if !ids.insert(m.client_msg_id) {
                return Err(format!("{chat:?}: id {} twice", m.client_msg_id));
            }
            if m.body != format!("m{}", m.client_msg_id).into_bytes() {
                return Err(format!("{chat:?} seq {seq}: wrong body"));
            }
            let sent = block_on(store.sent(m.sender, device, m.client_msg_id))
                .map_err(|e| e.to_string())?;
            if sent.map(|s| (s.chat, s.seq)) != Some((chat, seq)) {
                return Err(format!("{chat:?} seq {seq}: idempotency answer {sent:?}"));
            }
            by_seq.insert(seq, m.client_msg_id);
        }
        logs.insert(chat, by_seq);
    }
    for (chat, seq, id) in acked {
        let found = logs.get(chat).and_then(|log| log.get(seq));
        if found != Some(id) {
            return Err(format!(
                "acked message {id} at {chat:?} seq {seq} is missing (found {found:?})"
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
