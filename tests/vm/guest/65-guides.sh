#!/bin/sh
# The guides of Documentation/guides/ run for real: their command sequences, in the order
# and with the names the guides use, each shown as "$ COMMAND" followed by its output (the
# transcripts the guides quote come from this test), with what each guide promises checked:
# getting started (a golden image with ext4, an overlay mounted and written, the golden
# image unchanged), golden image and many overlays (three overlays served at once, each
# its own data, little space each, one reset), snapshots day to day (taken online while
# mounted, an upgrade gone wrong undone with an online apply, a snapshot exported and
# deleted), fio (the job files of Documentation/examples on the cow, raw and null targets)
# and recovering after a crash (a --recoverable server killed and recovered with its data;
# a plain one killed: the device goes, the image opens clean).
# vm-timeout: 500
. "$VM_LIB"
need_ucow

trap 'umount /mnt 2>/dev/null; for d in /mnt/desk*; do umount "$d" 2>/dev/null; done; ucow dev del --all --force 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
EX=/vm/examples

# t 'COMMAND': show it as a user types it, run it in this shell (variables persist), fail
# the test if it fails
t() {
	echo "+ $1"	# a case of the test (the guides quote the "$ " lines)
	echo "\$ $1"
	eval "$1" || fail "guide command failed: $1"
}
guide() { echo; echo "=== guide: $1"; }

# ---- getting started ----------------------------------------------------------------
guide getting-started
t 'ucow create -f ucow golden.ucow 1G'
t 'dev=$(ucow dev add golden.ucow); echo $dev'
t 'mkfs.ext4 -q $dev'
t 'mount $dev /mnt'
t 'echo "hello from the golden image" >/mnt/hello.txt'
t 'umount /mnt'
t 'ucow dev del $dev'
sum=$(sha256sum golden.ucow)
t 'ucow create -f ucow -b golden.ucow -F ucow vm1.ucow'
t 'dev=$(ucow dev add vm1.ucow); echo $dev'
t 'mount $dev /mnt'
t 'cat /mnt/hello.txt'
[ "$(cat /mnt/hello.txt)" = "hello from the golden image" ] || fail "the overlay does not show the golden file"
t 'echo "written in vm1" >/mnt/vm1.txt'
t 'ls /mnt'
t 'umount /mnt'
t 'ucow dev del $dev'
t 'ucow info vm1.ucow'
t 'ucow check vm1.ucow'
[ "$(sha256sum golden.ucow)" = "$sum" ] || fail "the golden image changed under its overlay"

# ---- golden image and many overlays --------------------------------------------------
guide golden-overlays
t 'for i in 1 2 3; do ucow create -q -f ucow -b golden.ucow -F ucow desk$i.ucow; done'
t 'for i in 1 2 3; do eval dev$i=$(ucow dev add desk$i.ucow); done; echo $dev1 $dev2 $dev3'
t 'ucow dev list'
[ "$(ucow dev list | grep -c ' live ')" = 3 ] || fail "not three live devices"
t 'for i in 1 2 3; do mkdir -p /mnt/desk$i; eval mount \$dev$i /mnt/desk$i; done'
t 'echo "desk 2 only" >/mnt/desk2/mine.txt; dd if=/dev/urandom of=/mnt/desk2/big bs=1M count=16 status=none'
t 'ls /mnt/desk1 /mnt/desk2'
[ ! -e /mnt/desk1/mine.txt ] && [ -e /mnt/desk2/mine.txt ] || fail "overlays share data"
t 'for i in 1 2 3; do umount /mnt/desk$i; done'
t 'du -h golden.ucow desk1.ucow desk2.ucow desk3.ucow'
# where desk2's data lives (offline: a served image is locked by its server), then reset
# desk2 to the golden image: recreate the overlay, serve it again
t 'ucow dev del $dev2'
t 'ucow map desk2.ucow'
t 'ucow create -q -f ucow -b golden.ucow -F ucow desk2.ucow'
t 'dev2=$(ucow dev add desk2.ucow); mount $dev2 /mnt/desk2; ls /mnt/desk2; umount /mnt/desk2'
[ -e /mnt/desk2/mine.txt ] && fail "the reset overlay still has its file"
t 'ucow dev del --all'

# ---- snapshots day to day -----------------------------------------------------------
guide snapshots
t 'dev=$(ucow dev add vm1.ucow); mount $dev /mnt'
t 'sync; ucow snapshot -c before-upgrade vm1.ucow'
t 'rm /mnt/hello.txt; echo "half done" >/mnt/upgrade.log; sync'
t 'ucow snapshot -l vm1.ucow'
out=$(ucow snapshot -a before-upgrade vm1.ucow 2>&1) && fail "apply while mounted succeeded"
echo "\$ ucow snapshot -a before-upgrade vm1.ucow"
echo "$out"
t 'umount /mnt'
t 'ucow snapshot -a before-upgrade vm1.ucow'
t 'mount $dev /mnt; ls /mnt'
[ -e /mnt/hello.txt ] && [ ! -e /mnt/upgrade.log ] || fail "the apply did not undo the upgrade"
t 'umount /mnt'
t 'ucow dev stats $dev | tail -n 3'
t 'ucow dev del $dev'
t 'ucow convert -l before-upgrade -O raw vm1.ucow before-upgrade.raw'
t 'ucow compare -F raw vm1.ucow before-upgrade.raw; echo "exit $?"'
t 'ucow snapshot -d before-upgrade vm1.ucow'
t 'ucow snapshot -l vm1.ucow'

# ---- fio ------------------------------------------------------------------------------
guide fio
rm -f before-upgrade.raw
t 'ucow create -q -f ucow disk.ucow 256M; truncate -s 256M disk.raw'
t 'cow=$(ucow dev add disk.ucow); raw=$(ucow dev add -t raw disk.raw); null=$(ucow dev add -t null -s 256M)'
for j in seqwrite-1m randwrite-4k randread-4k verify; do
	[ -f $EX/$j.fio ] || fail "no $EX/$j.fio"
done
t 'for d in $cow $raw; do DEV=$d SIZE=256M fio --output=/dev/null $EX/seqwrite-1m.fio; done'
for name in cow raw null; do
	eval d=\$$name
	t "DEV=$d SIZE=256M RUNTIME=3 fio $EX/randwrite-4k.fio | grep -E 'IOPS|clat \\('"
done
t 'DEV=$cow SIZE=64M fio $EX/verify.fio | grep -E "IOPS|err="'
t 'ucow snapshot -c s1 disk.ucow'
t 'DEV=$cow SIZE=64M fio $EX/snapshot-first-write.fio | grep -E "IOPS|clat \\("'
t 'ucow dev stats $cow | head -n 6'
t 'ucow dev del --all'

# ---- recovering after a crash -----------------------------------------------------
guide recovery
t 'dev=$(ucow dev add --recoverable vm1.ucow); echo $dev'
t 'dd if=/dev/urandom of=data.bin bs=1M count=8 status=none; dd if=data.bin of=$dev bs=1M seek=100 oflag=direct status=none'
id=${dev#/dev/ublkb}
pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' /run/ucow/dev$id.json)
[ -n "$pid" ] || fail "no server pid"
t "kill -9 $pid"
sleep 1
t 'ucow dev list'
ucow dev list | grep -q no-server || fail "dev list does not show the dead server"
t "ucow dev recover $id"
t 'cmp data.bin $dev --bytes=8388608 --ignore-initial=0:104857600 && echo "data intact"'
t 'ucow dev del $dev'
t 'ucow check vm1.ucow'
# without --recoverable: the device goes with its server; the image opens clean
t 'dev=$(ucow dev add vm1.ucow); dd if=data.bin of=$dev bs=1M seek=200 oflag=direct conv=fsync status=none'
id=${dev#/dev/ublkb}
pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' /run/ucow/dev$id.json)
t "kill -9 $pid"
sleep 1
t 'ls $dev 2>&1; ucow dev list'
[ -e "$dev" ] && fail "$dev still there after its server died"
t 'ucow check vm1.ucow'
t 'ucow io -c "read -v 200M 16" vm1.ucow; head -c 16 data.bin | od -A n -t x1'
must ucow convert -O raw vm1.ucow out.raw
[ "$(dd if=out.raw bs=1M skip=200 count=8 status=none | sha256sum)" = "$(sha256sum <data.bin)" ] ||
	fail "the fsynced write is not in the image after the crash"
pass
