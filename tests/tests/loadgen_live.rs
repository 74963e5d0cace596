//! `loadgen live` end to end (issue 7): the real `loadgen` binary (coordinator and worker
//! processes) against a real `switchboard serve`.
//!
//! - The `smoke` preset (300 connections, groups, a churn event, a few seconds) passes its
//!   SLO and ledger (exit 0), and every report file exists and parses.
//! - An objective the run cannot meet fails it (exit 1), with the ledger still clean.
//! - A target nobody listens on makes the run invalid (exit 2), not failed.
//!
//! The ledger's fault detection and the absence of coordinated omission are proven inside
//! `loadgen` against fakes (`loadgen/src/live/ledger_tests.rs`, `fake_gateway.rs`).
//! Binaries: `$LOADGEN_BIN` / `$SWITCHBOARD_BIN`, else next to this test's profile directory
//! (`scripts/test` builds every binary first).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use switchboard_tests::gateway::{self, Gateway};
use switchboard_tests::repo_root;

/// Longest a run may take here (a debug build on a busy 2-core machine).
const RUN_TIMEOUT: Duration = Duration::from_mins(2);

/// One run at a time: a run measures its own lateness and latency, and two at once on two
/// cores (with two gateways) would measure each other.
static ONE_RUN: Mutex<()> = Mutex::new(());

fn one_run() -> MutexGuard<'static, ()> {
    ONE_RUN.lock().unwrap_or_else(PoisonError::into_inner)
}

fn loadgen_bin() -> PathBuf {
    switchboard_tests::gateway::workspace_bin("loadgen", "LOADGEN_BIN")
}

/// `loadgen live` with the smoke preset against `target`, report in `report`.
fn live(target: &str, secret: &Path, report: &Path, extra: &[&str]) -> Output {
    let scenario = repo_root().join("loadgen/scenarios/smoke.toml");
    let mut cmd = Command::new(loadgen_bin());
    cmd.arg("live")
        .args(["--target", target])
        .arg("--scenario")
        .arg(scenario)
        .arg("--jwt-secret-file")
        .arg(secret)
        .arg("--report")
        .arg(report)
        .args(extra);
    gateway::output_within(&mut cmd, RUN_TIMEOUT)
}

/// `loadgen live` with the smoke preset against `gw`, with its development JWT secret.
fn live_against(gw: &Gateway, report: &Path, extra: &[&str]) -> Output {
    let target = format!("ws://{}/ws", gw.ws);
    live(&target, &gw.data_dir().join("dev-jwt.key"), report, extra)
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Checks an HdrHistogram interval log: header comments, then `start,length,max,base64`
/// lines (optionally `Tag=…,` first) whose histogram is valid base64 of a V2 compressed
/// histogram (cookie 0x1c849314). Returns the number of histograms.
fn check_hlog(path: &Path) -> usize {
    let log = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        log.contains("#[BaseTime: "),
        "{} lacks BaseTime:\n{log}",
        path.display()
    );
    let mut histograms = 0;
    for line in log
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("\"StartTimestamp"))
    {
        let fields: Vec<&str> = line.split(',').collect();
        let fields = match fields.first() {
            Some(tag) if tag.starts_with("Tag=") => &fields[1..],
            _ => &fields[..],
        };
        assert_eq!(fields.len(), 4, "{}: bad line {line:?}", path.display());
        for number in &fields[..3] {
            number
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{line:?}: {number:?}"));
        }
        let bytes = BASE64.decode(fields[3]).expect("base64 histogram");
        assert_eq!(
            bytes[..4],
            [0x1c, 0x84, 0x93, 0x14],
            "V2 compressed cookie in {line:?}"
        );
        histograms += 1;
    }
    histograms
}

#[test]
fn smoke_passes_its_slo_and_ledger_and_writes_every_report_file() {
    let _one = one_run();
    let gw = Gateway::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("report");
    let out = live_against(&gw, &report, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "smoke must pass: {}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("verdict: PASS (exit 0)"), "{stdout}");

    let r = json(&report.join("report.json"));
    assert_eq!(r["verdict"], "pass");
    assert_eq!(r["scenario"]["name"], "smoke");
    assert_eq!(r["devices_connected"], 300);
    let ledger = &r["ledger"]["total"];
    for fault in ["lost", "dup", "order", "phantom"] {
        assert_eq!(ledger[fault], 0, "{fault}: {ledger}");
    }
    let delivered = ledger["delivered"].as_u64().expect("a count");
    let e2e = r["latency_us"]["e2e"]["count"].as_u64().expect("a count");
    assert!(
        e2e > 1_000 && delivered >= e2e,
        "{delivered} delivered, {e2e} timed"
    );
    assert!(
        r["counts"]["catchup_deliveries"].as_u64() > Some(0),
        "churned devices synced"
    );
    let storm = &r["churn_events"][0];
    assert!(
        storm["devices"].as_u64() > Some(0) && storm["all_synced_s"].is_f64(),
        "{storm}"
    );
    assert!(
        r["checks"].as_array().is_some_and(|c| c.len() == 6),
        "{}",
        r["checks"]
    );
    assert!(r["timeline"].as_array().is_some_and(|t| t.len() >= 5));
    assert!(r["host"]["cpus"].as_u64() > Some(0));

    let summary = std::fs::read_to_string(report.join("summary.txt")).expect("summary.txt");
    assert!(summary.contains("verdict: PASS") && summary.contains("ledger: delivered"));
    assert!(check_hlog(&report.join("e2e.hlog")) >= 5);
    assert!(check_hlog(&report.join("sent.hlog")) >= 5);
    assert_eq!(check_hlog(&report.join("final.hlog")), 5, "one per metric");
    let html = std::fs::read_to_string(report.join("report.html")).expect("report.html");
    assert_eq!(html.matches("<svg").count(), 3, "three plots");
    assert!(!html.contains("plot not drawn"));
    let calibration = json(&report.join("calibration.json"));
    assert!(
        calibration["send_ack_us"]["p50"].as_u64() > Some(0),
        "{calibration}"
    );
    assert!(calibration["fanout"].as_f64() > Some(1.0), "{calibration}");
    // The resolved scenario is kept with the report.
    assert!(report.join("scenario.toml").is_file());
}

#[test]
fn an_objective_the_run_cannot_meet_fails_it() {
    let _one = one_run();
    let gw = Gateway::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("report");
    let short = [
        "--set",
        "users=20",
        "--set",
        "groups.count=2",
        "--set",
        "rate_per_s=40",
        "--set",
        "ramp_up_s=0.5",
        "--duration-s",
        "1",
        "--set",
        "churn.events=[]",
        "--slo",
        "p50<=1us,loss=0",
    ];
    let out = live_against(&gw, &report, &short);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = json(&report.join("report.json"));
    assert_eq!(r["verdict"], "fail");
    assert_eq!(r["checks"][0]["pass"], false, "{}", r["checks"]);
    assert_eq!(
        r["checks"][1]["pass"], true,
        "the ledger still holds: {}",
        r["checks"]
    );
}

#[test]
fn an_unreachable_target_makes_the_run_invalid() {
    let _one = one_run();
    // A port that was just free: nobody listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("key");
    std::fs::write(&key, b"0123456789abcdef0123456789abcdef").expect("key file");
    let report = dir.path().join("report");
    let target = format!("ws://127.0.0.1:{port}/ws");
    let out = live(&target, &key, &report, &["--set", "ramp_up_s=0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let r = json(&report.join("report.json"));
    assert_eq!(r["verdict"], "invalid");
    let reasons = r["invalid_reasons"].to_string();
    assert!(reasons.contains("target unreachable"), "{reasons}");
}
