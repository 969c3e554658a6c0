#!/bin/sh
# check: exit 0 clean, 1 cannot check, 2 corruption, 3 leaks only; corrupt images are
# reported with a clear message by every command that opens them.
. "$CLI_LIB"
T="$PY $CLI_DIR/imgtool.py"
hdr() { $T hdr "$1" | $PY -c "import json, sys; print(json.load(sys.stdin)['$2'])"; }

expect_ok $UCOW create -q -o chunk_size=64k,block_size=4k c.img 4M
expect_ok $UCOW io -c 'write -P 1 0 64k' -c 'write -P 2 128k 70000' -c 'write -P 3 1M 4k' c.img
expect_ok $UCOW check c.img
grep -qx 'No errors were found on the image.' out || fail "clean image: $(cat out)"
grep -qx '4/64 = 6.25% allocated, 0.00% fragmented chunks' out || fail "allocation line: $(cat out)"
expect_ok $UCOW check --output=json c.img
json_ok out
$PY -c "import json; d = json.load(open('out')); assert d['corruptions'] == 0 and d['leaks'] == 0 and d['allocated-clusters'] == 4, d" || fail "json"
expect_err 63 "c.img: a raw image has no metadata to check" $UCOW check -f raw c.img
expect_err 1 "check: unknown output format" $UCOW check --output=yaml c.img

tab=$(hdr c.img table_offset)
bm=$(hdr c.img bitmap_offset)
e0=$($T entry c.img 0)
[ "$e0" -gt 0 ] || fail "chunk 0 is not mapped after a write"

# (expect_check STATUS FILE PATTERN: check exits STATUS, its stdout matches PATTERN)
expect_check() {
	run $UCOW check "$2"
	[ $st -eq "$1" ] || fail "check $2 exited $st, expected $1: $(cat out err)"
	grep -qE -- "$3" out || fail "check $2: output does not match '$3': $(cat out)"
	run $UCOW check --output=json "$2"
	[ $st -eq "$1" ] || fail "check --output=json $2 exited $st"
	json_ok out
}

# a table entry pointing past the end of the file
cp c.img bad1.img
$T entry bad1.img 0 $((1 << 40))
expect_check 2 bad1.img 'table entry 0 points to chunk'
expect_err 1 "bad1.img: corrupt image: table entry 0" $UCOW io -c 'read 0 1' bad1.img
expect_err 1 "bad1.img: corrupt image" $UCOW info bad1.img
expect_err 1 "bad1.img: corrupt image" $UCOW convert bad1.img out.raw
no_file out.raw

# two entries for one physical chunk
cp c.img bad2.img
$T entry bad2.img 2 "$e0"
expect_check 2 bad2.img 'mapped twice'

# a flipped byte in the table (reserved bits of entry 0)
cp c.img bad3.img
$T flip bad3.img $((tab + 6))
expect_check 2 bad3.img 'reserved bits'

# an entry cleared while its bitmap still says "data here": corruption (and a leak)
cp c.img bad4.img
$T entry bad4.img 0 0
expect_check 2 bad4.img 'errors were found on the image'

# entry and bitmap cleared: the chunk's data is a leak only
cp c.img leak.img
$T entry leak.img 0 0
$T flip leak.img $bm   # chunk 0's bitmap: 64k/4k = 16 bits in the first 8-byte word
$T flip leak.img $((bm + 1))
expect_check 3 leak.img 'leaked chunks were found'
run $UCOW io -c 'read -P 0 0 64k' -c 'read -P 2 128k 70000' leak.img
[ $st -eq 0 ] || fail "a leak changes what the image reads: $(cat out err)"

# the header: a broken checksum in both slots is corruption, no magic at all is no image
cp c.img hdr1.img
$T flip hdr1.img 100
$T flip hdr1.img 4196
expect_check 2 hdr1.img 'ERROR: .*checksum'
expect_err 1 "hdr1.img: corrupt image: header checksum" $UCOW io -c 'read 0 1' hdr1.img
cp c.img hdr2.img
printf 'XXXXXXXX' | dd of=hdr2.img bs=1 seek=0 conv=notrunc 2>/dev/null
printf 'XXXXXXXX' | dd of=hdr2.img bs=1 seek=4096 conv=notrunc 2>/dev/null
expect_err 1 "hdr2.img: not a ucow image" $UCOW check hdr2.img
expect_err 1 "hdr2.img: not a ucow image" $UCOW info hdr2.img
# one torn slot (the current one): the other, older one still opens the image, which
# checks clean and reads every byte written (the older header is the close's checkpoint)
cp c.img hdr3.img
slot=$(hdr c.img slot)
$T flip hdr3.img $((slot * 4096 + 100))
expect_check 0 hdr3.img 'No errors were found on the image'
[ "$(hdr hdr3.img slot)" = $((1 - slot)) ] || fail "the torn slot $slot is still taken as current"
expect_ok $UCOW io -r -c 'read -P 1 0 64k' -c 'read -P 2 128k 70000' -c 'read -P 3 1M 4k' \
	-c 'read -P 0 64k 64k' -c 'read -P 0 1028k 3068k' hdr3.img
grep -q 'Pattern verification failed' out && fail "one torn slot: data differs: $(cat out)"

# the CORRUPT flag: read-only opens only
cp c.img flag.img
$T flags flag.img 2
expect_err 1 "flag.img: image is marked corrupt" $UCOW io -c 'write 0 1' flag.img
expect_ok $UCOW io -c 'read -P 1 0 64k' flag.img
expect_ok $UCOW info flag.img
grep -qx 'corrupt: true' out || fail "info does not show the corrupt flag"
# the flag alone is not corruption: check finds nothing wrong (exit 0) and says the image
# stays read-only-only
expect_check 0 flag.img 'No errors were found on the image'
grep -q '"marked-corrupt": true' out || fail "check does not mention the corrupt flag"
run $UCOW check flag.img
grep -q 'marked corrupt' out || fail "check does not say the image is marked corrupt: $(cat out)"

# an overlay whose backing file is corrupt can still be checked itself
cp c.img b.img
expect_ok $UCOW create -q -b b.img -F ucow ov.img
$T entry b.img 0 $((1 << 40))
expect_ok $UCOW check ov.img
expect_err 1 "b.img: corrupt image" $UCOW io -c 'read 0 1' ov.img
# hostile images (issue 11, defect 2): after snapshot -a the table lives in the data area; a
# header whose journal lies on a mapped data chunk (checksum valid) is refused by every open
# and reported by check, not called clean (the next flush would overwrite that chunk)
expect_ok $UCOW create -q -o chunk_size=64k,block_size=4k j.img 4M
expect_ok $UCOW io -c 'write -P 1 0 256k' j.img
expect_ok $UCOW snapshot -c s1 j.img
expect_ok $UCOW snapshot -a s1 j.img
expect_ok $UCOW io -c 'write -P 2 1M 64k' j.img
expect_ok $UCOW check j.img
[ "$(hdr j.img table_offset)" -ge "$(hdr j.img data_offset)" ] || fail "apply did not move the table"
e16=$($T entry j.img 16)
[ "$e16" -gt 0 ] || fail "chunk 16 is not mapped after a write"
cp j.img j1.img
truncate -s 16M j1.img	# room for the whole journal after the chunk
$T set j1.img journal_offset $(((e16 & 0xffffffffffff) * 65536))
other=$((1 - $(hdr j1.img slot)))	# the older slot must not open the image instead
$T flip j1.img $((other * 4096 + 100))
expect_check 2 j1.img 'ERROR: .*journal region'
expect_err 1 "j1.img: corrupt image: journal region" $UCOW io -c 'read 0 1' j1.img
expect_err 1 "j1.img: corrupt image: journal region" $UCOW info j1.img
ok "check"
