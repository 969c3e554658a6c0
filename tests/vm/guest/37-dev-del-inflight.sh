#!/bin/sh
# `ucow dev del` while fio has I/O in flight: del returns 0, the device is gone, fio ends
# (with errors, its device vanished), and the image is closed clean (not dirty, check clean).
# A mounted device is refused without --force.
# vm-timeout: 200
. "$VM_LIB"
need_ucow

must ucow create -q disk.ucow 256M
dev=$(ucow dev add disk.ucow) || fail "dev add exited with status $?"
id=${dev#/dev/ublkb}
trap 'ucow dev del --force $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' /run/ucow/dev$id.json)

# mounted: refused
must mkfs.ext4 -q -F "$dev"
mkdir -p mnt && must mount "$dev" mnt
ucow dev del "$id" 2>err.out && fail "del of a mounted device succeeded"
cat err.out
grep -q "^ucow: .*in use" err.out || fail "no clear message for a mounted device"
must umount mnt

fio --filename="$dev" --direct=1 --ioengine=io_uring --rw=randrw --bsrange=4k-256k \
	--iodepth=64 --numjobs=2 --time_based --runtime=60 --name=load >fio.out 2>&1 &
fpid=$!
sleep 3
kill -0 $fpid 2>/dev/null || { cat fio.out; fail "fio is not running"; }
must ucow dev del "$id"
n=0
while kill -0 $fpid 2>/dev/null; do
	n=$((n + 1))
	[ $n -lt 100 ] || { kill -9 $fpid; fail "fio did not end after the device was deleted"; }
	sleep 0.1
done
wait $fpid
echo "fio ended with status $?"
[ ! -e "$dev" ] || fail "$dev still exists"
kill -0 "$pid" 2>/dev/null && fail "server $pid still running"
[ ! -e /run/ucow/dev$id.json ] || fail "state file left behind"
ucow info disk.ucow | tee info.out
grep -q "dirty: false" info.out || fail "image not closed clean"
must ucow check disk.ucow
pass
