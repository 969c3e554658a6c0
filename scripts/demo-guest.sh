#!/bin/sh
# The demo's steps; runs where a ublk driver is (the host, or the test bed's guest), in an
# empty folder, with ucow, fio, mkfs.ext4 on PATH.
set -e
step() { printf '\n### %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
mnt=$(pwd)/mnt
mkdir -p "$mnt"

step "What this kernel's ublk driver offers"
run ucow dev features

step "A 256 MiB golden base image with data, and a copy-on-write overlay on it"
run ucow create -f ucow base.ucow 256M
run ucow io -c 'write -P 0x42 0 1M' -c 'write -P 0x43 200M 1M' base.ucow
run ucow create -f ucow -b base.ucow -F ucow disk.ucow
run ucow info disk.ucow

step "Serve the overlay as a block device (2 queues)"
dev=$(ucow dev add -t cow -q 2 disk.ucow)
echo "$dev"
run ucow dev list
step "The device shows the base's data"
run ucow io -f raw -c 'read -P 0x42 0 1M' -c 'read -P 0x43 200M 1M' "$dev"

step "fio: 4 KiB random writes, queue depth 32, every block verified"
run fio --name=demo --filename="$dev" --direct=1 --ioengine=io_uring --rw=randwrite \
	--bs=4k --iodepth=32 --size=32M --offset=128M --verify=crc32c --do_verify=1 \
	--verify_fatal=1 --output-format=terse --terse-version=3 >fio.out
awk -F';' '{printf "fio: %s write IOPS, every block verified\n", $49}' fio.out

step "A file system on it, with a file"
run mkfs.ext4 -q -F "$dev"
run mount "$dev" "$mnt"
echo "version 1" > "$mnt/notes.txt"
run cat "$mnt/notes.txt"
run umount "$mnt"
run ucow dev del "$dev"

step "Take a snapshot, then change the file"
run ucow snapshot -c before-change disk.ucow
dev=$(ucow dev add -t cow disk.ucow)
run mount "$dev" "$mnt"
echo "version 2 (to be reverted)" > "$mnt/notes.txt"
run cat "$mnt/notes.txt"
run umount "$mnt"
run ucow dev del "$dev"
run ucow snapshot -l disk.ucow

step "Revert to the snapshot"
run ucow snapshot -a before-change disk.ucow
dev=$(ucow dev add -t cow disk.ucow)
run mount "$dev" "$mnt"
run cat "$mnt/notes.txt"
run umount "$mnt"
run e2fsck -fn "$dev"

step "Kill the server under load, recover it: nothing lost (fio verifies every block)"
run ucow dev del "$dev"
dev=$(ucow dev add -t cow --recoverable disk.ucow)
id=${dev#/dev/ublkb}
fio --name=load --filename="$dev" --direct=1 --ioengine=io_uring --rw=randwrite \
	--bsrange=4k-128k --iodepth=32 --size=48M --offset=150M --verify=crc32c \
	--do_verify=1 --verify_fatal=1 --output=fio2.out &
fpid=$!
sleep 3
pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' /run/ucow/dev$id.json)
run kill -9 "$pid"
sleep 1
run ucow dev recover "$id"
if wait $fpid; then echo "fio: every block verified across the crash"; else cat fio2.out; exit 1; fi
run ucow dev del "$dev"

step "The images: consistent, and the base untouched"
run ucow check disk.ucow
run ucow io -c 'read -P 0x42 0 1M' -c 'read -P 0 1M 1M' base.ucow
echo
echo "demo complete"
