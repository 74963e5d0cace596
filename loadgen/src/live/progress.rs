//! The live progress line: phase, connections, sends/s, deliveries/s, p99 so far, errors.
//!
//! Owns presentation only, on stderr (stdout carries the summary). On a terminal it is one
//! line redrawn in place (indicatif); otherwise (CI logs) the same text is printed as a plain
//! line every [`PLAIN_EVERY`], so a log still shows how the run went.

// µs become f64 only to be shown in ms.
#![allow(clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::live::hist;
use crate::live::merge::Merge;

/// How often a plain (non-terminal) progress line is printed.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// The progress line; see the module doc.
pub(crate) struct Progress {
    bar: ProgressBar,
    plain: bool,
    last_plain: Instant,
    phase: &'static str,
    devices: u64,
}

impl Progress {
    /// A progress line for a run of `devices` devices.
    pub(crate) fn new(devices: u64) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .expect("a valid constant template"),
        );
        let plain = bar.is_hidden();
        if !plain {
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        let progress = Self {
            bar,
            plain,
            last_plain: Instant::now(),
            phase: "starting workers",
            devices,
        };
        progress.bar.set_message(progress.phase);
        progress
    }

    /// A new phase of the run.
    pub(crate) fn phase(&mut self, phase: &'static str) {
        self.phase = phase;
        self.bar.set_message(phase);
        if self.plain {
            eprintln!("loadgen: live: {phase}");
        }
    }

    /// Redraws from the latest figures.
    pub(crate) fn redraw(&mut self, merge: &Merge) {
        let Some((second, s)) = merge.timeline.iter().next_back() else {
            return;
        };
        let p99 = hist::quantile(&merge.e2e_so_far, 0.99)
            .map_or_else(|| "-".to_owned(), |us| format!("{:.1} ms", us as f64 / 1e3));
        let text = format!(
            "{} | s {} | conns {}/{} | sends/s {} | deliveries/s {} | p99 so far {p99} | \
             errors {}",
            self.phase,
            second + 1,
            s.conns,
            self.devices,
            s.sends,
            s.deliveries,
            merge.errors_so_far
        );
        if self.plain {
            if self.last_plain.elapsed() >= PLAIN_EVERY {
                eprintln!("loadgen: {text}");
                self.last_plain = Instant::now();
            }
        } else {
            self.bar.set_message(text);
        }
    }

    /// Clears the line.
    pub(crate) fn done(&self) {
        self.bar.finish_and_clear();
    }
}
