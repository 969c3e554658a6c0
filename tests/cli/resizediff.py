#!/usr/bin/env python3
"""Resize, differentially against QEMU: one random history of writes, zero-writes and
resizes (grow and shrink, absolute and relative, sizes in 512-byte sectors as qcow2 wants
them, mostly not chunk or block aligned) applied to a ucow image (ucow io, ucow resize
--shrink) and to a qcow2 image (qemu-io, qemu-img resize --shrink). Every few steps and at
the end both are exported to raw (`ucow convert -O raw`, `qemu-img convert -O raw`) and
must be byte-identical, and equal to a model (a bytearray: what the grown area must read is
zeros, whatever was there before a shrink and whatever the backing image holds); `ucow
info --output=json` must give the model's size and `ucow check` must find the image clean.

With --base SIZE both images are overlays of one raw file of SIZE bytes of a pattern (the
overlay starts at --start bytes): the grown area reads zeros over the backing data too, in
both tools (QEMU since 5.0). Without a backing file qemu 7.2 shows the old data of the rest
of a cluster that a shrink cut when the image grows again; ucow reads zeros there (the model),
so on the qemu side every grown area is zeroed with qemu-io `write -z` after the resize.
"""
import argparse
import json
import os
import random
import subprocess
import sys


class Fail(Exception):
    pass


def run(argv, want=0):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.stdout.decode(errors='replace'), p.stderr.decode(errors='replace')
    if p.returncode != want or (want == 0 and err.strip()):
        raise Fail('%s: exit %d (want %d); stderr: %s' % (' '.join(argv)[:400], p.returncode,
                                                          want, err.strip()[:400]))
    return out


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(0, n, 65536):
        if a[i:i + 65536] != b[i:i + 65536]:
            for k in range(i, min(n, i + 65536)):
                if a[k] != b[k]:
                    return k
    return None if len(a) == len(b) else n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--ucow', required=True)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--steps', type=int, default=40)
    ap.add_argument('--start', type=int, default=3 << 20)
    ap.add_argument('--max', type=int, default=24 << 20)
    ap.add_argument('--chunk', default='64k')
    ap.add_argument('--base', type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    u, q = 'rd.img', 'rd.qcow2'
    for f in (u, q, 'rbase.raw', 'u.raw', 'q.raw'):
        if os.path.exists(f):
            os.unlink(f)
    model = bytearray(a.start)
    if a.base:
        base = bytes((i // 4096) % 251 + 1 for i in range(a.base))
        with open('rbase.raw', 'wb') as f:
            f.write(base)
        model[:min(a.start, a.base)] = base[:min(a.start, a.base)]
        run([a.ucow, 'create', '-q', '-o', 'chunk_size=' + a.chunk, '-b', 'rbase.raw',
             '-F', 'raw', u, str(a.start)])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'rbase.raw', '-F', 'raw', q,
             str(a.start)])
    else:
        run([a.ucow, 'create', '-q', '-o', 'chunk_size=' + a.chunk, u, str(a.start)])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', q, str(a.start)])
    resizes = 0

    def compare(step):
        run([a.ucow, 'convert', '-O', 'raw', u, 'u.raw'])
        run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', q, 'q.raw'])
        ub, qb = open('u.raw', 'rb').read(), open('q.raw', 'rb').read()
        for name, got in (('ucow', ub), ('qemu', qb)):
            d = first_diff(got, bytes(model))
            if d is not None:
                raise Fail('step %d: %s differs from the model at %d (size %d, model %d)' %
                           (step, name, d, len(got), len(model)))
        info = json.loads(run([a.ucow, 'info', '--output=json', u]))
        if info['virtual-size'] != len(model):
            raise Fail('step %d: info says %d bytes, the model %d' %
                       (step, info['virtual-size'], len(model)))
        run([a.ucow, 'check', u])
        os.unlink('u.raw')
        os.unlink('q.raw')

    for step in range(a.steps):
        k = rng.random()
        size = len(model)
        if k < 0.35:
            # a resize: absolute or relative, grow or shrink, in sectors
            new = rng.randrange(1, a.max // 512 + 1) * 512
            if rng.random() < 0.3:    # near a chunk boundary
                new = max(512, (new // 65536) * 65536 + rng.choice([-512, 0, 512]))
            delta = new - size
            if new == size:
                continue
            arg = str(new) if rng.random() < 0.5 else ('+%d' % delta if delta > 0 else
                                                          '-%d' % -delta)
            run([a.ucow, 'resize', '-q', '--shrink', u, arg])
            run(['qemu-img', 'resize', '-q', '-f', 'qcow2', '--shrink', q, str(new)])
            if new > size:
                # qemu 7.2 zeroes the grown area only over a backing file: without one, the
                # rest of a cluster a shrink cut shows its old data again (seen with
                # write 0 1M, resize --shrink 1M-1536, resize 1M). Ours reads zeros there;
                # on the qemu side the grown area is zeroed by hand.
                run(['qemu-io', '-f', 'qcow2', '-c', 'write -z %d %d' % (size, new - size), q])
            if new < size:
                del model[new:]
            else:
                model.extend(bytes(new - size))
            resizes += 1
        else:
            ucmds, qcmds = [], []
            for _ in range(rng.randrange(1, 5)):
                ln = rng.randrange(1, min(size, 300000) + 1)
                off = rng.randrange(0, size - ln + 1)
                if rng.random() < 0.3:      # at the end
                    off = size - ln
                if rng.random() < 0.2:
                    ucmds.append('write -z %d %d' % (off, ln))
                    qcmds.append('write -z %d %d' % (off, ln))
                    model[off:off + ln] = bytes(ln)
                else:
                    pat = rng.randrange(1, 256)
                    ucmds.append('write -P %d %d %d' % (pat, off, ln))
                    qcmds.append('write -P %d %d %d' % (pat, off, ln))
                    model[off:off + ln] = bytes([pat]) * ln
            argv = [a.ucow, 'io']
            for c in ucmds:
                argv += ['-c', c]
            run(argv + [u])
            argv = ['qemu-io', '-f', 'qcow2']
            for c in qcmds:
                argv += ['-c', c]
            run(argv + [q])
        if step % 8 == 7:
            compare(step)
    compare(a.steps)
    print('ok: seed %d: %d steps, %d resizes, final size %d, ucow and qemu agree' %
          (a.seed, a.steps, resizes, len(model)))


if __name__ == '__main__':
    try:
        main()
    except Fail as e:
        print('not ok: %s' % e)
        sys.exit(1)
