#!/bin/sh
# --output=json of info (with and without --backing-chain), check and snapshot -l: on
# standalone, overlay, snapshotted, corrupt, unopenable, raw and non-UTF-8-named images every
# document is strict JSON in valid UTF-8, has the keys of Documentation/cli.md with their
# types (no others), the values the images were made with, and qemu-img's layout and types.
. "$CLI_LIB"
T="$PY $CLI_DIR/imgtool.py"

# The schema (Documentation/cli.md), and strict loading: what every check below uses.
cat >jschema.py <<'PY'
import json

INFO_ALL = {'filename': str, 'format': str, 'virtual-size': int, 'actual-size': int,
            'file-size': int, 'dirty-flag': bool}
INFO_UCOW = {'cluster-size': int, 'snapshots': list, 'format-specific': dict}
INFO_BACKING = {'backing-filename': str, 'full-backing-filename': str,
                'backing-filename-format': str}
INFO_DATA = {'chunk-size': int, 'block-size': int, 'nr-chunks': int, 'allocated-chunks': int,
             'zero-chunks': int, 'journal-size': int, 'journal-used': int, 'corrupt': bool}
SNAP = {'id': int, 'name': str, 'vm-state-size': int, 'date-sec': int, 'date-nsec': int,
        'parent': int, 'virtual-size': int, 'disk-usage': int, 'current-parent': bool}
CHECK_ALL = {'filename': str, 'format': str, 'check-errors': int, 'corruptions': int,
             'leaks': int, 'verdict': int, 'complete': bool}
CHECK_LOADED = {'image-end-offset': int}
CHECK_UCOW = {'total-clusters': int, 'allocated-clusters': int, 'fragmented-clusters': int,
              'reclaimable-chunks': int, 'marked-corrupt': bool}
PROBLEM = {'first-problem': str}


def load(path='out'):
    """The file as strict JSON: valid UTF-8, no control characters in strings, one document."""
    raw = open(path, 'rb').read()
    assert raw.endswith(b'\n') and not raw.endswith(b'\n\n'), raw[-20:]
    return json.loads(raw.decode('utf-8'), strict=True)


def shape(d, *specs):
    """d is an object with exactly the keys of specs, each of its type (bool is not int)."""
    want = {}
    for s in specs:
        want.update(s)
    assert isinstance(d, dict), d
    assert set(d) == set(want), ('keys', sorted(set(d) ^ set(want)), d)
    for k, t in want.items():
        assert type(d[k]) is t, (k, d[k], t)
        if t is int:
            assert d[k] >= 0, (k, d[k])
    return d


def info(d, backing=False):
    """One image's info object; checks the nested objects too."""
    if d['format'] == 'raw':
        return shape(d, INFO_ALL)
    assert d['format'] == 'ucow', d
    shape(d, INFO_ALL, INFO_UCOW, INFO_BACKING if backing else {})
    fs = d['format-specific']
    assert set(fs) == {'type', 'data'} and fs['type'] == 'ucow', fs
    shape(fs['data'], INFO_DATA)
    assert fs['data']['chunk-size'] == d['cluster-size'], d
    for s in d['snapshots']:
        snap(s)
    return d


def snap(s):
    shape(s, SNAP)
    assert s['vm-state-size'] == 0 and s['date-nsec'] < 10**9, s
    return s


def check(d, ucow=True, loaded=True):
    specs = [CHECK_ALL]
    if loaded:
        specs.append(CHECK_LOADED)
    if ucow and loaded:
        specs.append(CHECK_UCOW)
    if 'first-problem' in d:
        specs.append(PROBLEM)
    shape(d, *specs)
    assert d['check-errors'] == 0 and d['complete'] is loaded, d
    assert d['verdict'] == (2 if d['corruptions'] else 3 if d['leaks'] else 0), d
    assert ('first-problem' in d) == bool(d['corruptions'] or d['leaks']), d
    return d
PY
# pycheck WHAT: run the python on stdin (with jschema imported); fail with WHAT if it fails
pycheck() {
	$PY -c "import sys; sys.path.insert(0, '.'); from jschema import *; exec(sys.stdin.read())" ||
		fail "$1: $(head -c 600 out)"
}

# ---- a standalone image ------------------------------------------------------------------
expect_ok $UCOW create -q -o chunk_size=64k,block_size=1k a.img 3M
expect_ok $UCOW io -c 'write -P 1 0 64k' -c 'write -P 2 1M 100' a.img
expect_ok $UCOW info --output=json a.img
pycheck "info of a standalone image" <<'PY'
d = info(load())
assert d['filename'] == 'a.img' and d['virtual-size'] == 3 << 20, d
assert d['cluster-size'] == 65536 and d['dirty-flag'] is False and d['snapshots'] == [], d
x = d['format-specific']['data']
assert x['chunk-size'] == 65536 and x['block-size'] == 1024 and x['nr-chunks'] == 48, x
assert x['allocated-chunks'] == 2 and x['zero-chunks'] == 0 and x['corrupt'] is False, x
assert x['journal-size'] > 0 and x['journal-used'] <= x['journal-size'], x
assert d['file-size'] == __import__('os').stat('a.img').st_size, d
PY
# qemu-img's layout: 4-space indents, "key": value, [] for an empty array, one line each
$PY - <<'PY' || fail "info layout: $(head -c 600 out)"
t = open('out').read()
assert t.startswith('{\n    "filename": "a.img",\n    "format": "ucow",\n'), t
assert '\n    "snapshots": [],\n' in t, t
assert '\n    "format-specific": {\n        "type": "ucow",\n        "data": {\n' in t, t
assert '\n            "chunk-size": 65536,\n' in t and t.endswith('\n        }\n    }\n}\n'), t
PY
expect_ok $UCOW check --output=json a.img
pycheck "check of a standalone image" <<'PY'
d = check(load())
assert d['filename'] == 'a.img' and d['format'] == 'ucow', d
assert d['corruptions'] == 0 and d['leaks'] == 0 and d['verdict'] == 0, d
assert d['total-clusters'] == 48 and d['allocated-clusters'] == 2, d
assert d['reclaimable-chunks'] == 0 and d['marked-corrupt'] is False, d
assert d['image-end-offset'] == __import__('os').stat('a.img').st_size, d
PY
expect_ok $UCOW snapshot -l --output=json a.img
[ "$(cat out)" = "[]" ] || fail "snapshot -l of no snapshots: $(cat out)"

# ---- raw files ---------------------------------------------------------------------------
expect_ok $UCOW create -q -f raw r.raw 5M
expect_ok $UCOW info -f raw --output=json r.raw
pycheck "info of a raw file" <<'PY'
d = info(load())
assert d['format'] == 'raw' and d['virtual-size'] == 5 << 20 and d['file-size'] == 5 << 20, d
assert d['dirty-flag'] is False, d
PY
# a raw file has no checks (qemu-img's 63): an error line, no JSON on stdout
expect_err 63 "r.raw: a raw image has no metadata to check" $UCOW check -f raw --output=json r.raw
[ -s out ] && fail "check of a raw file printed JSON: $(cat out)"

# ---- overlays and the backing chain ------------------------------------------------------
mkdir -p d/e
expect_ok $UCOW create -q -f raw d/base.raw 2M
expect_ok $UCOW create -q -b base.raw -F raw d/mid.img
expect_ok $UCOW create -q -b ../mid.img -F ucow d/e/top.img 4M
expect_ok $UCOW io -c 'write -z 0 1M' d/e/top.img    # zeroes over a backing file: a zero chunk
expect_ok $UCOW info --output=json d/e/top.img
pycheck "info of an overlay" <<'PY'
d = info(load(), backing=True)
assert d['filename'] == 'd/e/top.img' and d['virtual-size'] == 4 << 20, d
x = d['format-specific']['data']
assert x['zero-chunks'] == 1 and x['allocated-chunks'] == 0 and x['nr-chunks'] == 4, x
assert d['backing-filename'] == '../mid.img', d
assert d['full-backing-filename'] == 'd/e/../mid.img', d      # '/' is not escaped
assert d['backing-filename-format'] == 'ucow', d
PY
grep -q 'd/e/\.\./mid\.img' out || fail "'/' escaped in paths: $(grep full out)"
expect_ok $UCOW info --output=json --backing-chain d/e/top.img
pycheck "info --backing-chain" <<'PY'
v = load()
assert isinstance(v, list) and len(v) == 3, v
info(v[0], backing=True)
info(v[1], backing=True)
info(v[2])
assert [x['format'] for x in v] == ['ucow', 'ucow', 'raw'], v
assert [x['virtual-size'] for x in v] == [4 << 20, 2 << 20, 2 << 20], v
assert v[1]['backing-filename'] == 'base.raw' and v[1]['backing-filename-format'] == 'raw', v
PY
head -n 3 out | tr '\n' '|' | grep -qx '\[|    {|        "filename": "d/e/top.img",|' ||
	fail "chain layout: $(head -n 3 out)"
# a chain that cannot be opened: one error line and no JSON at all
mv d/base.raw d/base.moved
expect_err 1 "top.img: d/e/../mid.img: backing file 'd/e/../base.raw' not found" \
	$UCOW info --output=json --backing-chain d/e/top.img
[ ! -s out ] || fail "partial JSON printed before the error: $(head -c 200 out)"
mv d/base.moved d/base.raw
expect_ok $UCOW check --output=json d/e/top.img
pycheck "check of an overlay" <<'PY'
d = check(load())
assert d['corruptions'] == 0 and d['total-clusters'] == 4 and d['allocated-clusters'] == 0, d
PY

# ---- snapshots ---------------------------------------------------------------------------
expect_ok $UCOW snapshot -c first a.img
expect_ok $UCOW io -c 'write -P 3 0 64k' a.img
expect_ok $UCOW snapshot -c 'sé 日本' a.img
expect_ok $UCOW snapshot -a first a.img
expect_ok $UCOW snapshot -l --output=json a.img
cp out list.json
pycheck "snapshot -l" <<'PY'
import time
v = load()
assert isinstance(v, list) and len(v) == 2, v
for s in v:
    snap(s)
    assert s['virtual-size'] == 3 << 20 and abs(s['date-sec'] - time.time()) < 600, s
assert [(s['id'], s['name'], s['parent']) for s in v] == [(1, 'first', 0), (2, 'sé 日本', 1)], v
assert [s['current-parent'] for s in v] == [True, False], v
assert v[1]['disk-usage'] > 0, v
PY
grep -q '"name": "sé 日本"' out || fail "valid UTF-8 was escaped: $(grep name out)"
expect_ok $UCOW info --output=json a.img
pycheck "info of a snapshotted image" <<'PY'
d = info(load())
assert d['snapshots'] == load('list.json'), d      # the same objects as snapshot -l
PY

# ---- damaged images ----------------------------------------------------------------------
expect_ok $UCOW create -q -o chunk_size=64k,block_size=4k c.img 4M
expect_ok $UCOW io -c 'write -P 1 0 64k' -c 'write -P 2 128k 64k' c.img
e0=$($T entry c.img 0)
# two table entries for one chunk: corruption (exit 2)
cp c.img bad.img
$T entry bad.img 2 "$e0"
run $UCOW check --output=json bad.img
[ $st -eq 2 ] || fail "check of a damaged image exited $st"
pycheck "check of a damaged image" <<'PY'
d = check(load())
assert d['corruptions'] > 0 and d['verdict'] == 2 and d['complete'] is True, d
assert 'mapped twice' in d['first-problem'], d
PY
# a leak only (exit 3)
bm=$($T hdr c.img | $PY -c "import json, sys; print(json.load(sys.stdin)['bitmap_offset'])")
cp c.img leak.img
$T entry leak.img 0 0
$T flip leak.img "$bm"
$T flip leak.img $((bm + 1))
run $UCOW check --output=json leak.img
[ $st -eq 3 ] || fail "check of a leaking image exited $st"
pycheck "check of a leak" <<'PY'
d = check(load())
assert d['corruptions'] == 0 and d['leaks'] == 1 and d['verdict'] == 3, d
PY
# metadata that does not load at all: both header slots fail their checksum
cp c.img hdr.img
$T flip hdr.img 100
$T flip hdr.img 4196
run $UCOW check --output=json hdr.img
[ $st -eq 2 ] || fail "check of an unopenable image exited $st"
[ ! -s err ] || fail "check of an unopenable image wrote to stderr: $(cat err)"
pycheck "check of an unopenable image" <<'PY'
d = check(load(), loaded=False)
assert d['filename'] == 'hdr.img' and d['format'] == 'ucow', d
assert d['corruptions'] == 1 and d['leaks'] == 0 and d['complete'] is False, d
assert 'checksum' in d['first-problem'] and not d['first-problem'].startswith('hdr.img'), d
PY
# marked corrupt: info and check say so
cp c.img flag.img
$T flags flag.img 2
expect_ok $UCOW info --output=json flag.img
pycheck "info of an image marked corrupt" <<'PY'
assert info(load())['format-specific']['data']['corrupt'] is True
PY
run $UCOW check --output=json flag.img
pycheck "check of an image marked corrupt" <<'PY'
assert check(load())['marked-corrupt'] is True
PY
# no image at all: one error line, nothing on stdout
for c in "info --output=json" "info --output=json --backing-chain" "check --output=json" \
	"snapshot -l --output=json"; do
	expect_err 1 "nothere.img: No such file" $UCOW $c nothere.img
	[ ! -s out ] || fail "$c of a missing file printed: $(cat out)"
done

# ---- names that are not UTF-8 ------------------------------------------------------------
B=$(printf 'b\377.raw')
# 0xff, an overlong '/', a surrogate, a cut sequence; 0xfe, a newline, a quote, a backslash
N=$(printf 'n\377\300\257\355\240\200x\342\202.img')
S=$(printf 's\376\n"q\\')
expect_ok $UCOW create -q -f raw "$B" 1M
expect_ok $UCOW create -q -b "$B" -F raw "$N"
expect_ok $UCOW snapshot -c "$S" "$N"
expect_ok $UCOW info --output=json "$N"
pycheck "info of a non-UTF-8 name" <<'PY'
d = info(load(), backing=True)
R = '\ufffd'
assert d['filename'] == 'n' + R * 6 + 'x' + R * 2 + '.img', ascii(d['filename'])
assert d['backing-filename'] == 'b' + R + '.raw', ascii(d)
assert d['full-backing-filename'] == 'b' + R + '.raw', ascii(d)
assert d['snapshots'][0]['name'] == 's' + R + '\n"q\\', ascii(d['snapshots'])
PY
expect_ok $UCOW info --output=json --backing-chain "$N"
pycheck "info --backing-chain of non-UTF-8 names" <<'PY'
v = load()
assert len(v) == 2 and info(v[1])['filename'].endswith('b\ufffd.raw'), ascii(v)
PY
expect_ok $UCOW check --output=json "$N"
pycheck "check of a non-UTF-8 name" <<'PY'
d = check(load())
assert d['filename'].startswith('n\ufffd') and d['corruptions'] == 0, ascii(d)
PY
expect_ok $UCOW snapshot -l --output=json "$N"
pycheck "snapshot -l of a non-UTF-8 snapshot name" <<'PY'
assert snap(load()[0])['name'] == 's\ufffd\n"q\\'
PY
# the unopenable report names the file too
cp hdr.img "$N"
run $UCOW check --output=json "$N"
[ $st -eq 2 ] || fail "check of an unopenable non-UTF-8 name exited $st"
pycheck "unopenable check of a non-UTF-8 name" <<'PY'
d = check(load(), loaded=False)
assert d['filename'].startswith('n\ufffd') and 'checksum' in d['first-problem'], ascii(d)
PY
# the human output keeps the bytes
expect_ok $UCOW info -f raw "$B"
[ "$(head -n 1 out)" = "image: $B" ] || fail "human output changed the name: $(head -n 1 out)"

# ---- the same types as qemu-img's for the keys both have ---------------------------------
if command -v qemu-img >/dev/null 2>&1; then
	qemu-img create -q -f raw q.raw 1M || fail "qemu-img create raw"
	qemu-img create -q -f qcow2 -b q.raw -F raw q.qcow2 || fail "qemu-img create qcow2"
	qemu-img snapshot -c s q.qcow2 || fail "qemu-img snapshot"
	qemu-img info --output=json q.qcow2 >q-info.json || fail "qemu-img info"
	qemu-img check --output=json q.qcow2 >q-check.json || fail "qemu-img check"
	expect_ok $UCOW create -q -b q.raw -F raw u.img
	expect_ok $UCOW snapshot -c s u.img
	expect_ok $UCOW info --output=json u.img
	cp out u-info.json
	expect_ok $UCOW check --output=json u.img
	cp out u-check.json
	pycheck "keys shared with qemu-img" <<'PY'
def same(u, q, where, skip=()):
    common = set(u) & set(q)
    for k in common - set(skip):
        assert type(u[k]) is type(q[k]), (where, k, u[k], q[k])
    return common
ui, qi = load('u-info.json'), load('q-info.json')
c = same(ui, qi, 'info')
assert {'filename', 'format', 'virtual-size', 'actual-size', 'cluster-size', 'dirty-flag',
        'backing-filename', 'full-backing-filename', 'backing-filename-format', 'snapshots',
        'format-specific'} <= c, c
assert set(ui['format-specific']) == set(qi['format-specific']), ui
assert ui['format-specific']['data']['corrupt'] is qi['format-specific']['data']['corrupt']
# snapshot ids: numbers in ucow, strings in qemu-img (documented)
s = same(ui['snapshots'][0], qi['snapshots'][0], 'snapshot', skip=('id',))
assert {'name', 'vm-state-size', 'date-sec', 'date-nsec'} <= s, s
c = same(load('u-check.json'), load('q-check.json'), 'check')
assert {'filename', 'format', 'check-errors', 'image-end-offset', 'total-clusters'} <= c, c
PY
fi
ok "json"
