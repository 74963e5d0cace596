//! Proves an independent client can use the gateway: `tests/python/gateway_client.py`, built on
//! Python's `websockets` and the flatc-generated Python code, upgrades with a token from
//! `switchboard token` (header and query), gets `Result`s with its request ids and the right
//! codes for FlatBuffers frames it built itself, and sees HTTP 401 for a bad token.

use std::process::Command;

use switchboard_tests::gateway::{self, Gateway};
use switchboard_tests::{python, repo_root};

#[test]
fn the_python_client_talks_to_the_gateway() {
    let gw = Gateway::start();
    let script = repo_root().join("tests/python/gateway_client.py");
    let out = gateway::output_within(
        Command::new(python())
            .arg(&script)
            .arg(gateway::bin())
            .arg(gw.data_dir())
            .arg(gw.ws.to_string()),
        std::time::Duration::from_mins(1),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gateway_client.py failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n\
         --- gateway stderr ---\n{}",
        out.status,
        gw.stderr()
    );
    assert!(stdout.contains("6 checks passed"), "{stdout}");
}
