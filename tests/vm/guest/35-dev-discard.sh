#!/bin/sh
# Discard and write-zeroes: blkdiscard on the device reads back as zeros (raw and cow);
# on cow the image file gives the space back (its allocated blocks shrink).
# vm-timeout: 200
. "$VM_LIB"
need_ucow

blocks() { stat -c %b "$1"; }
id=""
trap '[ -n "$id" ] && ucow dev del $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
for t in raw cow; do
	if [ $t = raw ]; then must truncate -s 128M img.$t; else must ucow create -q img.$t 128M; fi
	dev=$(ucow dev add -t $t img.$t) || fail "$t: dev add exited with status $?"
	id=${dev#/dev/ublkb}
	[ "$(cat /sys/block/ublkb$id/queue/discard_granularity)" -gt 0 ] || fail "$t: no discard"
	[ "$(cat /sys/block/ublkb$id/queue/write_zeroes_max_bytes)" -gt 0 ] || fail "$t: no write-zeroes"
	[ "$(cat /sys/block/ublkb$id/queue/write_cache)" = "write back" ] || fail "$t: no volatile write cache"
	[ "$(cat /sys/block/ublkb$id/queue/fua)" = 1 ] || fail "$t: no FUA"
	must dd if=/dev/urandom of="$dev" bs=1M count=64 oflag=direct
	must sync
	before=$(blocks img.$t)
	must blkdiscard -o 0 -l 32M "$dev"
	must blkdiscard -z -o 32M -l 16M "$dev"
	cmp -n 50331648 "$dev" /dev/zero || fail "$t: discarded range does not read as zeros"
	cmp -n 1048576 -i 50331648 "$dev" /dev/zero >/dev/null 2>&1 && fail "$t: data after the range is gone"
	must ucow dev del "$id"
	id=""
	after=$(blocks img.$t)
	echo "$t: image blocks $before -> $after"
	if [ $t = cow ]; then
		[ "$after" -lt $((before - 32768)) ] || fail "cow: image did not shrink (blocks $before -> $after)"
		must ucow check img.cow
	fi
done
pass
