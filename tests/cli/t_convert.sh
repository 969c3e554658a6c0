#!/bin/sh
# convert: sparse output (zero runs and all-zero data are not written), flattened chains,
# ucow output with options, progress, raw sources, qemu-img agreement, replacing DST.
. "$CLI_LIB"
blocks() { echo $(($(stat -c %b "$1") * 512)); }

expect_ok $UCOW create -q -o chunk_size=64k a.img 64M
expect_ok $UCOW io -c 'write -P 1 5000 3000' -c 'write -P 0 1M 4M' -c 'write -P 2 40M 64k' \
	-c 'write -P 3 67108863 1' a.img
expect_ok $UCOW convert a.img a.raw
[ "$(stat -c %s a.raw)" -eq 67108864 ] || fail "raw output size"
[ "$(blocks a.raw)" -le 262144 ] || fail "raw output not sparse: $(blocks a.raw) bytes used"
expect_ok $UCOW io -f raw -c 'read -P 0 0 5000' -c 'read -P 1 5000 3000' -c 'read -P 0 8000 41935040' \
	-c 'read -P 2 40M 64k' -c 'read -P 3 67108863 1' a.raw

# ucow output: only the non-zero data allocates; -o applies; content identical
expect_ok $UCOW convert -O ucow -o chunk_size=64k,block_size=512 a.img b.img
expect_ok $UCOW info --output=json b.img
$PY - <<'PY' || fail "info of the converted image: $(cat out)"
import json
d = json.load(open('out'))
x = d['format-specific']['data']
assert x['chunk-size'] == 65536 and x['block-size'] == 512, d
assert x['allocated-chunks'] == 3, d       # 5000+3000, 40M, the last byte
assert 'backing-filename' not in d, d
PY
expect_ok $UCOW convert b.img b.raw
cmp a.raw b.raw || fail "ucow -> ucow -> raw differs"
expect_ok $UCOW check b.img

# a chain is flattened: raw base <- ucow mid <- ucow top
expect_ok $UCOW create -q -f raw base.raw 8M
expect_ok $UCOW io -f raw -c 'write -P 0xaa 0 8M' base.raw
expect_ok $UCOW create -q -b base.raw -F raw mid.img
expect_ok $UCOW io -c 'write -P 0xbb 1M 2M' -c 'discard 5M 1M' mid.img
expect_ok $UCOW create -q -b mid.img -F ucow top.img 10M
expect_ok $UCOW io -c 'write -P 0xcc 2M 100' -c 'write -z 7M 4096' top.img
run $UCOW convert -p top.img flat.raw
[ $st -eq 0 ] || fail "convert -p exited $st"
grep -q '(100.00/100%)' err || fail "-p printed no final progress: $(cat err)"
grep -q '(0.00/100%)' err || fail "-p printed no start"
expect_ok $UCOW io -f raw -c 'read -P 0xaa 0 1M' -c 'read -P 0xbb 1M 1M' -c 'read -P 0xcc 2M 100' \
	-c 'read -P 0xbb 2097252 1048476' -c 'read -P 0xaa 3M 2M' -c 'read -P 0 5M 1M' \
	-c 'read -P 0xaa 6M 1M' -c 'read -P 0 7M 4096' -c 'read -P 0xaa 7344128 1044480' \
	-c 'read -P 0 8M 2M' flat.raw
[ "$(blocks flat.raw)" -le $((7 * 1048576)) ] || fail "the zero parts of a chain were written"
expect_ok $UCOW convert -O ucow top.img flat.img
expect_ok $UCOW info flat.img
grep -q '^backing file' out && fail "a converted image has a backing file"
expect_ok $UCOW convert flat.img flat2.raw
cmp flat.raw flat2.raw || fail "flattened ucow differs"
# an independent oracle: the same chain built and flattened by qemu-img (qcow2 overlays,
# the same writes through qemu-io) gives the same bytes
qemu-img create -q -f qcow2 -b base.raw -F raw qmid.qcow2 || fail "qemu-img create qmid"
qemu-io -f qcow2 -c 'write -P 0xbb 1M 2M' -c 'discard 5M 1M' qmid.qcow2 >/dev/null ||
	fail "qemu-io on qmid"
qemu-img create -q -f qcow2 -b qmid.qcow2 -F qcow2 qtop.qcow2 10M || fail "qemu-img create qtop"
qemu-io -f qcow2 -c 'write -P 0xcc 2M 100' -c 'write -z 7M 4096' qtop.qcow2 >/dev/null ||
	fail "qemu-io on qtop"
qemu-img convert -f qcow2 -O raw qtop.qcow2 q.raw || fail "qemu-img convert"
cmp q.raw flat.raw || fail "ucow's flattened chain differs from qemu-img's of the same chain"

# a raw source; odd sizes
head -c 1048909 /dev/urandom >odd.raw
expect_ok $UCOW convert -f raw -O ucow odd.raw odd.img
expect_ok $UCOW info odd.img
grep -qx 'virtual size: 1 MiB (1048909 bytes)' out || fail "odd size: $(grep virtual out)"
expect_ok $UCOW convert odd.img odd2.raw
cmp odd.raw odd2.raw || fail "odd-sized raw -> ucow -> raw differs"
expect_ok $UCOW convert -f raw odd.raw odd3.raw
cmp odd.raw odd3.raw || fail "raw -> raw differs"

# DST is replaced; nothing temporary stays around
echo old >dst.raw
expect_ok $UCOW convert odd.img dst.raw
cmp odd.raw dst.raw || fail "replaced DST differs"
[ -z "$(ls -a | grep '\.ucow-')" ] || fail "temporary files left: $(ls -a)"
# convert leaves the source untouched and clean
expect_ok $UCOW check top.img
expect_ok $UCOW info top.img
grep -qx 'dirty: false' out || fail "source left dirty"
# SIGTERM half-way: the file being built goes away with the process. The signal must land
# while convert runs: wait until its temporary file exists and is growing (a source large
# enough to take seconds), and insist it ended by the signal.
expect_ok $UCOW create -q -f raw big.raw 512M
expect_ok $UCOW io -f raw -c 'write -P 1 0 512M' big.raw
$UCOW convert -O ucow -f raw big.raw big.img &
pid=$!
n=0
while [ -z "$(ls -a | grep '^\.big\.img\.ucow-')" ] && [ $n -lt 100 ]; do
	sleep 0.05
	n=$((n + 1))
done
[ -n "$(ls -a | grep '^\.big\.img\.ucow-')" ] || fail "convert built no temporary file"
kill -TERM $pid
wait $pid
st=$?
[ $st -eq 143 ] || fail "convert ended with $st before SIGTERM reached it (expected 143)"
no_file big.img
ok "convert"
