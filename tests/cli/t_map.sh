#!/bin/sh
# map: qemu-img map's runs (start, length, depth, present, zero, data, offset) on raw files
# and on a ucow chain laid out like a qcow2 chain (qemu-img map on both), every run checked
# against the flattened content (a data run's offset holds its bytes in the file at its
# depth), --start-offset / --max-length, the human output, odd sizes, a backing file shorter
# than its overlay, a dirty image, errors.
. "$CLI_LIB"
M="$PY $CLI_DIR/maptool.py"

# qemu-img map and ucow map of FILE agree, after dropping the offsets of DEPTHS (ucow and
# qcow2 place data differently): qsame FILE FMT QEMU-FILE QEMU-FMT [--drop-offset D]...
qsame() {
	u=$1 uf=$2 q=$3 qf=$4
	shift 4
	qemu-img map -f "$qf" --output=json "$q" >q.json || fail "qemu-img map $q"
	expect_ok $UCOW map -f "$uf" --output=json "$u"
	cp out u.json
	$M same u.json q.json "$@" >m.out 2>&1 || fail "ucow map $u differs from qemu-img map $q: $(cat m.out)"
}

# --- raw: data and holes, the same as qemu-img's, in every range
expect_ok $UCOW create -q -f raw r.raw 8M
expect_ok $UCOW io -f raw -c 'write -P 1 4k 12k' -c 'write -P 2 1M 1M' -c 'write -P 3 5M 4k' \
	-c 'write -P 4 8384512 4k' r.raw
qsame r.raw raw r.raw raw
[ "$(grep -c . u.json)" -eq 8 ] || fail "raw map: expected 8 runs: $(cat u.json)"
$M check u.json 0 8388608 r.raw r.raw >/dev/null || fail "raw map does not match the content"
grep -q '"present": true, "zero": true, "data": false, "offset": 16384' u.json ||
	fail "a raw hole is present, zero, at its own offset: $(cat u.json)"
for range in "--start-offset=1000 --max-length=5000" "--start-offset=4096" "--max-length=1M" \
	"--start-offset=1048577 --max-length=3M" "--start-offset=8388607"; do
	qemu-img map -f raw --output=json $range r.raw >q.json || fail "qemu-img map $range"
	expect_ok $UCOW map -f raw --output=json $range r.raw
	$M same out q.json >m.out 2>&1 || fail "map $range differs from qemu-img: $(cat m.out)"
done
# the human output is qemu-img's, byte for byte
qemu-img map -f raw r.raw >q.txt || fail "qemu-img map (human)"
expect_ok $UCOW map -f raw r.raw
cmp out q.txt || fail "human output differs from qemu-img's: $(diff out q.txt)"
expect_ok $UCOW map -f raw --output=human r.raw
cmp out q.txt || fail "--output=human differs"

# --- a chain: raw base <- ucow mid <- ucow top, and the same writes on raw <- qcow2 <- qcow2
# (64 KiB clusters with 2 KiB subclusters: the granularity of the ucow chunks and blocks)
make_chain() {	# make_chain EXT FMT CREATE-OPTIONS
	ext=$1
	qemu-img create -q -f raw base$ext.raw 4M || fail "base"
	qemu-io -f raw -c 'write -P 1 0 512k' -c 'write -P 2 1M 4k' -c 'write -P 7 3M 1M' \
		base$ext.raw >/dev/null || fail "base writes"
}
make_chain ""
make_chain "q"
expect_ok $UCOW create -q -o chunk_size=64k,block_size=2k -b base.raw -F raw mid.img 4M
expect_ok $UCOW io -c 'write -P 3 64k 4k' -c 'write -P 4 200k 6k' -c 'write -z 512k 64k' \
	-c 'discard 3M 128k' mid.img
expect_ok $UCOW create -q -o chunk_size=64k,block_size=2k -b mid.img -F ucow top.img 6M
expect_ok $UCOW io -c 'write -P 5 66k 2k' -c 'write -P 6 1M 192k' -c 'write -z 3M 64k' \
	-c 'write -P 8 4M 10k' -c 'write -z 5M 64k' top.img
q="-f qcow2 -o cluster_size=64k,extended_l2=on"
qemu-img create -q $q -b baseq.raw -F raw midq.qcow2 4M || fail "midq"
qemu-io -f qcow2 -c 'write -P 3 64k 4k' -c 'write -P 4 200k 6k' -c 'write -z 512k 64k' \
	-c 'write -z 3M 128k' midq.qcow2 >/dev/null || fail "midq writes"
qemu-img create -q $q -b midq.qcow2 -F qcow2 topq.qcow2 6M || fail "topq"
qemu-io -f qcow2 -c 'write -P 5 66k 2k' -c 'write -P 6 1M 192k' -c 'write -z 3M 64k' \
	-c 'write -P 8 4M 10k' -c 'write -z 5M 64k' topq.qcow2 >/dev/null || fail "topq writes"
expect_ok $UCOW convert top.img flat.raw
qemu-img convert -O raw topq.qcow2 flatq.raw || fail "qemu-img convert"
cmp flat.raw flatq.raw || fail "the two chains do not hold the same content"
qsame top.img ucow topq.qcow2 qcow2 --drop-offset 0 --drop-offset 1
n=$($M check u.json 0 6291456 flat.raw top.img mid.img base.raw) ||
	fail "the chain's map does not match its content: $n"
[ "$n" -ge 12 ] || fail "the chain's map has only $n runs: $(cat u.json)"
# the layers as qemu-img sees them: data at each depth, a ZERO chunk hiding the base (mid,
# depth 1), zeros past the 4M base that nothing decides (depth 0, present false)
grep -q '"start": 0, "length": 65536, "depth": 2, "present": true, "zero": false, "data": true, "offset": 0 }' u.json ||
	fail "base data at depth 2: $(cat u.json)"
grep -q '"start": 67584, "length": 2048, "depth": 0, "present": true, "zero": false, "data": true, "offset": ' u.json ||
	fail "top data at depth 0 (one 2k block)"
grep -q '"start": 524288, "length": 65536, "depth": 1, "present": true, "zero": true, "data": false }' u.json ||
	fail "a ZERO chunk of mid"
grep -q '"start": 4204544, "length": 1038336, "depth": 0, "present": false, "zero": true, "data": false }' u.json ||
	fail "past the base's end: zeros of depth 0, not present"
expect_ok $UCOW map top.img
$M human u.json top.img mid.img base.raw <out || fail "human output of the chain"
grep -q '^0x100000        0x30000         0x[0-9a-f]* *top.img$' out || fail "top's 192k run"
# ranges inside the chain: the same runs, cut at the range
for range in "--start-offset=66k --max-length=1M" "--start-offset=3000000 --max-length=2M" \
	"--start-offset=5M"; do
	qemu-img map -f qcow2 --output=json $range topq.qcow2 >q.json || fail "qemu-img map $range"
	expect_ok $UCOW map --output=json $range top.img
	cp out r.json
	$M same r.json q.json --drop-offset 0 --drop-offset 1 >m.out 2>&1 ||
		fail "map $range of the chain differs from qemu-img: $(cat m.out)"
done
expect_ok $UCOW map --output=json --start-offset=66k --max-length=1M top.img
$M check out 67584 1116160 flat.raw top.img mid.img base.raw >/dev/null ||
	fail "a range's runs do not match the content"
# an empty range prints [] (qemu-img prints one run of length 0)
expect_ok $UCOW map --output=json --start-offset=6M top.img
[ "$(cat out)" = "[]" ] || fail "a range past the end: $(cat out)"
expect_ok $UCOW map --output=json --max-length=0 top.img
[ "$(cat out)" = "[]" ] || fail "--max-length=0: $(cat out)"
expect_ok $UCOW map --start-offset=7M top.img
[ "$(cat out)" = "Offset          Length          Mapped to       File" ] || fail "empty human map"

# --- a standalone image of an odd size (not a whole number of chunks nor of blocks)
expect_ok $UCOW create -q -o chunk_size=64k,block_size=4k odd.img 1048909
expect_ok $UCOW io -c 'write -P 9 0 100' -c 'write -P 9 1048800 109' odd.img
expect_ok $UCOW map --output=json odd.img
cp out odd.json
expect_ok $UCOW convert odd.img odd.raw
$M check odd.json 0 1048909 odd.raw odd.img >/dev/null || fail "odd-sized map"
grep -q '"start": 4096, "length": 1044480, "depth": 0, "present": false, "zero": true, "data": false }' odd.json ||
	fail "unallocated runs of a standalone image: zero, not present: $(cat odd.json)"
grep -q '"start": 1048576, "length": 333, "depth": 0, "present": true, "zero": false, "data": true' odd.json ||
	fail "the last partial block: $(cat odd.json)"

# data runs join only where the file holds them one after the other: chunk 1 is written
# first (its chunk lies before chunk 0's in the file), chunks 2 and 3 follow each other
expect_ok $UCOW create -q -o chunk_size=64k ord.img 1M
expect_ok $UCOW io -c 'write -P 1 64k 64k' -c 'write -P 2 0 64k' -c 'write -P 3 128k 64k' \
	-c 'write -P 4 192k 64k' ord.img
expect_ok $UCOW map --output=json ord.img
cp out ord.json
expect_ok $UCOW convert ord.img ord.raw
$M check ord.json 0 1048576 ord.raw ord.img >/dev/null || fail "runs out of file order"
[ "$(grep -c '"data": true' ord.json)" -eq 3 ] || fail "expected 3 data runs: $(cat ord.json)"
grep -q '"start": 131072, "length": 131072, "depth": 0, "present": true, "zero": false, "data": true' ord.json ||
	fail "chunks 2 and 3 lie one after the other and join: $(cat ord.json)"

# --- a ucow backing file shorter than its overlay, chunks of different sizes in the chain
expect_ok $UCOW create -q -o chunk_size=1M short.img 1536k
expect_ok $UCOW io -c 'write -P 1 1M 512k' short.img
expect_ok $UCOW create -q -o chunk_size=64k -b short.img -F ucow long.img 3M
expect_ok $UCOW io -c 'write -P 2 1600k 64k' long.img
expect_ok $UCOW map --output=json long.img
cp out long.json
expect_ok $UCOW convert long.img long.raw
$M check long.json 0 3145728 long.raw long.img short.img >/dev/null || fail "short backing file"
grep -q '"start": 1048576, "length": 524288, "depth": 1, "present": true, "zero": false, "data": true, "offset": ' long.json ||
	fail "the backing file's data at depth 1: $(cat long.json)"
grep -q '"start": 1572864, "length": 65536, "depth": 0, "present": false, "zero": true' long.json ||
	fail "past the backing file's end: depth 0, zero: $(cat long.json)"

# --- a dirty image (a writer killed after a flush): the journal's mappings, replayed in memory
expect_ok $UCOW create -q -o chunk_size=64k d.img 1M
$PY - "$UCOW" <<'PY' || fail "could not leave a dirty image"
import os, signal, subprocess, sys
p = subprocess.Popen([sys.argv[1], 'io', '-c', 'write -P 3 128k 64k', '-c', 'flush'] +
                     ['-c', 'read 0 512'] * 20000 + ['d.img'],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
for line in p.stdout:
    if line.startswith(b'flushed'):
        break
p.send_signal(signal.SIGKILL)
p.wait()
PY
expect_ok $UCOW info d.img
grep -qx 'dirty: true' out || fail "d.img is not dirty"
cp d.img d.before
expect_ok $UCOW map --output=json d.img
grep -q '"start": 131072, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true' out ||
	fail "the flushed write of a dirty image is not mapped: $(cat out)"
cmp d.img d.before || fail "map changed a dirty image"

# --- an empty raw file maps to nothing; a corrupt table is refused
: >empty.raw
expect_ok $UCOW map -f raw --output=json empty.raw
[ "$(cat out)" = "[]" ] || fail "an empty file: $(cat out)"
cp ord.img bad.img
$PY "$CLI_DIR/imgtool.py" entry bad.img 0 $((0xff << 48 | 0x41))
expect_err 1 "bad.img: corrupt image: table entry 0 has reserved bits" $UCOW map bad.img
[ ! -s out ] || fail "a map of a corrupt image printed $(cat out)"

# --- errors: one line, exit 1
expect_err 1 "missing.img: No such file or directory" $UCOW map missing.img
expect_err 1 "r.raw: not a ucow image" $UCOW map r.raw
expect_err 1 "map: no FILE given" $UCOW map
expect_err 1 "map: too many arguments" $UCOW map top.img top.img
expect_err 1 "map: invalid start offset 'x'" $UCOW map --start-offset=x top.img
expect_err 1 "map: invalid max length '-1': size must not be negative" $UCOW map --max-length=-1 top.img
expect_err 1 "map: unknown output format 'xml'" $UCOW map --output=xml top.img
expect_err 1 "map: unknown option" $UCOW map -z top.img
expect_ok $UCOW map --help
grep -q -- '--start-offset=OFF' out || fail "--help does not list --start-offset"
mv base.raw base.moved
expect_err 1 "mid.img: backing file '.*base.raw' not found" $UCOW map top.img
mv base.moved base.raw
ok "map"
