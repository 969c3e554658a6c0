#!/usr/bin/env python3
"""The ucow benchmark suite (`make bench`).

Every scenario of Documentation/performance.md runs against its baselines in the same
invocation: several runs, the sides of a scenario alternate (the order rotates from run to
run), each side is prepared the same way right before it is measured, and images are
recreated for every run. Throughput scenarios use `ucow bench` on the ucow side and
`qemu-img bench` on the qcow2 side (the same workload and output), always with cache=none
(O_DIRECT) and io_uring. Times of whole commands (snapshot, info) are
time.perf_counter() around the child process, nothing subtracted; peak RSS is the child's
own ru_maxrss from os.wait4().

Output: a table on the terminal, results/bench-<date>.json (every run), a bar chart of the
ratios results/bench-<date>.png (gnuplot) copied to Documentation/perf.png, and the table in
Documentation/performance.md between its bench markers.
Python standard library only.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
PATTERN = 0xa5

# --------------------------------------------------------------------------------------------
# running children


class Failed(Exception):
    pass


def run(cmd, check=True):
    """Run cmd; return (output, seconds, peak RSS in KiB) of that child alone."""
    t0 = time.perf_counter()
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if check and p.returncode != 0:
        raise Failed("%s: exit %d\n%s" % (" ".join(map(str, cmd)), p.returncode, out))
    return out, dt, ru.ru_maxrss


def peak_rss(cmd, fallback):
    """Peak RSS (KiB) of cmd alone, measured by /usr/bin/time when it is installed.

    os.wait4()'s ru_maxrss of a direct child of this Python process is not usable: Linux
    keeps the larger of the old and the new high-water mark across exec, so it starts at
    Python's own RSS (~17 MiB). /usr/bin/time's child starts from time's own ~1 MiB."""
    if not os.access("/usr/bin/time", os.X_OK):
        return fallback
    with tempfile.NamedTemporaryFile("r", prefix="ucow-bench-rss.") as f:
        run(["/usr/bin/time", "-f", "%M", "-o", f.name] + list(cmd))
        return int(f.read().split()[-1])


RUN_RE = re.compile(r"Run completed in ([0-9.]+) seconds")


class Tools:
    def __init__(self, ucow, log):
        self.ucow = ucow
        self.log = log

    def bench(self, tool, fmt, path, count, depth, size, step=None, write=False, extra=()):
        """One `ucow bench` or `qemu-img bench` run; returns its own 'Run completed' time.
        A qemu-img path that is an NBD URI is read with qemu's defaults (cache and aio are
        options of local files)."""
        step = size if step is None else step
        if tool == "ucow":
            cmd = [self.ucow, "bench", "-f", fmt, "-t", "none", "-i", "uring"] + list(extra)
        elif str(path).startswith("nbd"):
            cmd = ["qemu-img", "bench", "-f", fmt]
        else:
            cmd = ["qemu-img", "bench", "-f", fmt, "-t", "none", "-i", "io_uring"]
        cmd += ["-c", count, "-d", depth, "-s", size, "-S", step]
        if write:
            cmd += ["-w", "--pattern=%d" % PATTERN]
        cmd.append(path)
        out, wall, rss = run(cmd)
        m = RUN_RE.search(out)
        if not m:
            raise Failed("no result in the output of %s:\n%s" % (" ".join(map(str, cmd)), out))
        self.log("      %-62s %8.3f s (process %.3f s)" % (" ".join(map(str, cmd[1:])).replace(
            os.path.dirname(path) + "/", "")[:62], float(m.group(1)), wall))
        self.last_wall = wall
        return float(m.group(1))

    def create(self, kind, path, size, backing=None, opts=None, bfmt="raw"):
        """kind: raw, ucow, qcow2 (opts: -o for qcow2/ucow)."""
        if os.path.exists(path):
            os.unlink(path)
        if kind == "raw":
            with open(path, "wb") as f:
                f.truncate(size)
            return
        if kind == "ucow":
            cmd = [self.ucow, "create", "-f", "ucow"]
        else:
            cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if opts:
            cmd += ["-o", opts]
        if backing:
            cmd += ["-b", backing, "-F", bfmt]
        run(cmd + [path, str(size)])

    def snapshot(self, kind, op, name, path):
        """Time one snapshot command (seconds, wall, whole process)."""
        if kind == "ucow":
            cmd = [self.ucow, "snapshot", op, name, path]
        else:
            cmd = ["qemu-img", "snapshot", op, name, path]
        _, dt, rss = run(cmd)
        return dt, rss


# --------------------------------------------------------------------------------------------
# the suite


def rotate(sides, r):
    k = r % len(sides)
    return sides[k:] + sides[:k]


class Suite:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.size = 256 * MiB if args.quick else 4 * GiB
        self.count = 4000 if args.quick else args.count      # 4 KiB requests, one per 64 KiB
        # S10: QD 1, a flush each; 20000 of them span ~20 fills of the default 4 MiB journal
        # (the p99.9 is the 20th slowest), in ~20 s for the three sides
        self.s10_count = min(self.count, 20000)
        self.big = 64 * GiB if args.quick else TiB            # S6
        self.records = []
        self.dir = None
        self.t = Tools(args.ucow, self.log)
        self.t.last_wall = 0.0
        self.verbose = args.verbose

    def log(self, msg):
        if self.verbose:
            print(msg, flush=True)

    def note(self, msg):
        print(msg, flush=True)

    def rec(self, scen, side, run_no, value, unit, **extra):
        r = dict(scenario=scen, side=side, run=run_no, value=value, unit=unit)
        if unit == "s" and "count" in extra:
            r["process_s"] = round(self.t.last_wall, 4)
        r.update(extra)
        self.records.append(r)

    def failed(self, scens, side, run_no, err):
        """A side that fails is recorded (and shown in the table); the suite goes on."""
        msg = str(err).strip().splitlines()
        msg = msg[-1] if msg else "failed"
        self.note("  FAILED %s %s: %s" % ("/".join(scens), side, str(err).strip()))
        for sc in scens:
            self.records.append(dict(scenario=sc, side=side, run=run_no, value=None,
                                     unit="s", error=msg))

    def p(self, name):
        return os.path.join(self.dir, name)

    def rm(self, *names):
        for n in names:
            try:
                os.unlink(self.p(n))
            except FileNotFoundError:
                pass

    # preparation shared by every kind of image: 64 KiB sequential writes, QD 32, over the
    # whole size, with the side's own tool (ucow bench / qemu-img bench)
    def fill(self, tool, fmt, path):
        return self.t.bench(tool, fmt, path, self.size // (64 * KiB), 32, 64 * KiB, write=True)

    def write4k(self, tool, fmt, path):
        return self.t.bench(tool, fmt, path, self.count, 32, 4 * KiB, 64 * KiB, write=True)

    def read1m(self, tool, fmt, path):
        return self.t.bench(tool, fmt, path, self.size // MiB, 8, MiB)

    # ---- setup shared by all runs
    def setup(self):
        need = set(self.args.only)
        if need & {"S2", "S4", "D", "S11"}:
            self.note("  setup: fully written raw base (%d MiB)" % (self.size // MiB))
            self.t.create("raw", self.p("base.raw"), self.size)
            self.fill("ucow", "raw", self.p("base.raw"))
        if "S6" in need:
            self.t.create("ucow", self.p("big.ucow"), self.big)
            self.t.create("qcow2", self.p("big.qcow2"), self.big)

    # ---- S1 and S4a: a fully written image; 1 MiB reads (S4a), then 4 KiB writes (S1)
    def s1_s4a(self, r):
        sides = [("raw", "ucow", "raw"), ("raw (qemu-img)", "qemu", "raw"), ("ucow", "ucow", "ucow")]
        for side, tool, fmt in rotate(sides, r):
            path = self.p("s1." + fmt)
            self.t.create("ucow" if fmt == "ucow" else "raw", path, self.size)
            try:
                self.fill(tool, fmt, path)
                self.rec("S4a", side, r, self.read1m(tool, fmt, path), "s", count=self.size // MiB)
                self.rec("S1", side, r, self.write4k(tool, fmt, path), "s", count=self.count)
            except Failed as e:
                self.failed(["S4a", "S1"], side, r, e)
            os.unlink(path)

    # ---- S2: 4 KiB writes into an empty overlay over the raw base
    S2_SIDES = [("ucow", "ucow", None), ("qcow2", "qcow2", "cluster_size=64k"),
                ("qcow2 extended_l2 128k", "qcow2", "cluster_size=128k,extended_l2=on")]

    def s2(self, r):
        base = self.p("base.raw")
        for side, kind, opts in rotate(self.S2_SIDES, r):
            path = self.p("s2." + kind)
            self.t.create(kind, path, self.size, backing=base, opts=opts)
            tool = "ucow" if kind == "ucow" else "qemu"
            try:
                self.rec("S2", side, r, self.write4k(tool, kind, path), "s", count=self.count)
            except Failed as e:
                self.failed(["S2"], side, r, e)
            os.unlink(path)

    # ---- S4b: 1 MiB reads of an empty overlay, all of it coming from the raw base
    def s4b(self, r):
        base = self.p("base.raw")
        sides = [("raw", "raw"), ("ucow", "ucow"), ("qcow2", "qcow2")]
        for side, kind in rotate(sides, r):
            path = self.p("s4b." + kind)
            try:
                if kind == "raw":
                    t = self.read1m("ucow", "raw", base)
                else:
                    self.t.create(kind, path, self.size, backing=base)
                    t = self.read1m("ucow" if kind == "ucow" else "qemu", kind, path)
                self.rec("S4b", side, r, t, "s", count=self.size // MiB)
            except Failed as e:
                self.failed(["S4b"], side, r, e)
            self.rm(os.path.basename(path))

    # ---- S3, S3b, S5: fully written image; snapshot -c (S5 create); 4 KiB writes (S3);
    # snapshot -a (S5 apply: back to the snapshot, dropping those writes); snapshot -d (S5
    # delete). S3b: the same with 10 snapshots taken before the writes.
    S3_SIDES = [("ucow", "ucow", None, 1), ("qcow2", "qcow2", None, 1),
                ("qcow2 lazy_refcounts", "qcow2", "lazy_refcounts=on", 1),
                ("ucow, 10 snapshots", "ucow", None, 10)]

    def s3(self, r):
        sides = [s for s in self.S3_SIDES if (s[3] == 1 or "S3b" in self.args.only) and
                 (not self.args.sides or s[0] in self.args.sides)]
        for side, kind, opts, nsnap in rotate(sides, r):
            path = self.p("s3." + kind)
            tool = "ucow" if kind == "ucow" else "qemu"
            self.t.create(kind, path, self.size, opts=opts)
            self.fill(tool, kind, path)
            # S4c: 1 MiB reads of the image before S3's writes and after them
            s4c = nsnap == 1 and kind == "ucow"
            if s4c:
                try:
                    self.rec("S4c", side + ", before S3", r, self.read1m(tool, kind, path), "s",
                             count=self.size // MiB)
                except Failed as e:
                    self.failed(["S4c"], side + ", before S3", r, e)
            names = ["s%d" % i for i in range(1, nsnap + 1)]
            ctimes = []
            for n in names:
                dt, _ = self.t.snapshot(kind, "-c", n, path)
                ctimes.append(dt)
            self.log("      snapshot -c x%d: %s" % (nsnap, " ".join("%.3f" % x for x in ctimes)))
            try:
                t = self.write4k(tool, kind, path)
                if nsnap == 1:
                    self.rec("S3", side, r, t, "s", count=self.count)
                else:
                    self.rec("S3b", side, r, t, "s", count=self.count, snapshot_create_s=ctimes)
            except Failed as e:
                self.failed(["S3" if nsnap == 1 else "S3b"], side, r, e)
            if s4c:
                try:
                    self.rec("S4c", side + ", after S3", r, self.read1m(tool, kind, path), "s",
                             count=self.size // MiB)
                except Failed as e:
                    self.failed(["S4c"], side + ", after S3", r, e)
            if nsnap > 1 and kind == "ucow" and r == 0:
                # S4c, the same reads once the underlays are folded (what a served device
                # does while idle, ublk/fold.c; here a snapshot create, which folds them
                # all, and its delete): the 10-snapshot image holds S3's layout and writes
                try:
                    dc, _ = self.t.snapshot(kind, "-c", "fold", path)
                    dd, _ = self.t.snapshot(kind, "-d", "fold", path)
                    self.rec("S4c fold", "ucow, create + delete", r, dc + dd, "s")
                    self.rec("S4c", "ucow, after S3 and the fold", r,
                             self.read1m(tool, kind, path), "s", count=self.size // MiB)
                except Failed as e:
                    self.failed(["S4c", "S4c fold"], "ucow, after S3 and the fold", r, e)
            if nsnap == 1:
                self.rec("S5 create", side, r, ctimes[0], "s")
                dt, _ = self.t.snapshot(kind, "-a", "s1", path)
                self.rec("S5 apply", side, r, dt, "s")
                dt, _ = self.t.snapshot(kind, "-d", "s1", path)
                self.rec("S5 delete", side, r, dt, "s")
                self.log("      snapshot -a, -d: %.3f %.3f" % (self.records[-2]["value"], dt))
            os.unlink(path)

    # ---- S6: open and close a 1 TiB image (info)
    def s6(self, r):
        sides = [("ucow", [self.args.ucow, "info", self.p("big.ucow")]),
                 ("qcow2", ["qemu-img", "info", self.p("big.qcow2")])]
        for side, cmd in rotate(sides, r):
            _, dt, rss = run(cmd)
            rss = peak_rss(cmd, rss)
            self.log("      %-60s %8.4f s %6d KiB" % (" ".join(map(str, cmd[1:]))[:60], dt, rss))
            self.rec("S6 time", side, r, dt, "s")
            self.rec("S6 RSS", side, r, rss, "KiB")

    # ---- D: chunk_size / block_size of S2's ucow side
    D_SIDES = ["1M/4k", "64k/4k", "256k/4k", "1M/64k", "4M/4k"]

    def defaults(self, r):
        base = self.p("base.raw")
        for v in rotate(self.D_SIDES, r):
            cs, bs = v.split("/")
            path = self.p("d.ucow")
            self.t.create("ucow", path, self.size, backing=base,
                          opts="chunk_size=%s,block_size=%s" % (cs, bs))
            try:
                self.rec("D", v, r, self.write4k("ucow", "ucow", path), "s", count=self.count)
            except Failed as e:
                self.failed(["D"], v, r, e)
            os.unlink(path)
        # and S3's ucow side (first writes after a snapshot), where chunk size sets the copy
        for v in rotate(self.D_SIDES, r):
            cs, bs = v.split("/")
            path = self.p("d3.ucow")
            self.t.create("ucow", path, self.size, opts="chunk_size=%s,block_size=%s" % (cs, bs))
            try:
                self.fill("ucow", "ucow", path)
                self.t.snapshot("ucow", "-c", "s1", path)
                self.rec("D3", v, r, self.write4k("ucow", "ucow", path), "s", count=self.count)
            except Failed as e:
                self.failed(["D3"], v, r, e)
            os.unlink(path)

    # ---- Q: qcow2 bases and compression (issue 12). Q1: reads of a fully written qcow2
    # (64 KiB clusters) through an empty ucow overlay, against qemu-img bench reading the
    # qcow2 itself (1 MiB sequential QD 8, and 4 KiB one per 64 KiB QD 32). Q2: a half-full
    # source of text-like data (16 MiB written, 16 MiB hole, over the whole size) converted
    # with -c at zlib level 6: ucow -O ucow against qemu-img -O qcow2, time and disk usage.
    # Q3: 1 MiB sequential reads QD 8 of those two compressed outputs.
    def q_setup(self):
        base = self.p("qbase.qcow2")
        if not os.path.exists(base):
            self.note("  setup: fully written qcow2 base (%d MiB)" % (self.size // MiB))
            self.t.create("qcow2", base, self.size, opts="cluster_size=64k")
            self.fill("qemu", "qcow2", base)
        src = self.p("qsrc.raw")
        if not os.path.exists(src):
            self.note("  setup: half-full text-like source (%d MiB)" % (self.size // MiB))
            import random
            rnd = random.Random(12)
            words = ["".join(rnd.choice("etaoinshrdlucmfwypvbgkqjxz") for _ in
                             range(rnd.randrange(2, 10))) for _ in range(3000)]
            out = bytearray()
            while len(out) < 16 * MiB:
                out += (" ".join(rnd.choice(words) for _ in range(4096)) + "\n").encode()
            out = bytes(out[:16 * MiB])
            with open(src, "wb") as f:
                f.truncate(self.size)
                for off in range(0, self.size, 32 * MiB):	# each 16 MiB turned differently
                    k = rnd.randrange(16 * MiB)
                    f.seek(off)
                    f.write(out[k:] + out[:k])

    def q(self, r):
        self.q_setup()
        base, src = self.p("qbase.qcow2"), self.p("qsrc.raw")
        for side, tool in rotate([("ucow overlay", "ucow"), ("qcow2 (qemu-img)", "qemu")], r):
            try:
                if tool == "ucow":
                    path = self.p("q1.ucow")
                    self.t.create("ucow", path, self.size, backing=base, bfmt="qcow2")
                    fmt = "ucow"
                else:
                    path, fmt = base, "qcow2"
                self.rec("Q1a", side, r, self.read1m(tool, fmt, path), "s", count=self.size // MiB)
                self.rec("Q1b", side, r, self.t.bench(tool, fmt, path, self.count, 32, 4 * KiB,
                                                      64 * KiB), "s", count=self.count)
            except Failed as e:
                self.failed(["Q1a", "Q1b"], side, r, e)
            self.rm("q1.ucow")
        # Q2 converts once (run 1: ~90 s of qemu-img's single-threaded zlib, far from its
        # goal); its outputs stay for Q3 in every run, removed after the last
        outs = {}
        conv = [("ucow -O ucow", [self.args.ucow, "convert", "-f", "raw", "-c", "-O", "ucow",
                                  src, self.p("q2.ucow")], "q2.ucow", "ucow", "ucow"),
                ("qemu-img -O qcow2", ["qemu-img", "convert", "-f", "raw", "-c", "-O", "qcow2",
                                       src, self.p("q2.qcow2")], "q2.qcow2", "qemu", "qcow2")]
        for side, cmd, name, tool, fmt in rotate(conv, r):
            if r and os.path.exists(self.p(name)):
                outs[side] = (tool, fmt, self.p(name))
                continue
            self.rm(name)
            try:
                _, dt, _ = run(cmd)
                st = os.stat(self.p(name))
                self.log("      %-60s %8.3f s %8d KiB" % (side, dt, st.st_blocks // 2))
                self.rec("Q2 time", side, r, dt, "s")
                self.rec("Q2 size", side, r, st.st_blocks * 512 // KiB, "KiB")
                outs[side] = (tool, fmt, self.p(name))
            except Failed as e:
                self.failed(["Q2 time", "Q2 size"], side, r, e)
        for side in rotate(list(outs), r):
            tool, fmt, path = outs[side]
            try:
                self.rec("Q3", side, r, self.read1m(tool, fmt, path), "s", count=self.size // MiB)
            except Failed as e:
                self.failed(["Q3"], side, r, e)
        if r + 1 >= self.args.runs:
            self.rm("q2.ucow", "q2.qcow2")

    # ---- S11: an empty overlay over an NBD base served from this machine (nbdkit's file
    # plugin, read-only, on a Unix socket, over the raw base of S2/S4b): reads through the
    # overlay (ucow bench, --allow-network-backing) against qemu-img bench reading the export
    # directly; 1 MiB sequential QD 8 (S11a) and 4 KiB one per 64 KiB QD 32 (S11b). Then the
    # second pass with copy-on-read: an overlay made with -o copy_on_read=on whose first pass
    # (`ucow io -C`, made once) copied the base into it, read as S11a/S11b (S11c, S11d)
    # against a local ucow image holding the same data (`ucow convert -O ucow` of the base).
    def s11(self, r):
        if not shutil.which("nbdkit"):
            raise Failed("nbdkit is missing (make deps)")
        base, sock = self.p("base.raw"), self.p("s11.sock")
        self.rm("s11.sock")
        srv = subprocess.Popen(["nbdkit", "-U", sock, "-f", "-r", "file", base],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if os.path.exists(sock):
                    break
                time.sleep(0.05)
            uri = "nbd+unix:///?socket=" + sock
            ov = self.p("s11.ucow")
            self.rm("s11.ucow")
            run([self.args.ucow, "create", "-q", "-f", "ucow", "-b", uri, "-F", "raw",
                 "--allow-network-backing", ov])
            net = ["--allow-network-backing"]
            for side, tool, fmt, path in rotate([("ucow overlay", "ucow", "ucow", ov),
                                                 ("NBD export (qemu-img)", "qemu", "raw", uri)], r):
                try:
                    self.rec("S11a", side, r, self.t.bench(tool, fmt, path, self.size // MiB, 8,
                                                           MiB, extra=net), "s",
                             count=self.size // MiB)
                    self.rec("S11b", side, r, self.t.bench(tool, fmt, path, self.count, 32,
                                                           4 * KiB, 64 * KiB, extra=net), "s",
                             count=self.count)
                except Failed as e:
                    self.failed(["S11a", "S11b"], side, r, e)
            self.rm("s11.ucow")
            cov, loc = self.p("s11c.ucow"), self.p("s11l.ucow")
            if not (os.path.exists(cov) and os.path.exists(loc)):
                self.rm("s11c.ucow", "s11l.ucow")
                run([self.args.ucow, "create", "-q", "-f", "ucow", "-b", uri, "-F", "raw",
                     "--allow-network-backing", "-o", "copy_on_read=on", cov])
                t0 = time.perf_counter()
                run([self.args.ucow, "io", "-q", "-C", "--allow-network-backing", "-c",
                     "read 0 %d" % self.size, cov])
                self.log("      first pass with copy-on-read (ucow io -C, one 8 MiB read at "
                         "a time): %.3f s" % (time.perf_counter() - t0))
                run([self.args.ucow, "convert", "-f", "raw", "-O", "ucow", base, loc])
            for side, path in rotate([("ucow overlay, copied on read", cov),
                                      ("ucow (local)", loc)], r):
                try:
                    self.rec("S11c", side, r, self.t.bench("ucow", "ucow", path,
                                                           self.size // MiB, 8, MiB,
                                                           extra=net), "s",
                             count=self.size // MiB)
                    self.rec("S11d", side, r, self.t.bench("ucow", "ucow", path, self.count,
                                                           32, 4 * KiB, 64 * KiB, extra=net),
                             "s", count=self.count)
                except Failed as e:
                    self.failed(["S11c", "S11d"], side, r, e)
        finally:
            srv.terminate()
            srv.wait()

    # ---- S10: 4 KiB writes at QD 1 with a flush after every write (--flush-interval=1 on
    # both tools), one per 32 KiB into an empty image, so that every write maps a new block
    # and every flush commits a journal record (ucow) or an L2/refcount update (qcow2): the
    # latency a database's commits see, checkpoints included. ucow and raw print their
    # latency percentiles (ucow bench --latency); qemu-img bench reports no percentiles, so
    # qcow2 has its mean only (time / count).
    LAT_RE = re.compile(r"Latency \(us\): mean ([0-9.]+), p50 ([0-9.]+), p99 ([0-9.]+), "
                        r"p99.9 ([0-9.]+), max ([0-9.]+)")

    def s10(self, r):
        sides = [("raw", "raw"), ("ucow", "ucow"), ("qcow2", "qcow2")]
        for side, kind in rotate(sides, r):
            path = self.p("s10." + kind)
            self.t.create(kind, path, self.size)
            try:
                if kind == "qcow2":
                    cmd = ["qemu-img", "bench", "-f", "qcow2", "-t", "none", "-i", "io_uring"]
                else:
                    cmd = [self.args.ucow, "bench", "-f", kind, "-t", "none", "-i", "uring",
                           "--latency"]
                cmd += ["-w", "-d", "1", "-c", self.s10_count, "-s", 4 * KiB, "-S", 32 * KiB,
                        "--flush-interval=1", path]
                out, wall, _ = run(cmd)
                m = RUN_RE.search(out)
                if not m:
                    raise Failed("no result in the output of %s:\n%s" % (" ".join(map(str, cmd)), out))
                mean = float(m.group(1)) / self.s10_count * 1e6
                lm = self.LAT_RE.search(out)
                if kind != "qcow2" and not lm:
                    raise Failed("no latency line in the output of %s:\n%s" % (" ".join(map(str, cmd)), out))
                if lm:
                    mean = float(lm.group(1))
                    self.rec("S10 p99.9", side, r, float(lm.group(4)), "us")
                    self.rec("S10 max", side, r, float(lm.group(5)), "us")
                    self.rec("S10 p50", side, r, float(lm.group(2)), "us")
                self.rec("S10 mean", side, r, mean, "us")
                self.log("      S10 %-6s %s" % (side, lm.group(0) if lm else "mean %.1f us" % mean))
            except Failed as e:
                self.failed(["S10 mean"], side, r, e)
            os.unlink(path)

    # ---- S12 and S5b (make bench-big): 4 KiB first writes, one per 1 MiB chunk, QD 32, into
    # empty images of 4 GiB, 64 GiB and 1 TiB (value: microseconds per request, so sizes
    # compare); then S5b, snapshot operations on the 1 TiB image that S12 left with every
    # chunk mapped: create, a second create, delete, apply, delete (time and peak RSS of
    # each command). qcow2 (64 KiB clusters) allocates a whole cluster for each first write
    # (64 GiB of disk for all of 1 TiB), so its 1 TiB run covers the first QCOW2_CAP of the
    # image, and its S5b image is a 1 TiB `preallocation=metadata` one (every cluster
    # mapped). The side "ucow (tmpfs)" runs S12 on a tmpfs (/dev/shm), where no file system
    # allocator runs: the engine's own cost as the image grows.
    QCOW2_CAP = 256 * GiB
    S5B_OPS = [("create", "-c", "s1"), ("create 2", "-c", "s2"), ("delete", "-d", "s2"),
               ("apply", "-a", "s1"), ("delete 2", "-d", "s1")]

    def s12_sizes(self):
        if self.quick:
            return [("4G", 256 * MiB), ("64G", 4 * GiB), ("1T", 16 * GiB)]
        return [("4G", 4 * GiB), ("64G", 64 * GiB), ("1T", TiB)]

    def s5b(self, side, kind, path, r):
        peak = 0
        for label, op, name in self.S5B_OPS:
            cmd = ([self.args.ucow, "snapshot"] if kind == "ucow" else
                   ["qemu-img", "snapshot"]) + [op, name, path]
            _, dt, _ = run(["/usr/bin/time", "-f", "%M", "-o", path + ".rss"] + cmd)
            with open(path + ".rss") as f:
                rss = int(f.read().split()[-1])
            os.unlink(path + ".rss")
            peak = max(peak, rss)
            self.log("      snapshot %s %s: %.3f s, %d KiB" % (op, name, dt, rss))
            self.rec("S5b " + label, side, r, dt, "s")
        self.rec("S5b RSS", side, r, peak, "KiB")

    def s12(self, r):
        shm = None
        if os.path.isdir("/dev/shm") and os.statvfs("/dev/shm").f_bavail * \
                os.statvfs("/dev/shm").f_frsize > 6 * GiB:
            shm = tempfile.mkdtemp(prefix="ucow-bench-s12.", dir="/dev/shm")
        # raw: the same writes into a sparse file of the same size, through the same engine
        # path with no format, so that what the file system costs as the span grows (ucow
        # puts chunk p at p MiB: the same span) is told apart from what the format costs
        sides = [("ucow", "ucow", self.dir), ("qcow2", "qcow2", self.dir),
                 ("raw", "raw", self.dir)]
        if shm:
            sides += [("ucow (tmpfs)", "ucow", shm), ("raw (tmpfs)", "raw", shm)]
        try:
            for side, kind, d in rotate(sides, r):
                tool = "qemu" if kind == "qcow2" else "ucow"
                path = os.path.join(d, "s12." + kind)
                for label, size in self.s12_sizes():
                    n = size // MiB
                    if kind == "qcow2" and size > self.QCOW2_CAP and not self.quick:
                        n = self.QCOW2_CAP // MiB
                    self.t.create(kind, path, size)
                    try:
                        t = self.t.bench(tool, kind, path, n, 32, 4 * KiB, MiB, write=True)
                        self.rec("S12 " + label, side, r, t * 1e6 / n, "us", requests=n)
                        if label == "1T" and side == "ucow":
                            self.s5b(side, kind, path, r)
                    except Failed as e:
                        self.failed(["S12 " + label], side, r, e)
                    os.unlink(path)
                if kind == "qcow2":
                    self.t.create("qcow2", path, self.s12_sizes()[-1][1],
                                  opts="preallocation=metadata")
                    try:
                        self.s5b(side, kind, path, r)
                    except Failed as e:
                        self.failed(["S5b " + x[0] for x in self.S5B_OPS], side, r, e)
                    os.unlink(path)
        finally:
            if shm:
                shutil.rmtree(shm, ignore_errors=True)

    PLAN = [("S1", "s1_s4a"), ("S2", "s2"), ("S3", "s3"), ("S4", "s4b"), ("S6", "s6"),
            ("Q", "q"), ("S11", "s11"), ("D", "defaults"), ("S12", "s12"),
            ("S10", "s10")]

    def go(self):
        only = set(self.args.only)
        for r in range(max(self.args.runs, self.args.cheap_runs)):
            for key, fn in self.PLAN:
                if key not in only:
                    continue
                # Q (a 4 GiB convert among them: ~100 s a run) is not cheap
                cheap = key in ("S2", "S4", "S6", "S11")
                once = key in ("S12", "S10")	# minutes per run: one
                if r >= (1 if once else self.args.cheap_runs if cheap else self.args.runs):
                    continue
                t0 = time.perf_counter()
                getattr(self, fn)(r)
                self.note("  run %d %-3s %6.1f s" % (r + 1, key, time.perf_counter() - t0))


# --------------------------------------------------------------------------------------------
# summary

# (scenario label, ucow side, baseline scenario, baseline side, goal: ratio, "faster" or None,
#  absolute limit (value, unit) or None, what)
COMPARE = [
    ("S1", "ucow", "S1", "raw", 0.95, None, "4 KiB writes QD 32, allocated"),
    ("S1", "raw (qemu-img)", "S1", "raw", None, None, "tool check: qemu-img bench"),
    ("S2", "ucow", "S2", "qcow2", 3.0, None, "4 KiB writes into empty overlay"),
    ("S2", "ucow", "S2", "qcow2 extended_l2 128k", 1.0, None, ""),
    ("S3", "ucow", "S3", "qcow2", 3.0, None, "first writes after 1 snapshot"),
    ("S3", "ucow", "S3", "qcow2 lazy_refcounts", 1.0, None, ""),
    ("S3", "ucow", "S2", "ucow", 0.667, None, "S3 against S2 (first writes: within 1.5x)"),
    ("S3b", "ucow, 10 snapshots", "S3", "ucow", 0.95, None, "first writes after 10 snapshots"),
    ("S4c", "ucow, after S3", "S4c", "ucow, before S3", 0.9, None, "1 MiB reads after S3 vs before"),
    ("S4c", "ucow, after S3 and the fold", "S4c", "ucow, before S3", 0.9, None,
     "the same once underlays are folded"),
    ("S4c fold", "ucow, create + delete", "S4c fold", None, None, None,
     "the fold itself: the copy S3 left out"),
    ("S4a", "ucow", "S4a", "raw", 0.95, None, "1 MiB reads QD 8, allocated"),
    ("S4a", "raw (qemu-img)", "S4a", "raw", None, None, "tool check: qemu-img bench"),
    ("S4b", "ucow", "S4b", "raw", 0.95, None, "1 MiB reads, empty overlay -> base"),
    ("S4b", "qcow2", "S4b", "raw", None, None, "(qcow2 overlay, for reference)"),
    ("S5 create", "ucow", "S5 create", "qcow2", "faster", (0.050, "s"), "snapshot -c, 4 GiB written"),
    ("S5 delete", "ucow", "S5 delete", "qcow2", "faster", None, "snapshot -d"),
    ("S5 apply", "ucow", "S5 apply", "qcow2", "faster", None, "snapshot -a"),
    ("S5 create", "qcow2 lazy_refcounts", "S5 create", "qcow2", None, None, "(lazy, reference)"),
    ("S6 time", "ucow", "S6 time", "qcow2", None, (0.050, "s"), "info of a 1 TiB image"),
    ("S6 RSS", "ucow", "S6 RSS", "qcow2", None, (32 * 1024, "KiB"), "peak RSS of that"),
    ("Q1a", "ucow overlay", "Q1a", "qcow2 (qemu-img)", 0.9, None, "1 MiB reads of a qcow2 base"),
    ("Q1b", "ucow overlay", "Q1b", "qcow2 (qemu-img)", 0.9, None, "4 KiB reads of a qcow2 base"),
    ("Q2 time", "ucow -O ucow", "Q2 time", "qemu-img -O qcow2", "faster", None, "convert -c, half-full"),
    ("Q2 size", "ucow -O ucow", "Q2 size", "qemu-img -O qcow2", 0.95, None, "its output's disk usage (<= 1.05x)"),
    ("Q3", "ucow -O ucow", "Q3", "qemu-img -O qcow2", 1.0, None, "1 MiB reads of the compressed image"),
    ("S11a", "ucow overlay", "S11a", "NBD export (qemu-img)", 0.8, None, "1 MiB reads, overlay over NBD base"),
    ("S11b", "ucow overlay", "S11b", "NBD export (qemu-img)", 0.8, None, "4 KiB reads, overlay over NBD base"),
    ("S11c", "ucow overlay, copied on read", "S11c", "ucow (local)", 0.9, None, "1 MiB reads, 2nd pass after copy-on-read"),
    ("S11d", "ucow overlay, copied on read", "S11d", "ucow (local)", 0.9, None, "4 KiB reads, 2nd pass after copy-on-read"),
    ("S10 mean", "ucow", "S10 mean", "raw", 0.77, None, "4 KiB writes + flush each, QD 1: mean (<= 1.3x raw)"),
    ("S10 mean", "qcow2", "S10 mean", "raw", None, None, "(qcow2: mean only, qemu-img bench)"),
    ("S10 p50", "ucow", "S10 p50", "raw", None, None, "p50"),
    ("S10 p99.9", "ucow", "S10 p99.9", "raw", 0.5, None, "p99.9 (<= 2x raw)"),
    ("S10 max", "ucow", "S10 p99.9", "raw", 0.1, None, "slowest request (<= 10x raw's p99.9)"),
    ("S12 4G", "ucow", "S12 4G", "qcow2", None, None, "first writes, 1 per 1 MiB, QD 32, 4 GiB"),
    ("S12 64G", "ucow", "S12 64G", "qcow2", None, None, "the same, 64 GiB"),
    ("S12 1T", "ucow", "S12 1T", "qcow2", 5.0, None, "the same, 1 TiB (qcow2: its first 256 GiB)"),
    ("S12 1T", "ucow", "S12 4G", "ucow", 0.7, None, "1 TiB rate against 4 GiB rate"),
    ("S12 1T", "raw", "S12 4G", "raw", None, None, "a raw file, same writes: the file system's own 1 TiB vs 4 GiB"),
    ("S12 4G", "ucow", "S12 4G", "raw", None, None, "the format's cost at 4 GiB (ucow vs raw)"),
    ("S12 1T", "ucow", "S12 1T", "raw", None, None, "the format's cost at 1 TiB (ucow vs raw)"),
    ("S12 64G", "ucow (tmpfs)", "S12 4G", "ucow (tmpfs)", None, None, "no file system allocator: 64 GiB vs 4 GiB"),
    ("S12 1T", "ucow (tmpfs)", "S12 4G", "ucow (tmpfs)", 0.7, None, "no file system allocator: 1 TiB vs 4 GiB"),
    ("S12 1T", "raw (tmpfs)", "S12 4G", "raw (tmpfs)", None, None, "tmpfs's own: raw 1 TiB vs 4 GiB"),
    ("S12 1T", "ucow (tmpfs)", "S12 1T", "raw (tmpfs)", None, None, "the format's cost at 1 TiB on tmpfs"),
    ("S5b create", "ucow", "S5b create", "qcow2", 20.0, (0.2, "s"), "snapshot -c, 1 TiB, every chunk mapped"),
    ("S5b create 2", "ucow", "S5b create 2", "qcow2", 20.0, (0.2, "s"), "a second snapshot -c"),
    ("S5b delete", "ucow", "S5b delete", "qcow2", 20.0, (0.2, "s"), "snapshot -d (the second)"),
    ("S5b apply", "ucow", "S5b apply", "qcow2", 20.0, (0.2, "s"), "snapshot -a (the first)"),
    ("S5b delete 2", "ucow", "S5b delete 2", "qcow2", 20.0, (0.2, "s"), "snapshot -d (the first)"),
    ("S5b RSS", "ucow", "S5b RSS", "qcow2", None, (64 * 1024, "KiB"), "peak RSS, the largest of the five"),
    ("D", "64k/4k", "D", "1M/4k", None, None, "S2 ucow, chunk/block"),
    ("D", "256k/4k", "D", "1M/4k", None, None, ""),
    ("D", "1M/64k", "D", "1M/4k", None, None, ""),
    ("D", "4M/4k", "D", "1M/4k", None, None, ""),
    ("D3", "64k/4k", "D3", "1M/4k", None, None, "S3 ucow, chunk/block"),
    ("D3", "256k/4k", "D3", "1M/4k", None, None, ""),
    ("D3", "1M/64k", "D3", "1M/4k", None, None, ""),
    ("D3", "4M/4k", "D3", "1M/4k", None, None, ""),
]


def fmt_val(v, unit):
    if unit == "us":
        return "%.1f us/req" % v
    if unit == "KiB":
        return "%.1f MiB" % (v / 1024)
    if v < 1:
        return "%.1f ms" % (v * 1000)
    return "%.3f s" % v


def summarize(records):
    med = {}
    groups = {}
    for r in records:
        groups.setdefault((r["scenario"], r["side"]), []).append(r)
    for k, rs in groups.items():
        vals = [x["value"] for x in rs if x["value"] is not None]
        errs = [x["error"] for x in rs if x.get("error")]
        med[k] = dict(median=statistics.median(vals) if vals else None, unit=rs[0]["unit"],
                      n=len(vals), values=vals, errors=errs,
                      count=next((x["count"] for x in rs if x.get("count")), None))
    rows = []
    for scen, side, bscen, bside, goal, limit, what in COMPARE:
        a, b = med.get((scen, side)), med.get((bscen, bside))
        if not a:
            continue
        if b and b["median"] is None:
            b = None
        row = dict(scenario=scen, side=side, what=what, median=a["median"], unit=a["unit"],
                   n=a["n"], values=a["values"], baseline=bside if b else None,
                   baseline_scenario=bscen)
        if a["errors"]:
            row["errors"] = a["errors"]
        if b:
            row["baseline_median"] = b["median"]
        if a["median"] is None:
            row.update(goal="" if goal is None and not limit else "see goal", met=False
                       if goal is not None or limit else None)
            rows.append(row)
            continue
        if a["count"] and a["unit"] == "s":
            row["iops"] = a["count"] / a["median"]
        if a["unit"] == "us" and a["median"] and scen.startswith(("S12", "S10 mean")):
            row["iops"] = 1e6 / a["median"]
        if b:
            row["baseline_median"] = b["median"]
            # times: baseline / ucow (>1: ucow faster); sizes (RSS): likewise smaller is better
            row["ratio"] = b["median"] / a["median"] if a["median"] else None
        goals, met = [], []
        if goal == "faster" and b:
            goals.append("faster")
            met.append(row["ratio"] > 1.0)
            row["goal_ratio"] = 1.0
        elif goal is not None and b:
            goals.append(">= %gx" % goal)
            met.append(row["ratio"] >= goal)
            row["goal_ratio"] = goal
        if limit:
            goals.append("<= " + fmt_val(*limit))
            met.append(a["median"] <= limit[0])
            row["limit"] = limit[0]
        row["goal"] = "; ".join(goals)
        row["met"] = all(met) if met else None
        rows.append(row)
    return rows


def table(rows):
    hdr = ["scenario", "side", "median", "baseline", "ratio", "goal", "met?"]
    lines = []
    for r in rows:
        base = ""
        if r.get("baseline"):
            base = "%s %s" % (r["baseline"], fmt_val(r["baseline_median"], r["unit"]))
            if r.get("baseline_scenario") and r["baseline_scenario"] != r["scenario"]:
                base = r["baseline_scenario"] + " " + base	# e.g. S3 against S2
        ratio = "%.2fx" % r["ratio"] if r.get("ratio") else ""
        if r["median"] is None:
            med = "FAILED (%d of %d runs): %s" % (len(r["errors"]), len(r["errors"]) + r["n"],
                                                  r["errors"][0].split(": ")[-1][:40])
        else:
            med = fmt_val(r["median"], r["unit"])
            if r.get("errors"):
                med += " (%d runs FAILED)" % len(r["errors"])
        if r.get("iops"):
            med += " (%d IOPS)" % round(r["iops"]) if r["scenario"] not in ("S4a", "S4b") else \
                " (%d MiB/s)" % round(r["iops"])
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        lines.append([r["scenario"], r["side"], med, base, ratio, r["goal"], met])
    if any(not r["scenario"].startswith(("S12", "S5b")) for r in rows):
        lines.append(["S7/S8", "ublk devices", "test bed: see the S7/S8 section", "", "", "", ""])
    return hdr, lines


def print_table(hdr, lines):
    w = [max(len(str(x[i])) for x in [hdr] + lines) for i in range(len(hdr))]
    out = []
    for i, l in enumerate([hdr] + lines):
        out.append("  ".join(str(c).ljust(w[j]) for j, c in enumerate(l)).rstrip())
        if i == 0:
            out.append("  ".join("-" * x for x in w))
    return "\n".join(out)


def md_table(hdr, lines):
    out = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for l in lines:
        out.append("| " + " | ".join(str(c) for c in l) + " |")
    return "\n".join(out)


def chart(rows, png, title):
    """Bar chart of the ratios (ucow vs baseline, log scale), the goal as a second bar."""
    pts = [r for r in rows if r.get("ratio") and r["scenario"][0] == "S"
           and r["side"] != "raw (qemu-img)" and not r["side"].startswith("qcow2")]
    if not pts or not shutil.which("gnuplot"):
        return False
    dat = png + ".dat"
    with open(dat, "w") as f:
        for r in pts:
            label = "%s vs %s" % (r["scenario"], r["baseline"] if r.get("baseline_scenario") in
                                  (None, r["scenario"]) else r["baseline_scenario"])
            label = label.replace("qcow2 extended_l2 128k", "xl2").replace(
                "qcow2 lazy_refcounts", "lazy").replace("ucow, 10 snapshots", "").replace(
                "S6 time", "S6").replace("S3b vs ucow", "S3b vs S3")
            f.write('"%s" %.4f %s\n' % (label, r["ratio"], r.get("goal_ratio") or "NaN"))
    gp = """set terminal pngcairo size 1100,560 font ",10"
set output '%s'
set title '%s'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y 2
set yrange [0.1:*]
set ylabel 'ratio (baseline time / ucow time; > 1 = ucow faster)'
set grid ytics
set xtics rotate by -35 scale 0
set key top right
plot '%s' using 2:xtic(1) title 'measured' lc rgb '#3060c0', \\
     '' using 3 title 'goal' lc rgb '#c0c0c0', \\
     1 notitle lc rgb 'black' dt 2
""" % (png, title, dat)
    r = subprocess.run(["gnuplot"], input=gp, text=True, capture_output=True)
    if r.returncode != 0:
        # pngcairo may be missing: fall back to the plain png terminal
        gp = gp.replace('set terminal pngcairo size 1100,560 font ",10"',
                        "set terminal png size 1100,560")
        r = subprocess.run(["gnuplot"], input=gp, text=True, capture_output=True)
    os.unlink(dat)
    if r.returncode != 0:
        print("gnuplot failed: " + r.stderr, file=sys.stderr)
        return False
    return True


# --------------------------------------------------------------------------------------------
# the machine


def machine(workdir):
    m = {"nproc": os.cpu_count(), "kernel": platform.release()}
    try:
        with open("/proc/meminfo") as f:
            for l in f:
                if l.startswith("MemTotal:"):
                    m["memory_gib"] = round(int(l.split()[1]) / (1024 * 1024), 1)
        with open("/proc/cpuinfo") as f:
            for l in f:
                if l.startswith("model name"):
                    m["cpu"] = l.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    best = ""
    try:
        real = os.path.realpath(workdir)
        with open("/proc/mounts") as f:
            for l in f:
                dev, mnt, fs, opts = l.split()[:4]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, m["fs"], m["fs_device"] = mnt, fs, dev
                    # online discard makes every hole punch (S5) wait for the device
                    m["fs_discard"] = "discard" in opts.split(",")
    except OSError:
        pass
    try:
        m["qemu_img"] = subprocess.run(["qemu-img", "--version"], capture_output=True,
                                       text=True).stdout.splitlines()[0]
        m["git"] = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                  capture_output=True, text=True).stdout.strip()
    except (OSError, IndexError):
        pass
    return m


def machine_line(m):
    return "%s CPUs (%s), %s GiB RAM, Linux %s, %s file system (%s%s); %s; ucow %s" % (
        m.get("nproc"), m.get("cpu", "?"), m.get("memory_gib", "?"), m.get("kernel"),
        m.get("fs", "?"), m.get("fs_device", "?"),
        ", mounted with online discard" if m.get("fs_discard") else "",
        m.get("qemu_img", "?"), m.get("git", "?"))


def update_doc(doc, hdr, lines, m, date, minutes, png_rel, marker="bench", target="make bench"):
    """Replace the text between the markers (bench, bench-big) of performance.md."""
    try:
        with open(doc) as f:
            text = f.read()
    except FileNotFoundError:
        return False
    b, e = "<!-- %s:begin -->" % marker, "<!-- %s:end -->" % marker
    if b not in text or e not in text:
        return False
    body = "\n".join([
        b,
        "Measured %s by `%s` (%.1f minutes) on: %s." % (date, target, minutes, machine_line(m)),
        "",
        md_table(hdr, lines)] + (["", "![ratios](%s)" % png_rel] if png_rel else []) + [e])
    text = text[:text.index(b)] + body + text[text.index(e) + len(e):]
    with open(doc, "w") as f:
        f.write(text)
    return True


# --------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="build folder holding ucow (default build)")
    ap.add_argument("--runs", type=int, default=3, help="runs of the expensive scenarios (3)")
    ap.add_argument("--cheap-runs", type=int, default=4, help="runs of S2, S4, S6, S11 (4)")
    ap.add_argument("--count", type=int, default=60000, help="4 KiB requests per run (60000)")
    ap.add_argument("--only", default="S1,S2,S3,S3b,S4,S5,S6,Q,S11,S10",
                    help="comma-separated scenarios (S1 S2 S3 S3b S4 S5 S6 Q S11 S10 D S12); S1 "
                    "also runs S4a, S3 also S5, S4 is S4b, Q is Q1-Q3 (qcow2 bases, convert "
                    "-c, compressed reads), S11 an overlay over an NBD base, S10 writes with a "
                    "flush after each (latency); D: chunk/block "
                    "defaults (not in make bench); S12: first writes into 4 GiB, 64 GiB and "
                    "1 TiB images, and S5b, snapshot operations on the 1 TiB one (make "
                    "bench-big, one run, about 10 minutes)")
    ap.add_argument("--s3-sides", dest="sides", default=None,
                    help="S3 sides to run (default all: ucow, qcow2, "
                    "qcow2 lazy_refcounts, ucow, 10 snapshots -- separated by ';')")
    ap.add_argument("--quick", action="store_true", help="256 MiB images, a smoke test")
    ap.add_argument("--dir", default=None, help="folder for the images (default: a new one in /tmp)")
    ap.add_argument("--no-doc", action="store_true", help="leave Documentation/ alone")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every command's result")
    args = ap.parse_args()
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    args.sides = [x.strip() for x in args.sides.split(";")] if args.sides else None
    known = [x[0] for x in Suite.S3_SIDES]
    for x in args.sides or []:
        if x not in known:
            ap.error("--s3-sides: unknown side '%s' (known: %s; separate them with ';')"
                     % (x, "; ".join(known)))
    if "S5" in args.only and "S3" not in args.only:
        args.only.append("S3")
    if "S3b" in args.only and "S3" not in args.only:
        args.only.append("S3")
    args.ucow = os.path.join(ROOT, args.build, "ucow") if not os.path.isabs(args.build) \
        else os.path.join(args.build, "ucow")
    if not os.access(args.ucow, os.X_OK):
        sys.exit("bench: %s not found (make BUILD=%s)" % (args.ucow, args.build))
    for tool in ("qemu-img",):
        if not shutil.which(tool):
            sys.exit("bench: %s is missing (make deps)" % tool)

    suite = Suite(args)
    suite.dir = args.dir or tempfile.mkdtemp(prefix="ucow-bench.", dir="/tmp")
    os.makedirs(suite.dir, exist_ok=True)
    m = machine(suite.dir)
    now = datetime.datetime.now()
    date = now.strftime("%Y-%m-%d %H:%M")
    stamp = now.strftime("%Y%m%d-%H%M%S")
    print("ucow bench: %s\n  images in %s, %d MiB, runs %d (cheap %d), %d x 4 KiB per run" % (
        machine_line(m), suite.dir, suite.size // MiB, args.runs, args.cheap_runs, suite.count),
        flush=True)
    t0 = time.perf_counter()
    err = None
    try:
        suite.setup()
        suite.go()
    except Failed as e:
        err = e
    except KeyboardInterrupt:
        err = "interrupted"
    finally:
        if not args.dir:
            shutil.rmtree(suite.dir, ignore_errors=True)
    minutes = (time.perf_counter() - t0) / 60
    rows = summarize(suite.records)
    hdr, lines = table(rows)
    print()
    print(print_table(hdr, lines))
    print("\ntotal %.1f minutes%s" % (minutes, "" if not err else " (INTERRUPTED)"))

    resdir = os.path.join(ROOT, "results")
    os.makedirs(resdir, exist_ok=True)
    jpath = os.path.join(resdir, "bench-%s.json" % stamp)
    with open(jpath, "w") as f:
        json.dump(dict(date=date, command="make bench" if not sys.argv[1:] or
                       sys.argv[1:3] == ["--build", args.build] and len(sys.argv) == 3
                       else "tests/bench/run.sh " + " ".join(sys.argv[1:]),
                       argv=sys.argv[1:], machine=m, minutes=round(minutes, 2),
                       config=dict(image_size=suite.size, count=suite.count, runs=args.runs,
                                   cheap_runs=args.cheap_runs, only=args.only,
                                   quick=args.quick, cache="none", aio="io_uring",
                                   fill="64 KiB sequential writes, QD 32, whole image"),
                       error=str(err) if err else None, summary=rows, runs=suite.records),
                  f, indent=1)
    print("results: %s" % os.path.relpath(jpath, ROOT))
    png = os.path.join(resdir, "bench-%s.png" % stamp)
    full = not args.quick and not err and set(args.only) >= {"S1", "S2", "S3", "S3b", "S4", "S5", "S6"}
    if chart(rows, png, "ucow vs baselines, %s (%s)" % (date, "quick" if args.quick else "4 GiB")):
        print("chart:   %s" % os.path.relpath(png, ROOT))
        if full and not args.no_doc:
            shutil.copy(png, os.path.join(ROOT, "Documentation", "perf.png"))
            if update_doc(os.path.join(ROOT, "Documentation", "performance.md"), hdr, lines, m,
                          date, minutes, "perf.png"):
                print("updated Documentation/performance.md and Documentation/perf.png")
    if args.only == ["S12"] and not args.quick and not err and not args.no_doc and \
            update_doc(os.path.join(ROOT, "Documentation", "performance.md"), hdr, lines, m,
                       date, minutes, None, "bench-big", "make bench-big"):
        print("updated Documentation/performance.md (S12, S5b)")
    if err:
        print("bench: %s" % err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
