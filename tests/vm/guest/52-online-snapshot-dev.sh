#!/bin/sh
# `ucow dev add --snapshot NAME --read-only FILE` serves a snapshot as a read-only device
# while the current state stays as it is: its bytes equal `convert -l NAME`, writes are
# refused, the image file is untouched. Conflicts are refused with one line naming the
# device: a snapshot device while the image is served read-write, a read-write add while a
# snapshot device serves it. Two snapshot devices of one image may run together; a served
# read-only image still lists its snapshots (offline, shared lock).
# vm-timeout: 300
. "$VM_LIB"
need_ucow

trap 'ucow dev del --all 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
must ucow create -q disk.ucow 64M
must ucow io -c "write -P 0x11 0 8M" disk.ucow
must ucow snapshot -c s1 disk.ucow
must ucow io -c "write -P 0x22 0 4M" disk.ucow
must ucow snapshot -c s2 disk.ucow
must ucow io -c "write -P 0x33 2M 4M" disk.ucow
must ucow convert -l s1 -O raw disk.ucow s1.raw
must ucow convert -l s2 -O raw disk.ucow s2.raw
must ucow convert -O raw disk.ucow now.raw

# the image served read-write: a snapshot device is refused, naming the device
rw=$(ucow dev add disk.ucow) || fail "dev add failed"
rwid=${rw#/dev/ublkb}
out=$(ucow dev add --snapshot s1 --read-only disk.ucow 2>&1); rc=$?
echo "snapshot device while served rw: rc=$rc '$out'"
[ $rc = 1 ] || fail "a snapshot device was added while the image is served read-write"
echo "$out" | grep -q "^ucow: disk.ucow: in use by $rw" || fail "message: $out"
[ "$(echo "$out" | wc -l)" = 1 ] || fail "more than one line"
must ucow dev del "$rwid"
sum=$(sha256sum <disk.ucow)

d1=$(ucow dev add --snapshot s1 --read-only disk.ucow) || fail "snapshot device s1 failed"
d2=$(ucow dev add --snapshot s2 disk.ucow) || fail "snapshot device s2 (read-only implied) failed"
echo "devices: $d1 (s1) $d2 (s2)"
[ "$(blockdev --getro "$d1")" = 1 ] || fail "$d1 is not read-only"
[ "$(blockdev --getsize64 "$d1")" = 67108864 ] || fail "$d1 has the wrong size"
cmp "$d1" s1.raw || fail "$d1 differs from convert -l s1"
cmp "$d2" s2.raw || fail "$d2 differs from convert -l s2"
cmp -s "$d1" now.raw && fail "$d1 shows the current state"
dd if=/dev/zero of="$d1" bs=4k count=1 oflag=direct 2>/dev/null && fail "a write to $d1 succeeded"
ucow dev list | tee list.txt
grep -q "disk.ucow @s1" list.txt || fail "dev list does not show the snapshot served"
ucow snapshot -l disk.ucow | grep -q " s2 " || fail "snapshot -l of an image served read-only failed"
out=$(ucow snapshot -c s3 disk.ucow 2>&1) && fail "snapshot -c on an image served read-only passed"
echo "create while served read-only: '$out'"
echo "$out" | grep -q "in use by /dev/ublkb" || fail "message: $out"
out=$(ucow dev add disk.ucow 2>&1) && fail "a read-write add passed while a snapshot device serves the image"
echo "read-write add while a snapshot device runs: '$out'"
echo "$out" | grep -q "in use by /dev/ublkb" || fail "message: $out"
out=$(ucow dev add --snapshot nosuch disk.ucow 2>&1) && fail "an unknown snapshot was served"
echo "unknown snapshot: '$out'"
must ucow dev del --all
[ "$(sha256sum <disk.ucow)" = "$sum" ] || fail "the image changed under snapshot devices"
must ucow check disk.ucow
must ucow convert -O raw disk.ucow now2.raw
cmp now.raw now2.raw || fail "the current state changed"
pass
