#!/bin/sh
# Online snapshots: `ucow snapshot -c/-l/-d` and `ucow info` on an image while it is served
# (an overlay over a raw base), under fio write load. The server pauses its queues for the
# snapshot only; fio's writes across the pauses verify (crc32c). Data A written before the
# snapshot, B after: offline after del the snapshot lists, `ucow check` is clean,
# `convert -l s1` holds A, the current state holds B. `snapshot -a` on the served image is
# refused while fio holds the device, naming the device and fio, and changes nothing. The pauses are printed (dev stats): create
# and delete pause, list and info do not.
# vm-timeout: 500
. "$VM_LIB"
need_ucow

trap 'kill $fiopid 2>/dev/null; ucow dev del --all 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
fiopid=
must dd if=/dev/urandom of=base.raw bs=1M count=96 status=none
must ucow create -q -b base.raw -F raw ov.ucow
dev=$(ucow dev add ov.ucow) || fail "dev add failed"
id=${dev#/dev/ublkb}
echo "device: $dev"

# A: 16 MiB at offset 0 (partial chunks too: the overlay copies from the base)
must dd if=/dev/urandom of=a.bin bs=1M count=16 status=none
must dd if=a.bin of="$dev" bs=64k seek=0 oflag=direct status=none
must dd if=/dev/urandom of=b.bin bs=1M count=16 status=none

# load on [32M, 96M) while snapshots are taken; verified at its end
fio --name=load --filename="$dev" --direct=1 --ioengine=io_uring --rw=randwrite \
	--bs=4k --iodepth=32 --offset=32M --size=64M --loops=4 \
	--verify=crc32c --do_verify=1 --verify_fatal=1 >fio.out 2>&1 &
fiopid=$!
sleep 1
kill -0 $fiopid 2>/dev/null || { cat fio.out; fail "fio ended before the snapshot"; }

out=$(ucow snapshot -c s1 ov.ucow 2>&1) || fail "online snapshot -c s1: $out"
[ -z "$out" ] || fail "snapshot -c printed '$out' (offline prints nothing)"
kill -0 $fiopid 2>/dev/null ||
	{ cat fio.out; fail "fio ended before the snapshot returned: the snapshot was not taken under load"; }
echo "fio still running after the snapshot: load was on"
ucow dev stats "$id" | grep pauses

# B over A, while fio goes on; more snapshots, one deleted online
must dd if=b.bin of="$dev" bs=64k seek=0 oflag=direct status=none
must ucow snapshot -c s2 ov.ucow
must ucow snapshot -c 's p a c e' ov.ucow
must ucow snapshot -d s2 ov.ucow
out=$(ucow snapshot -c s1 ov.ucow 2>&1) && fail "a second s1 was created"
echo "duplicate refused: $out"
echo "$out" | grep -q "^ucow: ov.ucow: .*s1" || fail "duplicate name message: $out"

# list and info online: the same format as offline
ucow snapshot -l ov.ucow >list-online.txt || fail "online snapshot -l failed"
cat list-online.txt
grep -q " s1 " list-online.txt || fail "online list lacks s1"
grep -q "s p a c e" list-online.txt || fail "online list lacks 's p a c e'"
grep -q " s2 " list-online.txt && fail "online list still has the deleted s2"
ucow snapshot -l --output=json ov.ucow >list-online.json || fail "online snapshot -l json failed"
grep -q '"name": "s1"' list-online.json || fail "online json list lacks s1"
ucow info ov.ucow >info-online.txt || fail "online info failed"
cat info-online.txt
grep -q "^image: ov.ucow" info-online.txt && grep -q "^snapshots: 2" info-online.txt &&
	grep -q "^backing file: base.raw" info-online.txt || fail "online info is not right"
ucow info --output=json --backing-chain ov.ucow >info-chain.json || fail "online info --backing-chain failed"
grep -q '"format": "raw"' info-chain.json || fail "online info --backing-chain lacks the base"

# apply while served and held open (by fio): refused, one line naming the device and its
# holder, nothing changed
out=$(ucow snapshot -a s1 ov.ucow 2>&1); rc=$?
echo "apply online: rc=$rc '$out'"
[ $rc = 1 ] || fail "snapshot -a on a served image exited $rc"
echo "$out" | grep -Eq "^ucow: ov.ucow: $dev is open by fio \(pid [0-9]+\); snapshot -a needs a device nobody holds$" ||
	fail "apply message: $out"
[ "$(echo "$out" | wc -l)" = 1 ] || fail "apply printed more than one line"
# any other command that needs the image names the device too
out=$(ucow io -c 'write 0 4k' ov.ucow 2>&1); rc=$?
echo "io online: rc=$rc '$out'"
[ $rc = 1 ] && [ "$out" = "ucow: ov.ucow: in use by $dev (ucow dev del $id first)" ] ||
	fail "io on a served image: rc=$rc '$out'"
# the image is served: its bytes may change through the device, but no snapshot was applied
ucow snapshot -l ov.ucow | grep -q '^[0-9].* s p a c e .* \*$' || fail "the current parent changed"

wait $fiopid
rc=$?
fiopid=
grep -E "IOPS|err=" fio.out
[ $rc = 0 ] || { cat fio.out; fail "fio (verify across the pauses) exited $rc"; }
ucow dev stats "$id" | tee stats.txt | grep pauses
grep -q "^pauses: create 4 .*delete 1" stats.txt || fail "dev stats: $(grep pauses stats.txt)"
grep "^pauses" stats.txt | grep -q list && fail "a list paused the queues: $(grep pauses stats.txt)"

must ucow dev del "$id"
[ ! -e "$dev" ] || fail "$dev still there"
ucow snapshot -l ov.ucow | tee list-offline.txt
grep -q " s1 " list-offline.txt || fail "offline list lacks s1"
[ "$(ucow snapshot -l ov.ucow | cut -c1-40)" = "$(cut -c1-40 list-online.txt)" ] ||
	fail "offline and online lists differ (beyond disk usage)"
must ucow check ov.ucow
must ucow convert -l s1 -O raw ov.ucow s1.raw
cmp -n 16777216 s1.raw a.bin || fail "snapshot s1 does not hold A"
cmp -n 16777216 -i 16777216 s1.raw base.raw || fail "snapshot s1 lost the base data in [16M, 32M)"
must ucow convert -O raw ov.ucow now.raw
cmp -n 16777216 now.raw b.bin || fail "the current state does not hold B"
pass
