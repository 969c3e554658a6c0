#!/bin/sh
# Online commit (issue 13, item 6): `ucow commit ov.ucow` on a served overlay while fio
# writes and verifies (crc32c) the last third of the disk. The server reopens the base
# read-write, copies the overlay's data into it (its zeroed range as zeros), copies again
# what fio wrote meanwhile, then empties the overlay and makes the base read-only again;
# one pause of the queues per step. Refused while another server holds the base. After it:
# the device reads what it read before, fio verified every block across the pauses, the
# base file holds the overlay's data, and the overlay holds none of its own outside fio's
# range (fio may write on after the commit ended).
# vm-timeout: 600
. "$VM_LIB"
need_ucow

trap 'kill $fiopid 2>/dev/null; ucow dev del --all 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
fiopid=
must dd if=/dev/urandom of=base.raw bs=1M count=96 status=none
must ucow create -q -b base.raw -F raw ov.ucow
must ucow create -q -b base.raw -F raw ov2.ucow
dev=$(ucow dev add ov.ucow) || fail "dev add failed"
id=${dev#/dev/ublkb}

# the overlay's own data: 8 MiB at 8M (partial chunks too), zeros on [20M, 24M)
must dd if=/dev/urandom of=own.bin bs=1M count=8 status=none
must dd if=own.bin of="$dev" bs=64k seek=128 oflag=direct status=none
must blkdiscard -z -o $((20 << 20)) -l $((4 << 20)) "$dev"
dd if="$dev" of=before.bin bs=1M count=64 iflag=direct status=none

# another overlay on the base, served: the base is held, the commit refused
dev2=$(ucow dev add ov2.ucow) || fail "dev add ov2 failed"
out=$(ucow commit ov.ucow 2>&1) && fail "commit succeeded while another server holds the base"
echo "held: '$out'"
echo "$out" | grep -q "^ucow: ov.ucow: [^ ]*base.raw: image is in use by another process" ||
	fail "commit with the base held: '$out'"
must ucow dev del "${dev2#/dev/ublkb}"

# load on [64M, 96M) during the job, verified at its end
fio --name=load --filename="$dev" --direct=1 --ioengine=io_uring --rw=randwrite \
	--bs=4k --iodepth=16 --offset=64M --size=32M --loops=3 \
	--verify=crc32c --do_verify=1 --verify_fatal=1 >fio.out 2>&1 &
fiopid=$!
sleep 1
kill -0 $fiopid 2>/dev/null || { cat fio.out; fail "fio ended before the commit"; }

t0=$(date +%s)
out=$(ucow commit ov.ucow 2>&1) || fail "online commit: $out"
echo "commit took $(($(date +%s) - t0)) s"
[ "$out" = "Image committed." ] || fail "commit printed '$out'"
ucow dev stats "$id" | tee stats.txt | grep pauses
grep -q "^pauses: .*job [1-9]" stats.txt || fail "no job pauses in dev stats: $(grep pauses stats.txt)"
maxms=$(sed -n 's/^pauses: .*job [0-9]* (last [0-9.]* ms, max \([0-9.]*\) ms.*/\1/p' stats.txt)
echo "longest job pause: $maxms ms"
[ -n "$maxms" ] || fail "cannot read the longest job pause"
awk -v m="$maxms" 'BEGIN { exit !(m < 1000) }' || fail "a job pause took $maxms ms"

# served still: the same content outside fio's range
dd if="$dev" of=after.bin bs=1M count=64 iflag=direct status=none
cmp before.bin after.bin || fail "[0, 64M) changed across the commit"
# the base file holds it (the device still has it open read-only: a plain read)
dd if=base.raw of=base64.bin bs=1M count=64 status=none
cmp before.bin base64.bin || fail "the base file does not hold the overlay's data"

wait $fiopid
rc=$?
fiopid=
grep -E "IOPS|err=" fio.out
[ $rc = 0 ] || { cat fio.out; fail "fio (verify across the job's pauses) exited $rc"; }
dd if="$dev" of=all.bin bs=1M iflag=direct status=none

must ucow dev del "$id"
must ucow check ov.ucow
# the overlay holds nothing of its own below 64M (above: what fio wrote after the commit)
ucow map --output=json ov.ucow >map.json || fail "map failed"
awk -F'[:,]' '/"depth": 0/ && /"data": true/ { for (i = 1; i < NF; i++) if ($i ~ /"start"/) s = $(i + 1); if (s + 0 < 67108864) bad = 1 } END { exit bad }' map.json ||
	{ cat map.json; fail "the overlay still holds data below 64M"; }
must ucow convert -O raw ov.ucow now.raw
cmp now.raw all.bin || fail "the image differs from what the device read"
pass
