//! The gateway's configuration: defaults, a TOML file, `SWITCHBOARD_*` environment variables and
//! command-line flags, merged in that order (later wins), then validated as a whole.
//!
//! Owns every operational setting and the error an operator sees for a bad one. Invariant: a
//! `Config` returned by [`load`] passed [`Config::validate`]: every value is in range and the
//! values agree with each other, so the rest of the gateway never re-checks them.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Environment variables with this prefix override the file: `SWITCHBOARD_CORES=2`,
/// `SWITCHBOARD_LIMITS__BODY_BYTES_MAX=8192` (`__` separates nested keys).
const ENV_PREFIX: &str = "SWITCHBOARD_";

/// Everything the gateway can be told. Each field is also a TOML key, an environment variable
/// and (for the common ones) a flag of the same name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// WebSocket listener (one `SO_REUSEPORT` socket per core). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// HTTP path of the WebSocket endpoint.
    pub ws_path: String,
    /// Operations HTTP listener (`/metrics`, `/healthz`, `/readyz`). Port 0 picks a free port.
    pub ops_listen: SocketAddr,
    /// Where durable state and the development key live.
    pub data_dir: PathBuf,
    /// Executors (one pinned thread each); 0 = every online CPU.
    pub cores: usize,
    /// Most WebSocket connections the process holds; further ones get HTTP 503.
    pub connections_max: usize,
    /// Listen backlog per core (the kernel caps it at `net.core.somaxconn`).
    pub accept_backlog: u32,
    /// Most bytes queued for one connection; a peer that lets it fill is closed (1008).
    pub send_queue_bytes_max: usize,
    /// Time a new connection has to complete its HTTP upgrade (slowloris guard).
    pub handshake_timeout_ms: u64,
    /// Largest HTTP upgrade request accepted, headers included.
    pub handshake_bytes_max: usize,
    /// Inbound silence after which the server pings.
    pub heartbeat_interval_ms: u64,
    /// Inbound silence after which the connection is closed (4000): a dead or half-open peer.
    pub idle_timeout_ms: u64,
    /// How long a closing connection waits for the peer's close frame (RFC 6455 closing
    /// handshake) before the TCP connection is closed anyway.
    pub close_linger_ms: u64,
    /// `GoAway.reconnect_after_ms` is spread uniformly over this window on drain.
    pub drain_window_ms: u64,
    /// A drain ends, and the process exits, within this time even if clients linger.
    pub drain_timeout_ms: u64,
    /// HS256 secret: the exact bytes of this file. Unset (and no public key): a development
    /// secret is generated into `<data_dir>/dev-jwt.key`.
    pub jwt_secret_file: Option<PathBuf>,
    /// EdDSA (Ed25519) public key, PEM; tokens are then verified with it instead of HS256.
    pub jwt_public_key_file: Option<PathBuf>,
    /// Clock-skew allowance on a token's `exp`.
    pub jwt_leeway_s: u64,
    /// Undelivered messages are kept this long, in ms; 0 = `limits.offline_ttl_days`. (For
    /// tests and short-lived deployments: the days limit is what clients are told.)
    pub offline_ttl_ms: u64,
    /// How often retention runs (expired messages, delivered messages, pruned devices,
    /// attachments no message references).
    pub sweep_interval_ms: u64,
    /// The nice value (0 to 19) of the store index's flush and compaction threads:
    /// above 0 they yield the CPU to the executors, the log writer and the applier. (The
    /// thread that frees the index's flushed memtables always runs at 19.)
    /// Default 19: their work comes in bursts (compactions) that otherwise delay every message
    /// behind them. Measured with `loadgen live` on one gateway CPU (2,000 users, 1:1),
    /// alternated, 3 rounds, with the applier at the same value: p99 at 8,000 msg/s 29–45 ms
    /// (median 36) at 19, 25–73 ms (41) at 10, 82–97 ms (91) at 0.
    pub store_background_nice: i32,
    /// The nice value (0 to 19) of the store's applier, which applies durable records to the
    /// index. Sync plans, device lists and cursor reads wait for its lag, and once it lags by
    /// the apply backlog (32 MiB) acknowledgements wait too.
    /// Default 10: between the executors (0) and the compactions (19). At 19 it shared the
    /// leftover CPU with the compactions and fell behind during each one: on one gateway CPU
    /// (`loadgen live`, 2,000 users, 1:1, 90 s) at 12,000 msg/s, alternated, p99 171 and 561 ms
    /// (backlog at its cap) at 19 against 25 and 15 ms (backlog at most 16 MiB) at 10; at
    /// 14,000 msg/s 2.9 s at 19, 26 ms at 10 and 36 ms at 5.
    pub store_apply_nice: i32,
    /// Where the store's index lives. Unset: `<data_dir>/store/index`. On a host with a
    /// second disk, put it there: the index writes about 3× the log's bytes, and on a shared
    /// disk those writes delay the log's syncs, which every `Sent` waits for. Always start the
    /// gateway with the same value: an index that does not match the log is refused.
    pub store_index_dir: Option<PathBuf>,
    /// An attachment no retained message references is deleted (blob and record) once it is
    /// this old, in ms (default 24 h; longer than any upload URL lives).
    pub attachment_unreferenced_ms: u64,
    /// Media HTTP listener (the built-in blob backend's `PUT`/`GET`). Port 0 picks a free port.
    pub media_listen: SocketAddr,
    /// Where blobs live: `local` (files in `media_dir`, served on `media_listen`) or `s3`.
    pub media_backend: MediaBackend,
    /// Most open connections on the media listener; further ones are closed at once.
    pub media_connections_max: usize,
    /// Blob directory of the `local` backend. Unset: `<data_dir>/media`.
    pub media_dir: Option<PathBuf>,
    /// Base URL clients use to reach `media_listen` (behind a proxy, or when listening on
    /// `0.0.0.0`). Unset: `http://<bound media address>`.
    pub media_public_url: Option<String>,
    /// HMAC key of the `local` backend's URLs: the exact bytes of this file (at least 32).
    /// Unset: a development key is generated into `<data_dir>/dev-media.key`.
    pub media_key_file: Option<PathBuf>,
    /// `s3` backend: the endpoint, `http://host:port` (path-style requests).
    pub s3_endpoint: Option<String>,
    /// `s3` backend: the bucket.
    pub s3_bucket: Option<String>,
    /// `s3` backend: the region signed into requests.
    pub s3_region: String,
    /// `s3` backend: the access key id.
    pub s3_access_key: Option<String>,
    /// `s3` backend: a file holding the secret access key.
    pub s3_secret_key_file: Option<PathBuf>,
    /// Protocol limits (DESIGN.md §1).
    pub limits: wire::Limits,
}

/// Where the gateway keeps media blobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaBackend {
    /// Files in `media_dir`, uploaded and downloaded through the media listener.
    #[default]
    Local,
    /// An S3-compatible bucket; clients use pre-signed URLs of the store itself.
    S3,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ws_path: "/ws".into(),
            ops_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            data_dir: PathBuf::from("./data"),
            cores: 0,
            connections_max: 1_000_000,
            accept_backlog: 4096,
            send_queue_bytes_max: 256 * 1024,
            handshake_timeout_ms: 5_000,
            handshake_bytes_max: 8 * 1024,
            heartbeat_interval_ms: 30_000,
            idle_timeout_ms: 90_000,
            close_linger_ms: 1_000,
            drain_window_ms: 10_000,
            drain_timeout_ms: 30_000,
            jwt_secret_file: None,
            jwt_public_key_file: None,
            jwt_leeway_s: 5,
            offline_ttl_ms: 0,
            sweep_interval_ms: 60_000,
            attachment_unreferenced_ms: 24 * 60 * 60 * 1000,
            store_background_nice: 19,
            store_apply_nice: 10,
            store_index_dir: None,
            media_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            media_backend: MediaBackend::Local,
            media_connections_max: 1024,
            media_dir: None,
            media_public_url: None,
            media_key_file: None,
            s3_endpoint: None,
            s3_bucket: None,
            s3_region: "us-east-1".into(),
            s3_access_key: None,
            s3_secret_key_file: None,
            limits: wire::Limits::default(),
        }
    }
}

/// A configuration that cannot be used: which key, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range or contradicts another.
    #[error("invalid configuration: `{key}` {reason}")]
    Invalid {
        /// The key, dotted for nested tables (`limits.body_bytes_max`).
        key: String,
        /// Why it is refused.
        reason: String,
    },
    /// The file, an environment variable or a flag could not be read as a `Config`.
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Merges defaults, `file`, the environment and `flags` (a partial `Config` of the flags given),
/// then validates.
///
/// # Errors
/// A parse error naming the key and source, or the first invalid value.
pub fn load(file: Option<&Path>, flags: &impl Serialize) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(invalid(
                "config",
                format!("file {} does not exist", file.display()),
            ));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    let keys = known_keys();
    // Only keys the config knows: other SWITCHBOARD_* variables (a test's, a script's) are not
    // ours and must not fail the start.
    let env = Env::prefixed(ENV_PREFIX)
        .split("__")
        .filter(move |k| keys.contains(&k.as_str().to_ascii_lowercase()));
    let config: Config = figment
        .merge(env)
        .merge(Serialized::globals(flags))
        .extract()
        .map_err(|e| ConfigError::Parse(Box::new(e)))?;
    config.validate()?;
    Ok(config)
}

/// Every key path of `Config` (`cores`, `limits.body_bytes_max`, …), lower-case as `Env` gives them.
fn known_keys() -> Vec<String> {
    let mut keys = Vec::new();
    if let Ok(toml::Value::Table(table)) = toml::Value::try_from(Config::default()) {
        for (key, value) in table {
            if let toml::Value::Table(inner) = value {
                keys.extend(inner.keys().map(|k| format!("{key}.{k}")));
            }
            keys.push(key);
        }
    }
    keys.extend(
        [
            "jwt_secret_file",
            "jwt_public_key_file",
            "media_dir",
            "store_index_dir",
            "media_public_url",
            "media_key_file",
            "s3_endpoint",
            "s3_bucket",
            "s3_access_key",
            "s3_secret_key_file",
        ]
        .map(String::from),
    );
    keys
}

impl Config {
    /// Checks ranges and cross-field rules.
    ///
    /// # Errors
    /// The first invalid key and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits
            .validate()
            .map_err(|e| invalid(&format!("limits.{}", e.field), e.reason))?;
        let online = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        if self.cores > online {
            return Err(invalid(
                "cores",
                format!("is {} but this host has {online} CPUs", self.cores),
            ));
        }
        if !self.ws_path.starts_with('/') {
            return Err(invalid("ws_path", "must start with '/'"));
        }
        let positive = [
            ("connections_max", self.connections_max as u64),
            ("accept_backlog", u64::from(self.accept_backlog)),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("drain_timeout_ms", self.drain_timeout_ms),
            ("sweep_interval_ms", self.sweep_interval_ms),
            (
                "attachment_unreferenced_ms",
                self.attachment_unreferenced_ms,
            ),
            ("media_connections_max", self.media_connections_max as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(key, "must be at least 1"));
        }
        if self.idle_timeout_ms <= self.heartbeat_interval_ms {
            return Err(invalid(
                "idle_timeout_ms",
                "must exceed heartbeat_interval_ms (a live peer needs time to answer the ping)",
            ));
        }
        if self.drain_window_ms > self.drain_timeout_ms {
            return Err(invalid(
                "drain_window_ms",
                "must not exceed drain_timeout_ms",
            ));
        }
        if self.send_queue_bytes_max < self.limits.frame_bytes_max {
            return Err(invalid(
                "send_queue_bytes_max",
                "must hold at least one frame of limits.frame_bytes_max",
            ));
        }
        if !(0..=19).contains(&self.store_background_nice) {
            return Err(invalid("store_background_nice", "must be within 0..=19"));
        }
        if !(0..=19).contains(&self.store_apply_nice) {
            return Err(invalid("store_apply_nice", "must be within 0..=19"));
        }
        if self.handshake_bytes_max < 1024 {
            return Err(invalid("handshake_bytes_max", "must be at least 1024"));
        }
        if self.jwt_secret_file.is_some() && self.jwt_public_key_file.is_some() {
            return Err(invalid(
                "jwt_public_key_file",
                "set either jwt_secret_file or jwt_public_key_file, not both",
            ));
        }
        self.validate_media()
    }

    fn validate_media(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.media_public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "media_public_url",
                "must start with http:// or https://",
            ));
        }
        if self.media_backend != MediaBackend::S3 {
            return Ok(());
        }
        let required = [
            ("s3_endpoint", self.s3_endpoint.is_some()),
            ("s3_bucket", self.s3_bucket.is_some()),
            ("s3_access_key", self.s3_access_key.is_some()),
            ("s3_secret_key_file", self.s3_secret_key_file.is_some()),
        ];
        if let Some((key, _)) = required.iter().find(|(_, set)| !set) {
            return Err(invalid(key, "is required with media_backend = \"s3\""));
        }
        if let Some(endpoint) = &self.s3_endpoint
            && !endpoint.starts_with("http://")
        {
            return Err(invalid(
                "s3_endpoint",
                "must be an http:// URL (the gateway has no TLS client yet)",
            ));
        }
        if u64::from(self.limits.url_ttl_s) > crate::media::s3::URL_TTL_S_MAX {
            return Err(invalid(
                "limits.url_ttl_s",
                "must be at most 604800 (7 days, S3's longest pre-signed URL) with the s3 backend",
            ));
        }
        Ok(())
    }

    /// How long the store keeps things (DESIGN.md F6, F7, F9).
    pub fn retention(&self) -> store::model::Retention {
        const DAY_MS: u64 = store::model::DAY_MS;
        let offline = if self.offline_ttl_ms > 0 {
            self.offline_ttl_ms
        } else {
            u64::from(self.limits.offline_ttl_days) * DAY_MS
        };
        store::model::Retention {
            offline_ttl_ms: offline,
            history_ttl_ms: u64::from(self.limits.history_ttl_days).max(1) * DAY_MS,
            device_prune_ms: u64::from(self.limits.device_prune_days).max(1) * DAY_MS,
        }
    }

    /// Executors to run: `cores`, or every online CPU when 0.
    pub fn executor_count(&self) -> usize {
        if self.cores == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        } else {
            self.cores
        }
    }

    /// The effective configuration as TOML, every default included.
    pub fn to_toml(&self) -> String {
        let mut out = toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
        if self.media_backend == MediaBackend::Local && self.media_key_file.is_none() {
            out.insert_str(
                0,
                "# media_key_file is unset: a development media key is used\n\
                 # (<data_dir>/dev-media.key). Production must set it.\n",
            );
        }
        if self.jwt_secret_file.is_none() && self.jwt_public_key_file.is_none() {
            out.insert_str(
                0,
                "# jwt_secret_file and jwt_public_key_file are unset: a development HS256 secret \
                 is used\n# (<data_dir>/dev-jwt.key). Production must set one of them.\n",
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Default)]
    struct NoFlags {}

    #[test]
    fn defaults_are_valid_and_print_every_key() {
        let config = load(None, &NoFlags::default()).expect("defaults load");
        assert_eq!(config, Config::default());
        let text = config.to_toml();
        for key in [
            "listen",
            "ops_listen",
            "media_listen",
            "media_backend",
            "data_dir",
            "cores",
            "idle_timeout_ms",
            "[limits]",
            "body_bytes_max",
        ] {
            assert!(text.contains(key), "{key} missing from\n{text}");
        }
    }

    #[test]
    fn file_then_flags_override_defaults() {
        #[derive(Serialize)]
        struct Flags {
            idle_timeout_ms: u64,
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sb.toml");
        std::fs::write(
            &file,
            "cores = 1\nidle_timeout_ms = 50000\n[limits]\nbody_bytes_max = 8192\n",
        )
        .expect("write");
        let config = load(
            Some(&file),
            &Flags {
                idle_timeout_ms: 95_000,
            },
        )
        .expect("loads");
        assert_eq!(
            (
                config.cores,
                config.idle_timeout_ms,
                config.limits.body_bytes_max
            ),
            (1, 95_000, 8192)
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sb.toml");
        for (text, key) in [
            ("cores = -1", "cores"),
            ("listen = \"nowhere\"", "listen"),
            (
                "idle_timeout_ms = 10\nheartbeat_interval_ms = 20",
                "idle_timeout_ms",
            ),
            ("[limits]\nbody_bytes_max = 70000", "limits.body_bytes_max"),
            ("surprise = 1", "surprise"),
            ("media_backend = \"ftp\"", "media_backend"),
            ("media_backend = \"s3\"", "s3_endpoint"),
            (
                "media_backend = \"s3\"\ns3_endpoint = \"https://s3\"\ns3_bucket = \"b\"\n\
                 s3_access_key = \"k\"\ns3_secret_key_file = \"/k\"",
                "s3_endpoint",
            ),
            ("media_public_url = \"ftp://x\"", "media_public_url"),
            ("store_background_nice = 20", "store_background_nice"),
            ("store_apply_nice = -1", "store_apply_nice"),
            (
                "attachment_unreferenced_ms = 0",
                "attachment_unreferenced_ms",
            ),
        ] {
            std::fs::write(&file, text).expect("write");
            let err = load(Some(&file), &NoFlags::default())
                .expect_err(text)
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
