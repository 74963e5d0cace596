//! The line protocol between `loadgen live` and its worker processes (stdin/stdout).
//!
//! Owns the text of every line a worker writes ([`WorkerLine`]) and every command the
//! coordinator writes ([`Command`]); closing a worker's stdin tells it to exit. Histograms
//! travel in [`crate::live::hist`]'s text form, chat ids as 32 hex digits, ledger sets in
//! [`RangeSet`]'s text form. Invariant: `parse(&x.to_string()) == x` for every line of both
//! kinds (a test holds it), so the two sides cannot drift apart.

use std::fmt;

use anyhow::{Context, Result, bail, ensure};
use wire::ChatId;

use crate::live::ledger::Faults;
use crate::live::ranges::RangeSet;

/// Interval figures a worker sends once per second of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tick {
    /// Seconds since `go` this interval started at (negative ones are not sent).
    pub(crate) second: u64,
    /// Connections live at the end of the interval.
    pub(crate) conns: u64,
    /// Messages sent in the interval.
    pub(crate) sends: u64,
    /// `NewMessage`s applied in the interval.
    pub(crate) deliveries: u64,
    /// Errors (error results, failed connections, bad frames) in the interval.
    pub(crate) errors: u64,
    /// End-to-end latency of the interval's deliveries (µs), text form.
    pub(crate) e2e: String,
    /// Send → `Sent` latency of the interval's acknowledgements (µs), text form.
    pub(crate) sent: String,
}

/// One line from a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkerLine {
    /// Plan computed and tokens minted; waiting for [`Command::Connect`].
    Ready,
    /// Every device connected (or failed) and finished its first sync.
    Connected { ok: u64, failed: u64 },
    /// `count` connections or requests failed for `reason` (cumulative, sent with totals).
    Fail { count: u64, reason: String },
    /// Group `group` was created with this id.
    Chat { group: u32, id: ChatId },
    /// Every group this worker creates exists.
    SetupDone,
    /// One second's figures.
    Tick(Tick),
    /// The schedule is over, every device is back online and every send was answered (or
    /// the wait for that timed out).
    Drained,
    /// A final, measured-window histogram by name, text form.
    Hist { name: String, hist: String },
    /// A final counter by name.
    Count { name: String, value: u64 },
    /// Sender side of the ledger: device `device`'s messages to `chat`.
    Acked {
        device: u32,
        chat: ChatId,
        acked: RangeSet,
        maybe: RangeSet,
    },
    /// Churn event `event` took `devices` offline; the last one was synced again
    /// `synced_us` after the event (0 when none came back).
    Storm {
        event: u32,
        devices: u64,
        synced_us: u64,
    },
    /// Every final figure has been sent.
    Final,
    /// The ledger of one chat over this worker's devices (only chats with a fault), or the
    /// total over every chat when `chat` is `None`.
    Ledger {
        chat: Option<ChatId>,
        faults: Faults,
    },
    /// The ledger has been checked and reported.
    Checked,
}

/// One command from the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Connect every device (ramped over the scenario's `ramp_up_s`).
    Connect,
    /// Create the groups this worker's devices are creators of.
    Setup,
    /// Group `group` has this id.
    Chat { group: u32, id: ChatId },
    /// Start the schedule at `t0_ns` on the host's monotonic clock.
    Go { t0_ns: u64 },
    /// The grace period is over: send the final figures and the ledger's sender side.
    Finish,
    /// The sender side of the ledger from every worker (as [`WorkerLine::Acked`]).
    Expect {
        device: u32,
        chat: ChatId,
        acked: RangeSet,
        maybe: RangeSet,
    },
    /// Everything expected has been sent: check and report the ledger.
    Check,
}

/// A chat id as 32 hex digits.
pub(crate) fn chat_hex(id: ChatId) -> String {
    format!("{:032x}", id.get())
}

fn parse_chat(text: &str) -> Result<ChatId> {
    ensure!(text.len() == 32, "chat id {text:?} is not 32 hex digits");
    let raw = u128::from_str_radix(text, 16).context("chat id is not hex")?;
    ChatId::from_bytes(raw.to_be_bytes()).context("invalid chat id")
}

/// Reasons come from error messages; a newline would split the line.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// A line's words after its first, read in order.
struct Words<'a> {
    what: &'a str,
    rest: std::str::SplitWhitespace<'a>,
}

impl<'a> Words<'a> {
    fn new(what: &'a str, rest: &'a str) -> Self {
        Self {
            what,
            rest: rest.split_whitespace(),
        }
    }
    fn word(&mut self, name: &str) -> Result<&'a str> {
        let what = self.what;
        self.rest
            .next()
            .with_context(|| format!("{what} line lacks {name}"))
    }
    fn num<T: std::str::FromStr>(&mut self, name: &str) -> Result<T> {
        let text = self.word(name)?;
        let what = self.what;
        text.parse()
            .ok()
            .with_context(|| format!("{what} line: bad {name} {text:?}"))
    }
    fn chat(&mut self) -> Result<ChatId> {
        parse_chat(self.word("chat")?)
    }
    fn set(&mut self, name: &str) -> Result<RangeSet> {
        RangeSet::parse(self.word(name)?)
    }
    fn end(mut self) -> Result<()> {
        ensure!(
            self.rest.next().is_none(),
            "{} line has extra words",
            self.what
        );
        Ok(())
    }
}

impl WorkerLine {
    /// Parses one line (without its newline).
    pub(crate) fn parse(line: &str) -> Result<Self> {
        let (what, rest) = line.split_once(' ').unwrap_or((line, ""));
        let mut w = Words::new(what, rest);
        let parsed = match what {
            "ready" => Self::Ready,
            "connected" => Self::Connected {
                ok: w.num("ok")?,
                failed: w.num("failed")?,
            },
            "fail" => {
                let (count, reason) = rest.split_once(' ').context("fail line lacks reason")?;
                return Ok(Self::Fail {
                    count: count.parse().context("fail line: bad count")?,
                    reason: reason.to_owned(),
                });
            }
            "chat" => Self::Chat {
                group: w.num("group")?,
                id: w.chat()?,
            },
            "setup_done" => Self::SetupDone,
            "tick" => Self::Tick(Tick {
                second: w.num("second")?,
                conns: w.num("conns")?,
                sends: w.num("sends")?,
                deliveries: w.num("deliveries")?,
                errors: w.num("errors")?,
                e2e: w.word("e2e")?.to_owned(),
                sent: w.word("sent")?.to_owned(),
            }),
            "drained" => Self::Drained,
            "hist" => Self::Hist {
                name: w.word("name")?.to_owned(),
                hist: w.word("hist")?.to_owned(),
            },
            "count" => Self::Count {
                name: w.word("name")?.to_owned(),
                value: w.num("value")?,
            },
            "acked" => Self::Acked {
                device: w.num("device")?,
                chat: w.chat()?,
                acked: w.set("acked")?,
                maybe: w.set("maybe")?,
            },
            "storm" => Self::Storm {
                event: w.num("event")?,
                devices: w.num("devices")?,
                synced_us: w.num("synced_us")?,
            },
            "final" => Self::Final,
            "ledger" => {
                let chat = match w.word("chat")? {
                    "total" => None,
                    hex => Some(parse_chat(hex)?),
                };
                let faults = Faults {
                    delivered: w.num("delivered")?,
                    lost: w.num("lost")?,
                    dup: w.num("dup")?,
                    order: w.num("order")?,
                    phantom: w.num("phantom")?,
                    redelivered: w.num("redelivered")?,
                };
                Self::Ledger { chat, faults }
            }
            "checked" => Self::Checked,
            _ => bail!("unknown worker line {line:?}"),
        };
        w.end()?;
        Ok(parsed)
    }
}

impl fmt::Display for WorkerLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready => f.write_str("ready"),
            Self::Connected { ok, failed } => write!(f, "connected {ok} {failed}"),
            Self::Fail { count, reason } => write!(f, "fail {count} {}", one_line(reason)),
            Self::Chat { group, id } => write!(f, "chat {group} {}", chat_hex(*id)),
            Self::SetupDone => f.write_str("setup_done"),
            Self::Tick(t) => write!(
                f,
                "tick {} {} {} {} {} {} {}",
                t.second, t.conns, t.sends, t.deliveries, t.errors, t.e2e, t.sent
            ),
            Self::Drained => f.write_str("drained"),
            Self::Hist { name, hist } => write!(f, "hist {name} {hist}"),
            Self::Count { name, value } => write!(f, "count {name} {value}"),
            Self::Acked {
                device,
                chat,
                acked,
                maybe,
            } => write!(f, "acked {device} {} {acked} {maybe}", chat_hex(*chat)),
            Self::Storm {
                event,
                devices,
                synced_us,
            } => write!(f, "storm {event} {devices} {synced_us}"),
            Self::Final => f.write_str("final"),
            Self::Ledger { chat, faults: x } => {
                let chat = chat.map_or_else(|| "total".to_owned(), chat_hex);
                write!(
                    f,
                    "ledger {chat} {} {} {} {} {} {}",
                    x.delivered, x.lost, x.dup, x.order, x.phantom, x.redelivered
                )
            }
            Self::Checked => f.write_str("checked"),
        }
    }
}

impl Command {
    /// Parses one line (without its newline).
    pub(crate) fn parse(line: &str) -> Result<Self> {
        let (what, rest) = line.split_once(' ').unwrap_or((line, ""));
        let mut w = Words::new(what, rest);
        let parsed = match what {
            "connect" => Self::Connect,
            "setup" => Self::Setup,
            "chat" => Self::Chat {
                group: w.num("group")?,
                id: w.chat()?,
            },
            "go" => Self::Go {
                t0_ns: w.num("t0_ns")?,
            },
            "finish" => Self::Finish,
            "expect" => Self::Expect {
                device: w.num("device")?,
                chat: w.chat()?,
                acked: w.set("acked")?,
                maybe: w.set("maybe")?,
            },
            "check" => Self::Check,
            _ => bail!("unknown command {line:?}"),
        };
        w.end()?;
        Ok(parsed)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect => f.write_str("connect"),
            Self::Setup => f.write_str("setup"),
            Self::Chat { group, id } => write!(f, "chat {group} {}", chat_hex(*id)),
            Self::Go { t0_ns } => write!(f, "go {t0_ns}"),
            Self::Finish => f.write_str("finish"),
            Self::Expect {
                device,
                chat,
                acked,
                maybe,
            } => write!(f, "expect {device} {} {acked} {maybe}", chat_hex(*chat)),
            Self::Check => f.write_str("check"),
        }
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
