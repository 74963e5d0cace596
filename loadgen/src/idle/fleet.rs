//! The coordinator's worker processes: spawning them, reading their lines, ending them.
//!
//! Owns the child processes and one reader thread per child that turns its stdout into
//! [`Message`]s on a single channel. Generic over the protocol's line type ([`Line`]), so
//! `idle` and `live` share it. Never leaves a worker behind: dropping a [`Fleet`] closes
//! every stdin (the workers' signal to exit), waits briefly, then kills any straggler.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A line type a worker writes, parsed by the coordinator's reader threads.
pub(crate) trait Line: Sized + Send + 'static {
    /// Parses one line (without its newline).
    fn parse_line(line: &str) -> Result<Self>;
}

impl Line for crate::idle::protocol::WorkerLine {
    fn parse_line(line: &str) -> Result<Self> {
        Self::parse(line)
    }
}

/// How long workers get to exit after their stdin closes before they are killed.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// Something a worker said, or its stdout closing.
#[derive(Debug)]
pub(crate) enum Message<L> {
    Line(L),
    /// A line the protocol does not know (a worker bug); kept for the error message.
    Garbled(String),
    /// The worker closed its stdout: it exited or crashed.
    Gone,
}

/// The running workers.
pub(crate) struct Fleet<L> {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    messages: Receiver<(usize, Message<L>)>,
}

impl<L: Line> Fleet<L> {
    /// Starts one worker per argument list: this same binary, stdio piped, stderr shared.
    pub(crate) fn spawn(arg_lists: &[Vec<String>]) -> Result<Self> {
        let exe = std::env::current_exe().context("finding the loadgen binary")?;
        let (tx, messages) = mpsc::channel();
        let mut fleet = Self {
            children: Vec::new(),
            stdins: Vec::new(),
            messages,
        };
        for (index, args) in arg_lists.iter().enumerate() {
            let mut child = Command::new(&exe)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting worker {index} ({})", exe.display()))?;
            let stdout = child.stdout.take().context("worker stdout is piped")?;
            fleet.stdins.push(child.stdin.take());
            fleet.children.push(child);
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(format!("worker-{index}-out"))
                .spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        let message = L::parse_line(&line)
                            .map_or_else(|_| Message::Garbled(line), Message::Line);
                        if tx.send((index, message)).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send((index, Message::Gone));
                })?;
        }
        Ok(fleet)
    }

    /// How many workers were started.
    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }

    /// The next message, or `None` if none came before `deadline`.
    pub(crate) fn next(&self, deadline: Instant) -> Option<(usize, Message<L>)> {
        let wait = deadline.saturating_duration_since(Instant::now());
        // A disconnected channel cannot happen while `self` holds the receiver and the
        // reader threads end only after sending `Gone`; either way there is nothing to read.
        self.messages.recv_timeout(wait).ok()
    }

    /// Sends one line to every worker.
    pub(crate) fn tell_all(&mut self, line: &str) -> Result<()> {
        self.tell_all_lines(std::slice::from_ref(&line))
    }

    /// Sends lines to every worker, flushing once per worker.
    pub(crate) fn tell_all_lines(&mut self, lines: &[impl AsRef<str>]) -> Result<()> {
        for (index, stdin) in self.stdins.iter_mut().enumerate() {
            let stdin = stdin
                .as_mut()
                .with_context(|| format!("worker {index} was released"))?;
            let mut buffered = std::io::BufWriter::new(&mut *stdin);
            for line in lines {
                writeln!(buffered, "{}", line.as_ref())
                    .with_context(|| format!("writing to worker {index}"))?;
            }
            buffered
                .flush()
                .with_context(|| format!("writing to worker {index}"))?;
            drop(buffered);
            stdin
                .flush()
                .with_context(|| format!("writing to worker {index}"))?;
        }
        Ok(())
    }
}

impl<L> Fleet<L> {
    /// Closes every stdin (workers exit, closing their connections) and reaps them.
    pub(crate) fn release(&mut self) {
        self.stdins.iter_mut().for_each(|stdin| drop(stdin.take()));
        let deadline = Instant::now() + EXIT_GRACE;
        for (index, child) in self.children.iter_mut().enumerate() {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(None) | Err(_) => {
                        eprintln!("loadgen: worker {index} did not exit; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}
