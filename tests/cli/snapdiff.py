#!/usr/bin/env python3
"""Snapshots, differentially against QEMU: one long random sequence of writes, zero-writes
and snapshot create / apply / delete, applied to a qcow2 image (qemu-io, qemu-img snapshot)
and to a ucow image (ucow io, ucow snapshot). Every few steps the current state and every
live snapshot are exported to raw by each tool (`qemu-img convert -l snapshot.name=NAME` vs
`ucow convert -l NAME`) and must be byte-identical, to each other and to a model (a
bytearray per snapshot; the model says which side went wrong when they differ).

Also checked at those points: both tools list the same snapshots with the same ids (both
give a new snapshot one more than the highest id in use), ucow's parent links follow the
tree rules of Documentation/snapshots.md (a new snapshot's parent is the snapshot last
created or applied; deleting one gives its children its own parent), and `ucow check`
finds the image clean.

With --base, both images are overlays of a raw file (qemu-img create -f qcow2
-b qbase.raw -F raw; ucow create -b base.raw -F raw; two copies of the same bytes, see
setup): what the current state and the snapshots never wrote reads from the base, in both
tools, also after an apply. With --grow N the overlays are N bytes bigger than the base
(reads past its end are zeros).

Not sent to qemu: discards. qemu's discard on a qcow2 overlay may expose the backing data,
so, as in randio.py, ucow gets `discard` and qemu gets `write -z` (both must read zeros).
"""
import argparse
import json
import os
import random
import subprocess
import sys


class Fail(Exception):
    pass


def run_all(argvs, want=0, limit=1):
    """Run the commands, at most limit at a time (default: one after the other; running the
    two tools side by side turned out slower, their fsyncs wait on each other's writes); each
    must exit want (None: any) with nothing on stderr. Returns their stdouts."""
    outs, procs = [None] * len(argvs), []

    def reap(i, argv, p):
        out, err = p.communicate()
        out, err = out.decode(errors='replace'), err.decode(errors='replace')
        if (want is not None and p.returncode != want) or (want == 0 and err.strip()):
            short = ' '.join(argv)
            if len(short) > 500:
                short = short[:500] + ' ...'
            raise Fail('%s: exit %d (want %s); stderr: %s' % (short, p.returncode, want,
                                                              err.strip()[:400]))
        outs[i] = out

    for i, argv in enumerate(argvs):
        if len(procs) >= limit:
            reap(*procs.pop(0))
        procs.append((i, argv, subprocess.Popen(argv, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)))
    try:
        while procs:
            reap(*procs.pop(0))
    finally:
        for _, _, p in procs:
            p.kill()
            p.wait()
    return outs


def run(argv, want=0):
    return run_all([argv], want)[0]


def parse_size(s):
    mult = {'k': 1 << 10, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    s = str(s)
    return int(s[:-1]) * mult[s[-1]] if s and s[-1] in mult else int(s)


def first_diff(a, b):
    if a == b:
        return None
    n = min(len(a), len(b))
    lo, step = 0, 1 << 16
    while lo < n:
        hi = min(n, lo + step)
        if a[lo:hi] != b[lo:hi]:
            for i in range(lo, hi):
                if a[i] != b[i]:
                    return i
        lo = hi
    return n


class Snap:
    def __init__(self, name, sid, parent, data):
        self.name, self.id, self.parent, self.data = name, sid, parent, data


class Test:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.size = parse_size(a.size)
        self.chunk = parse_size(a.chunk or '1M')
        self.max_len = max(4096, min(2 * self.chunk + 4096, 3 << 20))
        self.snaps = []            # model: live snapshots, in creation order
        self.cur_parent = 0        # the id the current state descends from
        self.next_name = 1
        self.ops = {'io': 0, 'create': 0, 'apply': 0, 'delete': 0, 'compare': 0}

    # ---- setup ---------------------------------------------------------------------------
    def setup(self):
        a, rng = self.a, self.rng
        o = []
        if a.chunk:
            o.append('chunk_size=' + a.chunk)
        if a.block:
            o.append('block_size=' + a.block)
        opts = ['-o', ','.join(o)] if o else []
        self.model = bytearray(self.size)
        if not a.base:
            run([a.ucow, 'create', '-q'] + opts + ['disk.img', str(self.size)])
            run(['qemu-img', 'create', '-q', '-f', 'qcow2', 'disk.qcow2', str(self.size)])
            return
        bsize = self.size - a.grow
        base = bytearray(bsize)
        for _ in range(16):
            off = rng.randrange(0, bsize)
            ln = min(rng.randint(1, 3 * self.chunk), bsize - off)
            piece = bytes(rng.getrandbits(8) for _ in range(min(ln, 509)))
            base[off:off + ln] = (piece * (ln // len(piece) + 1))[:ln]
        # one copy per tool: qemu (even qemu-io -r) refuses to open a file while another
        # process holds a whole-file read lock on it, which is how ucow locks what it reads;
        # separate copies keep the two tools independent of each other's open files
        for name in ('base.raw', 'qbase.raw'):
            with open(name, 'wb') as f:
                f.write(base)
        self.model[:bsize] = base
        sz = [str(self.size)] if a.grow else []
        run([a.ucow, 'create', '-q'] + opts + ['-b', 'base.raw', '-F', 'raw', 'disk.img'] + sz)
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'qbase.raw', '-F', 'raw',
             'disk.qcow2'] + sz)
        self.base = bytes(base)

    # ---- steps -----------------------------------------------------------------------------
    def rnd_range(self):
        r, size = self.rng, self.size
        k = r.random()
        if k < 0.3:                       # 512-byte aligned
            off = r.randrange(0, size // 512) * 512
            ln = r.randint(1, self.max_len // 512) * 512
        elif k < 0.6:                     # any byte
            off = r.randrange(0, size)
            ln = r.randint(1, self.max_len)
        elif k < 0.7:                     # tiny
            off = r.randrange(0, size)
            ln = r.randint(1, 40)
        else:                             # across a chunk boundary
            b = min(r.randint(1, max(1, size // self.chunk)) * self.chunk, size - 1)
            off = max(0, b - r.choice([1, 7, 511, 512, 4095, 4096, r.randint(1, 70000)]))
            ln = r.choice([r.randint(1, 9000), r.randint(1, self.chunk + 9000)])
        ln = min(ln, size - off)
        return (off, ln) if ln > 0 else (size - 1, 1)

    def io(self):
        r = self.rng
        ucmds, qcmds = [], []
        for _ in range(r.choice([1, 2, 3, 5, 8, 12])):
            off, ln = self.rnd_range()
            k = r.random()
            if k < 0.7:
                p = r.randint(0, 255)
                self.model[off:off + ln] = bytes([p]) * ln
                c = 'write -P 0x%02x %d %d' % (p, off, ln)
                ucmds.append(c)
                qcmds.append(c)
            else:
                self.model[off:off + ln] = bytes(ln)
                ucmds.append('discard %d %d' % (off, ln) if k > 0.9 else
                             'write -z %d %d' % (off, ln))
                qcmds.append('write -z %d %d' % (off, ln))
        print('io: %s' % ' ; '.join(ucmds))
        uargv = [self.a.ucow, 'io']
        for c in ucmds:
            uargv += ['-c', c]
        qargv = ['qemu-io', '-f', 'qcow2']
        for c in qcmds:
            qargv += ['-c', c]
        _, out = run_all([uargv + ['disk.img'], qargv + ['disk.qcow2']])
        if 'failed' in out or 'error' in out.lower():
            raise Fail('qemu-io: %s' % out[-300:])
        self.ops['io'] += 1

    def key(self, s):
        """How ucow names a snapshot in -a/-d: usually its name, sometimes its id."""
        return str(s.id) if self.rng.random() < 0.25 else s.name

    def create(self):
        r = self.rng
        # a fresh name, or now and then the name of a deleted one
        used = {s.name for s in self.snaps}
        old = ['s%d' % i for i in range(1, self.next_name) if 's%d' % i not in used]
        if old and r.random() < 0.2:
            name = r.choice(old)
        else:
            name = 's%d' % self.next_name
            self.next_name += 1
        sid = max([s.id for s in self.snaps] + [0]) + 1
        print('create %s (id %d, parent %d)' % (name, sid, self.cur_parent))
        run_all([[self.a.ucow, 'snapshot', '-c', name, 'disk.img'],
                 ['qemu-img', 'snapshot', '-c', name, 'disk.qcow2']])
        self.snaps.append(Snap(name, sid, self.cur_parent, bytes(self.model)))
        self.cur_parent = sid
        self.ops['create'] += 1

    def apply(self):
        s = self.rng.choice(self.snaps)
        k = self.key(s)
        print('apply %s (ucow -a %s)' % (s.name, k))
        run_all([[self.a.ucow, 'snapshot', '-a', k, 'disk.img'],
                 ['qemu-img', 'snapshot', '-a', s.name, 'disk.qcow2']])
        self.model = bytearray(s.data)
        self.cur_parent = s.id
        self.ops['apply'] += 1

    def delete(self):
        s = self.rng.choice(self.snaps)
        k = self.key(s)
        print('delete %s (ucow -d %s)' % (s.name, k))
        run_all([[self.a.ucow, 'snapshot', '-d', k, 'disk.img'],
                 ['qemu-img', 'snapshot', '-d', s.name, 'disk.qcow2']])
        self.snaps.remove(s)
        for c in self.snaps:
            if c.parent == s.id:
                c.parent = s.parent
        if self.cur_parent == s.id:
            self.cur_parent = s.parent
        self.ops['delete'] += 1

    # ---- comparing -------------------------------------------------------------------------
    def export_argv(self, tool, snap, out):
        if tool == 'qemu':
            argv = ['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw']
            if snap:
                argv += ['-l', 'snapshot.name=' + snap.name]
            return argv + ['disk.qcow2', out]
        argv = [self.a.ucow, 'convert', '-O', 'raw']
        if snap:
            k = self.rng.random()
            argv += ['-l', snap.name if k < 0.6 else
                     'snapshot.name=' + snap.name if k < 0.8 else
                     'snapshot.id=%d' % snap.id]
        return argv + ['disk.img', out]

    def compare_one(self, what, want, u, q):
        du, dq = first_diff(u, want), first_diff(q, want)
        if du is None and dq is None:
            return
        if first_diff(u, q) is None:
            raise Fail('%s: ucow and qemu agree but both differ from the model at offset %d '
                       '(model bug?)' % (what, du))
        if du is not None:
            raise Fail('%s: ucow differs from qemu and the model at offset %d (size %d): '
                       'ucow %r, qemu %r, model %r' % (what, du, len(u), u[du:du + 8],
                                                       q[du:du + 8], bytes(want[du:du + 8])))
        raise Fail('%s: qemu differs from ucow and the model at offset %d: qemu %r, ucow %r'
                   ' (a qemu difference: exclude the operation and say why)' %
                   (what, dq, q[dq:dq + 8], u[dq:dq + 8]))

    def compare(self, tag):
        print('compare %s: current + %d snapshots (%s)' %
              (tag, len(self.snaps), ' '.join(s.name for s in self.snaps)))
        views = [('%s: current state' % tag, self.model, None)] + \
            [('%s: snapshot %s (id %d)' % (tag, s.name, s.id), s.data, s) for s in self.snaps]
        argvs = []
        for i, (_, _, snap) in enumerate(views):
            argvs += [self.export_argv('ucow', snap, 'u%d.raw' % i),
                      self.export_argv('qemu', snap, 'q%d.raw' % i)]
        run_all(argvs)
        for i, (what, want, _) in enumerate(views):
            got = []
            for f in ('u%d.raw' % i, 'q%d.raw' % i):
                with open(f, 'rb') as fh:
                    got.append(fh.read())
                os.unlink(f)
            self.compare_one(what, want, *got)
        # the lists: same ids and names on both sides, ucow's parents as the tree rules say
        ul, qi, out = run_all([[self.a.ucow, 'snapshot', '-l', '--output=json', 'disk.img'],
                               ['qemu-img', 'info', '--output=json', '-f', 'qcow2',
                                'disk.qcow2'],
                               [self.a.ucow, 'check', 'disk.img']], want=None)
        ul, qi = json.loads(ul), json.loads(qi)
        want = sorted((s.id, s.name) for s in self.snaps)
        got_u = sorted((e['id'], e['name']) for e in ul)
        got_q = sorted((int(e['id']), e['name']) for e in qi.get('snapshots', []))
        if got_u != want or got_q != want:
            raise Fail('%s: snapshot lists differ: model %s, ucow %s, qemu %s' %
                       (tag, want, got_u, got_q))
        par = {e['id']: e['parent'] for e in ul}
        for s in self.snaps:
            if par[s.id] != s.parent:
                raise Fail('%s: snapshot %s (id %d) has parent %d, expected %d' %
                           (tag, s.name, s.id, par[s.id], s.parent))
        cp = [e['id'] for e in ul if e['current-parent']]
        if cp != ([self.cur_parent] if self.cur_parent else []):
            raise Fail('%s: current-parent is %s, expected %d' % (tag, cp, self.cur_parent))
        for e in ul:
            if e['virtual-size'] != self.size:
                raise Fail('%s: snapshot %s has virtual-size %d' % (tag, e['name'],
                                                                    e['virtual-size']))
        if 'No errors were found on the image.' not in out:
            raise Fail('%s: ucow check: %s' % (tag, out.strip()[:300]))
        self.ops['compare'] += 1

    def main(self):
        a, r = self.a, self.rng
        self.setup()
        for step in range(a.steps):
            k = r.random()
            n = len(self.snaps)
            if n == 0 or k < 0.5:
                if n < a.max_snaps and (k < 0.2 or n == 0 and k < 0.35):
                    self.create()
                else:
                    self.io()
            elif k < 0.68 and n < a.max_snaps:
                self.create()
            elif k < 0.84:
                self.apply()
            else:
                self.delete()
            if (step + 1) % a.cmp_every == 0:
                self.compare('step %d' % (step + 1))
        # the end: delete every snapshot but one, the survivor must still read right; then
        # the last one too (after an apply, the current table lives in the data area then)
        while len(self.snaps) > 1:
            self.delete()
        self.io()
        self.compare('end')
        if self.snaps:
            self.delete()
            self.io()
            self.compare('none left')
        print('ops: %s' % self.ops)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--ucow', required=True)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--steps', type=int, default=40)
    ap.add_argument('--size', default='8M')
    ap.add_argument('--chunk', default='')
    ap.add_argument('--block', default='')
    ap.add_argument('--base', action='store_true', help='overlays of a raw base')
    ap.add_argument('--grow', type=int, default=0)
    ap.add_argument('--max-snaps', type=int, default=6)
    ap.add_argument('--cmp-every', type=int, default=10)
    a = ap.parse_args()
    print('snapdiff: seed=%d steps=%d size=%s chunk=%s block=%s base=%s grow=%d' %
          (a.seed, a.steps, a.size, a.chunk or 'default', a.block or 'default', a.base,
           a.grow))
    t = Test(a)
    try:
        t.main()
    except Fail as e:
        print('not ok: %s (seed %d)' % (e, a.seed))
        return 1
    print('ok: seed %d' % a.seed)
    return 0


if __name__ == '__main__':
    sys.exit(main())
