#!/bin/sh
# Online flatten (issue 13, item 6): `ucow rebase -b "" ov.ucow` on a served overlay while
# fio writes and verifies (crc32c) a third of the disk. The server copies the base's data
# in, one pause of the queues per step (at most 4 MiB copied each), then drops the backing
# file. The device never stops answering for longer than one pause: the longest pause is
# printed (dev stats, the job's own account) and bounded. Afterwards, still served: the
# image names no backing file, and what fio did not touch reads as the base did. Deleted and
# with the base file gone: the overlay opens alone, checks clean, and holds the same bytes.
# vm-timeout: 600
. "$VM_LIB"
need_ucow

trap 'kill $fiopid 2>/dev/null; ucow dev del --all 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
fiopid=
must dd if=/dev/urandom of=base.raw bs=1M count=96 status=none
must ucow create -q -b base.raw -F raw ov.ucow
dev=$(ucow dev add ov.ucow) || fail "dev add failed"
id=${dev#/dev/ublkb}

# the overlay's own data before the job: 8 MiB at 8M (partial chunks too)
must dd if=/dev/urandom of=own.bin bs=1M count=8 status=none
must dd if=own.bin of="$dev" bs=64k seek=128 oflag=direct status=none

# load on [64M, 96M) during the job, verified at its end
fio --name=load --filename="$dev" --direct=1 --ioengine=io_uring --rw=randwrite \
	--bs=4k --iodepth=16 --offset=64M --size=32M --loops=3 \
	--verify=crc32c --do_verify=1 --verify_fatal=1 >fio.out 2>&1 &
fiopid=$!
sleep 1
kill -0 $fiopid 2>/dev/null || { cat fio.out; fail "fio ended before the flatten"; }

t0=$(date +%s)
out=$(ucow rebase -b "" ov.ucow 2>&1) || fail "online flatten: $out"
echo "flatten took $(($(date +%s) - t0)) s"
[ -z "$out" ] || fail "rebase printed '$out' (offline prints nothing)"
ucow dev stats "$id" | tee stats.txt | grep pauses
grep -q "^pauses: .*job [1-9]" stats.txt || fail "no job pauses in dev stats: $(grep pauses stats.txt)"
# the longest pause: under a second even under emulation (one step copies at most 4 MiB)
maxms=$(sed -n 's/^pauses: .*job [0-9]* (last [0-9.]* ms, max \([0-9.]*\) ms.*/\1/p' stats.txt)
echo "longest job pause: $maxms ms"
[ -n "$maxms" ] || fail "cannot read the longest job pause"
awk -v m="$maxms" 'BEGIN { exit !(m < 1000) }' || fail "a job pause took $maxms ms"

wait $fiopid
rc=$?
fiopid=
grep -E "IOPS|err=" fio.out
[ $rc = 0 ] || { cat fio.out; fail "fio (verify across the job's pauses) exited $rc"; }

# served still: no backing file; the untouched ranges read as the base
ucow info ov.ucow | tee info.txt
grep -q "^backing file" info.txt && fail "the overlay still names a backing file"
cmp -n 8388608 "$dev" base.raw || fail "[0, 8M) differs from the base"
dd if="$dev" of=own2.bin bs=1M skip=8 count=8 iflag=direct status=none
cmp own.bin own2.bin || fail "the overlay's own data changed"
dd if="$dev" of=mid.bin bs=1M skip=16 count=48 iflag=direct status=none
dd if=base.raw of=midb.bin bs=1M skip=16 count=48 status=none
cmp mid.bin midb.bin || fail "[16M, 64M) differs from the base"
dd if="$dev" of=all.bin bs=1M iflag=direct status=none

# a second flatten: nothing to do, said in one line
out=$(ucow rebase -b "" ov.ucow 2>&1) && fail "a second flatten succeeded"
[ "$out" = "ucow: ov.ucow: the image has no backing file" ] || fail "second flatten: '$out'"

must ucow dev del "$id"
mv base.raw gone.raw
must ucow check ov.ucow
must ucow convert -O raw ov.ucow now.raw
cmp now.raw all.bin || fail "the flattened image differs from what the device read"
pass
