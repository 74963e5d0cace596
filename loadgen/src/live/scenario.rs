//! A `loadgen live` workload as written in a TOML file (presets in `loadgen/scenarios/`).
//!
//! Owns the file's shape, its defaults, `--set key=value` overrides (applied to the TOML
//! before it is read, so an override is checked like the file) and validation. Pure.
//! Invariant: a `Scenario` returned by [`Scenario::load`] passed [`Scenario::validate`]: every
//! size, share and duration is in range, so the plan and the workers never re-check.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::live::body::HEADER_BYTES;

/// The largest body the gateway accepts by default (`body_bytes_max`).
const BODY_BYTES_MAX: u64 = 4096;
/// Devices per user the gateway accepts by default (`devices_per_user_max`).
const DEVICES_PER_USER_MAX: u32 = 4;

/// The whole workload; see the presets for a commented example of every field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scenario {
    /// A name for the report.
    #[serde(default)]
    pub(crate) name: String,
    /// Seeds the workload (who talks to whom, groups) and every arrival schedule.
    #[serde(default = "one")]
    pub(crate) seed: u64,
    /// Users (ids `user_base + 1 ..= user_base + users`).
    pub(crate) users: u32,
    /// The first user id is `user_base + 1`; vary it to start from fresh users on a gateway.
    #[serde(default = "user_base")]
    pub(crate) user_base: u64,
    /// Devices of each user, each its own connection.
    #[serde(default = "one_u32")]
    pub(crate) devices_per_user: u32,
    /// Direct (1:1) chats each user starts with random other users.
    #[serde(default = "one_u32")]
    pub(crate) contacts_per_user: u32,
    /// Share of sends to a direct chat (the rest go to a group of the sender, when it has one).
    pub(crate) direct_share: f64,
    /// Groups, created with `CreateChat` before the load.
    #[serde(default)]
    pub(crate) groups: Groups,
    /// Messages per second over the whole run, open loop.
    pub(crate) rate_per_s: f64,
    /// How intended send times are spaced.
    #[serde(default)]
    pub(crate) arrivals: Arrivals,
    /// Body size in bytes (at least the 32-byte stamp).
    #[serde(default)]
    pub(crate) body_bytes: Dist,
    /// Receipts devices send as they get messages.
    #[serde(default)]
    pub(crate) receipts: Receipts,
    /// How long a device holds its acks (when receipts are on): it acks every chat with new
    /// messages this long after the first delivery it has not acked yet. Each device keeps
    /// its own timer, so acks are not synchronized across devices.
    #[serde(default = "receipt_interval_ms")]
    pub(crate) receipt_interval_ms: u64,
    /// Devices connect evenly over this many seconds before the load starts.
    #[serde(default = "one_f64")]
    pub(crate) ramp_up_s: f64,
    /// Load before the measured window; sent and checked, but not in the latency figures.
    #[serde(default = "one_f64")]
    pub(crate) warmup_s: f64,
    /// The measured window.
    pub(crate) duration_s: f64,
    /// After the last send: time for deliveries to arrive before the ledger is checked.
    #[serde(default = "grace_s")]
    pub(crate) grace_s: f64,
    /// Online/offline churn during the load.
    #[serde(default)]
    pub(crate) churn: Churn,
    /// The run is invalid (loadgen itself too slow) when sends left later than this at p99.
    #[serde(default = "lateness_p99_max_ms")]
    pub(crate) lateness_p99_max_ms: f64,
    /// The objective (`--slo` overrides it).
    #[serde(default = "slo")]
    pub(crate) slo: String,
}

/// Groups and their sizes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Groups {
    /// How many groups.
    pub(crate) count: u32,
    /// Members per group, creator included.
    #[serde(default = "group_size")]
    pub(crate) size: Dist,
}

/// A distribution of whole numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Dist {
    /// Always `value`.
    Fixed { value: u64 },
    /// Uniform over `min ..= max`.
    Uniform { min: u64, max: u64 },
}

impl Dist {
    /// The smallest and largest value it can give.
    pub(crate) fn bounds(self) -> (u64, u64) {
        match self {
            Self::Fixed { value } => (value, value),
            Self::Uniform { min, max } => (min, max),
        }
    }

    /// One draw.
    pub(crate) fn sample(self, rng: &mut impl rand::Rng) -> u64 {
        match self {
            Self::Fixed { value } => value,
            Self::Uniform { min, max } => rng.random_range(min..=max),
        }
    }
}

impl Default for Dist {
    fn default() -> Self {
        Self::Fixed { value: 100 }
    }
}

/// How intended send times are spaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Arrivals {
    /// Exponential gaps (a Poisson process): bursts as real traffic has them.
    #[default]
    Poisson,
    /// Equal gaps.
    Uniform,
}

/// What a device acks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Receipts {
    /// Nothing (a reconnecting device is then sent everything again).
    None,
    /// `Delivered` (as real clients do, moving the sync cursor).
    #[default]
    Delivered,
    /// `Delivered` and `Read`.
    Read,
}

/// Devices going offline and coming back during the load.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Churn {
    /// Devices (over all workers) that go offline per second at random times.
    #[serde(default)]
    pub(crate) rate_per_s: f64,
    /// How long each of those stays offline.
    #[serde(default = "one_f64")]
    pub(crate) offline_s: f64,
    /// Mass disconnections at set times.
    #[serde(default)]
    pub(crate) events: Vec<ChurnEvent>,
}

/// At `at_s` after the load starts, `fraction` of all devices drop their connection and
/// reconnect `offline_s` later (0: at once, a reconnect storm).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChurnEvent {
    pub(crate) at_s: f64,
    pub(crate) fraction: f64,
    #[serde(default)]
    pub(crate) offline_s: f64,
}

fn one() -> u64 {
    1
}
fn one_u32() -> u32 {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn user_base() -> u64 {
    1_000_000_000
}
fn receipt_interval_ms() -> u64 {
    200
}
fn grace_s() -> f64 {
    3.0
}
fn lateness_p99_max_ms() -> f64 {
    20.0
}
fn slo() -> String {
    "p99<=500ms,p999<=1s,loss=0,dup=0,order=0".into()
}
fn group_size() -> Dist {
    Dist::Uniform { min: 3, max: 20 }
}

impl Scenario {
    /// Reads `path`, applies `KEY=VALUE` overrides (dotted keys, TOML values), validates.
    pub(crate) fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Self::from_toml(&text, overrides).with_context(|| format!("scenario {}", path.display()))
    }

    /// [`Scenario::load`] on text.
    pub(crate) fn from_toml(text: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table = toml::from_str(text)?;
        for o in overrides {
            apply_override(&mut table, o).with_context(|| format!("override {o:?}"))?;
        }
        let scenario: Self = table.try_into()?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Devices in the whole run.
    pub(crate) fn devices(&self) -> u64 {
        u64::from(self.users) * u64::from(self.devices_per_user)
    }

    /// Checks every range (see the module doc).
    pub(crate) fn validate(&self) -> Result<()> {
        ensure!(self.users >= 2, "users must be at least 2");
        ensure!(
            (1..=DEVICES_PER_USER_MAX).contains(&self.devices_per_user),
            "devices_per_user must be 1..={DEVICES_PER_USER_MAX} (the gateway's default limit)"
        );
        ensure!(
            self.user_base.checked_add(u64::from(self.users)) < Some(1 << 63),
            "user ids would pass 2^63-1"
        );
        ensure!(
            self.contacts_per_user >= 1 && self.contacts_per_user < self.users,
            "contacts_per_user must be 1..users"
        );
        share("direct_share", self.direct_share)?;
        let (gmin, gmax) = self.groups.size.bounds();
        if self.groups.count > 0 {
            ensure!(
                gmin >= 2 && gmin <= gmax,
                "group sizes must be 2 ≤ min ≤ max"
            );
            ensure!(gmax <= u64::from(self.users), "a group larger than users");
        } else {
            ensure!(self.direct_share >= 1.0, "direct_share < 1 needs groups");
        }
        let (bmin, bmax) = self.body_bytes.bounds();
        ensure!(
            bmin >= HEADER_BYTES as u64 && bmin <= bmax && bmax <= BODY_BYTES_MAX,
            "body_bytes must be {HEADER_BYTES} ≤ min ≤ max ≤ {BODY_BYTES_MAX}"
        );
        ensure!(self.rate_per_s > 0.0, "rate_per_s must be positive");
        for (name, s) in [
            ("rate_per_s", self.rate_per_s),
            ("ramp_up_s", self.ramp_up_s),
            ("warmup_s", self.warmup_s),
            ("duration_s", self.duration_s),
            ("grace_s", self.grace_s),
            ("churn.rate_per_s", self.churn.rate_per_s),
            ("churn.offline_s", self.churn.offline_s),
            ("lateness_p99_max_ms", self.lateness_p99_max_ms),
        ] {
            ensure!(s.is_finite() && s >= 0.0, "{name} must be ≥ 0");
        }
        ensure!(self.duration_s > 0.0, "duration_s must be positive");
        ensure!(
            self.receipt_interval_ms > 0,
            "receipt_interval_ms must be positive"
        );
        for e in &self.churn.events {
            share("churn.events.fraction", e.fraction)?;
            ensure!(
                e.at_s.is_finite()
                    && e.at_s >= 0.0
                    && e.offline_s.is_finite()
                    && e.offline_s >= 0.0,
                "churn event times must be ≥ 0"
            );
        }
        crate::live::slo::Slo::parse(&self.slo)?;
        Ok(())
    }
}

fn share(name: &str, x: f64) -> Result<()> {
    ensure!((0.0..=1.0).contains(&x), "{name} must be within 0..=1");
    Ok(())
}

/// `a.b.c=VALUE`: VALUE read as TOML (`5`, `2.5`, `"x"`, `{ dist = "fixed", value = 9 }`),
/// else as a bare string.
fn apply_override(table: &mut toml::Table, text: &str) -> Result<()> {
    let (key, value) = text.split_once('=').context("expected KEY=VALUE")?;
    let value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t.remove("v").context("parsed value")?,
        Err(_) => toml::Value::String(value.trim().to_owned()),
    };
    let mut parts: Vec<&str> = key.trim().split('.').collect();
    let last = parts.pop().filter(|k| !k.is_empty()).context("empty key")?;
    let mut at = table;
    for part in parts {
        let next = at
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(inner) = next else {
            bail!("{part} is not a table");
        };
        at = inner;
    }
    at.insert(last.to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "users = 10\ndirect_share = 1.0\nrate_per_s = 50\nduration_s = 2\n";

    #[test]
    fn defaults_and_overrides() {
        let s = Scenario::from_toml(MINIMAL, &[]).expect("valid");
        assert_eq!(
            (s.devices_per_user, s.seed, s.arrivals),
            (1, 1, Arrivals::Poisson)
        );
        assert_eq!(s.receipts, Receipts::Delivered);
        let o = [
            "rate_per_s=75.5".to_owned(),
            "groups.count=2".to_owned(),
            "direct_share=0.5".to_owned(),
            "groups.size={ dist = \"fixed\", value = 4 }".to_owned(),
            "arrivals=uniform".to_owned(),
        ];
        let s = Scenario::from_toml(MINIMAL, &o).expect("valid");
        assert!((s.rate_per_s - 75.5).abs() < 1e-9);
        assert_eq!(s.groups.count, 2);
        assert_eq!(s.groups.size, Dist::Fixed { value: 4 });
        assert_eq!(s.arrivals, Arrivals::Uniform);
    }

    #[test]
    fn rejects() {
        for o in [
            "users=1",
            "direct_share=0.5",
            "devices_per_user=5",
            "body_bytes={ dist = \"fixed\", value = 8 }",
            "rate_per_s=0",
            "contacts_per_user=10",
            "no_such_key=1",
            "slo=\"p99<5ms\"",
            "churn.events=[{ at_s = 1, fraction = 2.0 }]",
        ] {
            assert!(
                Scenario::from_toml(MINIMAL, &[o.to_owned()]).is_err(),
                "{o} should be rejected"
            );
        }
    }

    #[test]
    fn presets_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        for name in [
            "smoke",
            "steady",
            "group-heavy",
            "reconnect-storm",
            "offline-sync",
        ] {
            let path = dir.join(format!("{name}.toml"));
            let s = Scenario::load(&path, &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(s.name, name);
        }
    }
}
