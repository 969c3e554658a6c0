#!/bin/sh
# check -r leaks|all: each kind of planted damage is found, repaired, and the image checks
# clean afterwards; the data that the damage did not touch reads back unchanged; exit codes
# and JSON as qemu-img's.
. "$CLI_LIB"
T="$PY $CLI_DIR/imgtool.py"
hdr() { $T hdr "$1" | $PY -c "import json, sys; print(json.load(sys.stdin)['$2'])"; }

expect_ok $UCOW create -q -o chunk_size=64k,block_size=4k c.img 4M
expect_ok $UCOW io -c 'write -P 1 0 64k' -c 'write -P 2 128k 70000' -c 'write -P 3 1M 4k' c.img
bm=$(hdr c.img bitmap_offset)
e0=$($T entry c.img 0)

# the data outside chunk 0 (which every damage below is about) must survive each repair
intact() {
	expect_ok $UCOW io -r -c 'read -P 2 128k 70000' -c 'read -P 3 1M 4k' -c 'read -P 0 2M 1M' "$1"
	grep -q 'Pattern verification failed' out && fail "$1: repair changed other data: $(cat out)"
	true
}
# repaired FILE MODE PATTERN: check -r MODE exits 0, says it repaired, and a check is clean
# (its output is kept in 'rep')
repaired() {
	run $UCOW check -r "$2" "$1"
	[ $st -eq 0 ] || fail "check -r $2 $1 exited $st: $(cat out err)"
	grep -q 'The following inconsistencies were found and repaired' out ||
		fail "check -r $2 $1 does not say what it repaired: $(cat out)"
	grep -qE -- "$3" out || fail "check -r $2 $1: output does not match '$3': $(cat out)"
	grep -qx 'No errors were found on the image.' out || fail "check -r $2 $1: not clean: $(cat out)"
	cp out rep	# what it said, for the checks after this
	expect_ok $UCOW check "$1"
	grep -qx 'No errors were found on the image.' out || fail "$1 after repair: $(cat out)"
	intact "$1"
}

# a clean image: -r changes nothing and says nothing was wrong
cp c.img clean.img
expect_ok $UCOW check -r all clean.img
grep -qx 'No errors were found on the image.' out || fail "clean image: $(cat out)"
grep -q 'repaired' out && fail "a clean image was 'repaired': $(cat out)"
cmp -s c.img clean.img || fail "check -r all wrote to a clean image"

# a leak (entry and bitmap cleared, the data still there): -r leaks punches it
cp c.img leak.img
$T entry leak.img 0 0
$T flip leak.img $bm
$T flip leak.img $((bm + 1))
before=$(du -k leak.img | cut -f1)
repaired leak.img leaks '    1 leaked chunks'
grep -q 'Repaired: 1 leaked chunk punched out' rep || fail "leak: no account: $(cat rep)"
after=$(du -k leak.img | cut -f1)
[ "$after" -lt "$before" ] || fail "the leaked chunk still takes space ($before -> $after KiB)"
expect_ok $UCOW io -r -c 'read -P 0 0 64k' leak.img

# -r leaks leaves a corrupt image alone (exit 2, nothing written); -r all repairs it
cp c.img bad1.img
$T entry bad1.img 0 $((1 << 40))
cp bad1.img bad1.orig
run $UCOW check -r leaks bad1.img
[ $st -eq 2 ] || fail "check -r leaks on a corrupt image exited $st: $(cat out err)"
grep -q "^ucow: bad1.img: not repaired: the image is corrupt, and '-r leaks' repairs leaks only (use '-r all')" err || fail "-r leaks on corruption: $(cat err)"
[ "$(wc -l <err)" -eq 1 ] || fail "-r leaks on corruption: more than one line: $(cat err)"
cmp -s bad1.img bad1.orig || fail "check -r leaks changed a corrupt image"
repaired bad1.img all '    [1-9][0-9]* corruptions'
expect_ok $UCOW io -r -c 'read -P 0 0 64k' bad1.img	# the dropped entry reads as unallocated
expect_ok $UCOW io -c 'write -P 9 0 4k' -c 'read -P 9 0 4k' bad1.img	# and takes writes

# two entries for one chunk: the second is dropped, the first keeps its data
cp c.img bad2.img
$T entry bad2.img 5 "$e0"
repaired bad2.img all '    [1-9][0-9]* corruptions'
expect_ok $UCOW io -r -c 'read -P 1 0 64k' bad2.img
grep -q 'Pattern verification failed' out && fail "bad2: the first mapping lost its data"

# reserved bits in an entry: the entry is dropped
cp c.img bad3.img
$T entry bad3.img 0 $((e0 | (1 << 50)))
repaired bad3.img all '    [1-9][0-9]* corruptions'

# an entry cleared while its bitmap says "data": the bitmap is cleared, the chunk punched
cp c.img bad4.img
$T entry bad4.img 0 0
repaired bad4.img all 'bitmaps of 1 unmapped chunk cleared'
grep -q '1 leaked chunk punched out' rep || fail "bad4: the chunk was not punched: $(cat rep)"

# the corrupt mark: cleared (the image opens read-write again)
cp c.img flag.img
$T flags flag.img 2
expect_err 1 "flag.img: image is marked corrupt" $UCOW io -c 'write 0 1' flag.img
expect_ok $UCOW check -r all flag.img
grep -q 'the corrupt mark cleared' out || fail "flag: no account: $(cat out)"
expect_ok $UCOW io -c 'write -P 7 0 4k' flag.img
expect_ok $UCOW info --output=json flag.img
grep -q '"corrupt": true' out && fail "flag: still marked corrupt: $(cat out)"

# refcounts that disagree with the snapshot tables: rewritten from them; the snapshot and
# the current state both read what they held
expect_ok $UCOW create -q -o chunk_size=64k,block_size=4k s.img 4M
expect_ok $UCOW io -c 'write -P 1 0 64k' -c 'write -P 2 128k 70000' -c 'write -P 3 1M 4k' s.img
expect_ok $UCOW snapshot -c s1 s.img
expect_ok $UCOW io -c 'write -P 5 1M 4k' s.img
p=$($PY -c "print($($T entry s.img 0) & 0xffffffffffff)")	# (the SHARED bit: past sh's range)
rco=$(hdr s.img refcount_offset)
$T flip s.img $((rco + p * 4))	# rc[p] 1 -> 0xfe: more than the snapshots
run $UCOW io -r -c 'read 0 1' s.img
[ $st -eq 1 ] || fail "a damaged refcount table opens: $(cat out err)"
expect_ok $UCOW check -r all s.img
grep -q 'refcounts of 1 chunk rewritten from the snapshot tables' out || fail "rc: $(cat out)"
expect_ok $UCOW check s.img
grep -qx 'No errors were found on the image.' out || fail "rc: not clean after repair: $(cat out)"
expect_ok $UCOW io -r -c 'read -P 1 0 64k' -c 'read -P 2 128k 70000' -c 'read -P 5 1M 4k' s.img
grep -q 'Pattern verification failed' out && fail "rc: current state changed: $(cat out)"
expect_ok $UCOW snapshot -a s1 s.img
expect_ok $UCOW io -r -c 'read -P 1 0 64k' -c 'read -P 3 1M 4k' s.img
grep -q 'Pattern verification failed' out && fail "rc: snapshot changed: $(cat out)"

# a damaged snapshot table is not repaired: one line, exit 2, nothing written
expect_ok $UCOW create -q -o chunk_size=64k,block_size=4k st.img 4M
expect_ok $UCOW io -c 'write -P 1 0 64k' st.img
expect_ok $UCOW snapshot -c s1 st.img
$T flip st.img $(($(hdr st.img snap_table_offset) + 10))
cp st.img st.orig
run $UCOW check -r all st.img
[ $st -eq 2 ] || fail "damaged snapshot table: check -r all exited $st"
grep -q '^ucow: st.img: not repaired: the snapshot table is damaged' err || fail "snap table: $(cat err)"
[ "$(wc -l <err)" -eq 1 ] || fail "snap table: more than one line: $(cat err)"
cmp -s st.img st.orig || fail "check -r all changed an image it could not repair"

# JSON: qemu-img's keys, the second check's counts, what was fixed
cp c.img j.img
$T entry j.img 0 $((1 << 40))
expect_ok $UCOW check -r all --output=json j.img
json_ok out
$PY -c "
import json; d = json.load(open('out'))
assert d['corruptions'] == 0 and d['leaks'] == 0 and d['corruptions-fixed'] >= 1, d
assert d['leaks-fixed'] == 1 and d['check-errors'] == 0 and 'repaired' in d, d
" || fail "json: $(cat out)"

# errors: a bad mode, an image in use, raw files (63: no checks)
expect_err 1 "check: -r takes 'leaks' or 'all', not 'some'" $UCOW check -r some c.img
expect_err 63 "c.img: a raw image has no metadata to check" $UCOW check -f raw -r all c.img
ok "check -r"
