#!/bin/bash
# Injected faults under the file system that holds the image.
# 1. dm-flakey: the host ext4 sits on dm-flakey; the image is filled and flushed, then the
#    disk fails every I/O for a while (table switched to up 0 / down 3600): the guest's
#    writes and flushes get errors; the disk comes back (up 3600 / down 0): everything
#    flushed before reads back intact, the device serves writes again, and after del the
#    image checks clean (the host ext4 too).
# 2. A full file system: a 64 MiB image on a 24 MiB loop-mounted ext4. Writing the device
#    fails once the file system is full (the engine reports a short write as EIO; ENOSPC is
#    accepted too, for when it passes ENOSPC through); after a filler file is removed,
#    writing resumes; what was written before reads back; the image checks clean.
# vm-timeout: 300
. "$VM_LIB"
need_ucow
load_module dm-mod
load_module dm-flakey

DM="dmsetup --noudevsync"
T=$VM_TMP
dev="" fl=0 lp="" lp2=""
cleanup() {
	[ -n "$dev" ] && ucow dev del "${dev#/dev/ublkb}"
	grep -q " $T/h " /proc/mounts && umount $T/h
	grep -q " $T/s " /proc/mounts && umount $T/s
	[ $fl = 1 ] && $DM remove fl
	[ -n "$lp" ] && losetup -d "$lp"
	[ -n "$lp2" ] && losetup -d "$lp2"
	cd /
	rm -rf "$T"
}
trap cleanup EXIT
mkdir -p $T/h $T/s
SECT=$((64 * 2048))
table() { echo "0 $SECT flakey $lp 0 $1 $2"; }	# table UP DOWN (seconds)
switch() {	# switch UP DOWN: load a new flakey table
	must $DM suspend --nolockfs fl
	must $DM reload fl --table "$(table "$1" "$2")"
	must $DM resume fl
}

# --- 1. dm-flakey ---------------------------------------------------------------------
must truncate -s 64M $T/back.img
lp=$(losetup --show -f $T/back.img) || fail "losetup"
must $DM --verifyudev create fl --table "$(table 3600 0)"
fl=1
[ -b /dev/mapper/fl ] || fail "/dev/mapper/fl is not a block device"
must mkfs.ext4 -q -b 4096 -E nodiscard /dev/mapper/fl
# lazytime: overwrites do not dirty the inode, so that no journal commit of the host
# file system falls in the bad period (a failed commit would abort its journal for good)
must mount -o lazytime /dev/mapper/fl $T/h
must ucow create -q $T/h/d.ucow 16M
dev=$(ucow dev add --direct $T/h/d.ucow) || fail "dev add exited with status $?"
must dd if=/dev/urandom of=$T/a.bin bs=1M count=16 status=none
must dd if=$T/a.bin of="$dev" bs=1M oflag=direct conv=fsync status=none
must sync
switch 0 3600
echo "disk failing"
errs=0
dd if=/dev/urandom of="$dev" bs=64k count=16 seek=64 oflag=direct conv=fsync status=none 2>err1 ||
	errs=$((errs + 1))
cat err1
dd if=/dev/urandom of="$dev" bs=4k count=1 seek=1100 conv=fsync status=none 2>err2 || errs=$((errs + 1))
cat err2
sleep 2
switch 3600 0
echo "disk back; $errs of 2 writes failed while it was failing"
[ $errs = 2 ] || fail "writes succeeded while the disk under the image failed every I/O"
grep -qE "Input/output error|No space" err1 err2 || fail "the errors were not I/O errors"
# everything outside MiB 4 (written during the bad period) is as flushed before
# (files, not <(...): the guest has no /dev/fd)
must dd if="$dev" of=$T/after.bin bs=1M iflag=direct status=none
cmp -n 4194304 $T/after.bin $T/a.bin || fail "data flushed before the failure differs afterwards (MiB 0-3)"
cmp -i 5242880:5242880 $T/after.bin $T/a.bin ||
	fail "data flushed before the failure differs afterwards (MiB 5-15)"
# the device serves again
must dd if=/dev/urandom of=$T/b.bin bs=64k count=16 status=none
must dd if=$T/b.bin of="$dev" bs=64k seek=64 oflag=direct conv=fsync status=none
must dd if="$dev" of=$T/after.bin bs=64k skip=64 count=16 iflag=direct status=none
cmp $T/after.bin $T/b.bin ||
	fail "a write after the disk came back does not read back"
must ucow dev del "${dev#/dev/ublkb}"
dev=""
must ucow check $T/h/d.ucow
must umount $T/h
must e2fsck -fn /dev/mapper/fl
must $DM remove fl
fl=0
losetup -d "$lp" && lp=""
echo "flakey part: ok"

# --- 2. a full file system --------------------------------------------------------------
must truncate -s 24M $T/small.img
lp2=$(losetup --show -f $T/small.img) || fail "losetup"
must mkfs.ext4 -q -b 4096 -m 0 "$lp2"
must mount "$lp2" $T/s
must fallocate -l 6M $T/s/filler
must ucow create -q $T/s/d.ucow 64M
dev=$(ucow dev add $T/s/d.ucow) || fail "dev add exited with status $?"
must dd if=/dev/urandom of=$T/c.bin bs=1M count=64 status=none
dd if=$T/c.bin of="$dev" bs=1M oflag=direct status=none 2>err3 && fail "64 MiB fitted in a 24 MiB file system"
cat err3
grep -qE "Input/output error|No space left on device" err3 || fail "the full file system gave another error"
grep -q "No space left on device" err3 && echo "ENOSPC reached the writer" || echo "EIO reached the writer"
ucow dev stats "${dev#/dev/ublkb}"
df -k $T/s
# the first MiB written before the failure reads back
must dd if="$dev" of=$T/after.bin bs=1M count=1 iflag=direct status=none
cmp -n 1048576 $T/after.bin $T/c.bin ||
	fail "data written before the file system filled up differs"
must rm $T/s/filler
must dd if=$T/c.bin of="$dev" bs=1M count=4 skip=40 seek=40 oflag=direct conv=fsync status=none
must dd if="$dev" of=$T/after.bin bs=1M skip=40 count=4 iflag=direct status=none
cmp -i 0:41943040 -n 4194304 $T/after.bin $T/c.bin ||
	fail "a write after space was freed does not read back"
must ucow dev del "${dev#/dev/ublkb}"
dev=""
must ucow check $T/s/d.ucow
pass
