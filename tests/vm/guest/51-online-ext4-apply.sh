#!/bin/sh
# The end to end: ext4 on a served image; files f1..f3 written and synced; a
# snapshot taken online (the file system stays mounted); f4 written, f1 changed; del;
# the snapshot applied offline; add again: f1..f3 are as they were at the snapshot (sha256),
# no f4, e2fsck -fn clean.
# vm-timeout: 400
. "$VM_LIB"
need_ucow

mnt=$VM_TMP/mnt
trap 'umount "$mnt" 2>/dev/null; ucow dev del --all --force 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
mkdir -p "$mnt"
must ucow create -q disk.ucow 256M
dev=$(ucow dev add disk.ucow) || fail "dev add failed"
id=${dev#/dev/ublkb}
must mkfs.ext4 -q "$dev"
must mount "$dev" "$mnt"
for i in 1 2 3; do
	must dd if=/dev/urandom of="$mnt/f$i" bs=1M count=$((i * 3)) status=none
done
sync
(cd "$mnt" && sha256sum f1 f2 f3) >sums.txt
cat sums.txt

# the file system stays mounted and busy: a writer runs while the snapshot is taken
dd if=/dev/urandom of="$mnt/busy" bs=64k count=400 oflag=direct status=none &
ddpid=$!
must ucow snapshot -c before-f4 disk.ucow
wait $ddpid || fail "the writer during the snapshot failed"
ucow dev stats "$id" | grep pauses

must dd if=/dev/urandom of="$mnt/f4" bs=1M count=2 status=none
must dd if=/dev/zero of="$mnt/f1" bs=4k count=10 conv=notrunc status=none
sync
must umount "$mnt"
must ucow dev del "$id"
must ucow check disk.ucow

must ucow snapshot -a before-f4 disk.ucow
must ucow check disk.ucow
dev=$(ucow dev add disk.ucow) || fail "dev add after apply failed"
id=${dev#/dev/ublkb}
# the snapshot was taken with the file system mounted: its journal may need a replay,
# which a read-only check cannot do; mount (replays), umount, then the full check
must mount "$dev" "$mnt"
(cd "$mnt" && sha256sum -c "$VM_TMP/sums.txt") || fail "f1..f3 differ from the snapshot"
[ ! -e "$mnt/f4" ] || fail "f4 exists after the apply"
must umount "$mnt"
e2fsck -fn "$dev" || fail "e2fsck -fn found problems"
must ucow dev del "$id"
must ucow check disk.ucow
pass
