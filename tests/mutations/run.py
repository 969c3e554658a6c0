#!/usr/bin/env python3
"""make mutation-check: plant each bug of tests/mutations/*.mut in a scratch copy of the tree,
build it, run the unit tests and then the command-line tests, and count the mutations the
tests catch ("killed") and those they miss ("survived"). A mutation whose text is no longer
found exactly once in its file, or that does not build, is "broken": fix or replace it.
Exit status 0 only when every mutation was killed.

  tests/mutations/run.py [NAME-SUBSTRING...]     (default: every mutation)
  tests/mutations/run.py --texts                  only check that every mutation still
                                                  applies (its text found once): seconds,
                                                  part of make check

A .mut file: comment lines (#), then "file: PATH" and "why: TEXT" lines, then
"--- find" followed by the exact text to replace and "+++ replace" followed by its
replacement (both may span lines; a trailing newline of each block is kept as written).
An optional "first: unit/test_x cli/name ..." line names the tests expected to catch it:
they run first, and the rest only if they do not (a killed mutation costs its own test's
time, not the whole suite's; a wrong hint costs nothing but that test's time).
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))


def parse(path):
    meta, find, repl, mode = {}, [], [], None
    with open(path) as f:
        for line in f.read().split("\n"):
            if mode is None:
                if line.startswith("#") or not line.strip():
                    continue
                if line == "--- find":
                    mode = "find"
                    continue
                k, _, v = line.partition(":")
                meta[k.strip()] = v.strip()
            elif mode == "find":
                if line == "+++ replace":
                    mode = "repl"
                    continue
                find.append(line)
            else:
                repl.append(line)
    while repl and repl[-1] == "":
        repl.pop()
    if "file" not in meta or not find:
        raise ValueError(f"{path}: needs 'file:' and a '--- find' block")
    first = meta.get("first", "").split()
    for t in first:
        if not (t.startswith("unit/test_") or t.startswith("cli/")):
            raise ValueError(f"{path}: 'first:' names unit/test_NAME or cli/NAME, not {t}")
    return meta["file"], meta.get("why", ""), "\n".join(find), "\n".join(repl), first


def run(cmd, cwd, timeout, log):
    with open(log, "ab") as f:
        f.write(("\n$ " + " ".join(cmd) + "\n").encode())
        f.flush()
        try:
            return subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            f.write(b"\n(timed out)\n")
            return 124


def hinted(scratch, log, first):
    """The tests of a 'first:' line, in order: the first that fails, or None."""
    for t in first:
        if t.startswith("unit/"):
            b = os.path.join(scratch, "build/tests", t[5:])
            if os.access(b, os.X_OK) and run([b], scratch, 300, log) != 0:
                return t
        else:
            rc = run(["sh", "-c", "CLI_TESTS=%s tests/cli/run.sh build >>build/cli.first 2>&1"
                      % t[4:]], scratch, 1800, log)
            if rc != 0:
                return t
    return None


def tests_catch(scratch, log, first=()):
    """The first test that fails on the mutated build, or None."""
    by = hinted(scratch, log, first)
    if by:
        return by
    for t in sorted(glob.glob(os.path.join(scratch, "build/tests/test_*"))):
        if not os.access(t, os.X_OK) or t.endswith((".log", ".cases")):
            continue
        if run([t], scratch, 300, log) != 0:
            return "unit/" + os.path.basename(t)
    out = os.path.join(scratch, "build/cli.out")
    rc = run(["sh", "-c", "tests/cli/run.sh build >build/cli.out 2>&1"], scratch, 1800, log)
    if rc != 0:
        with open(out) as f:
            fails = [l.split()[1] for l in f if l.startswith("FAIL ")]
        return fails[0] if fails else "cli (exit %d)" % rc
    return None


def texts(muts):
    """PASS/FAIL per mutation: it parses and its text is found exactly once in its file."""
    bad = 0
    for m in muts:
        name = os.path.basename(m)[:-4]
        try:
            path, _, find, _, _ = parse(m)
            with open(os.path.join(TOP, path)) as f:
                n = f.read().count(find)
            why = "" if n == 1 else f"its text is found {n} times in {path} (must be once)"
        except (ValueError, OSError) as e:
            why = str(e)
        print(f"FAIL mutation-text/{name}: {why}" if why else f"PASS mutation-text/{name}")
        bad += bool(why)
    return 1 if bad or not muts else 0


def main():
    want = sys.argv[1:]
    muts = sorted(glob.glob(os.path.join(HERE, "*.mut")))
    if want == ["--texts"]:
        return texts(muts)
    if want:
        muts = [m for m in muts if any(w in os.path.basename(m) for w in want)]
    if not muts:
        print("FAIL mutations (none selected)")
        return 1
    scratch = tempfile.mkdtemp(prefix="ucow-mut.")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=TOP,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for f in files:
        if f and os.path.isfile(os.path.join(TOP, f)):
            os.makedirs(os.path.join(scratch, os.path.dirname(f)), exist_ok=True)
            shutil.copy2(os.path.join(TOP, f), os.path.join(scratch, f))
    log = os.path.join(TOP, "build", "mutations.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    open(log, "w").close()
    print(f"mutation-check: {len(muts)} mutations, scratch {scratch}, log {log}", flush=True)
    if run(["make", "-j2", "all"], scratch, 1200, log) != 0:
        print("FAIL mutations (the unmutated tree does not build)")
        return 1
    killed = survived = broken = 0
    for m in muts:
        name = os.path.basename(m)[:-4]
        t0 = time.time()
        try:
            path, why, find, repl, first = parse(m)
        except ValueError as e:
            print(f"BROKEN {name}: {e}")
            broken += 1
            continue
        target = os.path.join(scratch, path)
        with open(target) as f:
            orig = f.read()
        n = orig.count(find)
        if n != 1:
            print(f"BROKEN {name}: its text is found {n} times in {path} (must be once)")
            broken += 1
            continue
        with open(log, "a") as f:
            f.write(f"\n===== {name}: {why}\n")
        with open(target, "w") as f:
            f.write(orig.replace(find, repl))
        try:
            if run(["make", "-j2", "all"], scratch, 1200, log) != 0:
                print(f"BROKEN {name}: does not build")
                broken += 1
                continue
            by = tests_catch(scratch, log, first)
        finally:
            with open(target, "w") as f:
                f.write(orig)
            os.utime(target)
        secs = time.time() - t0
        if by:
            print(f"KILLED {name} by {by} ({secs:.0f}s)  -- {why}", flush=True)
            killed += 1
        else:
            print(f"SURVIVED {name} ({secs:.0f}s)  -- {why}", flush=True)
            survived += 1
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"{killed} killed, {survived} survived, {broken} broken")
    return 0 if not survived and not broken else 1


if __name__ == "__main__":
    sys.exit(main())
