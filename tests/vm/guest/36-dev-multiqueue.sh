#!/bin/sh
# Queues: -q 1 and -q 2 give that many hardware queues (sysfs mq/), each served by its own
# thread; fio jobs pinned to each CPU (so both queues carry I/O at once) verify their data.
# vm-timeout: 300
. "$VM_LIB"
need_ucow

id=""
trap '[ -n "$id" ] && ucow dev del $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
must ucow create -q disk.ucow 256M
for nq in 1 2; do
	dev=$(ucow dev add -q $nq -d 64 disk.ucow) || fail "-q $nq: dev add exited with status $?"
	id=${dev#/dev/ublkb}
	got=$(ls /sys/block/ublkb$id/mq | wc -l)
	[ "$got" = $nq ] || fail "-q $nq: the device has $got hardware queues"
	ucow dev list | grep -E "^$id " | tee l.out
	grep -qE "^$id +live +cow +$nq +64 " l.out || fail "-q $nq: list shows $(cat l.out)"
	pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' /run/ucow/dev$id.json)
	threads=$(ls /proc/$pid/task | while read t; do cat /proc/$pid/task/$t/comm; done | grep -c ucow-q)
	[ "$threads" = $nq ] || fail "-q $nq: $threads queue threads"
	fio --filename="$dev" --direct=1 --ioengine=io_uring --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --bsrange=4k-128k --iodepth=32 --size=32M --group_reporting \
		--name=cpu0 --cpus_allowed=0 --rw=randwrite --offset=0 \
		--name=cpu1 --cpus_allowed=1 --rw=randwrite --offset=64M >fio.out 2>&1 ||
		{ cat fio.out; fail "-q $nq: fio failed"; }
	grep -E "IOPS|err=" fio.out
	ucow dev stats $id | tee stats.out
	if [ $nq = 2 ]; then
		grep -Eq "per queue: q0=[1-9][0-9]* q1=[1-9]" stats.out || fail "-q 2: both queues did not carry I/O"
	fi
	# idle: the server must sleep, not spin (CPU ticks over 2 s)
	t0=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
	sleep 2
	t1=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
	echo "-q $nq: server CPU while idle: $((t1 - t0)) ticks in 2 s"
	[ $((t1 - t0)) -lt 20 ] || fail "-q $nq: the idle server used $((t1 - t0)) ticks in 2 s"
	must ucow dev del "$id"
	id=""
done
must ucow check disk.ucow
pass
