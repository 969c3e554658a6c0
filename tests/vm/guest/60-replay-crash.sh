#!/bin/bash
# Whole-stack crash replay (the method of xfstests generic/455): the file system holding a
# ucow image sits on dm-log-writes, which records every write, FLUSH and FUA that reaches
# the disk, in completion order. A cow device on that image carries an ext4 in which files
# of known content are written and fsynced one by one, with a log mark after each fsync
# returned. Then tests/vm/replay-log.c replays the log onto a zeroed file, as a disk whose
# volatile cache loses every write not flushed, and at every FLUSH or FUA entry and every
# mark after the guest file system was made (each moment the disk could have lost power),
# checks the whole stack as it would be after that crash: the host ext4 (journal
# replayed) fscks clean (every third point), the image in it passes `ucow check`
# (a dirty image is fine: open replays its journal), its content (convert -O raw) is an
# ext4 that fscks clean once its own journal is replayed, and every file whose fsync
# returned before the last mark reads back exactly.
# vm-timeout: 600
. "$VM_LIB"
need_ucow
command -v replay-log >/dev/null || fail "replay-log not in the guest (make builds build/vm-bin/replay-log)"
load_module dm-mod
load_module dm-log-writes

FILES=${FILES:-10}	# files written and fsynced, one log mark each (about 10 replay points each; 22 and
			# 200 points cost 300-450 s of the 30-minute make check)
DM="dmsetup --noudevsync"
T=$VM_TMP
dev="" lw=0 ldata="" llog=""
cleanup() {
	grep -q " $T/g " /proc/mounts && umount $T/g
	[ -n "$dev" ] && ucow dev del "${dev#/dev/ublkb}"
	grep -q " $T/h " /proc/mounts && umount $T/h
	[ $lw = 1 ] && $DM remove lw
	[ -n "$ldata" ] && losetup -d "$ldata"
	[ -n "$llog" ] && losetup -d "$llog"
	cd /
	rm -rf "$T"
}
trap cleanup EXIT
mkdir -p $T/h $T/g $T/exp $T/chk

# --- record: host ext4 on log-writes, a cow image in it, a guest ext4 on the device -----
must truncate -s 24M $T/data.img
must truncate -s 512M $T/log.img
ldata=$(losetup --show -f $T/data.img) || fail "losetup data"
llog=$(losetup --show -f $T/log.img) || fail "losetup log"
must $DM --verifyudev create lw --table "0 $((24 * 2048)) log-writes $ldata $llog"
lw=1
[ -b /dev/mapper/lw ] || fail "/dev/mapper/lw is not a block device"
must mkfs.ext4 -q -b 4096 -E nodiscard /dev/mapper/lw
must mount /dev/mapper/lw $T/h
must ucow create -q $T/h/disk.ucow 16M
dev=$(ucow dev add $T/h/disk.ucow) || fail "dev add exited with status $?"
# Two paths of the engine: first every block of the guest disk is written once (inode
# tables, journal, then a file filling the free space, removed), so that the first half of
# the files land on blocks the image holds already: a flush has no new mapping to commit,
# only data to sync. Then fstrim discards the free space, and the second half land on new
# blocks: a flush commits their mappings.
must mkfs.ext4 -q -b 4096 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$dev"
must mount "$dev" $T/g
dd if=/dev/urandom of=$T/g/fill bs=64k oflag=direct status=none 2>/dev/null	# until ENOSPC
must rm $T/g/fill
must sync
must $DM message lw 0 mark ready
t0=$SECONDS
# exp/want.N: the sums of f1..fN; exp/dump.N: the debugfs commands that read them back
sums="" cmds="jr"$'\n'
for i in $(seq 1 $FILES); do
	[ $i = $((FILES / 2 + 1)) ] && { fstrim -v $T/g || fail "fstrim"; }
	# 1 to 64 KiB, not always whole blocks
	head -c $(((i * 7919) % 65536 + 1)) /dev/urandom >$T/exp/f$i
	dd if=$T/exp/f$i of=$T/g/f$i bs=64k conv=fsync status=none || fail "writing f$i"
	$DM message lw 0 mark done$i || fail "mark done$i"
	sum=$(sha256sum <$T/exp/f$i) || fail "sha256sum"
	sums+="${sum%% *}  out/f$i"$'\n'
	cmds+="dump /f$i out/f$i"$'\n'
	printf '%s' "$sums" >$T/exp/want.$i
	printf '%s' "$cmds" >$T/exp/dump.$i
done
printf 'jr\n' >$T/exp/dump.0
echo "wrote and fsynced $FILES files in $((SECONDS - t0)) s"
must umount $T/g
must ucow dev del "${dev#/dev/ublkb}"
dev=""
must umount $T/h
must $DM remove lw
lw=0
losetup -d "$ldata" && ldata=""
losetup -d "$llog" && llog=""
replay-log --list $T/log.img >$T/entries 2>/dev/null || fail "cannot list the log"
echo "log: $(grep -c . $T/entries) entries, $(grep -c ' mark ' $T/entries) marks," \
	"$(grep -cE ' flush| fua' $T/entries) FLUSH/FUA entries"

# --- replay: a check at every FLUSH/FUA entry and mark after the mark "ready" ---------------------
cat >$T/check.sh <<'EOF'
# Run by replay-log at each replay point, in $T/chk, where it has just written h.img, a
# copy of the replayed host disk, and emptied out/. REPLAY_MARK: the last mark so far.
# (Few commands: each costs a tenth of a second or more in the emulated guest.)
bad() { echo "point $REPLAY_POINT (entry $REPLAY_ENTRY, last mark '$REPLAY_MARK'): $*"; exit 1; }
n=0
case $REPLAY_MARK in done*) n=${REPLAY_MARK#done} ;; esac
# host ext4: replay its journal (debugfs jr, as mount would; -n: before the replay a
# bitmap may not match its checksum, the journal holds the new one), take the image out,
# fsck (at every third point: it is the slowest step, and the host file system changes
# little from one point to the next)
debugfs -n -w -f $T/exp/dump.h h.img >h.dbg 2>&1
if [ $((REPLAY_POINT % 3)) = 0 ]; then
	e2fsck -fn h.img >h.fsck 2>&1 || { cat h.dbg h.fsck; bad "host ext4 not clean"; }
fi
[ -s out/disk.ucow ] || { cat h.dbg; bad "no disk.ucow in the host file system"; }
# debugfs dump writes the holes of the file (chunks the engine punched) as zeros, which
# check would take for data nothing maps (leaks): make them holes again
fallocate -d out/disk.ucow || bad "fallocate --dig-holes"
ucow check out/disk.ucow >check.out 2>&1 || { rc=$?; cat check.out; bad "ucow check exited with status $rc"; }
ucow convert -O raw out/disk.ucow out/g.img >conv.out 2>&1 || { cat conv.out; bad "convert failed"; }
# guest ext4: replay its journal, read back f1..fn, fsck
debugfs -n -w -f $T/exp/dump.$n out/g.img >g.dbg 2>&1
e2fsck -fn out/g.img >g.fsck 2>&1 || { cat g.dbg g.fsck; bad "guest ext4 not clean"; }
[ $n = 0 ] || sha256sum -c --quiet $T/exp/want.$n ||
	bad "a file fsynced before the mark differs or is missing"
EOF
printf 'jr\ndump /disk.ucow out/disk.ucow\n' >$T/exp/dump.h
must truncate -s 24M $T/target.img
t0=$SECONDS
cd $T/chk || fail "cd"
T=$T replay-log --from-mark ready --copy-to $T/chk/h.img --clean $T/chk/out --exec $T/check.sh \
	$T/log.img $T/target.img >$T/replay.out ||
	{ cat $T/replay.out; fail "a replay point failed (see above)"; }
cat $T/replay.out
checked=$(sed -n 's/.*checked \([0-9]*\)$/\1/p' $T/replay.out)
echo "checked $checked replay points in $((SECONDS - t0)) s"
cmp $T/target.img $T/data.img || fail "the whole log replayed does not give the device's final content"
[ "${checked:-0}" -ge $((FILES * 8)) ] || fail "only ${checked:-0} replay points checked ($((FILES * 8)) wanted)"
pass
