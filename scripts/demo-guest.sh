#!/bin/sh
# The demo's steps; runs where a ublk driver is (the host, or the test bed's guest), in an
# empty folder, with ucow, fio and mkfs.ext4 on PATH.
set -e
step() { printf '\n### %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "a 256 MiB golden base image, with some data in it"
run ucow create -f ucow base.img 256M
run ucow io -c 'write -P 0x42 0 1M' -c 'write -P 0x43 100M 1M' base.img
step "an overlay on it: copy-on-write, the base stays untouched"
run ucow create -f ucow -b base.img -F ucow disk.img
run ucow info disk.img
step "serve the overlay as a block device"
dev=$(ucow dev add -t cow -q 2 disk.img)
echo "$dev"
run ucow dev list
step "the device shows the base's data"
run ucow io -f raw -c 'read -P 0x42 0 1M' -c 'read -P 0x43 100M 1M' "$dev"
step "fio: 4 KiB random writes with verification, queue depth 32"
run fio --name=demo --filename="$dev" --direct=1 --ioengine=io_uring --rw=randwrite \
	--bs=4k --iodepth=32 --size=32M --offset=128M --verify=crc32c --do_verify=1 \
	--verify_fatal=1 --group_reporting --output-format=terse --terse-version=3 |
	awk -F';' '{printf "fio: write %s IOPS, verify passed\n", $49}'
step "a file system on it"
run mkfs.ext4 -q -F "$dev"
mkdir -p mnt
run mount "$dev" mnt
echo "hello from ucow" > mnt/hello.txt
run cat mnt/hello.txt
run umount mnt
run e2fsck -fn "$dev"
step "stop the device; the image closes clean"
run ucow dev del "$dev"
run ucow check disk.img
run ucow info disk.img
step "the base image is unchanged"
run ucow io -c 'read -P 0x42 0 1M' -c 'read -P 0 1M 1M' base.img
echo
echo "demo complete"
