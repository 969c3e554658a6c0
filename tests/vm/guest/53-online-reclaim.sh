#!/bin/sh
# Online snapshot delete returns the space in the background: a snapshot that owns every
# chunk of a 64 MiB image (all of it rewritten after the snapshot) is deleted while the
# image is served; the server punches the freed chunks after resuming its queues, so the
# image file shrinks back to one copy of the data while it is still served, the device keeps
# its content, and offline `ucow check` finds no leak.
# vm-timeout: 300
. "$VM_LIB"
need_ucow

trap 'ucow dev del --all 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
kib() { du -k "$1" | cut -f1; }

must ucow create -q img.ucow 64M
dev=$(ucow dev add img.ucow) || fail "dev add failed"
id=${dev#/dev/ublkb}
must dd if=/dev/urandom of=a.bin bs=1M count=64 status=none
must dd if=/dev/urandom of=b.bin bs=1M count=64 status=none
must dd if=a.bin of="$dev" bs=1M oflag=direct status=none
must ucow snapshot -c s1 img.ucow
must dd if=b.bin of="$dev" bs=1M oflag=direct status=none
sync
both=$(kib img.ucow)
echo "with the snapshot: $both KiB"
[ "$both" -gt $((120 * 1024)) ] || fail "two copies should take > 120 MiB, not $both KiB"

must ucow snapshot -d s1 img.ucow
n=0
while [ "$(kib img.ucow)" -gt $((72 * 1024)) ]; do
	[ $n -ge 100 ] && fail "still $(kib img.ucow) KiB 10 s after the delete (was $both KiB)"
	sleep 0.1
	n=$((n + 1))
done
echo "after the online delete, still served: $(kib img.ucow) KiB (after ${n}00 ms)"
ucow dev stats "$id" | grep pauses
cmp "$dev" b.bin || fail "the device lost its data"
# reclaimed chunks are reused: a snapshot generation more does not grow the file
size0=$(stat -c %s img.ucow)
must ucow snapshot -c s2 img.ucow
must dd if=a.bin of="$dev" bs=1M oflag=direct status=none
must ucow snapshot -d s2 img.ucow
must ucow dev del "$id"
size1=$(stat -c %s img.ucow)
echo "file size: $size0 before the second generation, $size1 after"
[ "$size1" -le "$size0" ] || fail "the file grew from $size0 to $size1: freed chunks not reused"
[ "$(kib img.ucow)" -le $((72 * 1024)) ] || fail "offline: $(kib img.ucow) KiB"
must ucow check img.ucow
must ucow convert -O raw img.ucow now.raw
cmp now.raw a.bin || fail "the image does not hold the last data written"
pass
