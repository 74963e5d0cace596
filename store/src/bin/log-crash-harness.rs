//! Helper process for the SIGKILL crash test (`tests/log_crash.rs`): not a tool.
//!
//! `log-crash-harness <dir> <tag>` opens the log in `<dir>` (recovering it), prints
//! `open <next_lsn> <bytes_dropped>`, then appends from two threads, each keeping a few
//! requests in flight, until killed. As soon as a request's future resolves it prints one line
//! `ack <lsn> <id>` per record (ids are `<tag>-<thread>-<n>`) and flushes stdout, so every
//! line the test reads was acknowledged before the process died. A failed append prints
//! `err <id>` and stops that thread.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Write;
use std::ops::Range;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use store::log::{Completion, Log, LogOptions, Lsn};

/// Small segments, so the crash runs cross segment boundaries often.
const SEGMENT_BYTES_MAX: u64 = 64 * 1024;
/// Requests each thread keeps in flight, so batches hold several of them.
const IN_FLIGHT_MAX: usize = 4;
const THREADS: usize = 2;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(tag)) = (args.next(), args.next()) else {
        return Err("usage: log-crash-harness <dir> <tag>".into());
    };
    let options = LogOptions {
        segment_bytes_max: SEGMENT_BYTES_MAX,
        ..LogOptions::default()
    };
    let log = Log::open(&dir, options)?;
    let recovery = log.recovery();
    println!("open {} {}", recovery.next_lsn(), recovery.bytes_dropped());
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let handle = log.handle();
            let tag = format!("{tag}-{t}");
            thread::spawn(move || produce(&handle, &tag))
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| "a producer panicked")?;
    }
    Ok(())
}

/// Appends forever (batches of 1 to 8 records), printing each acknowledgement in order.
fn produce(handle: &store::log::LogHandle, tag: &str) {
    let mut in_flight: VecDeque<(Completion<Range<Lsn>>, Vec<String>)> = VecDeque::new();
    for n in 0_u64.. {
        let ids: Vec<String> = (0..=n % 8)
            .map(|k| format!("{tag}-{}", n * 8 + k))
            .collect();
        let payloads = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
        in_flight.push_back((handle.append_batch(payloads), ids));
        if in_flight.len() < IN_FLIGHT_MAX {
            continue;
        }
        let (completion, ids) = in_flight.pop_front().expect("the queue is full");
        let mut out = std::io::stdout().lock();
        let written = match block_on(completion) {
            Ok(lsns) => ids
                .iter()
                .zip(lsns)
                .try_for_each(|(id, lsn)| writeln!(out, "ack {lsn} {id}")),
            Err(error) => {
                let _ = writeln!(out, "err {} {error}", ids[0]);
                return;
            }
        };
        if written.and_then(|()| out.flush()).is_err() {
            return; // The test stopped reading.
        }
    }
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread (the log needs no runtime).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}
