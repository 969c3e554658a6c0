#!/usr/bin/env python3
"""`make bench-vm`: S9, ucow's cow target against the other copy-on-write block devices of
the test bed (qemu-nbd and qemu-storage-daemon's VDUSE export of qcow2, dm-thin) and the raw
target and loop device as baselines, with the same fio jobs (tests/bench/vm-peers.sh, run in
the guest by tests/vm/run.sh --script). Prints a table of medians and ratios; writes the
guest's output to results/vm-peers-DATE.txt and, unless --no-doc, the table between the
bench-vm markers of Documentation/performance.md.

Environment: RUNS (3), RUNTIME (seconds per timed job, 5), SIDES (all), passed to the guest."""
import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LINE = re.compile(r"^S9 (\S+) (\S+) run=(\d+) iops=(\d+) kib_s=(\d+) p50_us=(\d+) p99_us=(\d+)")
JOBS = ["randwrite-4k-qd1", "randwrite-4k-qd32", "randread-4k-qd1", "randread-4k-qd32",
        "read-1m-qd8", "first-write-after-snapshot"]
SIDES = ["cow", "cow64k", "nbd", "vduse", "thin", "raw", "loop"]
NAMES = {"cow": "ucow cow target", "cow64k": "ucow, 64 KiB chunks", "nbd": "qcow2 via qemu-nbd", "vduse": "qcow2 via qsd VDUSE",
         "thin": "dm-thin", "raw": "ucow raw target", "loop": "loop (direct I/O)"}
# (job, peer, goal: ucow / peer at least this, on IOPS)
GOALS = [("randwrite-4k-qd1", "nbd", 2.0), ("randwrite-4k-qd32", "nbd", 2.0),
         ("first-write-after-snapshot", "nbd", 2.0), ("first-write-after-snapshot", "vduse", 1.5),
         ("first-write-after-snapshot", "thin", 1.0), ("randwrite-4k-qd1", "thin", 0.7),
         ("randwrite-4k-qd32", "thin", 0.7)]


def parse(text):
    vals = {}
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m:
            job, side = m.group(1), m.group(2)
            vals.setdefault((job, side), []).append(
                dict(iops=int(m.group(4)), kib_s=int(m.group(5)), p50=int(m.group(6)),
                     p99=int(m.group(7))))
    return vals


def med(rs, key):
    return statistics.median(r[key] for r in rs) if rs else None


def tables(vals):
    out = []
    hdr = "| job | " + " | ".join(NAMES[s] for s in SIDES) + " |"
    out += [hdr, "|" + "---|" * (len(SIDES) + 1)]
    for job in JOBS:
        cells = []
        for s in SIDES:
            rs = vals.get((job, s))
            if not rs:
                cells.append("-")
                continue
            main = "%d MiB/s" % round(med(rs, "kib_s") / 1024) if job.startswith("read-1m") \
                else "%d IOPS" % med(rs, "iops")
            cells.append("%s, p50 %d us, p99 %d us" % (main, med(rs, "p50"), med(rs, "p99")))
        out.append("| %s | %s |" % (job, " | ".join(cells)))
    out += ["", "| job | sides | ratio (IOPS) | goal | met? |", "|---|---|---|---|---|"]
    for job in JOBS:
        # the 64 KiB-chunk side only where chunk size matters: the first writes
        mine = ["cow", "cow64k"] if job == "first-write-after-snapshot" else ["cow"]
        for u in mine:
            for s in SIDES:
                if s in ("cow", "cow64k"):
                    continue
                a, b = vals.get((job, u)), vals.get((job, s))
                if not a or not b or not med(b, "iops"):
                    continue
                ratio = med(a, "iops") / med(b, "iops")
                goal = next((g for j, p, g in GOALS if j == job and p == s), None) \
                    if u == "cow" else None
                out.append("| %s | %s vs %s | %.2fx | %s | %s |" % (
                    job, NAMES[u], NAMES[s], ratio, ">= %gx" % goal if goal else "",
                    "" if goal is None else ("yes" if ratio >= goal else "NO")))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-doc", action="store_true", help="leave Documentation/ alone")
    ap.add_argument("--from", dest="src", help="summarize a saved guest output instead")
    args = ap.parse_args()
    stamp = datetime.datetime.now()
    t0 = time.perf_counter()
    if args.src:
        with open(args.src) as f:
            text = f.read()
    else:
        # the guest sees no host environment: RUNS, RUNTIME and SIDES go into a copy of the
        # script, right after its header
        with open(os.path.join(ROOT, "tests/bench/vm-peers.sh")) as f:
            script = f.read()
        sets = "".join("%s='%s'\n" % (k, os.environ[k].replace("'", ""))
                       for k in ("RUNS", "RUNTIME", "SIDES", "SIZE_MB") if os.environ.get(k))
        script = script.replace("\nset -u\n", "\nset -u\n" + sets, 1)
        tmp = tempfile.mkdtemp(prefix="ucow-peers.")
        spath = os.path.join(tmp, "vm-peers.sh")
        with open(spath, "w") as f:
            f.write(script)
        os.chmod(spath, 0o755)
        try:
            env = dict(os.environ)
            env.setdefault("UCOW_VM_TIMEOUT", "2700")	# the guest's whole run
            p = subprocess.run([os.path.join(ROOT, "tests/vm/run.sh"), "--script", spath],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        text = p.stdout
        os.makedirs(os.path.join(ROOT, "results"), exist_ok=True)
        path = os.path.join(ROOT, "results", "vm-peers-%s.txt" % stamp.strftime("%Y%m%d-%H%M%S"))
        with open(path, "w") as f:
            f.write(text)
        print("guest output: %s" % os.path.relpath(path, ROOT))
    minutes = (time.perf_counter() - t0) / 60
    fails = [l for l in text.splitlines() if l.startswith("S9 FAIL") or "RESULT FAIL" in l]
    vals = parse(text)
    body = tables(vals)
    print(body)
    for l in fails:
        print(l)
    if "S9 done" not in text:
        print("bench-vm: the guest did not finish the script", file=sys.stderr)
        return 1
    if not args.no_doc and not args.src and vals:
        doc = os.path.join(ROOT, "Documentation", "performance.md")
        with open(doc) as f:
            d = f.read()
        b, e = "<!-- bench-vm:begin -->", "<!-- bench-vm:end -->"
        if b in d and e in d:
            runs = max(len(v) for v in vals.values())
            block = "\n".join([b, "Measured %s by `make bench-vm` (%.1f minutes, %d runs, "
                               "medians; fio in the emulated guest: compare within the table "
                               "only)." % (stamp.strftime("%Y-%m-%d %H:%M"), minutes, runs),
                               "", body] + (["", "Failures: " + "; ".join(fails)] if fails
                                            else []) + [e])
            d = d[:d.index(b)] + block + d[d.index(e) + len(e):]
            with open(doc, "w") as f:
                f.write(d)
            print("updated Documentation/performance.md (S9)")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
