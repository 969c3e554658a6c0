#!/bin/sh
# A file system on the device: mkfs.ext4, mount, write files, umount, e2fsck -fn clean,
# mount again and the files read back with the same checksums -- for raw, cow, and a cow
# device with a 4096-byte logical block size.
# vm-timeout: 400
. "$VM_LIB"
need_ucow

mkdir -p mnt
id=""
trap 'umount mnt 2>/dev/null; [ -n "$id" ] && ucow dev del $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
one() {	# one NAME ADD-ARGS...
	_n=$1
	shift
	dev=$(ucow dev add "$@") || fail "$_n: dev add exited with status $?"
	id=${dev#/dev/ublkb}
	echo "$_n: $dev"
	must mkfs.ext4 -q -F "$dev"
	must mount "$dev" mnt
	for i in 1 2 3 4; do
		dd if=/dev/urandom of=mnt/f$i bs=1M count=$((i * 3)) 2>/dev/null || fail "$_n: write f$i"
	done
	mkdir -p mnt/d && cp -a /usr/bin/fio mnt/d/ || fail "$_n: cp"
	(cd mnt && sha256sum f1 f2 f3 f4 d/fio) >sums
	must umount mnt
	e2fsck -fn "$dev" >fsck.out 2>&1 || { cat fsck.out; fail "$_n: e2fsck found problems"; }
	must mount "$dev" mnt
	(cd mnt && sha256sum -c ../sums) || fail "$_n: files changed after remount"
	must umount mnt
	must ucow dev del "$id"
	id=""
}
must truncate -s 256M disk.raw
one raw -t raw disk.raw
must ucow create -q disk.ucow 256M
one cow disk.ucow
must ucow check disk.ucow
must ucow create -q disk4k.ucow 256M
one cow-4k --block-size 4096 disk4k.ucow
must ucow check disk4k.ucow
pass
