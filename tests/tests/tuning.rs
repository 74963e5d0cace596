//! The host tuning kit (`tuning/check`, `tuning/apply`) in the test suite.
//!
//! `tests/tuning/test_tuning.py` (Python `unittest`) drives both scripts against fake host trees
//! (`--root`): the PASS/FAIL logic of every item, dry runs that change nothing, apply then undo
//! restoring files byte for byte, a second apply changing nothing. The tests here run that suite,
//! then `tuning/check` once against the real host, asserting only what holds on any host: it
//! runs, it prints one verdict matching its exit code, and a million connections in one process
//! fail on a host whose hard fd limit is below that (this machine's is 20,000).

use std::process::{Command, Output};

use switchboard_tests::{python, repo_root};

fn describe(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `tuning/check` (as an executable, through its shebang) against the real host.
fn check_real_host(conns: u32) -> (i32, String, Output) {
    let out = Command::new(repo_root().join("tuning/check"))
        .args(["--conns", &conns.to_string()])
        .output()
        .expect("tuning/check starts (executable, #!/usr/bin/env python3)");
    let code = out
        .status
        .code()
        .expect("tuning/check exits, not killed by a signal");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (code, stdout, out)
}

/// The table line of one item, e.g. `nofile (ulimit -n)   >= 20,000   soft …   PASS`.
fn item_line<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no `{name}` item in:\n{stdout}"))
}

#[test]
fn the_python_suite_of_the_tuning_kit_passes() {
    let out = Command::new(python())
        .args(["-m", "unittest", "discover", "-s", "tests/tuning", "-v"])
        .current_dir(repo_root())
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "tests/tuning failed: {}",
        describe(&out)
    );
}

#[test]
fn check_reports_this_host_for_19000_connections() {
    let (code, stdout, out) = check_real_host(19_000);
    assert!(
        code == 0 || code == 1,
        "unexpected exit: {}",
        describe(&out)
    );
    let verdict = if code == 0 {
        "verdict: PASS"
    } else {
        "verdict: FAIL"
    };
    assert!(
        stdout.contains(verdict),
        "exit {code} without `{verdict}`: {}",
        describe(&out)
    );
    let fd = item_line(&stdout, "nofile (ulimit -n)");
    // With this machine's hard limit, 19,000 connections plus the 1,000 reserve fit exactly,
    // as the gateway benchmark (scripts/bench-idle 19000) found.
    if fd.contains("soft 20,000, hard 20,000") {
        assert!(fd.trim_end().ends_with("PASS"), "{fd}");
    }
}

#[test]
fn check_fails_a_million_connections_and_explains_the_fd_limit() {
    let (code, stdout, out) = check_real_host(1_000_000);
    assert_eq!(code, 1, "a million connections passed: {}", describe(&out));
    assert!(stdout.contains("verdict: FAIL"), "{}", describe(&out));
    let fd = item_line(&stdout, "nofile (ulimit -n)");
    if fd.contains("hard 20,000") {
        assert!(fd.trim_end().ends_with("FAIL"), "{fd}");
        assert!(
            stdout.contains("the hard limit 20,000 is below the need")
                && stdout.contains("at most 19,000 connections per process"),
            "the fd item does not explain the 20,000 limit:\n{stdout}"
        );
    }
}
