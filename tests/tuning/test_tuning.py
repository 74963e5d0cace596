"""Tests of tuning/check and tuning/apply against fake host trees (--root), standard library only.

Run: python3 -m unittest discover -s tests/tuning -v (the Rust test tests/tests/tuning.rs does).
Every test builds its own tree in a temporary directory; nothing here reads or writes the real
host's /proc, /sys or /etc.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(REPO, "tuning", "check")
APPLY = os.path.join(REPO, "tuning", "apply")

# A host generous enough for 1,000 connections on 2 cores: every item passes.
GOOD_SYSCTLS = {
    "fs.nr_open": "1048576",
    "fs.file-max": "2466177",
    "net.core.somaxconn": "4096",
    "net.ipv4.tcp_max_syn_backlog": "2048",
    "net.ipv4.ip_local_port_range": "32768\t60999",
    "net.ipv4.tcp_mem": "287901\t383868\t575802",
    "net.ipv4.tcp_rmem": "4096\t131072\t33554432",
    "net.ipv4.tcp_wmem": "4096\t16384\t4194304",
    "net.core.netdev_max_backlog": "1000",
    "net.netfilter.nf_conntrack_max": "262144",
    "kernel.io_uring_disabled": "0",
    "net.ipv4.tcp_tw_reuse": "2",
    "vm.dirty_background_bytes": "4194304",
    "vm.dirty_background_ratio": "0",
}
LIMITS = """Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            {nofile_soft}                {nofile_hard}                files
Max locked memory         {memlock}              {memlock}              bytes
"""


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def make_root(root, sysctls=None, nofile=(20000, 20000), memlock=64 << 20,
              mem_kib=(24684092, 23961012), thp="always [madvise] never", governor=None,
              rx_queues=2, rps=None):
    values = dict(GOOD_SYSCTLS)
    values.update(sysctls or {})
    for name, value in values.items():
        if value is not None:
            write(root, "proc/sys/" + name.replace(".", "/"), value + "\n")
    write(root, "proc/self/limits", LIMITS.format(
        nofile_soft=nofile[0], nofile_hard=nofile[1], memlock=memlock))
    write(root, "proc/meminfo", "MemTotal:       %d kB\nMemFree:        1 kB\n"
          "MemAvailable:   %d kB\n" % mem_kib)
    write(root, "sys/devices/system/cpu/online", "0-1\n")
    if thp is not None:
        write(root, "sys/kernel/mm/transparent_hugepage/enabled", thp + "\n")
    if governor is not None:
        for cpu in (0, 1):
            write(root, "sys/devices/system/cpu/cpu%d/cpufreq/scaling_governor" % cpu,
                  governor + "\n")
    os.makedirs(os.path.join(root, "sys/class/net/eth0/device"), exist_ok=True)
    for q in range(rx_queues):
        write(root, "sys/class/net/eth0/queues/rx-%d/rps_cpus" % q, (rps or "0") + "\n")
    os.makedirs(os.path.join(root, "sys/class/net/lo/queues/rx-0"), exist_ok=True)


def run(script, *args):
    res = subprocess.run([sys.executable, script] + list(args), capture_output=True, text=True,
                         check=False)
    return res.returncode, res.stdout + res.stderr


def verdicts(output):
    """{item name: verdict} from check's table."""
    out = {}
    for line in output.splitlines():
        if line.startswith(" ") or not line.strip():
            continue
        fields = line.split()
        if fields[-1] in ("PASS", "FAIL", "WARN", "INFO", "N/A"):
            out[line[:30].strip()] = fields[-1]
    return out


def snapshot(root):
    """{relative path: (bytes, mode)} of every file under root."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = (f.read(), os.stat(path).st_mode,
                                                    os.stat(path).st_mtime_ns)
    return out


class CheckTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def check(self, conns, *extra):
        code, out = run(CHECK, "--root", self.root, "--conns", str(conns), *extra)
        return code, out, verdicts(out)

    def test_good_host_passes_and_exits_zero(self):
        make_root(self.root)
        code, out, v = self.check(1000)
        self.assertEqual(code, 0, out)
        self.assertIn("verdict: PASS", out)
        self.assertNotIn("FAIL", v.values(), out)
        self.assertEqual(v["net.ipv4.ip_local_port_range"], "INFO")

    def test_fd_limit_of_20000_holds_19000_but_not_a_million(self):
        make_root(self.root, nofile=(20000, 20000))
        code, out, v = self.check(19000)
        self.assertEqual(v["nofile (ulimit -n)"], "PASS", out)
        self.assertEqual(code, 0, out)
        code, out, v = self.check(1_000_000)
        self.assertEqual(code, 1)
        self.assertEqual(v["nofile (ulimit -n)"], "FAIL")
        self.assertIn("the hard limit 20,000 is below the need", out)
        self.assertIn("at most 19,000 connections per process", out)
        self.assertIn("verdict: FAIL", out)

    def test_soft_fd_limit_below_need_with_room_in_hard(self):
        make_root(self.root, nofile=(1024, 2_000_000))
        _code, out, v = self.check(19000)
        self.assertEqual(v["nofile (ulimit -n)"], "FAIL")
        self.assertIn("raise the soft limit", out)

    def test_each_sysctl_passes_and_fails(self):
        # (item, bad value, conns): each bad value alone fails its item and only it.
        cases = [
            ("fs.nr_open", "1024", 19000),
            ("fs.file-max", "50000", 19000),
            ("net.core.somaxconn", "128", 19000),
            ("net.ipv4.tcp_max_syn_backlog", "512", 19000),
            ("net.core.netdev_max_backlog", "300", 19000),
            ("net.ipv4.tcp_mem", "1000 2000 3000", 19000),
            ("net.ipv4.tcp_rmem", "8192 131072 6291456", 19000),
            ("net.ipv4.tcp_wmem", "8192 16384 4194304", 19000),
            ("net.netfilter.nf_conntrack_max", "30000", 19000),
            ("kernel.io_uring_disabled", "2", 19000),
            # The kernel's default: writeback starts at a share of memory (ratio mode).
            ("vm.dirty_background_bytes", "0", 19000),
            ("vm.dirty_background_bytes", "67108864", 19000),
        ]
        for name, bad, conns in cases:
            with self.subTest(item=name), tempfile.TemporaryDirectory() as root:
                make_root(root)
                code, out = run(CHECK, "--root", root, "--conns", str(conns))
                self.assertEqual(code, 0, out)
                self.assertEqual(verdicts(out)[name], "PASS", out)
                make_root(root, sysctls={name: bad})
                code, out = run(CHECK, "--root", root, "--conns", str(conns))
                self.assertEqual(code, 1, out)
                failed = [k for k, s in verdicts(out).items() if s == "FAIL"]
                self.assertEqual(failed, [name], out)

    def test_a_million_needs_bigger_queues_and_small_buffer_defaults(self):
        make_root(self.root, nofile=(2_000_000, 2_000_000), mem_kib=(64 << 20, 60 << 20))
        _code, out, v = self.check(1_000_000)
        for name in ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog",
                     "net.core.netdev_max_backlog", "net.ipv4.tcp_mem", "net.ipv4.tcp_rmem",
                     "net.netfilter.nf_conntrack_max"):
            self.assertEqual(v[name], "FAIL", name + "\n" + out)
        self.assertEqual(v["net.ipv4.tcp_wmem"], "PASS")
        self.assertEqual(v["memory (idle)"], "PASS")

    def test_conntrack_not_loaded_is_not_applicable(self):
        make_root(self.root, sysctls={"net.netfilter.nf_conntrack_max": None})
        code, _out, v = self.check(1000)
        self.assertEqual(v["net.netfilter.nf_conntrack_max"], "N/A")
        self.assertEqual(code, 0)

    def test_memory_budget_against_available(self):
        # 100,000 x (2,890 + 5,100) B = 799 MB, + 20 MiB io + 128 MiB base: ~910 MiB.
        make_root(self.root, mem_kib=(2 << 20, 1 << 20))
        _code, out, v = self.check(100_000, "--cores", "2")
        self.assertEqual(v["memory (idle)"], "PASS", out)
        self.assertIn("gateway userspace 275.6 MiB", out)
        _code, out, v = self.check(100_000, "--bytes-per-conn", "20000")
        self.assertEqual(v["memory (idle)"], "FAIL", out)
        _code, out, v = self.check(100_000, "--kernel-bytes-per-conn", "20000")
        self.assertEqual(v["memory (idle)"], "FAIL", out)

    def test_thp_governor_cores(self):
        make_root(self.root, thp="[always] madvise never", governor="powersave")
        code, out, v = self.check(1000)
        self.assertEqual(v["transparent hugepages"], "FAIL", out)
        self.assertEqual(v["cpu governor"], "FAIL", out)
        self.assertEqual(code, 1)
        make_root(self.root, thp="always madvise [never]", governor="performance")
        code, out, v = self.check(1000)
        self.assertEqual(v["transparent hugepages"], "PASS", out)
        self.assertEqual(v["cpu governor"], "PASS", out)
        _code, out, v = self.check(1000, "--cores", "8")
        self.assertEqual(v["cores"], "FAIL", out)

    def test_governor_absent_is_not_applicable(self):
        make_root(self.root)
        _code, _out, v = self.check(1000)
        self.assertEqual(v["cpu governor"], "N/A")

    def test_memlock(self):
        make_root(self.root, memlock=256 * 1024)
        code, _out, v = self.check(1000)
        self.assertEqual(v["memlock (ulimit -l)"], "FAIL")
        self.assertEqual(code, 1)
        make_root(self.root, memlock=8 << 20)
        code, out, v = self.check(1000)
        self.assertEqual(v["memlock (ulimit -l)"], "WARN")
        self.assertEqual(code, 0, out)
        self.assertIn("warnings: memlock", out)

    def test_nic_queue_spread(self):
        make_root(self.root, rx_queues=1)
        code, _out, v = self.check(1000, "--cores", "2")
        self.assertEqual(v["nic eth0 queues"], "WARN")
        self.assertEqual(code, 0)
        self.assertNotIn("nic lo queues", v)
        make_root(self.root, rx_queues=1, rps="3")
        _code, _out, v = self.check(1000, "--cores", "2")
        self.assertEqual(v["nic eth0 queues"], "PASS")

    def test_ports_matter_for_loadgen_only(self):
        make_root(self.root, nofile=(200_000, 200_000))
        _code, _out, v = self.check(50_000)
        self.assertEqual(v["net.ipv4.ip_local_port_range"], "INFO")
        _code, out, v = self.check(50_000, "--profile", "loadgen")
        self.assertEqual(v["net.ipv4.ip_local_port_range"], "FAIL", out)
        self.assertIn("use 2 source addresses", out)
        make_root(self.root, sysctls={"net.ipv4.ip_local_port_range": "1024 65535"})
        _code, out, v = self.check(50_000, "--profile", "loadgen")
        self.assertEqual(v["net.ipv4.ip_local_port_range"], "PASS", out)

    def test_check_changes_nothing(self):
        make_root(self.root)
        before = snapshot(self.root)
        self.check(1_000_000)
        self.assertEqual(snapshot(self.root), before)


class ApplyTest(unittest.TestCase):
    SYSCTL = "etc/sysctl.d/90-switchboard.conf"
    LIMITS = "etc/security/limits.d/90-switchboard.conf"

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        make_root(self.root)
        # An operator's earlier file under the same name (odd bytes, odd mode): kept exactly.
        write(self.root, self.SYSCTL, "# hand-written\r\nnet.core.somaxconn=1024\n\x00tail")
        os.chmod(os.path.join(self.root, self.SYSCTL), 0o600)

    def tearDown(self):
        self.tmp.cleanup()

    def apply(self, *args):
        return run(APPLY, "--root", self.root, *args)

    def applied_drop_in(self, sysctls, conns):
        """Applies the gateway profile for `conns` to a tree with `sysctls`; the drop-in's text."""
        make_root(self.root, sysctls=sysctls)
        code, out = self.apply("--profile", "gateway", "--conns", str(conns), "--apply")
        self.assertEqual(code, 0, out)
        with open(os.path.join(self.root, self.SYSCTL)) as f:
            return f.read()

    def test_dry_run_changes_nothing(self):
        before = snapshot(self.root)
        code, out = self.apply("--profile", "gateway", "--conns", "1000000")
        self.assertEqual(code, 0, out)
        self.assertIn("dry run", out)
        self.assertIn("set  net.core.somaxconn = 8192 (now 4096)", out)
        self.assertIn("would write", out)
        self.assertEqual(snapshot(self.root), before)

    def test_apply_then_undo_restores_byte_for_byte(self):
        before = snapshot(self.root)
        code, out = self.apply("--profile", "gateway", "--conns", "1000000", "--apply")
        self.assertEqual(code, 0, out)
        self.assertIn("not running sysctl -p", out)
        with open(os.path.join(self.root, self.SYSCTL)) as f:
            text = f.read()
        self.assertIn("net.core.somaxconn = 8192\n", text)
        self.assertIn("net.ipv4.tcp_rmem = 4096 16384 33554432\n", text)
        with open(os.path.join(self.root, self.LIMITS)) as f:
            self.assertIn("switchboard hard nofile 1001000\n", f.read())
        backups = os.path.join(self.root, "var/backups/switchboard-tuning")
        self.assertTrue(os.path.exists(os.path.join(backups, "manifest.json")))
        code, out = self.apply("--undo")
        self.assertEqual(code, 0, out)
        after = snapshot(self.root)
        self.assertEqual({k: v[:2] for k, v in after.items()},
                         {k: v[:2] for k, v in before.items()})
        self.assertFalse(os.path.exists(os.path.join(self.root, self.LIMITS)))
        self.assertFalse(os.path.exists(backups))
        code, out = self.apply("--undo")
        self.assertEqual(code, 0, out)
        self.assertIn("nothing to undo", out)

    def test_second_apply_changes_nothing(self):
        args = ("--profile", "gateway", "--conns", "1000000", "--apply")
        code, out = self.apply(*args)
        self.assertEqual(code, 0, out)
        once = snapshot(self.root)
        code, out = self.apply(*args)
        self.assertEqual(code, 0, out)
        self.assertIn("nothing to change", out)
        self.assertEqual(snapshot(self.root), once)
        # Undo after two applies still returns the original, not the first apply's output.
        self.apply("--undo")
        with open(os.path.join(self.root, self.SYSCTL), "rb") as f:
            self.assertEqual(f.read(), b"# hand-written\r\nnet.core.somaxconn=1024\n\x00tail")

    def test_undo_with_a_lost_backup_changes_nothing(self):
        self.apply("--profile", "gateway", "--conns", "1000", "--apply")
        os.unlink(os.path.join(self.root, "var/backups/switchboard-tuning",
                               "etc_sysctl.d_90-switchboard.conf.orig"))
        before = snapshot(self.root)
        code, out = self.apply("--undo")
        self.assertEqual(code, 1, out)
        self.assertIn("backup files missing", out)
        self.assertEqual(snapshot(self.root), before)

    def test_never_lowers_a_limit(self):
        text = self.applied_drop_in({"net.core.somaxconn": "65535"}, 1000000)
        self.assertIn("net.core.somaxconn = 65535\n", text)

    def test_applied_values_pass_check(self):
        code, out = self.apply("--profile", "gateway", "--conns", "1000000", "--apply")
        self.assertEqual(code, 0, out)
        # Play a login under the new limits and `sysctl -p` of the drop-in into the fake tree.
        make_root(self.root, nofile=(1001000, 1001000), memlock=60 << 20,
                  mem_kib=(64 << 20, 60 << 20))
        with open(os.path.join(self.root, self.SYSCTL)) as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    name, _, value = line.partition("=")
                    write(self.root, "proc/sys/" + name.strip().replace(".", "/"),
                          value.strip() + "\n")
        code, out = run(CHECK, "--root", self.root, "--conns", "1000000", "--cores", "2")
        self.assertEqual(code, 0, out)

    def test_writeback_leaves_ratio_mode_and_undo_records_the_ratio(self):
        text = self.applied_drop_in({"vm.dirty_background_bytes": "0",
                                     "vm.dirty_background_ratio": "10"}, 1000)
        self.assertIn("vm.dirty_background_bytes = 4194304\n", text)
        manifest = os.path.join(self.root, "var/backups/switchboard-tuning/manifest.json")
        with open(manifest) as f:
            before = json.load(f)["sysctl_before"]
        # The kernel refuses vm.dirty_background_bytes = 0: undo restores the ratio instead.
        self.assertEqual(before.get("vm.dirty_background_ratio"), "10")
        self.assertNotIn("vm.dirty_background_bytes", before)

    def test_writeback_already_small_is_kept(self):
        text = self.applied_drop_in({"vm.dirty_background_bytes": "1048576"}, 1000)
        self.assertIn("vm.dirty_background_bytes = 1048576\n", text)

    def test_loadgen_profile_opens_the_port_range(self):
        code, out = self.apply("--profile", "loadgen", "--conns", "100000")
        self.assertEqual(code, 0, out)
        self.assertIn("set  net.ipv4.ip_local_port_range = 1024 65535", out)
        self.assertNotIn("somaxconn", out)
        self.assertNotIn("dirty_background", out)

    def test_missing_sysctl_is_skipped(self):
        make_root(self.root, sysctls={"net.netfilter.nf_conntrack_max": None})
        os.unlink(os.path.join(self.root, "proc/sys/net/netfilter/nf_conntrack_max"))
        code, out = self.apply("--profile", "gateway", "--conns", "1000")
        self.assertEqual(code, 0, out)
        self.assertIn("skip net.netfilter.nf_conntrack_max", out)

    def test_bad_arguments(self):
        code, _out = self.apply("--conns", "10")
        self.assertEqual(code, 2)
        code, _out = self.apply("--undo", "--apply")
        self.assertEqual(code, 2)


if __name__ == "__main__":
    unittest.main()
