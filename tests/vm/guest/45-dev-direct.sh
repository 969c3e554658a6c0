#!/bin/sh
# --direct: image files opened with O_DIRECT (on ext4: tmpfs has no direct I/O before
# 6.6). fio verifies random writes from 4 KiB to 256 KiB on raw and on cow.
# vm-timeout: 300
. "$VM_LIB"
need_ucow

trap 'ucow dev del --all 2>/dev/null; umount mnt 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
must truncate -s 300M fs.img
must mkfs.ext4 -q -F fs.img
mkdir -p mnt && must mount -o loop fs.img mnt
must truncate -s 96M mnt/d.raw
must ucow create -q mnt/d.cow 96M
for t in raw cow; do
	dev=$(ucow dev add -t $t --direct mnt/d.$t) || fail "$t: --direct add failed"
	ucow dev list --output=json | grep -q '"direct": true' || fail "$t: list does not show direct"
	fio --filename="$dev" --direct=1 --ioengine=io_uring --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --bsrange=4k-256k --iodepth=16 --size=32M --rw=randwrite \
		--name=direct >fio.out 2>&1 || { head -n 5 fio.out; fail "$t: fio on a --direct device failed"; }
	grep -E "IOPS|err=" fio.out
	must ucow dev del "$dev"
done
must ucow check mnt/d.cow
must umount mnt
pass
