#!/usr/bin/env python3
"""Random I/O sequences through `ucow io`, checked against a model of the disk.

Each step is one `ucow io` process (an open and a close) running a batch of random commands:
writes of random byte patterns, zero-writes (-z), discards, flushes and pattern-checked reads,
at 512-byte-aligned and odd offsets, often across chunk boundaries. The model (a bytearray)
gets the same commands; every command's output line is predicted exactly, including the
"Pattern verification failed" line of a read that meets other data. Every few steps the image
is flattened with `ucow convert -O raw` and compared with the model byte for byte.

--qemu runs the same sequence through qemu-io on a qcow2 image of the same shape and checks
that `qemu-img convert -O raw` gives identical bytes. qemu-io's discard on qcow2 does not
promise zeros (on an overlay the backing data may show through), so on the qemu side every
discard is sent as `write -z`; ours still gets a real discard, which must read back as zeros.
"""
import argparse
import os
import random
import subprocess
import sys


class Fail(Exception):
    pass


def run(argv, want=0, check_stderr=True):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.stdout.decode(errors='replace'), p.stderr.decode(errors='replace')
    if (want is not None and p.returncode != want) or (check_stderr and err.strip()):
        short = ' '.join(argv)
        if len(short) > 600:
            short = short[:600] + ' ...'
        raise Fail('%s: exit %d (want %s); stderr: %s; stdout tail: %s' %
                   (short, p.returncode, want, err.strip()[:500], out[-500:]))
    return p.returncode, out, err


def parse_size(s):
    s = str(s)
    mult = {'k': 1 << 10, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    if s and s[-1] in mult:
        return int(s[:-1]) * mult[s[-1]]
    return int(s)


def first_diff(a, b):
    n = min(len(a), len(b))
    lo, step = 0, 1 << 16
    while lo < n:
        hi = min(n, lo + step)
        if a[lo:hi] != b[lo:hi]:
            for i in range(lo, hi):
                if a[i] != b[i]:
                    return i
        lo = hi
    return None if len(a) == len(b) else n


def hexdump(data, off):
    lines = []
    for i in range(0, len(data), 16):
        row = data[i:i + 16]
        hx = ''.join('%02x ' % c for c in row)
        asc = ''.join(chr(c) if chr(c).isalnum() and c < 128 else '.' for c in row)
        lines.append('%08x:  %s %s' % (off + i, hx, asc))
    return lines


class Seq:
    """Random commands and their effect on the model."""

    def __init__(self, rng, size, chunk, aligned=False):
        self.rng, self.size, self.chunk, self.aligned = rng, size, chunk, aligned
        self.max_len = max(4096, min(2 * chunk + 4096, 3 << 20))

    def rnd_range(self):
        r, size = self.rng, self.size
        k = r.random()
        if k < 0.35:                      # 512-byte aligned
            off = r.randrange(0, size // 512) * 512
            ln = r.randint(1, max(1, self.max_len // 512)) * 512
        elif k < 0.6:                     # any byte
            off = r.randrange(0, size)
            ln = r.randint(1, self.max_len)
        elif k < 0.7:                     # tiny
            off = r.randrange(0, size)
            ln = r.randint(1, 40)
        else:                             # across a chunk boundary
            nb = size // self.chunk
            b = r.randint(1, nb) * self.chunk if nb >= 1 else size // 2
            b = min(b, size - 1)
            off = max(0, b - r.choice([1, 7, 511, 512, 4095, 4096, r.randint(1, 70000)]))
            ln = r.choice([r.randint(1, 9000), r.randint(1, self.chunk + 9000)])
        ln = min(ln, size - off)
        if ln <= 0:
            off, ln = size - 1, 1
        if self.aligned:                  # O_DIRECT runs: whole 512-byte sectors only
            end = min(size, (off + ln + 511) // 512 * 512)
            off = off // 512 * 512
            ln = max(512, end - off)
        return off, ln

    def command(self, model):
        """One random command: (ucow text, qemu text or None, expected lines, bad read?)"""
        r = self.rng
        k = r.random()
        off, ln = self.rnd_range()
        if k < 0.38:
            p = r.randint(0, 255)
            model[off:off + ln] = bytes([p]) * ln
            t = 'write -P 0x%02x %d %d' % (p, off, ln)
            return t, t, ['wrote %d/%d bytes at offset %d' % (ln, ln, off)], False
        if k < 0.50:
            model[off:off + ln] = bytes(ln)
            t = 'write -z %d %d' % (off, ln)
            return t, t, ['wrote %d/%d bytes at offset %d' % (ln, ln, off)], False
        if k < 0.62:
            model[off:off + ln] = bytes(ln)
            return ('discard %d %d' % (off, ln), 'write -z %d %d' % (off, ln),
                    ['discard %d/%d bytes at offset %d' % (ln, ln, off)], False)
        if k < 0.68:
            return 'flush', 'flush', ['flushed'], False
        seg = bytes(model[off:off + ln])
        if k < 0.72:                      # plain read, sometimes dumped
            if ln <= 48 and r.random() < 0.5:
                return ('read -v %d %d' % (off, ln), None,
                        hexdump(seg, off) + ['read %d/%d bytes at offset %d' % (ln, ln, off)],
                        False)
            return 'read %d %d' % (off, ln), None, ['read %d/%d bytes at offset %d' %
                                                    (ln, ln, off)], False
        # pattern read: usually the pattern the range starts with, sometimes another
        p = seg[0] if r.random() < 0.85 else r.randint(0, 255)
        bad = ln - len(seg.lstrip(bytes([p])))
        lines = []
        if bad < ln:
            lines.append('Pattern verification failed at offset %d, %d bytes' % (off + bad, ln))
        lines.append('read %d/%d bytes at offset %d' % (ln, ln, off))
        return 'read -P %d %d %d' % (p, off, ln), None, lines, bad < ln


class Image:
    """One ucow image under test (plus, with --qemu, its qcow2 twin)."""

    def __init__(self, a, name, rng):
        self.a, self.name, self.rng = a, name, rng
        self.qname = name.rsplit('.', 1)[0] + '.qcow2'
        self.steps = 0

    def io(self, seq, model, ncmds, qemu=True):
        texts, qtexts, lines, bad = [], [], [], False
        for _ in range(ncmds):
            t, q, l, b = seq.command(model)
            texts.append(t)
            if q:
                qtexts.append(q)
            lines += l
            bad |= b
        argv = [self.a.ucow, 'io'] + self.a.net
        if self.a.cor and self.rng.random() < 0.7:
            argv.append('-C')
        be = self.rng.choice(['uring', 'uring', 'aio', 'sync'])
        if be != 'uring':
            argv += ['-i', be]
        if self.a.direct and self.rng.random() < 0.7:
            argv.append('-n')
        for t in texts:
            argv += ['-c', t]
        argv.append(self.name)
        print('step %d: ucow io%s %s' % (self.steps, '' if be == 'uring' else ' -i ' + be,
                                        ' ; '.join(texts)))
        self.steps += 1
        _, out, _ = run(argv, want=1 if bad else 0)
        got = out.splitlines()
        if got != lines:
            for i, (g, w) in enumerate(zip(got + [''] * len(lines), lines + [''] * len(got))):
                if g != w:
                    raise Fail('ucow io %s: output line %d is %r, expected %r' %
                               (self.name, i + 1, g, w))
        if qemu and self.a.qemu and qtexts:
            qargv = ['qemu-io', '-f', 'qcow2']
            for q in qtexts:
                qargv += ['-c', q]
            _, qout, _ = run(qargv + [self.qname])
            if 'failed' in qout or 'error' in qout.lower():
                raise Fail('qemu-io %s: %s' % (self.qname, qout[-300:]))

    def compare(self, model, tag):
        out = 'cmp-%s.raw' % tag
        run([self.a.ucow, 'convert'] + self.a.net + ['-O', 'raw', self.name, out])
        with open(out, 'rb') as f:
            data = f.read()
        os.unlink(out)
        d = first_diff(data, model)
        if d is not None:
            raise Fail('ucow convert of %s differs from the model at offset %d (size %d vs %d): '
                       'got %r expected %r' % (self.name, d, len(data), len(model),
                                               data[d:d + 8], bytes(model[d:d + 8])))
        if self.a.qemu:
            qout = 'qcmp-%s.raw' % tag
            run(['qemu-img', 'convert', '-O', 'raw', self.qname, qout])
            with open(qout, 'rb') as f:
                qdata = f.read()
            os.unlink(qout)
            d = first_diff(qdata, data)
            if d is not None:
                raise Fail('qemu-img convert of %s differs from ucow convert of %s at offset %d'
                           ' (qemu %r, ucow %r)' % (self.qname, self.name, d, qdata[d:d + 8],
                                                    data[d:d + 8]))

    def check(self):
        rc, out, _ = run([self.a.ucow, 'check'] + self.a.net + [self.name], want=None)
        if rc != 0 or 'No errors were found on the image.' not in out:
            raise Fail('ucow check %s: exit %d: %s' % (self.name, rc, out.strip()[:400]))


def create_opts(a):
    o = []
    if a.chunk:
        o.append('chunk_size=' + a.chunk)
    if a.block:
        o.append('block_size=' + a.block)
    return ['-o', ','.join(o)] if o else []


def setup(a, rng):
    """Make the image under test; returns (Image, model, base Image or None, base model)."""
    size = parse_size(a.size)
    chunk = parse_size(a.chunk or '1M')
    q = ['-q']
    if a.mode == 'standalone':
        run([a.ucow, 'create', '-q'] + create_opts(a) + ['disk.img', str(size)])
        if a.qemu:
            run(['qemu-img', 'create', '-q', '-f', 'qcow2', 'disk.qcow2', str(size)])
        return Image(a, 'disk.img', rng), bytearray(size), None, None
    base_size = size - a.grow
    if a.mode == 'rawbase' and a.base_file:
        # a base the caller made (and perhaps serves over NBD at --base-uri)
        with open(a.base_file, 'rb') as f:
            base = bytearray(f.read())
        if len(base) != base_size:
            raise Fail('%s holds %d bytes, not %d' % (a.base_file, len(base), base_size))
        bname, bfmt, qb, qbfmt = a.base_uri or a.base_file, 'raw', a.base_file, 'raw'
        bimg = None
    elif a.mode == 'rawbase':
        base = bytearray(base_size)
        for _ in range(12):
            off = rng.randrange(0, base_size)
            ln = min(rng.randint(1, 3 * chunk), base_size - off)
            base[off:off + ln] = bytes(rng.getrandbits(8) for _ in range(min(ln, 512))) * \
                (ln // min(ln, 512)) + bytes(ln % min(ln, 512))
        with open('base.raw', 'wb') as f:
            f.write(base)
        bname, bfmt, qb, qbfmt = 'base.raw', 'raw', 'base.raw', 'raw'
        bimg = None
    else:
        run([a.ucow, 'create', '-q'] + create_opts(a) + ['base.img', str(base_size)])
        if a.qemu:
            run(['qemu-img', 'create', '-q', '-f', 'qcow2', 'base.qcow2', str(base_size)])
        base = bytearray(base_size)
        bimg = Image(a, 'base.img', rng)
        seq = Seq(rng, base_size, chunk, a.direct)
        for _ in range(6):
            bimg.io(seq, base, rng.randint(1, 5))
        bimg.compare(base, 'base')
        bname, bfmt, qb, qbfmt = 'base.img', 'ucow', 'base.qcow2', 'qcow2'
    sz = [str(size)] if a.grow else []
    run([a.ucow, 'create'] + q + a.net + create_opts(a) + ['-b', bname, '-F', bfmt, 'disk.img']
        + sz)
    if a.qemu:
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', qb, '-F', qbfmt, 'disk.qcow2']
            + sz)
    model = bytearray(size)
    model[:base_size] = base
    return Image(a, 'disk.img', rng), model, bimg, bytearray(base)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--ucow', required=True)
    ap.add_argument('--mode', choices=['standalone', 'rawbase', 'ucowbase'], default='standalone')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--steps', type=int, default=40)
    ap.add_argument('--size', default='6M')
    ap.add_argument('--grow', type=int, default=0, help='overlay bigger than its base by N')
    ap.add_argument('--chunk', default='')
    ap.add_argument('--block', default='')
    ap.add_argument('--cmp-every', type=int, default=5)
    ap.add_argument('--qemu', action='store_true')
    ap.add_argument('--direct', action='store_true',
                    help='most io runs with -n (O_DIRECT); 512-byte aligned requests only')
    ap.add_argument('--base-file', default='',
                    help='rawbase: this raw file is the base (not a random one)')
    ap.add_argument('--base-uri', default='',
                    help='rawbase with --base-file: the overlay names this NBD URI (serving '
                    'that file) as its backing image')
    ap.add_argument('--cor', action='store_true',
                    help='most io runs with -C (copy on read)')
    a = ap.parse_args()
    a.net = ['--allow-network-backing', '--nbd-timeout', '20'] if a.base_uri else []
    rng = random.Random(a.seed)
    print('randio: mode=%s seed=%d size=%s chunk=%s block=%s grow=%d qemu=%s direct=%s' %
          (a.mode, a.seed, a.size, a.chunk or 'default', a.block or 'default', a.grow, a.qemu,
           a.direct))
    try:
        img, model, bimg, bmodel = setup(a, rng)
        seq = Seq(rng, len(model), parse_size(a.chunk or '1M'), a.direct)
        for step in range(a.steps):
            img.io(seq, model, rng.choice([1, 1, 2, 3, 4, 6, 8]))
            if (step + 1) % a.cmp_every == 0:
                img.compare(model, 'step%d' % step)
        img.compare(model, 'end')
        img.check()
        # a ucow copy of the flattened image holds the same bytes
        run([a.ucow, 'convert'] + a.net + ['-O', 'ucow', img.name, 'copy.img'])
        copy = Image(a, 'copy.img', rng)
        a.qemu = False
        copy.compare(model, 'copy')
        copy.check()
        if bimg:
            bimg.compare(bmodel, 'base-end')    # the base never changes under an overlay
            bimg.check()
    except Fail as e:
        print('not ok: %s (seed %d)' % (e, a.seed))
        return 1
    print('ok: %d steps' % a.steps)
    return 0


if __name__ == '__main__':
    sys.exit(main())
