#!/usr/bin/env python3
"""The one-way layers of cowcore (Documentation/design.md, cowcore/imgio.h).

Fails when a cowcore file includes the header of a higher layer, or calls a function that a
higher layer's file defines; when a cowcore file is not in the layer map below; when a cowcore
file includes a header of ublk/ or tools/; or when ublk/ or tools/ include a cowcore header
other than the public cowcore.h. Prints PASS/FAIL lines like the other test runners.

  tests/check-layers.py [ROOT]      check the tree at ROOT (default: this checkout)
  tests/check-layers.py --selftest  also prove that it catches an upward include and call
"""
import os
import re
import shutil
import sys
import tempfile

# Rank of each file: a file may include and call only files of the same or a lower rank.
# Siblings of one layer get their own ranks, so calls among them run one way too.
LAYERS = {
    # 0: leaves
    "cowcore.h": 0, "format.h": 0, "array.h": 0, "format.c": 0, "util.c": 0, "backend.c": 0,
    # 1: the image file
    "imgio.h": 10, "imgio.c": 10,
    # 2: metadata in memory
    "meta.h": 20, "meta.c": 20,
    "qcow2.h": 21, "qcow2.c": 21,
    # 3: allocator, side log, journal, snapshots, the open sequence
    "alloc.h": 30, "alloc.c": 30,
    "sidelog.h": 31, "sidelog.c": 31,
    "journal.h": 32, "journal.c": 32,
    "snaptab.h": 33, "snaptab.c": 33,
    "compress.h": 33, "compress.c": 33,
    "under.h": 33, "under.c": 33,
    "snapshot.h": 34, "snapshot.c": 34,
    "empty.c": 35,
    "resize.h": 36, "resize.c": 36,
    "load.h": 36, "load.c": 36,
    # 4: per-thread context
    "ctx.h": 40, "ctx.c": 40,
    # 5: completion + group commit, images on NBD servers, then the request engine
    "commit.h": 50, "commit.c": 50,
    "nbd.h": 51, "nbd.c": 51,
    "engine.h": 52, "engine.c": 52, "eread.h": 52, "eread.c": 52,
    # 6: public lifecycle, check and map
    "image.h": 60, "image.c": 60,
    "check.c": 61,
    "qcow2w.c": 62,
}
TEST_ONLY = {"internal.h"}      # every internal header, for white-box tests; no cowcore file
PUBLIC = "cowcore.h"

DEF_RE = re.compile(r"^(?!static\b)(?![ \t#/*}])[A-Za-z_][\w \t\*]*?\b([A-Za-z_]\w*)\s*\(")
INC_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def strip(src):
    """Source without comments and string/char literals (so words in them are no calls)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            out.append('""')
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def definitions(src):
    """Names of the non-static functions a .c file defines."""
    names, lines = set(), src.split("\n")
    for k, line in enumerate(lines):
        m = DEF_RE.match(line)
        if not m or line.rstrip().endswith(";"):
            continue
        # a definition: the signature's lines end in "{" before any ";"
        rest = "\n".join(lines[k:k + 8])
        brace, semi = rest.find("{"), rest.find(";")
        if brace >= 0 and (semi < 0 or brace < semi):
            names.add(m.group(1))
    return names


def check(root):
    problems = []
    cdir = os.path.join(root, "cowcore")
    files = sorted(f for f in os.listdir(cdir) if f.endswith((".c", ".h")))
    src = {}
    for f in files:
        with open(os.path.join(cdir, f), encoding="utf-8", errors="replace") as fh:
            src[f] = fh.read()
        if f not in LAYERS and f not in TEST_ONLY:
            problems.append(f"cowcore/{f}: not in the layer map of tests/check-layers.py")
    for f in files:
        if f in TEST_ONLY or f not in LAYERS:
            continue
        for inc in INC_RE.findall(src[f]):
            if inc in TEST_ONLY:
                problems.append(f"cowcore/{f} includes {inc} (for tests only)")
            elif inc not in LAYERS:
                problems.append(f"cowcore/{f} includes {inc}, which is not a cowcore header")
            elif LAYERS[inc] > LAYERS[f]:
                problems.append(f"cowcore/{f} (layer {LAYERS[f]}) includes {inc} "
                                f"(layer {LAYERS[inc]}): an include up the layers")
    defs = {}
    for f in files:
        if f.endswith(".c") and f in LAYERS:
            for name in definitions(strip(src[f])):
                defs[name] = f
    for f in files:
        if not f.endswith(".c") or f not in LAYERS:
            continue
        body = strip(src[f])
        for name, where in defs.items():
            if where == f or LAYERS[where] <= LAYERS[f]:
                continue
            m = re.search(r"\b" + re.escape(name) + r"\s*\(", body)
            if m:
                line = body.count("\n", 0, m.start()) + 1
                problems.append(f"cowcore/{f}:{line} (layer {LAYERS[f]}) calls {name}() of "
                                f"{where} (layer {LAYERS[where]}): a call up the layers")
    for top in ("ublk", "tools"):
        d = os.path.join(root, top)
        for f in sorted(os.listdir(d)):
            if not f.endswith((".c", ".h")):
                continue
            with open(os.path.join(d, f), encoding="utf-8", errors="replace") as fh:
                for inc in INC_RE.findall(fh.read()):
                    if inc != PUBLIC and (inc in LAYERS or inc in TEST_ONLY):
                        problems.append(f"{top}/{f} includes cowcore's internal {inc}: "
                                        f"only {PUBLIC} is public")
    return problems, len(defs)


def selftest(root):
    """The check must fail on an upward include and on an upward call."""
    bad = []
    for what, fname, text in (
            ("include", "meta.c", '\n#include "commit.h"\n'),
            ("call", "imgio.c", "\nvoid layer_selftest(struct cow_image *img);\n"
             "void layer_selftest(struct cow_image *img)\n{\n\tjnl_checkpoint(img);\n}\n")):
        tmp = tempfile.mkdtemp(prefix="ucow-layers.")
        try:
            for d in ("cowcore", "ublk", "tools"):
                shutil.copytree(os.path.join(root, d), os.path.join(tmp, d))
            with open(os.path.join(tmp, "cowcore", fname), "a") as fh:
                fh.write(text)
            problems, _ = check(tmp)
            if not any(fname in p for p in problems):
                bad.append(f"an upward {what} planted in cowcore/{fname} was not found")
        finally:
            shutil.rmtree(tmp)
    return bad


def main():
    args = sys.argv[1:]
    do_self = "--selftest" in args
    args = [a for a in args if a != "--selftest"]
    root = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    problems, ndefs = check(root)
    for p in problems:
        print("  " + p)
    if ndefs < 50:
        problems.append(f"only {ndefs} cowcore functions found: the parser is broken")
        print("  " + problems[-1])
    print(("FAIL" if problems else "PASS") + " layers/cowcore-one-way")
    rc = 1 if problems else 0
    if do_self:
        bad = selftest(root)
        for b in bad:
            print("  " + b)
        print(("FAIL" if bad else "PASS") + " layers/selftest")
        rc |= 1 if bad else 0
    return rc


if __name__ == "__main__":
    sys.exit(main())
