#!/usr/bin/env python3
"""ucow commit and ucow rebase on random chains: against qemu-img, and killed at every step.

A chain of three images is built from one seed: BASE (raw or ucow) with some data, MID (a
ucow overlay of BASE) and TOP (a ucow overlay of MID), each given a random history of
writes, zero-writes and discards at odd and aligned offsets, TOP often bigger than the
images below it. Then OP runs:

  commit      ucow commit TOP          (TOP's content into MID, TOP emptied)
  commit-d    ucow commit -d TOP       (TOP kept)
  commit-b    ucow commit -b BASE TOP  (TOP's and MID's content into BASE, TOP kept)
  rebase      ucow rebase -b BASE TOP  (TOP onto BASE, MID's part copied into TOP)
  rebase-u    ucow rebase -u -b BASE TOP (the name only)
  flatten     ucow rebase -b "" TOP    (everything into TOP, no backing file)

qemu mode: the same chain as qcow2 images (qemu-img create, the same history through
qemu-io; discards go as write -z there, as in randio.py, since qemu's discard on an overlay
may show the backing data) gets the same OP through qemu-img; every image of both chains is
then exported to raw (ucow convert, qemu-img convert) and compared byte for byte, and TOP
must show what it showed before (except with rebase-u, where both must agree on the change).

kill mode: OP runs under strace, killed (SIGKILL at syscall entry) at the k-th call of one
of the system calls the engine writes and syncs through (io_uring_enter, pwrite64,
fdatasync, fallocate, ftruncate), for a sample of every (call, k) a full run makes. After
each kill TOP must still show exactly its old content and `ucow check` must pass on every
ucow image; OP run again must succeed and leave the result a full run leaves (TOP empty
and MID holding TOP's content; TOP on BASE; ...), with TOP's content unchanged.
"""
import argparse
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from randio import Fail, run, first_diff  # noqa: E402

# LeakSanitizer stops the other threads with ptrace at exit, which a process that strace
# already traces does not allow ("Running thread ... was not suspended"): under strace (the
# sanitizer build of make check), no leak check; every other run keeps it.
STRACE_ENV = dict(os.environ)
STRACE_ENV['ASAN_OPTIONS'] = (os.environ.get('ASAN_OPTIONS', '') + ':detect_leaks=0').lstrip(':')

KB, MB = 1 << 10, 1 << 20
SYSCALLS = ('io_uring_enter', 'pwrite64', 'fdatasync', 'fallocate', 'ftruncate')


def history(rng, size, n):
    """n random commands in [0, size): (op, off, len, pattern)."""
    out = []
    for _ in range(n):
        if rng.random() < 0.4:
            off = rng.randrange(0, size // 4096) * 4096
            ln = rng.choice([4096, 64 * KB, 128 * KB, 300 * KB])
        else:
            off = rng.randrange(0, size)
            ln = rng.randint(1, 200 * KB)
        ln = max(1, min(ln, size - off))
        k = rng.random()
        op = 'write' if k < 0.7 else 'zero' if k < 0.85 else 'discard'
        out.append((op, off, ln, rng.randint(1, 255)))
    return out


def ucow_text(c):
    op, off, ln, p = c
    return {'write': 'write -P %d %d %d' % (p, off, ln), 'zero': 'write -z %d %d' % (off, ln),
            'discard': 'discard %d %d' % (off, ln)}[op]


def qemu_text(c):
    op, off, ln, p = c
    return 'write -P %d %d %d' % (p, off, ln) if op == 'write' else 'write -z %d %d' % (off, ln)


class Chain:
    """The file names of one chain, and how to build it."""

    def __init__(self, a, rng):
        self.a = a
        self.size = 8 * MB
        # --grow: BASE smaller than the others (a raw BASE grows in commit -b; reads past
        # its end are zeros); whole sectors, as qemu-img makes a raw file)
        self.base_size = self.size - (rng.randrange(1, 4) * 300032 if a.grow else 0)
        self.mid_size = self.size
        # qemu mode: one block per 64 KiB chunk, qcow2's cluster: an image that does not
        # hold a whole cluster of its own (an intermediate after commit -b, TOP after
        # rebase -u) then shows the same mix of its data and the new base in both tools
        self.opts = ('chunk_size=64k,block_size=64k' if a.qemu else
                     'chunk_size=' + rng.choice(['64k', '256k', '1M']))
        self.hist = [history(rng, s, n) for s, n in ((self.base_size, 6),
                                                     (self.mid_size, a.cmds),
                                                     (self.size, a.cmds))]
        ext = 'raw' if a.base == 'raw' else 'img'
        self.files = ['base.' + ext, 'mid.img', 'top.img']
        self.qfiles = ['qbase.' + ('raw' if a.base == 'raw' else 'qcow2'), 'qmid.qcow2',
                       'qtop.qcow2']

    def build(self):
        u, a = self.a.ucow, self.a
        opts = ['-o', self.opts]
        bfmt = 'raw' if a.base == 'raw' else 'ucow'
        for f in self.files + self.qfiles:
            if os.path.exists(f):
                os.unlink(f)
        if a.base == 'raw':
            run([u, 'create', '-q', '-f', 'raw', self.files[0], str(self.base_size)])
        else:
            run([u, 'create', '-q'] + opts + [self.files[0], str(self.base_size)])
        run([u, 'create', '-q'] + opts + ['-b', self.files[0], '-F', bfmt, self.files[1],
                                          str(self.mid_size)])
        run([u, 'create', '-q'] + opts + ['-b', self.files[1], '-F', 'ucow', self.files[2],
                                          str(self.size)])
        for f, h, fmt in zip(self.files, self.hist, [bfmt, 'ucow', 'ucow']):
            run([u, 'io', '-f', fmt] + sum((['-c', ucow_text(c)] for c in h), []) + [f])
        if not a.qemu:
            return
        qb = self.qfiles[0]
        if a.base == 'raw':
            run(['qemu-img', 'create', '-q', '-f', 'raw', qb, str(self.base_size)])
        else:
            run(['qemu-img', 'create', '-q', '-f', 'qcow2', qb, str(self.base_size)])
        qbfmt = 'raw' if a.base == 'raw' else 'qcow2'
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', qb, '-F', qbfmt, self.qfiles[1],
             str(self.mid_size)])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', self.qfiles[1], '-F', 'qcow2',
             self.qfiles[2], str(self.size)])
        for f, h, fmt in zip(self.qfiles, self.hist, [qbfmt, 'qcow2', 'qcow2']):
            run(['qemu-io', '-f', fmt] + sum((['-c', qemu_text(c)] for c in h), []) + [f],
                check_stderr=False)

    def ucow_op(self, op):
        u, b = self.a.ucow, self.files[0]
        bfmt = 'raw' if self.a.base == 'raw' else 'ucow'
        return {'commit': [u, 'commit', '-q', 'top.img'],
                'commit-d': [u, 'commit', '-q', '-d', 'top.img'],
                'commit-b': [u, 'commit', '-q', '-b', b, 'top.img'],
                'rebase': [u, 'rebase', '-b', b, '-F', bfmt, 'top.img'],
                'rebase-u': [u, 'rebase', '-u', '-b', b, '-F', bfmt, 'top.img'],
                'flatten': [u, 'rebase', '-b', '', 'top.img']}[op]

    def qemu_op(self, op):
        b = self.qfiles[0]
        bfmt = 'raw' if self.a.base == 'raw' else 'qcow2'
        return {'commit': ['qemu-img', 'commit', '-q', 'qtop.qcow2'],
                'commit-d': ['qemu-img', 'commit', '-q', '-d', 'qtop.qcow2'],
                'commit-b': ['qemu-img', 'commit', '-q', '-b', b, 'qtop.qcow2'],
                'rebase': ['qemu-img', 'rebase', '-q', '-b', b, '-F', bfmt, 'qtop.qcow2'],
                'rebase-u': ['qemu-img', 'rebase', '-q', '-u', '-b', b, '-F', bfmt,
                             'qtop.qcow2'],
                'flatten': ['qemu-img', 'rebase', '-q', '-b', '', 'qtop.qcow2']}[op]


def view(a, f, out='view.raw'):
    """f's content as ucow shows it (raw files as they are)."""
    if f.endswith('.raw'):
        with open(f, 'rb') as fh:
            return fh.read()
    run([a.ucow, 'convert', '-O', 'raw', f, out])
    with open(out, 'rb') as fh:
        return fh.read()


def qview(f, out='qview.raw'):
    if f.endswith('.raw'):
        with open(f, 'rb') as fh:
            return fh.read()
    run(['qemu-img', 'convert', '-O', 'raw', f, out])
    with open(out, 'rb') as fh:
        return fh.read()


def same(got, want, what):
    d = first_diff(got, want)
    if d is not None:
        g = got[d:d + 8] if d < len(got) else b'(end)'
        raise Fail('%s: differs at offset %d (%d vs %d bytes): %r, want %r' %
                   (what, d, len(got), len(want), g, want[d:d + 8]))


def info(a, f):
    _, out, _ = run([a.ucow, 'info', '--output=json', f])
    import json
    return json.loads(out)


def check_clean(a, files, what):
    for f in files:
        if f.endswith('.raw'):
            continue
        rc, out, _ = run([a.ucow, 'check', f], want=None)
        if rc != 0:
            raise Fail('%s: ucow check %s: exit %d: %s' % (what, f, rc,
                                                          out.strip().replace('\n', ' | ')))


def qemu_round(a, rng, op):
    ch = Chain(a, rng)
    ch.build()
    before = view(a, 'top.img')
    same(qview('qtop.qcow2'), before, 'before %s: qemu\'s chain vs ucow\'s' % op)
    run(ch.ucow_op(op), check_stderr=True)
    run(ch.qemu_op(op))
    for f, q in zip(ch.files, ch.qfiles):
        same(view(a, f), qview(q), '%s: %s (ucow) vs %s (qemu-img)' % (op, f, q))
    if op != 'rebase-u':
        same(view(a, 'top.img'), before, '%s: top.img changed' % op)
    check_clean(a, ch.files, op)
    return ch


def final_state(a, ch, op, before, alloc_before):
    """What a finished OP leaves, ucow alone (before: what top.img shows after it)."""
    same(view(a, 'top.img'), before, '%s finished: top.img' % op)
    top = info(a, 'top.img')
    alloc = top['format-specific']['data']['allocated-chunks']
    if op == 'commit':
        same(view(a, 'mid.img'), before, 'commit finished: mid.img')
        if alloc or top['format-specific']['data']['zero-chunks']:
            raise Fail('commit finished, top.img is not empty: %s' % top['format-specific'])
    if op == 'commit-b':
        same(view(a, ch.files[0]), before, 'commit -b finished: %s' % ch.files[0])
    if op in ('commit-d', 'commit-b') and alloc != alloc_before:
        raise Fail('%s changed top.img: %d allocated chunks, %d before' %
                   (op, alloc, alloc_before))
    if op in ('rebase', 'rebase-u') and top.get('backing-filename') != ch.files[0]:
        raise Fail('%s finished: backing file %r' % (op, top.get('backing-filename')))
    if op == 'flatten' and 'backing-filename' in top:
        raise Fail('flatten finished: still a backing file %r' % top['backing-filename'])
    check_clean(a, ch.files, op + ' finished')


def trace_counts(a, argv):
    p = subprocess.run(['strace', '-f', '-qq', '-o', 'trace.out', '-e',
                        'trace=' + ','.join(SYSCALLS)] + argv, env=STRACE_ENV,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode or p.stderr.strip():
        raise Fail('strace %s: exit %d; stderr: %s' % (' '.join(argv), p.returncode,
                                                       p.stderr.decode(errors='replace')[:500]))
    counts = dict.fromkeys(SYSCALLS, 0)
    with open('trace.out') as f:
        for line in f:
            w = line.split()
            if len(w) > 1:
                name = w[1].split('(')[0]
                if name in counts and 'resumed>' not in line:
                    counts[name] += 1
    return counts


def kill_round(a, rng, op):
    ch = Chain(a, rng)
    ch.build()
    os.makedirs('pristine', exist_ok=True)

    def copy(src, dst):     # holes stay holes: check tells a free chunk by its hole
        run(['cp', '--sparse=always', src, dst])

    for f in ch.files:
        copy(f, os.path.join('pristine', f))
    before = view(a, 'top.img')
    alloc = info(a, 'top.img')['format-specific']['data']['allocated-chunks']

    def restore():
        for f in ch.files:
            copy(os.path.join('pristine', f), f)

    counts = trace_counts(a, ch.ucow_op(op))
    after = view(a, 'top.img')      # rebase -u changes it; every other OP must not
    if op != 'rebase-u':
        same(after, before, '%s: top.img' % op)
    final_state(a, ch, op, after, alloc)
    points = [(s, k) for s in SYSCALLS for k in range(1, counts[s] + 1)]
    if len(points) > a.points:
        # every call but the most frequent one's; a sample of that one
        rare = [p for p in points if p[0] != 'io_uring_enter']
        often = [p for p in points if p[0] == 'io_uring_enter']
        pick = rng.sample(often, max(0, min(len(often), a.points - len(rare))))
        points = rare + pick
    killed = 0
    for s, k in points:
        restore()
        argv = ['strace', '-f', '-qq', '-o', '/dev/null', '-e', 'trace=' + s,
                '-e', 'inject=%s:signal=KILL:when=%d' % (s, k)] + ch.ucow_op(op)
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=STRACE_ENV)
        err = p.stderr.decode(errors='replace')
        if p.returncode not in (0, 137, -9):
            raise Fail('%s killed at %s #%d: exit %d: %s' % (op, s, k, p.returncode, err[:300]))
        killed += p.returncode != 0
        what = '%s killed at %s #%d' % (op, s, k)
        if op != 'rebase-u':
            same(view(a, 'top.img'), before, what + ': top.img')
        check_clean(a, ch.files, what)
        run(ch.ucow_op(op))
        final_state(a, ch, op, after, alloc)
    print('%s: %d kill points (%s), %d killed' % (op, len(points),
          ', '.join('%s %d' % (s, counts[s]) for s in SYSCALLS if counts[s]), killed))
    if not killed:
        raise Fail('%s: no run was killed' % op)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--ucow', required=True)
    ap.add_argument('--mode', choices=['qemu', 'kill'], required=True)
    ap.add_argument('--ops', default='commit,commit-d,commit-b,rebase,rebase-u,flatten')
    ap.add_argument('--base', choices=['raw', 'ucow'], default='raw')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--cmds', type=int, default=12)
    ap.add_argument('--grow', action='store_true', help='BASE smaller than MID and TOP')
    ap.add_argument('--points', type=int, default=40, help='kill mode: at most this many')
    a = ap.parse_args()
    a.qemu = a.mode == 'qemu'
    rng = random.Random(a.seed)
    try:
        for op in a.ops.split(','):
            if a.qemu:
                qemu_round(a, rng, op)
                print('ok: %s (qemu-img agrees, base %s, seed %d)' % (op, a.base, a.seed))
            else:
                kill_round(a, rng, op)
                print('ok: %s killed and run again (base %s, seed %d)' % (op, a.base, a.seed))
    except Fail as e:
        print('not ok: %s (seed %d, base %s)' % (e, a.seed, a.base))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
