#!/usr/bin/env python3
"""Checks of `ucow map --output=json` (and qemu-img map's) for tests/cli/t_map.sh.

  maptool.py check MAP START END FLAT FILE0 [FILE1 ...]
      MAP is strict JSON with exactly the schema of Documentation/cli.md; its runs cover
      [START, END) in order, none could be joined to the one before (qemu-img's rule);
      every run reads as FLAT (the image's content, flattened, as a raw file) says: zero runs
      read zeros, a run with an offset has FLAT's bytes at that offset of FILE<depth>.
      Prints the number of runs.
  maptool.py same A B [--drop-offset DEPTH ...]
      A and B (JSON maps) describe the same runs once the offsets of the given depths are
      dropped (their files' layouts differ) and runs that then agree are joined again.
  maptool.py human MAP FILE0 [FILE1 ...]
      The human output (on stdin) is what MAP's data runs give: qemu-img's layout, runs
      joined as it joins them, the file named by its depth.
"""
import json
import sys

KEYS = {'start', 'length', 'depth', 'present', 'zero', 'data'}


def load(path):
    raw = open(path, 'rb').read()
    assert raw.endswith(b']\n') and not raw.endswith(b'\n\n'), raw[-40:]
    v = json.loads(raw.decode('utf-8'), strict=True)
    assert isinstance(v, list), v
    return v


def shape(e):
    assert isinstance(e, dict), e
    assert set(e) in (KEYS, KEYS | {'offset'}), ('keys', sorted(e))
    for k in ('start', 'length', 'depth') + (('offset',) if 'offset' in e else ()):
        assert type(e[k]) is int and e[k] >= 0, (k, e)
    for k in ('present', 'zero', 'data'):
        assert type(e[k]) is bool, (k, e)
    assert e['length'] > 0, e
    assert not (e['zero'] and e['data']), e
    return e


def mergeable(a, b):
    """qemu-img map's entry_mergeable (the file name follows from the depth here)."""
    for k in ('zero', 'data', 'depth', 'present'):
        if a[k] != b[k]:
            return False
    if ('offset' in a) != ('offset' in b):
        return False
    return 'offset' not in a or a['offset'] + a['length'] == b['offset']


def join(runs):
    out = []
    for e in runs:
        if out and mergeable(out[-1], e):
            out[-1] = dict(out[-1], length=out[-1]['length'] + e['length'])
        else:
            out.append(dict(e))
    return out


def check(path, start, end, flat, files):
    runs = [shape(e) for e in load(path)]
    content = open(flat, 'rb').read()
    blobs = [open(f, 'rb').read() for f in files]
    pos = start
    for i, e in enumerate(runs):
        assert e['start'] == pos, ('gap or overlap', pos, e)
        if i:
            assert not mergeable(runs[i - 1], e), ('not joined', runs[i - 1], e)
        assert e['depth'] < len(files), ('depth past the chain', e)
        want = content[e['start']:e['start'] + e['length']]
        assert len(want) == e['length'], ('past the end', e)
        if e['zero']:
            assert want == bytes(len(want)), ('zero run holds data', e)
        if 'offset' in e:
            got = blobs[e['depth']][e['offset']:e['offset'] + e['length']]
            got += bytes(e['length'] - len(got))    # past a file's end: zeros
            assert got == want, ('the bytes at offset are not the content', e)
        pos += e['length']
    assert pos == end, ('runs end at', pos, 'not', end)
    print(len(runs))


def same(a, b, drop):
    def norm(runs):
        for e in runs:
            shape(e)
            if e['depth'] in drop:
                e.pop('offset', None)
        return join(runs)
    x, y = norm(load(a)), norm(load(b))
    if x != y:
        for i, (p, q) in enumerate(zip(x, y)):
            if p != q:
                sys.exit('run %d differs:\n  %s\n  %s' % (i, p, q))
        sys.exit('%d runs against %d' % (len(x), len(y)))


def human(path, files):
    runs = []
    for e in load(path):
        e = dict(e)
        if not e['data'] or e['zero']:
            e['data'], e['zero'] = False, True     # alike to each other in this output
        runs.append(e)
    want = ['%-16s%-16s%-16s%s' % ('Offset', 'Length', 'Mapped to', 'File')]

    def hx(v):
        return '%#x' % v if v else '0'
    for e in join(runs):
        if e['data']:
            want.append('%-16s%-16s%-16s%s' % (hx(e['start']), hx(e['length']),
                                               hx(e.get('offset', 0)), files[e['depth']]))
    got = sys.stdin.read().split('\n')
    assert got[-1] == '', 'no final newline'
    assert got[:-1] == want, ('human output', got[:-1], want)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'check':
        check(args[0], int(args[1]), int(args[2]), args[3], args[4:])
    elif cmd == 'same':
        drop = {int(d) for d in args[3::2]} if len(args) > 2 else set()
        assert all(x == '--drop-offset' for x in args[2::2]), args
        same(args[0], args[1], drop)
    elif cmd == 'human':
        human(args[0], args[1:])
    else:
        sys.exit('unknown command ' + cmd)


if __name__ == '__main__':
    main()
