#!/bin/sh
# The null target (no storage) carries I/O end to end: `ucow dev add -t null -s SIZE`
# prints /dev/ublkbN once the device is live, fio runs random and sequential I/O from
# 512 B to 1 MiB at queue depths 1 and 128 with several jobs, list and stats report it,
# and `del` removes the device, its state file and its socket.
# vm-timeout: 240
. "$VM_LIB"
need_ucow

dev=$(ucow dev add -t null -s 1G) || fail "dev add exited with status $?"
echo "device: $dev"
case $dev in /dev/ublkb[0-9]*) ;; *) fail "dev add printed '$dev', not /dev/ublkbN" ;; esac
[ -b "$dev" ] || fail "$dev is not a block device"
id=${dev#/dev/ublkb}
trap 'ucow dev del $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
[ "$(blockdev --getsize64 "$dev")" = 1073741824 ] || fail "size is $(blockdev --getsize64 "$dev"), not 1 GiB"
[ -f /run/ucow/dev$id.json ] || fail "no state file /run/ucow/dev$id.json"

ucow dev list | tee list.out
grep -E "^$id +live +null " list.out >/dev/null || fail "list does not show device $id live"
ucow dev list --output=json | tee list.json
grep -q "\"target\": \"null\"" list.json || fail "list --output=json has no null target"

for qd in 1 128; do
	fio --filename="$dev" --direct=1 --ioengine=io_uring --bsrange=512-1M --iodepth=$qd \
		--size=64M --numjobs=2 --group_reporting --name=rand --rw=randrw \
		--name=seq --rw=rw --offset=512M >fio.out 2>&1 || { cat fio.out; fail "fio QD $qd failed"; }
	grep -E "IOPS|err=" fio.out
done

ucow dev stats "$dev" | tee stats.out
grep -E "^read +[1-9]" stats.out >/dev/null || fail "stats counted no reads"
grep -E "^write +[1-9]" stats.out >/dev/null || fail "stats counted no writes"
ucow dev stats "$id" --output=json >stats.json || fail "stats --output=json exited with status $?"
cat stats.json
grep -q '"p99"' stats.json || fail "stats --output=json has no percentiles"

[ "$(stat -c %a /run/ucow)" = 700 ] || fail "/run/ucow is mode $(stat -c %a /run/ucow), not 700"
[ "$(stat -c %a /run/ucow/dev$id.sock)" = 600 ] || fail "the control socket is not mode 600"
[ "$(stat -c %a /run/ucow/dev$id.json)" = 600 ] || fail "the state file is not mode 600"

# a device this run directory does not know (another server's) is listed and can be deleted
other=$(UCOW_RUN_DIR=$PWD/other ucow dev add -t null -s 64M) || fail "second add failed"
oid=${other#/dev/ublkb}
ucow dev list | tee list2.out
grep -qE "^$oid +live +- " list2.out || fail "list does not show the foreign device $oid"
must ucow dev del "$oid"
[ ! -e "$other" ] || fail "$other still there"

must ucow dev del "$dev"
n=0
while [ -e "$dev" ] && [ $n -lt 50 ]; do	# the node goes with the disk, a moment later
	sleep 0.1
	n=$((n + 1))
done
[ ! -e "$dev" ] || fail "$dev still exists 5 s after del"
[ ! -e /dev/ublkc$id ] || fail "/dev/ublkc$id still exists after del"
[ ! -e /run/ucow/dev$id.json ] || fail "state file left behind"
[ ! -e /run/ucow/dev$id.sock ] || fail "socket left behind"
ucow dev list | grep -qE "^$id " && fail "list still shows device $id"
pass
