"""Shared code of `tuning/check` and `tuning/apply`: reading a host, and what N connections need.

Owns: every read of host state (always through a root prefix, so tests use a fake tree) and the
one table of sizing rules both scripts use. Must never write anything: only `apply` writes, and
only files under the root it was given.

Invariant: a value that cannot be read is `None`, never a guess; callers report it as N/A.
"""

import math
import os
import resource

# The gateway's userspace memory per idle authenticated connection: `scripts/bench-idle 19000`
# (RSS increase / connections, one core, system allocator). Override with --bytes-per-conn.
GATEWAY_BYTES_PER_CONN = 2_890
# The kernel's cost per idle TCP socket, outside RSS: ~4 KiB of slab (tcp_sock, socket inode,
# file, dentry) plus a minimal share of socket buffers. FACTS.md measured ~4 KiB of slab per idle
# socket and ~10.2 KB per loopback connection pair, i.e. ~5.1 KB per socket. Override with
# --kernel-bytes-per-conn.
KERNEL_BYTES_PER_CONN = 5_100
# Glommio reserves 10 MiB of IO memory per executor (one executor per core).
IO_MEMORY_BYTES_PER_CORE = 10 * 1024 * 1024
# Glommio registers that IO memory with each of its 3 rings; the kernel charges every
# registration against RLIMIT_MEMLOCK, so an executor may pin up to 3 x 10 MiB.
MEMLOCK_BYTES_PER_CORE = 3 * IO_MEMORY_BYTES_PER_CORE
# Below this soft RLIMIT_MEMLOCK Glommio 0.9 refuses to start a reactor at all (sys/uring.rs).
MEMLOCK_BYTES_MIN = 512 * 1024
# The process itself, the store's threads and caches, ops and media servers: an estimate, not a
# measurement (the idle figure above is the measured part).
BASE_BYTES = 128 * 1024 * 1024
# File descriptors besides client connections: listeners, io_uring rings and eventfds, store log
# segments and index tables, ops and media connections in flight. A host running the local media
# backend at its full media_connections_max (1024) should pass --reserve-fds 2000.
FD_RESERVE = 1_000
# Files the rest of the system holds at once (fs.file-max is system-wide).
SYSTEM_FILES_HEADROOM = 65_536
# A drain spreads reconnects over drain_window_ms (gateway default 10 s): the peak arrival rate
# a host must absorb is N / 10 s.
DRAIN_WINDOW_S = 10
# The accept queue must absorb this long a stall of one core's accept loop at that rate.
ACCEPT_STALL_S = 0.1
# Half-open connections live about one SYN-ACK round trip (200 ms for a distant mobile client).
SYN_RTT_S = 0.2
# During a broadcast, one packet per this many connections per core arrives in one softirq round.
CONNS_PER_BACKLOG_PACKET = 32
# From here on the per-socket buffer defaults matter more than per-socket throughput.
LARGE_CONNS = 100_000
# Small chat frames need little initial window; this is the kernel's wmem default.
SOCKET_BUFFER_DEFAULT_BYTES = 16_384
PAGE_BYTES = 4096
# Start background writeback once this much is dirty (vm.dirty_background_bytes). The store's
# index writes ~3x the log's bytes in bursts (memtable flushes, compactions, each ending in an
# fsync); with the default 10% of memory they reach the disk all at once and the log's next
# fdatasync, which every acknowledgement waits for, queues behind them. Measured with the
# store_engine bench at 100k msg/s on the 2-core VM (alternated, 2 runs x 3 rounds): ack p99
# 12.2-16.2 ms (median 13.7) at the default against 9.2-12.3 ms (median ~10) at 4 MiB, time in
# log syncs over 10 ms 1.0-1.6% against 0.2-0.4%; 1 MiB and 16 MiB measured no better.
DIRTY_BACKGROUND_BYTES = 4 * 1024 * 1024
# The client side: one local port per connection per (source address, destination) pair.
PORTS_AVAILABLE_MAX = 65_535 - 1_024 + 1

INF = math.inf


def pow2_at_least(value):
    """The smallest power of two >= value (at least 1)."""
    return 1 << max(0, math.ceil(value) - 1).bit_length()


def needs(conns, cores, reserve_fds=FD_RESERVE):
    """What N connections on C cores need of the host, by sysctl or item name."""
    fds = conns + reserve_fds
    rate = conns / DRAIN_WINDOW_S
    return {
        "nofile": fds,
        "fs.nr_open": fds,
        "fs.file-max": fds + SYSTEM_FILES_HEADROOM,
        "net.core.somaxconn": max(1024, pow2_at_least(rate * ACCEPT_STALL_S / cores)),
        "net.ipv4.tcp_max_syn_backlog": max(1024, pow2_at_least(rate * SYN_RTT_S)),
        "net.core.netdev_max_backlog": max(
            1000, pow2_at_least(conns / cores / CONNS_PER_BACKLOG_PACKET)
        ),
        # tcp_mem is in pages: one page of buffers per connection at once before pressure.
        "tcp_mem_pressure_pages": conns,
        "socket_buffer_default_max": SOCKET_BUFFER_DEFAULT_BYTES if conns >= LARGE_CONNS else None,
        "net.netfilter.nf_conntrack_max": 2 * fds,
        "memlock": cores * MEMLOCK_BYTES_PER_CORE,
        "ports": min(conns, PORTS_AVAILABLE_MAX),
        "vm.dirty_background_bytes": DIRTY_BACKGROUND_BYTES,
    }


def memory_budget(conns, cores, bytes_per_conn, kernel_bytes_per_conn):
    """Bytes one gateway process with N idle connections needs: (idle total, breakdown)."""
    parts = [
        ("gateway userspace", conns * bytes_per_conn),
        ("kernel sockets", conns * kernel_bytes_per_conn),
        ("io memory", cores * IO_MEMORY_BYTES_PER_CORE),
        ("process base (estimate)", BASE_BYTES),
    ]
    return sum(p[1] for p in parts), parts


class Host:
    """A Linux host seen through a root prefix ("/" for the real one)."""

    def __init__(self, root="/", pid=None):
        self.root = root
        self.pid = pid

    @property
    def is_real(self):
        return os.path.realpath(self.root) == "/"

    def path(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    def read(self, rel):
        """The file's text stripped, or None when it is absent or unreadable."""
        try:
            with open(self.path(rel), encoding="utf-8", errors="replace") as f:
                return f.read().strip()
        except OSError:
            return None

    @staticmethod
    def sysctl_rel(name):
        return "proc/sys/" + name.replace(".", "/")

    def sysctl(self, name):
        """A sysctl as a list of ints (most are one), or None."""
        text = self.read(self.sysctl_rel(name))
        if text is None:
            return None
        try:
            values = [int(x) for x in text.split()]
        except ValueError:
            return None
        return values or None

    def sysctl_text(self, name):
        text = self.read(self.sysctl_rel(name))
        return None if text is None else " ".join(text.split())

    def rlimits(self):
        """{"nofile": (soft, hard), "memlock": (soft, hard)} in files and bytes, or None.

        The real host with no --pid: this process's own limits (`resource.getrlimit`), which are
        those the shell gives a gateway started from it. Otherwise `<root>/proc/<pid|self>/limits`
        in the kernel's format, so tests (and --pid for a running gateway) read a file.
        """
        if self.is_real and self.pid is None:
            out = {}
            for key, res in (("nofile", resource.RLIMIT_NOFILE),
                             ("memlock", resource.RLIMIT_MEMLOCK)):
                soft, hard = resource.getrlimit(res)
                out[key] = tuple(INF if v == resource.RLIM_INFINITY else v for v in (soft, hard))
            return out
        text = self.read("proc/%s/limits" % (self.pid or "self"))
        if text is None:
            return None
        return parse_limits(text)

    def meminfo(self):
        """{"MemTotal": bytes, "MemAvailable": bytes, ...} or None."""
        text = self.read("proc/meminfo")
        if text is None:
            return None
        out = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields and fields[0].isdigit():
                factor = 1024 if len(fields) > 1 and fields[1] == "kB" else 1
                out[key.strip()] = int(fields[0]) * factor
        return out

    def online_cpus(self):
        """How many CPUs are online, or None."""
        text = self.read("sys/devices/system/cpu/online")
        if text:
            count = 0
            try:
                for part in text.split(","):
                    lo, _, hi = part.partition("-")
                    count += int(hi or lo) - int(lo) + 1
                return count
            except ValueError:
                pass
        text = self.read("proc/cpuinfo")
        if text:
            count = sum(1 for line in text.splitlines() if line.startswith("processor"))
            if count:
                return count
        return os.cpu_count() if self.is_real else None

    def listdir(self, rel):
        try:
            return sorted(os.listdir(self.path(rel)))
        except OSError:
            return []


def parse_limits(text):
    """Parse /proc/<pid>/limits into {"nofile": (soft, hard), "memlock": (soft, hard)}."""
    names = {"Max open files": "nofile", "Max locked memory": "memlock"}
    out = {}
    for line in text.splitlines():
        for label, key in names.items():
            if line.startswith(label):
                fields = line[len(label):].split()
                if len(fields) >= 2:
                    out[key] = tuple(INF if f == "unlimited" else int(f) for f in fields[:2])
    return out


def human_bytes(n):
    """1536 -> '1.5 KiB'."""
    if n == INF:
        return "unlimited"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024
    return str(n)


def num(n):
    """1000000 -> '1,000,000'; infinity -> 'unlimited'."""
    return "unlimited" if n == INF else "{:,}".format(int(n))
