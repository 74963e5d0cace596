//! Proves the gateway's operations surface on a real process: `/healthz` and `/readyz` are 200
//! while running; `/metrics` is strictly valid Prometheus text with every metric the issue
//! names, and its counters and gauges move with what clients do (connections open +1/-1 summed
//! over cores, accepts, frames and bytes both ways, closes by code). `switchboard config` prints
//! the effective configuration as TOML that reads back the same, with precedence
//! flags > env > file > defaults; an invalid value exits non-zero naming its key; `serve` honours
//! the file and the environment too. The store log's sync counters move with durable sends.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use switchboard_tests::chat::{ChatClient, Event, WAIT, direct};
use switchboard_tests::gateway::{self, COMMAND_TIMEOUT, Gateway, IO_TIMEOUT};
use switchboard_tests::prom::Metrics;
use switchboard_tests::ws::op;
use wire::{ClientFrame, Encoder, Limits, Request, SetPresence};

/// Every metric the issue requires (a family with no label set yet may show as its TYPE only).
const REQUIRED: [(&str, &str); 11] = [
    ("switchboard_connections_open", "gauge"),
    ("switchboard_accepts_total", "counter"),
    ("switchboard_auth_failures_total", "counter"),
    ("switchboard_frames_in_total", "counter"),
    ("switchboard_frames_out_total", "counter"),
    ("switchboard_bytes_in_total", "counter"),
    ("switchboard_bytes_out_total", "counter"),
    ("switchboard_queue_drops_total", "counter"),
    ("switchboard_closes_total", "counter"),
    ("switchboard_accept_errors_total", "counter"),
    ("process_resident_memory_bytes", "gauge"),
];

fn set_presence(request_id: u64) -> ClientFrame<'static> {
    ClientFrame {
        request_id,
        request: Request::SetPresence(SetPresence { online: true }),
    }
}

fn open(m: &Metrics) -> f64 {
    m.sum("switchboard_connections_open")
}

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.5
}

#[test]
fn health_endpoints_are_200_while_running() {
    let gw = Gateway::start();
    for path in ["/healthz", "/readyz"] {
        let r = gw.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
}

#[test]
fn metrics_parse_and_include_every_required_metric() {
    let gw = Gateway::start();
    let mut client = gw.connect(1, 1);
    client.request(&set_presence(1), IO_TIMEOUT);
    let m = gw.metrics();
    for (name, kind) in REQUIRED {
        assert!(m.has(name), "/metrics has no {name}; types {:?}", m.types);
        let family = name.strip_suffix("_total").unwrap_or(name);
        if let Some(declared) = m.types.get(family).or_else(|| m.types.get(name)) {
            assert_eq!(declared, kind, "{name}");
        }
    }
    assert!(
        m.sum("process_resident_memory_bytes") > 1e6,
        "{}",
        m.show("process_resident_memory_bytes")
    );
    assert!(
        near(open(&m), 1.0),
        "{}",
        m.show("switchboard_connections_open")
    );
    assert!(m.sum("switchboard_accepts_total") >= 1.0);
}

/// The store log's counters (`switchboard_store_log_*`): names, types, and at least one more
/// sync (taking some time) for each durable send; and the index's backlog, a gauge that
/// returns to 0 once the sends are applied. (Segment rollovers are counted by the log's own
/// tests: a gateway test would have to write a whole segment.)
#[test]
fn store_log_sync_counters_move_with_durable_sends() {
    const SYNCS: &str = "switchboard_store_log_syncs_total";
    const SECONDS: &str = "switchboard_store_log_sync_seconds_total";
    const STALLED: &str = "switchboard_store_log_sync_stalled_seconds_total";
    const MAX: &str = "switchboard_store_log_sync_max_seconds";
    const SEGMENTS: &str = "switchboard_store_log_segments_total";
    const UNPREPARED: &str = "switchboard_store_log_segments_unprepared_total";
    const BACKLOG: &str = "switchboard_store_index_backlog_bytes";
    let gw = Gateway::start();
    let before = gw.metrics();
    for name in [SYNCS, SECONDS, STALLED, SEGMENTS, UNPREPARED] {
        assert!(before.has(name), "/metrics has no {name}");
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert_eq!(
            before.types.get(family).map(String::as_str),
            Some("counter")
        );
    }
    for gauge in [MAX, BACKLOG] {
        assert_eq!(before.types.get(gauge).map(String::as_str), Some("gauge"));
    }
    let mut alice = ChatClient::connect_fresh(&gw, 4101, 1);
    let chat = direct(4101, 4102);
    // Each send waits for its `Sent`, so each needs its own sync.
    for id in 1..=3 {
        alice.send_ok(chat, id, "durable");
    }
    let after = gw.metrics();
    assert!(
        after.sum(SYNCS) >= before.sum(SYNCS) + 3.0,
        "{}\n{}",
        before.show(SYNCS),
        after.show(SYNCS)
    );
    assert!(
        after.sum(SECONDS) > before.sum(SECONDS),
        "{}",
        after.show(SECONDS)
    );
    assert!(after.sum(STALLED) >= before.sum(STALLED));
    assert!(after.sum(MAX) > 0.0, "{}", after.show(MAX));
    let deadline = Instant::now() + WAIT;
    while gw.metrics().sum(BACKLOG) != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the index never caught up: {}",
            gw.metrics().show(BACKLOG)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (thread name, nice value) of every thread of process `pid`.
fn thread_nice(pid: u32) -> Vec<(String, i64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the gateway's threads");
    let mut threads = Vec::new();
    for task in tasks {
        let stat = std::fs::read_to_string(task.expect("a thread").path().join("stat"));
        // A thread that ended since the listing has no stat; it is not one we look for.
        let Ok(stat) = stat else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            panic!("unexpected stat: {stat}");
        };
        // After the name: state is field 3, nice is field 19.
        let nice = stat[close + 1..]
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no nice in {stat}"));
        threads.push((stat[open + 1..close].to_owned(), nice));
    }
    threads
}

#[test]
fn the_store_index_threads_yield_the_cpu_by_default() {
    // The index's flush and compaction threads run at nice 19 and the applier at 10 unless
    // configured, and the thread that frees the index's memtables always at 19; what
    // acknowledgements and deliveries wait for (executors, the log writer, readers) stays at 0.
    let gw = Gateway::start();
    let threads = thread_nice(gw.pid());
    let nice_of = |prefix: &str| -> Vec<i64> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, nice)| *nice)
            .collect()
    };
    assert_eq!(nice_of("store-applier"), [10], "{threads:?}");
    assert_eq!(nice_of("store-reclaim"), [19], "{threads:?}");
    assert_eq!(nice_of("index-flush"), [19], "{threads:?}");
    let compactions = nice_of("index-compact");
    assert!(!compactions.is_empty(), "{threads:?}");
    assert!(compactions.iter().all(|&n| n == 19), "{threads:?}");
    for foreground in ["log-writer", "store-reader", "switchboard"] {
        let nice = nice_of(foreground);
        assert!(!nice.is_empty(), "no {foreground} thread in {threads:?}");
        assert!(nice.iter().all(|&n| n == 0), "{threads:?}");
    }
    drop(gw);
    let gw = Gateway::builder()
        .env("SWITCHBOARD_STORE_BACKGROUND_NICE", "0")
        .env("SWITCHBOARD_STORE_APPLY_NICE", "0")
        .start();
    let threads = thread_nice(gw.pid());
    assert!(
        threads
            .iter()
            .all(|(name, nice)| *nice == if name == "store-reclaim" { 19 } else { 0 }),
        "configured 0: {threads:?}"
    );
}

/// `store_index_dir` puts the store's index outside the data dir; a restart with the same
/// value serves what was stored.
#[test]
fn the_store_index_lives_in_store_index_dir_when_set() {
    let data = tempfile::tempdir().expect("data dir");
    let second_disk = tempfile::tempdir().expect("index dir");
    let index = second_disk.path().join("index");
    let start = || {
        Gateway::builder()
            .data_dir(data.path())
            .env("SWITCHBOARD_STORE_INDEX_DIR", index.as_os_str())
            .start()
    };
    let gw = start();
    // Bob's device exists before the message, so it is owed the message at its next sync.
    ChatClient::connect_fresh(&gw, 4202, 1).close();
    let mut alice = ChatClient::connect_fresh(&gw, 4201, 1);
    let chat = direct(4201, 4202);
    let sent = alice.send_ok(chat, 1, "kept");
    drop(alice);
    drop(gw);
    assert!(index.is_dir(), "no index in {}", index.display());
    let inside = data.path().join("store").join("index");
    assert!(!inside.exists(), "an index in {} too", inside.display());
    let gw = start();
    let mut bob = ChatClient::connect(&gw, 4202, 1);
    let (events, _) = bob.expect_sync_done(WAIT);
    let got: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::NewMessage(m) => Some((m.chat, m.seq)),
            _ => None,
        })
        .collect();
    assert_eq!(got, [(chat, sent.seq)]);
}

#[test]
fn connections_open_moves_with_clients_and_accepts_count() {
    let gw = Gateway::start();
    let base = gw.metrics();
    assert!(
        near(open(&base), 0.0),
        "{}",
        base.show("switchboard_connections_open")
    );
    let accepts = base.sum("switchboard_accepts_total");

    let until_open = |want: f64| {
        let m = gw.metrics_until(IO_TIMEOUT, |m| near(open(m), want));
        assert!(
            near(open(&m), want),
            "want {want} open:\n{}",
            m.show("switchboard_connections_open")
        );
        m
    };
    let mut a = gw.connect(1, 1);
    until_open(1.0);
    let b = gw.connect(2, 1);
    let m = until_open(2.0);
    assert!(
        m.sum("switchboard_accepts_total") >= accepts + 2.0,
        "{}",
        m.show("switchboard_accepts_total")
    );

    // One leaves with a close handshake, the other by dropping the socket.
    a.send_close(1000).expect("send close");
    let _ = a.expect_close(IO_TIMEOUT);
    drop(a);
    until_open(1.0);
    drop(b);
    until_open(0.0);
}

#[test]
fn frame_and_byte_counters_move_both_ways() {
    let gw = Gateway::start();
    let mut client = gw.connect(1, 1);
    let m0 = gw.metrics();
    let mut enc = Encoder::new(&Limits::default());
    let mut payload_in = 0_u32;
    for id in 1..=10 {
        let len = enc.encode_client(&set_presence(id)).expect("fits").len();
        payload_in += u32::try_from(len).expect("a small frame");
        client.request(&set_presence(id), IO_TIMEOUT);
    }
    let grew = |m: &Metrics, name: &str, by: f64| m.sum(name) - m0.sum(name) >= by;
    let payload_in = f64::from(payload_in);
    let m = gw.metrics_until(IO_TIMEOUT, |m| {
        grew(m, "switchboard_frames_in_total", 10.0)
            && grew(m, "switchboard_frames_out_total", 10.0)
            && grew(m, "switchboard_bytes_in_total", payload_in)
            && grew(m, "switchboard_bytes_out_total", 10.0 * 20.0)
    });
    for (name, by) in [
        ("switchboard_frames_in_total", 10.0),
        ("switchboard_frames_out_total", 10.0),
        ("switchboard_bytes_in_total", payload_in),
        // Each Result is at least 20 bytes of FlatBuffer.
        ("switchboard_bytes_out_total", 200.0),
    ] {
        assert!(
            grew(&m, name, by),
            "{name} grew by less than {by}: {} -> {}",
            m0.sum(name),
            m.sum(name)
        );
    }
}

#[test]
fn closes_are_counted_by_code() {
    let gw = Gateway::start();
    let closes = |m: &Metrics, code: &str| m.sum_label("switchboard_closes_total", "code", code);
    let m0 = gw.metrics();
    let mut text = gw.connect(1, 1);
    text.send_frame(true, op::TEXT, true, b"hi").expect("send");
    let _ = text.expect_close(IO_TIMEOUT).expect("close 1003");
    let mut big = gw.connect(2, 1);
    big.send_binary(&vec![0; 65_537]).expect("send");
    let _ = big.expect_close(IO_TIMEOUT).expect("close 1009");
    let m = gw.metrics_until(IO_TIMEOUT, |m| {
        closes(m, "1003") > closes(&m0, "1003") && closes(m, "1009") > closes(&m0, "1009")
    });
    for code in ["1003", "1009"] {
        assert!(
            near(closes(&m, code) - closes(&m0, code), 1.0),
            "closes_total{{code=\"{code}\"}}: {} -> {}\n{}",
            closes(&m0, code),
            closes(&m, code),
            m.show("switchboard_closes_total")
        );
    }
}

// ---- config ------------------------------------------------------------------------------------

/// `switchboard config ARGS` with `envs`.
fn config(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = gateway::command();
    cmd.arg("config").args(args).envs(envs.iter().copied());
    gateway::output_within(&mut cmd, COMMAND_TIMEOUT)
}

/// `switchboard config` that must succeed; its output as a TOML table.
fn effective(args: &[&str], envs: &[(&str, &str)]) -> toml::Table {
    let out = config(args, envs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "config {args:?} {envs:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .parse()
        .unwrap_or_else(|e| panic!("config output is not TOML: {e}\n{stdout}"))
}

fn int(table: &toml::Table, key: &str) -> i64 {
    table
        .get(key)
        .and_then(toml::Value::as_integer)
        .unwrap_or_else(|| panic!("no integer {key} in\n{table}"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a config file");
    path.to_string_lossy().into_owned()
}

#[test]
fn config_prints_every_key_with_the_documented_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_string_lossy().into_owned();
    let t = effective(&["--data-dir", &data], &[]);
    for key in [
        "listen",
        "ops_listen",
        "data_dir",
        "cores",
        "connections_max",
        "send_queue_bytes_max",
        "handshake_timeout_ms",
        "heartbeat_interval_ms",
        "idle_timeout_ms",
        "drain_window_ms",
        "drain_timeout_ms",
        "jwt_leeway_s",
    ] {
        assert!(t.contains_key(key), "no {key} in\n{t}");
    }
    assert_eq!(int(&t, "send_queue_bytes_max"), 262_144, "{t}");
    assert_eq!(int(&t, "jwt_leeway_s"), 5, "{t}");
    assert_eq!(int(&t, "store_background_nice"), 19, "{t}");
    assert_eq!(int(&t, "store_apply_nice"), 10, "{t}");
    assert_eq!(
        t.get("data_dir").and_then(toml::Value::as_str),
        Some(data.as_str()),
        "{t}"
    );
}

#[test]
fn config_precedence_is_flags_then_env_then_file_then_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "c.toml",
        "send_queue_bytes_max = 111111\nidle_timeout_ms = 77777\n",
    );
    let env = [("SWITCHBOARD_SEND_QUEUE_BYTES_MAX", "222222")];
    let flag = ["--config", &file, "--send-queue-bytes-max", "333333"];

    let defaults = effective(&[], &[]);
    let from_file = effective(&["--config", &file], &[]);
    assert_eq!(
        int(&from_file, "send_queue_bytes_max"),
        111_111,
        "file over default"
    );
    assert_eq!(
        int(&from_file, "idle_timeout_ms"),
        77_777,
        "file over default"
    );
    let from_env = effective(&["--config", &file], &env);
    assert_eq!(
        int(&from_env, "send_queue_bytes_max"),
        222_222,
        "env over file"
    );
    assert_eq!(
        int(&from_env, "idle_timeout_ms"),
        77_777,
        "the file's other key stays"
    );
    let from_flag = effective(&flag, &env);
    assert_eq!(
        int(&from_flag, "send_queue_bytes_max"),
        333_333,
        "flag over env"
    );
    let env_only = effective(&[], &env);
    assert_eq!(
        int(&env_only, "send_queue_bytes_max"),
        222_222,
        "env over default"
    );
    assert_eq!(
        int(&env_only, "idle_timeout_ms"),
        int(&defaults, "idle_timeout_ms"),
        "an unset key keeps its default"
    );
}

#[test]
fn printed_config_reads_back_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data").to_string_lossy().into_owned();
    let args = [
        "--data-dir",
        &data,
        "--connections-max",
        "1234",
        "--idle-timeout-ms",
        "43210",
    ];
    let first = effective(&args, &[]);
    let file = write(dir.path(), "printed.toml", &first.to_string());
    let second = effective(&["--config", &file], &[]);
    assert_eq!(first, second, "config output fed back as --config");
}

#[test]
fn an_invalid_value_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "bad.toml", "cores = -1\n");
    let data = dir.path().to_string_lossy().into_owned();
    let runs = [
        ("config --cores abc", config(&["--cores", "abc"], &[])),
        ("config with cores = -1", config(&["--config", &file], &[])),
        (
            "SWITCHBOARD_CORES=abc",
            config(&[], &[("SWITCHBOARD_CORES", "abc")]),
        ),
        (
            "serve --cores abc",
            gateway::output_within(
                gateway::command().args(["serve", "--data-dir", &data, "--cores", "abc"]),
                COMMAND_TIMEOUT,
            ),
        ),
    ];
    for (what, out) in runs {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!out.status.success(), "{what}: exit {}\n{text}", out.status);
        assert!(
            text.to_lowercase().contains("cores"),
            "{what}: message does not name the key:\n{text}"
        );
    }
}

#[test]
fn serve_honours_the_config_file_and_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "one.toml", "connections_max = 1\n");
    let from_file = Gateway::builder().arg("--config").arg(&file).start();
    let from_env = Gateway::builder()
        .env("SWITCHBOARD_CONNECTIONS_MAX", "1")
        .start();
    for (what, gw) in [("file", &from_file), ("env", &from_env)] {
        let _first = gw.connect(1, 1);
        // Several attempts, so that a per-core count cannot pass by luck of the port hash.
        for user in 2..=6 {
            let over = gw.upgrade_with(&gw.sign(user, 1)).expect("an HTTP answer");
            assert_eq!(
                over.status(),
                503,
                "connections_max = 1 from the {what}: {over:?}"
            );
        }
    }
}
