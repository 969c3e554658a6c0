#!/bin/sh
# ext4 on a kernel loop device: mkfs.ext4, mount, write files, umount, e2fsck -fn is clean,
# and after a second mount every file reads back with the same checksum.
. "$VM_LIB"

dev=""
cleanup() {
	umount mnt 2>/dev/null
	[ -n "$dev" ] && losetup -d "$dev"
}
trap cleanup EXIT
must truncate -s 256M backing.img
dev=$(losetup -f --show backing.img) || fail "losetup failed"
echo "loop device $dev"
must mkfs.ext4 -q "$dev"
mkdir mnt
must mount -t ext4 "$dev" mnt
must mkdir -p mnt/a/b
i=0
while [ $i -lt 8 ]; do
	must dd if=/dev/urandom of=mnt/a/b/f$i bs=64k count=$((i * 16 + 1)) status=none
	i=$((i + 1))
done
must cp /usr/bin/fio mnt/fio
(cd mnt && find . -type f | sort | xargs sha256sum) >sums
cat sums
must umount mnt
e2fsck -fn "$dev" >fsck.out 2>&1
rc=$?
cat fsck.out
[ $rc -eq 0 ] || fail "e2fsck -fn found problems (exit $rc)"
must mount -t ext4 -o ro "$dev" mnt
(cd mnt && sha256sum -c ../sums) >/dev/null 2>&1 || fail "files changed after umount and mount"
must umount mnt
pass
