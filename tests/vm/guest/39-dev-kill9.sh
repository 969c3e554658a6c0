#!/bin/sh
# kill -9 of a server without --recoverable: the kernel removes /dev/ublkbN, the next
# `ucow dev` command finishes the job (the ublk device, the state file), the ID can be used
# again, and the image (dirty) opens and checks clean (its journal is replayed), with the
# data written and flushed before the kill intact (fio verify of that region), while the
# load that was running when the server died saw its I/O fail.
# vm-timeout: 200
. "$VM_LIB"
need_ucow
trap 'cd /; rm -rf "$VM_TMP"' EXIT

must ucow create -q disk.ucow 128M
dev=$(ucow dev add -n 7 disk.ucow) || fail "dev add exited with status $?"
[ "$dev" = /dev/ublkb7 ] || fail "-n 7 gave $dev"
pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' /run/ucow/dev7.json)
[ -n "$pid" ] || fail "no server pid in the state file"
# A: 16 MiB written with verify headers and flushed (fsync at the end) before the kill
must fio --filename="$dev" --direct=1 --ioengine=io_uring --rw=write --bs=64k --iodepth=8 \
	--size=16M --verify=crc32c --do_verify=0 --end_fsync=1 --name=flushed --output=a.out
fio --filename="$dev" --direct=1 --ioengine=io_uring --rw=randwrite --bs=4k --iodepth=32 \
	--offset=64M --size=64M --time_based --runtime=30 --name=load >fio.out 2>&1 &
fpid=$!
sleep 2
must kill -9 "$pid"
n=0
while [ -e "$dev" ]; do
	n=$((n + 1))
	[ $n -lt 100 ] || fail "$dev still there 10 s after kill -9"
	sleep 0.1
done
wait $fpid
fst=$?
echo "fio ended with status $fst"
[ $fst -ne 0 ] || { cat fio.out; fail "fio's load ran on as if the server had not died"; }
# the ID is free again at once (add finishes the dead device first)
dev=$(ucow dev add -n 7 disk.ucow) || fail "ID 7 cannot be used again right after the kill"
must ucow dev del 7
ucow dev list | tee list.out
grep -qE "^7 " list.out && fail "list still shows device 7"
[ ! -e /run/ucow/dev7.json ] || fail "state file left behind"
[ ! -e /dev/ublkc7 ] || fail "/dev/ublkc7 left behind"
dev=$(ucow dev add -n 7 disk.ucow) || fail "ID 7 cannot be used again"
# what was flushed before the kill reads back: fio verifies region A
fio --filename="$dev" --direct=1 --ioengine=io_uring --rw=write --bs=64k --iodepth=8 \
	--size=16M --verify=crc32c --verify_only --name=flushed >verify.out 2>&1 ||
	{ cat verify.out; fail "data flushed before the kill -9 does not verify"; }
must ucow dev del 7
must ucow check disk.ucow
pass
