#!/bin/sh
# `ucow snapshot -a` on a served image (issue 13, item 6): refused while the device is
# mounted (naming the mount point) or open (naming the process); applied once nobody holds
# it: the queues pause, the snapshot becomes the current state, the device's page cache is
# dropped, so a buffered read through the device right after sees the snapshot's data (not
# what the kernel cached before). ext4 made after the snapshot is gone, the files of the
# snapshot are back; the device never went away. A snapshot of another size is refused
# online.
# vm-timeout: 400
. "$VM_LIB"
need_ucow

mnt=$VM_TMP/mnt
trap 'kill $holder 2>/dev/null; umount "$mnt" 2>/dev/null; ucow dev del --all --force 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
holder=
mkdir -p "$mnt"
must ucow create -q disk.ucow 128M
dev=$(ucow dev add disk.ucow) || fail "dev add failed"
id=${dev#/dev/ublkb}

# A: a file system with files; snapshot s1 (online, unmounted)
must mkfs.ext4 -q "$dev"
must mount "$dev" "$mnt"
for i in 1 2; do
	must dd if=/dev/urandom of="$mnt/f$i" bs=1M count=$((i * 2)) status=none
done
(cd "$mnt" && sha256sum f1 f2) >sums.txt
must umount "$mnt"
must ucow snapshot -c s1 disk.ucow

# B: the file system changed after the snapshot
must mount "$dev" "$mnt"
must dd if=/dev/urandom of="$mnt/f3" bs=1M count=1 status=none
must dd if=/dev/zero of="$mnt/f1" bs=4k count=8 conv=notrunc status=none
sync

# mounted: refused, naming the mount point; nothing changed
out=$(ucow snapshot -a s1 disk.ucow 2>&1) && fail "apply on a mounted device succeeded"
echo "mounted: '$out'"
[ "$out" = "ucow: disk.ucow: $dev is mounted on $mnt; snapshot -a needs a device nobody holds" ] ||
	fail "apply while mounted: '$out'"
[ -e "$mnt/f3" ] || fail "f3 vanished after a refused apply"
must umount "$mnt"

# open by a process: refused, naming it
sleep 300 <"$dev" &
holder=$!
sleep 0.2
out=$(ucow snapshot -a s1 disk.ucow 2>&1) && fail "apply on an open device succeeded"
echo "open: '$out'"
[ "$out" = "ucow: disk.ucow: $dev is open by sleep (pid $holder); snapshot -a needs a device nobody holds" ] ||
	fail "apply while open: '$out'"
kill $holder
wait $holder 2>/dev/null
holder=

# a buffered read fills the page cache with B's blocks; then the apply
dd if="$dev" of=before.bin bs=1M count=8 status=none || fail "buffered read failed"
must ucow snapshot -a s1 disk.ucow
# buffered again: must be A (s1), not the cached B
dd if="$dev" of=after.bin bs=1M count=8 status=none || fail "buffered read after apply failed"
cmp -s before.bin after.bin && fail "the device still shows the cached data of before the apply"
[ -e "$dev" ] || fail "the device went away"
ucow dev stats "$id" | tee stats.txt | grep pauses
grep -q "^pauses: .*apply 1" stats.txt || fail "dev stats shows no apply pause: $(grep pauses stats.txt)"
must mount "$dev" "$mnt"
(cd "$mnt" && sha256sum -c "$VM_TMP/sums.txt") || fail "f1, f2 differ from the snapshot"
[ ! -e "$mnt/f3" ] || fail "f3 (written after the snapshot) exists after the apply"
must umount "$mnt"
e2fsck -fn "$dev" || fail "e2fsck -fn found problems after the online apply"

# unknown snapshot: the server's message, one line
out=$(ucow snapshot -a nope disk.ucow 2>&1) && fail "apply of an unknown snapshot succeeded"
[ "$out" = "ucow: disk.ucow: no snapshot 'nope'" ] || fail "unknown snapshot: '$out'"

must ucow dev del "$id"
must ucow check disk.ucow
ucow snapshot -l disk.ucow | grep -q ' s1 .* \*$' || fail "s1 is not the current parent offline"

# a served device keeps its size: a snapshot of another size is refused online (a resize
# of a served image: 63-online-resize)
must ucow resize disk.ucow +64M
dev=$(ucow dev add disk.ucow) || fail "dev add after the resize failed"
id=${dev#/dev/ublkb}
out=$(ucow snapshot -a s1 disk.ucow 2>&1) && fail "apply of a smaller snapshot succeeded online"
[ "$out" = "ucow: disk.ucow: snapshot 's1' is 134217728 bytes, the device 201326592 (ucow dev del $id, then apply it offline)" ] ||
	fail "apply of another size: '$out'"
[ "$(blockdev --getsize64 "$dev")" = 201326592 ] || fail "the device's size changed"
must ucow dev del "$id"
pass
