//! How `loadgen idle` divides its connections among worker processes, and what it tells each.
//!
//! Owns the split (contiguous index ranges, sizes differing by at most one), the check that
//! every share fits a process's open-files limit, and each worker's command line. Invariant:
//! the shares cover `0..conns` exactly once, in order.

use anyhow::{Result, bail, ensure};

use super::IdleArgs;
use super::worker;
use crate::source_ips::SourceIps;

/// The default per-worker share: well under the 20,000-descriptor hard limit per process.
const CONNS_PER_WORKER_DEFAULT: u64 = 9_000;

/// `(first global index, count)` per worker.
pub(super) fn shares(conns: u64, workers: Option<u64>) -> Result<Vec<(u64, u64)>> {
    let workers = workers.unwrap_or_else(|| conns.div_ceil(CONNS_PER_WORKER_DEFAULT));
    ensure!(workers >= 1, "--workers must be at least 1");
    ensure!(
        workers <= conns,
        "more workers ({workers}) than connections ({conns})"
    );
    let (base, extra) = (conns / workers, conns % workers);
    let mut first = 0;
    Ok((0..workers)
        .map(|w| {
            let count = base + u64::from(w < extra);
            let share = (first, count);
            first += count;
            share
        })
        .collect())
}

/// Each worker inherits our hard limit; refuse a split that cannot fit before starting any.
pub(super) fn check_fd_limit(shares: &[(u64, u64)]) -> Result<()> {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    let largest = shares.iter().map(|&(_, count)| count).max().unwrap_or(0);
    if let Some(hard) = hard {
        let fits = hard.saturating_sub(worker::FDS_RESERVED);
        if largest > fits {
            bail!(
                "a worker would hold {largest} connections but a process may open at most \
                 {fits} here (hard limit {hard}); pass more --workers"
            );
        }
    }
    Ok(())
}

/// The command line of a worker holding connections `first..first + count`.
pub(super) fn worker_args(args: &IdleArgs, ips: &SourceIps, first: u64, count: u64) -> Vec<String> {
    let pairs = [
        ("--target", args.target.clone()),
        (
            "--jwt-secret-file",
            args.jwt_secret_file.display().to_string(),
        ),
        ("--first-index", first.to_string()),
        ("--count", count.to_string()),
        ("--user-base", args.user_base.to_string()),
        ("--source-ips", ips.to_arg()),
        ("--threads", args.threads.to_string()),
        ("--token-ttl-s", args.token_ttl_s.to_string()),
        (
            "--handshake-timeout-ms",
            args.handshake_timeout_ms.to_string(),
        ),
    ];
    let mut out = vec!["idle-worker".to_owned()];
    for (flag, value) in pairs {
        out.push(flag.to_owned());
        out.push(value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_connection_once() {
        assert_eq!(
            shares(10_000, None).expect("ok"),
            vec![(0, 5000), (5000, 5000)]
        );
        assert_eq!(shares(19_000, None).expect("ok").len(), 3);
        assert_eq!(
            shares(7, Some(3)).expect("ok"),
            vec![(0, 3), (3, 2), (5, 2)]
        );
        assert_eq!(shares(9_000, None).expect("ok"), vec![(0, 9_000)]);
        assert!(shares(2, Some(3)).is_err());
        assert!(shares(2, Some(0)).is_err());
    }
}
