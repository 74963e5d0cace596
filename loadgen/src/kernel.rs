//! Kernel-side memory and CPU readings from `/proc`: socket counts and TCP buffer pages
//! (`/proc/net/sockstat`), slab (`/proc/meminfo`), and this process's CPU time.
//!
//! Owns parsing those files; every parser is a pure function of the file's text so it is
//! tested without a kernel. These figures are system-wide: on loopback they count both ends of
//! every connection, and anything else running on the machine.

use anyhow::{Context, Result};

/// One reading of `/proc/net/sockstat` and `/proc/meminfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct KernelSample {
    /// `sockets: used`: every socket of every family.
    pub(crate) sockets_used: u64,
    /// `TCP: inuse`.
    pub(crate) tcp_inuse: u64,
    /// `TCP: mem`: pages charged to TCP socket buffers.
    pub(crate) tcp_mem_pages: u64,
    /// `Slab:` in bytes (socket structs live here, not in any process's RSS).
    pub(crate) slab_bytes: u64,
}

impl KernelSample {
    /// Reads both files now.
    pub(crate) fn read() -> Result<Self> {
        let sockstat =
            std::fs::read_to_string("/proc/net/sockstat").context("reading /proc/net/sockstat")?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
        Self::parse(&sockstat, &meminfo)
    }

    /// Parses the text of `/proc/net/sockstat` and `/proc/meminfo`.
    pub(crate) fn parse(sockstat: &str, meminfo: &str) -> Result<Self> {
        let field = |line: &str, key: &str| {
            field(sockstat, line, key)
                .with_context(|| format!("/proc/net/sockstat has no {line} {key}"))
        };
        let slab_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("Slab:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .context("/proc/meminfo has no Slab line")?;
        Ok(Self {
            sockets_used: field("sockets:", "used")?,
            tcp_inuse: field("TCP:", "inuse")?,
            tcp_mem_pages: field("TCP:", "mem")?,
            slab_bytes: slab_kib * 1024,
        })
    }
}

/// The bytes in one page, the unit of sockstat's `mem`.
pub(crate) fn page_bytes() -> u64 {
    rustix::param::page_size() as u64
}

/// The value after `key` on the line starting with `line` (`TCP: inuse 5 orphan 0 ...`).
fn field(text: &str, line: &str, key: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(line))?;
    let mut words = rest.split_whitespace();
    while let Some(word) = words.next() {
        if word == key {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// This process's user + system CPU time in milliseconds, from `/proc/self/stat`.
pub(crate) fn self_cpu_ms() -> Result<u64> {
    cpu_ms("/proc/self/stat")
}

/// Process `pid`'s user + system CPU time in milliseconds (all its threads).
pub(crate) fn pid_cpu_ms(pid: u32) -> Result<u64> {
    cpu_ms(&format!("/proc/{pid}/stat"))
}

fn cpu_ms(path: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let ticks = cpu_ticks(&stat).with_context(|| format!("unexpected layout of {path}"))?;
    Ok(ticks * 1000 / rustix::param::clock_ticks_per_second().max(1))
}

/// `utime + stime` (fields 14 and 15) from a `/proc/PID/stat` line.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: count from its last `)`.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11); // fields 3..=13
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Raises the soft open-files limit to the hard one and checks that `count` connections plus
/// `reserved` other descriptors fit (a worker's own files, pipes and epoll).
///
/// # Errors
/// The limit cannot be raised, or the hard limit is too low for `count`.
pub(crate) fn raise_fd_limit(count: u64, reserved: u64) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let hard = getrlimit(Resource::Nofile).maximum;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: hard,
            maximum: hard,
        },
    )
    .context("raising RLIMIT_NOFILE to its hard limit")?;
    if let Some(hard) = hard {
        anyhow::ensure!(
            count + reserved <= hard,
            "{count} connections need {} descriptors but the hard limit is {hard}; \
             use more --workers",
            count + reserved
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKSTAT: &str = "\
sockets: used 20123
TCP: inuse 20004 orphan 0 tw 12 alloc 20010 mem 37
UDP: inuse 1 mem 2
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 0 memory 0
";
    const MEMINFO: &str = "MemTotal:       24000000 kB\nSlab:             204800 kB\n";

    #[test]
    fn parses_sockstat_and_slab() {
        let s = KernelSample::parse(SOCKSTAT, MEMINFO).expect("parses");
        assert_eq!(
            s,
            KernelSample {
                sockets_used: 20_123,
                tcp_inuse: 20_004,
                tcp_mem_pages: 37,
                slab_bytes: 204_800 * 1024,
            }
        );
    }

    #[test]
    fn missing_fields_are_errors() {
        assert!(KernelSample::parse("sockets: used 1\n", MEMINFO).is_err());
        assert!(KernelSample::parse(SOCKSTAT, "MemTotal: 1 kB\n").is_err());
    }

    #[test]
    fn cpu_ticks_skip_odd_command_names() {
        let stat = "1234 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 1000 10";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
        assert!(self_cpu_ms().is_ok(), "our own stat parses");
        assert!(
            pid_cpu_ms(std::process::id()).is_ok(),
            "so does our stat by pid"
        );
    }
}
