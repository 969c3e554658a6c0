#!/bin/sh
# Options: --read-only (writes refused, reads work, the image stays untouched and a second
# read-only device may share it), --block-size 4096 (logical block size), `del --all`.
# vm-timeout: 300
. "$VM_LIB"
need_ucow

trap 'ucow dev del --all 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
must ucow create -q disk.ucow 64M
dev=$(ucow dev add disk.ucow) || fail "dev add failed"
must qemu-io -f raw -c "write -P 0x5a 0 8M" "$dev"
must ucow dev del "$dev"
sum=$(sha256sum <disk.ucow)

# read-only, twice at once
d1=$(ucow dev add --read-only disk.ucow) || fail "read-only add failed"
d2=$(ucow dev add --read-only disk.ucow) || fail "second read-only add of the same image failed"
[ "$(blockdev --getro "$d1")" = 1 ] || fail "$d1 is not read-only"
dd if=/dev/zero of="$d1" bs=4k count=1 oflag=direct 2>/dev/null && fail "a write to $d1 succeeded"
qemu-io -f raw -r -c "read -P 0x5a 0 8M" "$d2" | grep -q "read 8388608/8388608" || fail "read through $d2 failed"
[ ! -e /sys/block/${d1#/dev/}/queue/discard_granularity ] ||
	[ "$(cat /sys/block/${d1#/dev/}/queue/discard_max_bytes)" = 0 ] || fail "read-only device offers discard"
must ucow dev del --all
[ ! -e "$d1" ] && [ ! -e "$d2" ] || fail "del --all left a device"
[ "$(sha256sum <disk.ucow)" = "$sum" ] || fail "the image changed under read-only devices"

# --block-size 4096
must ucow create -q d4k.ucow 96M
dev=$(ucow dev add --block-size 4096 d4k.ucow) || fail "--block-size 4096 add failed"
[ "$(blockdev --getss "$dev")" = 4096 ] || fail "logical block size $(blockdev --getss "$dev")"
dd if=/dev/zero of="$dev" bs=512 count=1 oflag=direct 2>/dev/null && fail "a 512-byte direct write passed on a 4K device"
must qemu-io -f raw -c "write -P 0x3c 4k 64k" -c "read -P 0x3c 4k 64k" "$dev"
must ucow dev del "$dev"
must ucow check d4k.ucow
pass
