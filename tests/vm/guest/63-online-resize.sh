#!/bin/sh
# `ucow resize` of a served image (issue 13, item 6). Where the driver can change a disk's
# size (UBLK_F_UPDATE_SIZE, Linux 6.16+: run.sh --kernel new), the image grows with the
# queues paused and then /dev/ublkbN (UBLK_CMD_UPDATE_SIZE), under a mounted ext4 with fio
# writing and verifying on it: the kernel sees the new size, the grown area reads as zeros
# through the device although the backing file has data there, resize2fs grows the mounted
# file system into it and a file larger than the old disk's free space lands there; fio
# verifies clean; a shrink is refused; the size survives a kill -9 and `ucow dev recover`;
# e2fsck and ucow check are clean. An image with a snapshot and unfolded first writes after
# it grows too (the server folds them before its pause), and a raw target. On an older
# kernel (6.12) the resize is refused, naming the kernel, and nothing changes.
# vm-timeout: 400
. "$VM_LIB"
need_ucow

mnt=$VM_TMP/mnt
trap 'kill $fio_pid 2>/dev/null; umount "$mnt" 2>/dev/null; ucow dev del --all --force 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
fio_pid=
mkdir -p "$mnt"
M=1048576

# a backing file with data everywhere (0xab): the grown area must still read as zeros
must sh -c "head -c $((128 * M)) /dev/zero | tr '\\000' '\\253' >base.raw"
must ucow create -q -b base.raw -F raw disk.ucow 64M

if ! ucow dev features 2>/dev/null | grep -qw update_size; then
	# an older kernel: refused, naming it; the device keeps its size, the image too
	dev=$(ucow dev add disk.ucow) || fail "dev add failed"
	id=${dev#/dev/ublkb}
	out=$(ucow resize disk.ucow +64M 2>&1) && fail "resize of a served image succeeded on $(uname -r)"
	echo "resize online: '$out'"
	[ "$out" = "ucow: disk.ucow: in use by $dev, whose size cannot change while served: that needs Linux 6.16 or later (UBLK_F_UPDATE_SIZE), this kernel is $(uname -r) (ucow dev del $id, resize, dev add)" ] ||
		fail "resize online: '$out'"
	[ "$(blockdev --getsize64 "$dev")" = $((64 * M)) ] || fail "the device's size changed"
	must ucow dev del "$id"
	ucow info disk.ucow | grep -q '^virtual size: 64 MiB' || { ucow info disk.ucow; fail "the image's size changed"; }
	pass
fi

dev=$(ucow dev add --recoverable disk.ucow) || fail "dev add failed"
id=${dev#/dev/ublkb}
ucow dev list --output=json | grep -q update_size ||
	{ ucow dev list --output=json; fail "update_size not negotiated by /dev/ublkb$id"; }
must mkfs.ext4 -q "$dev"
must mount "$dev" "$mnt"
must dd if=/dev/urandom of="$mnt/before" bs=1M count=8 status=none
(cd "$mnt" && sha256sum before) >sums.txt

# fio writes and verifies a file on the mounted file system across the resize
fio --name=w --filename="$mnt/fio.dat" --size=16M --rw=randwrite --bs=4k --iodepth=8 \
	--ioengine=io_uring --direct=1 --verify=crc32c --verify_fatal=1 --loops=3 \
	--output=fio.out &
fio_pid=$!
sleep 1

out=$(ucow resize disk.ucow +64M 2>&1) || fail "resize online: '$out'"
echo "resize online: '$out'"
[ "$out" = "Image resized." ] || fail "resize printed '$out'"
[ "$(blockdev --getsize64 "$dev")" = $((128 * M)) ] ||
	fail "the device is $(blockdev --getsize64 "$dev") bytes after the resize"
[ "$(cat /sys/block/ublkb$id/size)" = 262144 ] || fail "sysfs size $(cat /sys/block/ublkb$id/size)"
ucow info disk.ucow | grep -q '^virtual size: 128 MiB' || { ucow info disk.ucow; fail "info after the resize"; }
ucow dev stats "$id" | grep -q 'resize 1' || { ucow dev stats "$id"; fail "no resize pause counted"; }

# the grown area reads zeros through the device (the backing file's 0xab is not shown)
must dd if="$dev" of=tail.bin bs=1M skip=64 count=64 iflag=direct status=none
cmp -n $((64 * M)) tail.bin /dev/zero || fail "the grown area does not read as zeros"
rm -f tail.bin

# the mounted file system grows into it; a file that did not fit before fits now
must resize2fs "$dev"
must dd if=/dev/urandom of="$mnt/after" bs=1M count=60 status=none
(cd "$mnt" && sha256sum after) >>sums.txt
sync
wait $fio_pid
rc=$?
fio_pid=
[ $rc = 0 ] || { cat fio.out; fail "fio verify failed across the resize (status $rc)"; }

# a shrink is refused, naming the size; nothing changes
out=$(ucow resize disk.ucow -32M 2>&1) && fail "a shrink of a served image succeeded"
[ "$out" = "ucow: disk.ucow: $dev is 134217728 bytes and a served device can only grow (ucow dev del $id, resize --shrink, dev add)" ] ||
	fail "shrink online: '$out'"
[ "$(blockdev --getsize64 "$dev")" = $((128 * M)) ] || fail "the refused shrink changed the size"

# a dead server is recovered with the grown size
must umount "$mnt"
pid=$(ucow dev list --output=json | tr ',' '\n' | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' | head -n 1)
[ -n "$pid" ] || fail "no server pid in dev list"
must kill -9 "$pid"
sleep 1
new=$(ucow dev recover "$id") || fail "recover exited with status $?"
[ "$new" = "$dev" ] || fail "recover printed '$new'"
[ "$(blockdev --getsize64 "$dev")" = $((128 * M)) ] || fail "size after the recovery"
ucow dev list --output=json | grep -q '"size": *134217728' ||
	{ ucow dev list --output=json; fail "dev list does not show the new size"; }
must e2fsck -fn "$dev"
must mount "$dev" "$mnt"
(cd "$mnt" && sha256sum -c ../sums.txt) || fail "files differ after the resize and recovery"
must umount "$mnt"
must ucow dev del "$id"
must ucow check disk.ucow

# a grow with underlays (first writes after an online snapshot, not yet folded): the
# server folds them before the resize's pause (a pass; or the idle device did first); the
# device, the snapshot and ucow check agree with the model after it
must ucow create -q snap.ucow 32M
must ucow io -c "write -P 0x5a 0 32M" snap.ucow
dev=$(ucow dev add snap.ucow) || fail "dev add snap.ucow failed"
id=${dev#/dev/ublkb}
must ucow snapshot -c s1 snap.ucow
must dd if="$dev" of=want.raw bs=1M iflag=direct status=none
cp want.raw s1.raw
for i in $(seq 0 11); do	# 4 KiB into each of 12 chunks: 12 underlays
	dd if=/dev/urandom of=blk bs=4k count=1 status=none
	must dd if=blk of="$dev" bs=4k seek=$((i * 256 + 3)) oflag=direct conv=notrunc status=none
	must dd if=blk of=want.raw bs=4k seek=$((i * 256 + 3)) conv=notrunc status=none
done
must ucow resize -q snap.ucow 48M
[ "$(blockdev --getsize64 "$dev")" = $((48 * M)) ] || fail "snap.ucow: the device did not grow"
must truncate -s 48M want.raw
cmp "$dev" want.raw || fail "snap.ucow: the device differs from the model after the grow"
ucow dev stats --output=json "$id" | tr -d ' \n' >flat.json
grep -o '"fold":{[^}]*}' flat.json
grep -q '"fold":{"chunks":12,"steps":[0-9]*,"passes":[1-9][0-9]*,"failed":false}' flat.json ||
	fail "dev stats does not count 12 chunks folded before the grow: $(cat flat.json)"
must ucow dev del "$id"
must ucow check snap.ucow
must ucow convert -O raw snap.ucow now.raw
cmp now.raw want.raw || fail "snap.ucow: the image differs from the model"
must ucow convert -l s1 -O raw snap.ucow got1.raw
truncate -s 32M got1.raw
cmp got1.raw s1.raw || fail "snap.ucow: snapshot s1 changed"

# the raw target grows its file and its disk
must truncate -s 32M plain.raw
dev=$(ucow dev add -t raw plain.raw) || fail "dev add -t raw failed"
id=${dev#/dev/ublkb}
must ucow resize -q plain.raw 48M
[ "$(blockdev --getsize64 "$dev")" = $((48 * M)) ] || fail "raw: the device did not grow"
[ "$(stat -c %s plain.raw)" = $((48 * M)) ] || fail "raw: the file is $(stat -c %s plain.raw) bytes"
must dd if=/dev/urandom of="$dev" bs=1M seek=40 count=8 oflag=direct status=none
must ucow dev del "$id"
pass
