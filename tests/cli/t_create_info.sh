#!/bin/sh
# create and info: size suffixes, qemu-img's size wording, the backing size default,
# relative backing names, JSON, --backing-chain, -f raw, replacing an existing file.
. "$CLI_LIB"

# sizes with suffixes; the "virtual size:" line reads exactly as qemu-img's
for s in 512 1000k 1536M 1000M 3G 5T; do
	expect_ok $UCOW create -q img-$s.img $s
	expect_ok $UCOW info img-$s.img
	mine=$(grep '^virtual size:' out)
	bytes=$(echo "$mine" | sed 's/.*(\([0-9]*\) bytes)/\1/')
	truncate -s "$bytes" ref.raw
	theirs=$(qemu-img info -f raw ref.raw | grep '^virtual size:')
	[ "$mine" = "$theirs" ] || fail "size $s: '$mine', qemu-img says '$theirs'"
	rm -f ref.raw img-$s.img
done
expect_ok $UCOW create -q x.img 1G
expect_ok $UCOW info x.img
grep -qx 'virtual size: 1 GiB (1073741824 bytes)' out || fail "1G: $(grep virtual out)"
grep -qx 'file format: ucow' out || fail "format line"
grep -qx 'image: x.img' out || fail "image line"
grep -qx 'chunk_size: 1048576' out || fail "default chunk size"
grep -qx 'block_size: 4096' out || fail "default block size"
grep -qx 'dirty: false' out || fail "dirty after a clean close"
grep -qx 'corrupt: false' out || fail "corrupt flag"
grep -qx 'allocated chunks: 0/1024' out || fail "allocated chunks of a new image"
grep -q '^backing file' out && fail "backing file line without a backing file"

# the Formatting line, -q, -o
expect_ok $UCOW create -o chunk_size=64k,block_size=512 y.img 3M
grep -qx "Formatting 'y.img', fmt=ucow size=3145728 chunk_size=65536 block_size=512" out ||
	fail "Formatting line: $(cat out)"
expect_ok $UCOW create -o chunk_size=64k -o block_size=1k y.img 3M
grep -q "chunk_size=65536 block_size=1024" out || fail "two -o do not add up"
expect_ok $UCOW info --output=json y.img
json_ok out
$PY - <<'PY' || fail "json of y.img"
import json
d = json.load(open('out'))
assert d['virtual-size'] == 3145728 and d['format'] == 'ucow', d
x = d['format-specific']['data']
assert d['cluster-size'] == 65536 and x['chunk-size'] == 65536 and x['block-size'] == 1024, d
assert d['dirty-flag'] is False and x['corrupt'] is False, d
assert 'backing-filename' not in d and d['filename'] == 'y.img', d
PY
expect_ok $UCOW create -o help z.img 1M
grep -q chunk_size out || fail "-o help"
no_file z.img

# allocation shows in info
expect_ok $UCOW io -c 'write 0 64k' -c 'write 1M 1' y.img
expect_ok $UCOW info --output=json y.img
$PY -c "import json; d = json.load(open('out')); assert d['format-specific']['data']['allocated-chunks'] == 2, d" ||
	fail "allocated chunks after two writes"

# raw files: sparse, exactly SIZE bytes
expect_ok $UCOW create -f raw r.raw 5M
grep -qx "Formatting 'r.raw', fmt=raw size=5242880" out || fail "raw Formatting line: $(cat out)"
[ "$(stat -c %s r.raw)" -eq 5242880 ] || fail "raw size"
[ "$(stat -c %b r.raw)" -eq 0 ] || fail "raw file not sparse"
expect_ok $UCOW info -f raw r.raw
grep -qx 'file format: raw' out || fail "raw format line"
grep -qx 'virtual size: 5 MiB (5242880 bytes)' out || fail "raw size line"
expect_ok $UCOW info -f raw --output=json r.raw
json_ok out

# backing: size defaults to the backing image's; names are relative to the overlay's folder
mkdir -p d/e
expect_ok $UCOW create -q -f raw d/base.raw 3M
expect_ok $UCOW create -b base.raw -F raw d/ov.img
grep -q "size=3145728 backing_file=base.raw backing_fmt=raw" out || fail "$(cat out)"
expect_ok $UCOW info d/ov.img
grep -qx 'virtual size: 3 MiB (3145728 bytes)' out || fail "backing size default"
grep -qx 'backing file: base.raw (actual path: d/base.raw)' out || fail "backing line: $(grep backing out)"
grep -qx 'backing file format: raw' out || fail "backing format line"
expect_ok $UCOW create -q -b ../ov.img -F ucow d/e/top.img 5M
expect_ok $UCOW info d/e/top.img
grep -qx 'virtual size: 5 MiB (5242880 bytes)' out || fail "explicit size over a backing"
expect_ok $UCOW create -q -b ../ov.img -F ucow d/e/top0.img 0
expect_ok $UCOW info d/e/top0.img
grep -qx 'virtual size: 3 MiB (3145728 bytes)' out || fail "size 0 with backing"
expect_ok $UCOW create -q -o backing_file=base.raw,backing_fmt=raw d/ov2.img
expect_ok $UCOW info d/ov2.img
grep -qx 'backing file format: raw' out || fail "-o backing_file/backing_fmt"
( cd d/e && expect_ok $UCOW create -q -b "$PWD/../base.raw" -F raw abs.img ) || exit 1
expect_ok $UCOW info --backing-chain d/e/abs.img

# --backing-chain: a block (human) / an array element (json) per image
expect_ok $UCOW info --backing-chain d/e/top.img
[ "$(grep -c '^image: ' out)" -eq 3 ] || fail "backing chain of 3: $(grep '^image:' out)"
grep -qx 'image: d/e/top.img' out || fail "top"
grep -qx 'image: d/e/../ov.img' out || fail "middle: $(grep '^image:' out)"
grep -qx 'file format: raw' out || fail "raw at the chain's end"
expect_ok $UCOW info --backing-chain --output=json d/e/top.img
json_ok out
$PY - <<'PY' || fail "json chain"
import json
d = json.load(open('out'))
assert isinstance(d, list) and len(d) == 3, d
assert [x['format'] for x in d] == ['ucow', 'ucow', 'raw'], d
assert d[0]['backing-filename'] == '../ov.img' and d[0]['backing-filename-format'] == 'ucow'
assert d[0]['full-backing-filename'] == 'd/e/../ov.img', d[0]
assert d[1]['backing-filename'] == 'base.raw' and d[1]['backing-filename-format'] == 'raw'
assert d[0]['virtual-size'] == 5242880 and d[2]['virtual-size'] == 3145728
PY
# a missing backing file: info still works without --backing-chain
mv d/base.raw d/base.moved
expect_ok $UCOW info d/ov.img
expect_err 1 "ov.img: backing file .*not found" $UCOW info --backing-chain d/ov.img
expect_err 1 "ov.img: backing file .*not found" $UCOW io -c 'read 0 1' d/ov.img
mv d/base.moved d/base.raw

# odd names survive JSON
expect_ok $UCOW create -q 'we"ird\name.img' 1M
expect_ok $UCOW info --output=json 'we"ird\name.img'
json_ok out

# create replaces an existing file, like qemu-img
expect_ok $UCOW create -q x.img 1M
expect_ok $UCOW io -c 'write -P 5 0 4k' x.img
expect_ok $UCOW create -q x.img 2M
expect_ok $UCOW info x.img
grep -qx 'virtual size: 2 MiB (2097152 bytes)' out || fail "replaced image size"
expect_ok $UCOW io -c 'read -P 0 0 4k' x.img
echo text >t.img
expect_ok $UCOW create -q -f raw t.img 1k
[ "$(stat -c %s t.img)" -eq 1024 ] || fail "raw replace"
[ -z "$(ls -a | grep '\.ucow-')" ] || fail "temporary files left: $(ls -a)"
ok "create/info"
