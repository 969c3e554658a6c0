#!/bin/sh
# Snapshot space: take a snapshot, overwrite the whole image, delete the snapshot: the file
# goes back to about the current state's size (what only the snapshot used is punched).
# The same through apply: the overwritten state's chunks are returned when no snapshot
# keeps them. A snapshot's disk-usage is what deleting it would free.
. "$CLI_LIB"
used() { echo $(($(stat -c %b "$1") * 512)); }
MiB=1048576
SLACK=$((MiB / 2))	# metadata: headers, journal, tables, bitmaps (a few chunks at most)
IMG=sp.img
expect_ok $UCOW create -q -o chunk_size=64k,block_size=4k $IMG 16M
expect_ok $UCOW io -c 'write -P 1 0 16M' $IMG
full=$(used $IMG)
echo "one full state: $full bytes"
[ $full -ge $((16 * MiB)) ] && [ $full -le $((16 * MiB + SLACK)) ] || fail "16 MiB written uses $full bytes"

expect_ok $UCOW snapshot -c s1 $IMG
expect_ok $UCOW io -c 'write -P 2 0 16M' $IMG
two=$(used $IMG)
echo "snapshot + overwritten state: $two bytes"
[ $two -ge $((32 * MiB)) ] && [ $two -le $((32 * MiB + 2 * SLACK)) ] || fail "two states use $two bytes"
expect_ok $UCOW snapshot -l --output=json $IMG
$PY -c "
import json; v = json.load(open('out'))
assert len(v) == 1 and 16 << 20 <= v[0]['disk-usage'] <= (16 << 20) + $SLACK, v" ||
	fail "s1's disk-usage is not about 16 MiB: $(cat out)"
expect_ok $UCOW snapshot -d s1 $IMG
after=$(used $IMG)
echo "after deleting the snapshot: $after bytes"
[ $after -le $((full + SLACK)) ] || fail "after deleting the snapshot the file uses $after bytes (one state: $full)"
expect_ok $UCOW io -c 'read -P 2 0 16M' $IMG
expect_ok $UCOW check $IMG
expect_ok $UCOW info $IMG
grep -qx 'snapshots: 0' out || fail "info: snapshots left"

# through apply: s1 (pattern 3), overwrite, s2 (pattern 4), overwrite (5), apply s1 — the
# unsnapshotted state 5 is freed; delete s2 — its chunks are freed: one state is left
expect_ok $UCOW io -c 'write -P 3 0 16M' $IMG
expect_ok $UCOW snapshot -c s1 $IMG
expect_ok $UCOW io -c 'write -P 4 0 16M' $IMG
expect_ok $UCOW snapshot -c s2 $IMG
expect_ok $UCOW io -c 'write -P 5 0 16M' $IMG
three=$(used $IMG)
echo "three states: $three bytes"
[ $three -ge $((48 * MiB)) ] || fail "three states use only $three bytes"
expect_ok $UCOW snapshot -a s1 $IMG
a=$(used $IMG)
echo "after applying s1: $a bytes"
[ $a -le $((32 * MiB + 2 * SLACK)) ] || fail "after the apply the file uses $a bytes (two states: $two)"
expect_ok $UCOW snapshot -d s2 $IMG
d=$(used $IMG)
echo "after deleting s2: $d bytes"
[ $d -le $((16 * MiB + 2 * SLACK)) ] || fail "after deleting s2 the file uses $d bytes"
expect_ok $UCOW io -c 'read -P 3 0 16M' $IMG
expect_ok $UCOW convert -l s1 $IMG s1.raw
expect_ok $UCOW io -f raw -c 'read -P 3 0 16M' s1.raw
expect_ok $UCOW check $IMG
# the space is reused: one more full overwrite grows the file by one state, not more
expect_ok $UCOW io -c 'write -P 6 0 16M' $IMG
w=$(used $IMG)
echo "s1 + a new state: $w bytes"
[ $w -le $((32 * MiB + 2 * SLACK)) ] || fail "s1 + one state use $w bytes"
expect_ok $UCOW check $IMG
ok "snapshot space"
