//! Proves the gateway authenticates every WebSocket upgrade as docs/PROTOCOL.md §1 says, against
//! a real `switchboard serve` over real sockets: a valid HS256 token (in `Authorization: Bearer`
//! or `?token=`) upgrades; a missing, malformed, wrongly signed or expired token, or claims out
//! of range, get HTTP 401 and no upgrade, and each reason is counted in
//! `switchboard_auth_failures_total{reason}`; the 5 s leeway and `--jwt-leeway-s` apply; a wrong
//! path is 404. The dev key (`<data-dir>/dev-jwt.key`, 0600, 64 hex characters, its bytes the
//! secret) survives a restart, `switchboard token` mints tokens signed with it, and
//! `--jwt-secret-file` replaces it.

use std::os::unix::fs::PermissionsExt as _;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use switchboard_tests::gateway::{Gateway, IO_TIMEOUT};
use switchboard_tests::token::{self, now_s};
use switchboard_tests::ws::{self, Handshake, WsClient};
use wire::{ClientFrame, Request, SetPresence};

const USER: u64 = 1001;
const DEVICE: u64 = 7;
/// A secret that is not the gateway's.
const OTHER_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Extra request headers of one case.
type Headers = Vec<(&'static str, String)>;

/// Upgrades `target` with `headers`; panics on socket errors (with the gateway's stderr).
fn upgrade(gw: &Gateway, target: &str, headers: &[(&str, &str)]) -> Handshake {
    ws::handshake(gw.ws, target, headers, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("upgrade {target}: {e}\nstderr:\n{}", gw.stderr()))
}

fn bearer(gw: &Gateway, token: &str) -> Handshake {
    upgrade(gw, "/ws", &[("Authorization", &format!("Bearer {token}"))])
}

/// The connection is a working switchboard session: its sync ends (`SyncDone`, nothing is
/// owed), then a request gets its `Result`.
fn assert_works(handshake: Handshake, what: &str) {
    let Handshake::Upgraded(mut client) = handshake else {
        panic!("{what}: expected an upgrade, got {handshake:?}");
    };
    client.expect_empty_sync(IO_TIMEOUT);
    request_once(&mut client, what);
}

fn request_once(client: &mut WsClient, what: &str) {
    let frame = ClientFrame {
        request_id: 31,
        request: Request::SetPresence(SetPresence { online: true }),
    };
    let (id, code, reason) = client.request(&frame, IO_TIMEOUT);
    assert_eq!(
        id, 31,
        "{what}: Result for another request ({code:?} {reason})"
    );
}

fn assert_401(handshake: &Handshake, what: &str) {
    let Handshake::Refused(r) = handshake else {
        panic!("{what}: upgraded, want HTTP 401");
    };
    assert_eq!(r.status, 401, "{what}: {r:?}");
    assert!(r.header("sec-websocket-accept").is_none(), "{what}: {r:?}");
}

fn failures(gw: &Gateway, reason: &str) -> f64 {
    gw.metrics()
        .sum_label("switchboard_auth_failures_total", "reason", reason)
}

#[test]
fn a_valid_token_upgrades_in_the_header_or_the_query() {
    let gw = Gateway::start();
    assert_works(bearer(&gw, &gw.sign(USER, DEVICE)), "Authorization: Bearer");
    let target = format!("/ws?token={}", gw.sign(USER + 1, DEVICE));
    assert_works(upgrade(&gw, &target, &[]), "?token=");
}

#[test]
fn each_kind_of_bad_token_gets_401_and_is_counted_by_reason() {
    let gw = Gateway::start();
    let expired = token::sign(&gw.secret(), &token::claims(USER, DEVICE, now_s() - 60));
    let forged = token::sign(OTHER_SECRET, &token::claims(USER, DEVICE, now_s() + 600));
    let cases: [(&str, &str, Headers); 6] = [
        ("missing", "/ws", vec![]),
        (
            "malformed",
            "/ws",
            vec![("Authorization", "Bearer not-a-jwt".into())],
        ),
        ("malformed", "/ws?token=a.b.c", vec![]),
        (
            "bad_signature",
            "/ws",
            vec![("Authorization", format!("Bearer {forged}"))],
        ),
        ("bad_signature", &format!("/ws?token={forged}"), vec![]),
        (
            "expired",
            "/ws",
            vec![("Authorization", format!("Bearer {expired}"))],
        ),
    ];
    for (reason, target, headers) in &cases {
        let what = format!("{reason}: {target} {headers:?}");
        let before = failures(&gw, reason);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_401(&upgrade(&gw, target, &headers), &what);
        let after = gw.metrics_until(IO_TIMEOUT, |m| {
            m.sum_label("switchboard_auth_failures_total", "reason", reason) > before
        });
        let count = after.sum_label("switchboard_auth_failures_total", "reason", reason);
        assert!(
            (count - before - 1.0).abs() < 0.5,
            "{what}: auth_failures_total{{reason=\"{reason}\"}} went {before} -> {count}\n{}",
            after.show("switchboard_auth_failures_total")
        );
    }
}

#[test]
fn claims_out_of_range_get_401() {
    let gw = Gateway::start();
    let secret = gw.secret();
    let exp = now_s() + 600;
    let cases = [
        ("sub 0", json!({"sub": "0", "dev": "1", "exp": exp})),
        (
            "sub 2^63",
            json!({"sub": "9223372036854775808", "dev": "1", "exp": exp}),
        ),
        (
            "sub not decimal",
            json!({"sub": "alice", "dev": "1", "exp": exp}),
        ),
        ("sub negative", json!({"sub": "-5", "dev": "1", "exp": exp})),
        ("dev 0", json!({"sub": "5", "dev": "0", "exp": exp})),
        (
            "dev over u64",
            json!({"sub": "5", "dev": "18446744073709551616", "exp": exp}),
        ),
        ("no sub", json!({"dev": "1", "exp": exp})),
        ("no dev", json!({"sub": "5", "exp": exp})),
        ("no exp", json!({"sub": "5", "dev": "1"})),
    ];
    for (what, claims) in &cases {
        assert_401(&bearer(&gw, &token::sign(&secret, claims)), what);
    }
    // The edges of the valid ranges upgrade.
    let edge = json!({"sub": "9223372036854775807", "dev": "18446744073709551615", "exp": exp});
    assert_works(
        bearer(&gw, &token::sign(&secret, &edge)),
        "sub 2^63-1, dev 2^64-1",
    );
    let one = json!({"sub": "1", "dev": "1", "exp": exp});
    assert_works(bearer(&gw, &token::sign(&secret, &one)), "sub 1, dev 1");
}

#[test]
fn expiry_has_a_leeway_of_5_s_by_default_and_jwt_leeway_s_sets_it() {
    let lenient = Gateway::start();
    // Expired 2 s ago: inside the default 5 s leeway.
    let recent = token::sign(&lenient.secret(), &token::claims(USER, DEVICE, now_s() - 2));
    assert_works(bearer(&lenient, &recent), "expired 2 s ago, leeway 5 s");
    let old = token::sign(
        &lenient.secret(),
        &token::claims(USER, DEVICE, now_s() - 20),
    );
    assert_401(&bearer(&lenient, &old), "expired 20 s ago, leeway 5 s");

    let strict = Gateway::builder().flag("--jwt-leeway-s", 0).start();
    let recent = token::sign(&strict.secret(), &token::claims(USER, DEVICE, now_s() - 2));
    assert_401(&bearer(&strict, &recent), "expired 2 s ago, leeway 0");
}

#[test]
fn a_wrong_path_is_404() {
    let gw = Gateway::start();
    let auth = format!("Bearer {}", gw.sign(USER, DEVICE));
    for target in ["/", "/wss", "/ws/x", "/metrics"] {
        let h = upgrade(&gw, target, &[("Authorization", &auth)]);
        assert_eq!(h.status(), 404, "{target}: {h:?}");
    }
}

#[test]
fn the_dev_key_is_private_hex_and_survives_a_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let first = Gateway::builder().data_dir(data.path()).start();
    let path = data.path().join("dev-jwt.key");
    let meta = std::fs::metadata(&path).expect("dev-jwt.key exists after the first start");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{}",
        path.display()
    );
    let key = first.secret();
    assert_eq!(key.len(), 64, "dev key {:?}", String::from_utf8_lossy(&key));
    assert!(
        key.iter().all(u8::is_ascii_hexdigit),
        "dev key {:?}",
        String::from_utf8_lossy(&key)
    );
    let token = first.mint(USER, DEVICE, &[]);
    drop(first);

    let second = Gateway::builder().data_dir(data.path()).start();
    assert_eq!(second.secret(), key, "the dev key changed on restart");
    assert_works(bearer(&second, &token), "a token minted before the restart");
}

#[test]
fn switchboard_token_mints_a_token_signed_with_the_dev_key() {
    let gw = Gateway::start();
    let token = gw.mint(USER, DEVICE, &["--ttl-s", "120"]);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data =
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(&gw.secret()), &validation)
            .unwrap_or_else(|e| panic!("{token:?} does not verify with the dev key: {e}"));
    let claims = data.claims;
    assert_eq!(claims["sub"], json!(USER.to_string()), "{claims}");
    assert_eq!(claims["dev"], json!(DEVICE.to_string()), "{claims}");
    let exp = claims["exp"].as_u64().expect("exp is a number");
    let want = now_s() + 120;
    assert!(exp.abs_diff(want) <= 10, "exp {exp}, want about {want}");
    assert_works(bearer(&gw, &token), "a token from switchboard token");
    let default_ttl = gw.mint(USER + 1, DEVICE, &[]);
    assert_works(
        bearer(&gw, &default_ttl),
        "switchboard token with the default ttl",
    );
}

#[test]
fn jwt_secret_file_replaces_the_dev_key() {
    let secret = b"a-secret-the-operator-chose-0123456789";
    let gw = Gateway::builder().jwt_secret(secret).start();
    let good = token::sign(secret, &token::claims(USER, DEVICE, now_s() + 600));
    assert_works(bearer(&gw, &good), "signed with --jwt-secret-file");
    let other = token::sign(OTHER_SECRET, &token::claims(USER, DEVICE, now_s() + 600));
    assert_401(&bearer(&gw, &other), "signed with another secret");
}
