#!/bin/sh
# The background fold of underlays on a served image (ublk/fold.c): first writes after an
# online snapshot leave the old chunks below the new ones (no copy); once the device is idle
# the server copies those blocks in short pauses of its own (`dev stats`: "underlays folded",
# "fold" pauses); an online create first folds what is left; the device, the snapshot and
# `ucow check` agree with a model throughout. A `dev del` during the pass before a create
# ends it at once (the create fails saying so).
# vm-timeout: 240
. "$VM_LIB"
need_ucow
trap 'ucow dev del --all 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT

must ucow create -q disk.ucow 64M
must ucow io -c "write -P 0x11 0 64M" disk.ucow
dev=$(ucow dev add -q 2 disk.ucow) || fail "dev add failed"
id=${dev#/dev/ublkb}
must ucow snapshot -c s1 disk.ucow
must dd if="$dev" of=want.raw bs=1M iflag=direct status=none
cp want.raw s1.raw

# 4 KiB into chunk i (1 MiB each) at block i: the first write into each, after the snapshot
patch() {
	dd if=/dev/urandom of=blk bs=4k count=1 status=none
	dd if=blk of="$dev" bs=4k seek=$(($1 * 256 + $1 % 256)) oflag=direct conv=notrunc status=none ||
		fail "write into chunk $1 failed"
	dd if=blk of=want.raw bs=4k seek=$(($1 * 256 + $1 % 256)) conv=notrunc status=none
}
for i in $(seq 0 47); do patch "$i"; done
cmp "$dev" want.raw || fail "the device differs from the model before the fold"

# idle: folded in the background, 4 chunks per pause
ok=0
for _i in $(seq 1 60); do
	ucow dev stats "$id" >stats.txt || fail "dev stats failed"
	if grep -q "^underlays folded: 48 chunks in [0-9]* steps, [0-9]* passes$" stats.txt; then
		ok=1
		break
	fi
	sleep 0.5
done
cat stats.txt
[ $ok = 1 ] || fail "the idle device did not fold its 48 underlays"
# (the fold may begin between the writes: the guest's writes here are slower than its wait)
steps=$(sed -n 's/^underlays folded: 48 chunks in \([0-9]*\) steps.*/\1/p' stats.txt)
[ "$steps" -ge 12 ] || fail "48 chunks folded in $steps steps of at most 4"
grep -q "fold $steps (last " stats.txt || fail "dev stats does not count $steps fold pauses"
cmp "$dev" want.raw || fail "the device differs from the model after the fold"

# 8 more, then an online create at once: folded before (or inside) its pause
for i in $(seq 48 55); do patch "$i"; done
must ucow snapshot -c s2 disk.ucow
ucow dev stats --output=json "$id" >stats.json || fail "dev stats --output=json failed"
tr -d ' \n' <stats.json >flat.json
grep -o '"fold":{[^}]*}' flat.json
grep -q '"fold":{"chunks":56,"steps":[0-9]*,"passes":[0-9]*,"failed":false}' flat.json ||
	fail "dev stats JSON does not count 56 chunks folded: $(cat flat.json)"
cmp "$dev" want.raw || fail "the device differs from the model after the create"
must ucow dev del "$id"
must ucow check disk.ucow
must ucow convert -O raw disk.ucow now.raw
cmp now.raw want.raw || fail "the image differs from the model"
must ucow convert -l s1 -O raw disk.ucow got1.raw
cmp got1.raw s1.raw || fail "snapshot s1 changed"

# a stop during the pass before an online create: 2048 underlays (64 KiB chunks, 4 KiB into
# each), a create, then `dev del` a second later: the pass ends at its next step, the create
# fails saying so, the device goes at once (not after the whole pass); nothing is lost
rm -f disk.ucow want.raw s1.raw now.raw got1.raw	# (the guest's files are in its RAM)
must ucow create -q -o chunk_size=64k big.ucow 128M
must ucow io -c "write -P 0x22 0 128M" big.ucow
dev=$(ucow dev add -q 2 big.ucow) || fail "dev add big.ucow failed"
id=${dev#/dev/ublkb}
must ucow snapshot -c s1 big.ucow
must fio --name=u --filename="$dev" --rw=write:60k --bs=4k --size=128M --direct=1 \
	--ioengine=psync --buffer_pattern=0x77 --output=/dev/null
must dd if="$dev" of=want2.raw bs=1M iflag=direct status=none
ucow snapshot -c s2 big.ucow >create.out 2>&1 &
cpid=$!
sleep 1
t0=$(cut -d' ' -f1 /proc/uptime)
must ucow dev del "$id"
ms=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%d", (b - a) * 1000 }')
wait $cpid && fail "the create succeeded: the pass ended before the stop ($(cat create.out))"
echo "create: $(cat create.out); dev del took $ms ms"
grep -q "folding underlays before the snapshot: the device is stopping" create.out ||
	fail "the create's error does not say the device is stopping: $(cat create.out)"
[ "$ms" -lt 10000 ] || fail "dev del took $ms ms during a fold pass"
must ucow check big.ucow
ucow snapshot -l big.ucow | grep -qw s2 && fail "s2 exists after the failed create"
must ucow compare -s -F raw big.ucow want2.raw
pass
