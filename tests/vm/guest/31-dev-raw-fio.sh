#!/bin/sh
# The raw target (a plain file, served through the cowcore engine) keeps data intact: fio
# verifies with crc32c random and sequential writes from 512 B to 1 MiB at queue depths 1
# and 128, several jobs at once on both queues.
# vm-timeout: 400
. "$VM_LIB"
need_ucow

must truncate -s 256M disk.raw
dev=$(ucow dev add -t raw disk.raw) || fail "dev add exited with status $?"
id=${dev#/dev/ublkb}
trap 'ucow dev del $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
echo "device: $dev"
[ "$(blockdev --getsize64 "$dev")" = 268435456 ] || fail "wrong size $(blockdev --getsize64 "$dev")"

verify() {	# verify NAME FIO-ARGS...
	_n=$1
	shift
	fio --filename="$dev" --direct=1 --ioengine=io_uring --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --group_reporting "$@" >"fio-$_n.out" 2>&1
	_rc=$?
	grep -E "IOPS|err=|verify" "fio-$_n.out"
	[ $_rc -eq 0 ] || { cat "fio-$_n.out"; fail "fio $_n exited with status $_rc"; }
	grep -q 'READ: bw=' "fio-$_n.out" || fail "fio $_n read nothing back"
}
verify rand-qd1 --bsrange=512-1M --iodepth=1 --size=16M --name=a --rw=randwrite --offset=0 \
	--name=b --rw=randwrite --offset=64M
verify rand-qd128 --bsrange=512-1M --iodepth=128 --size=32M --numjobs=1 \
	--name=a --rw=randwrite --offset=0 --name=b --rw=randwrite --offset=64M \
	--name=c --rw=randwrite --offset=128M --ioengine=libaio
verify seq --bsrange=512-1M --iodepth=32 --size=32M --name=a --rw=write --offset=0 \
	--name=b --rw=write --offset=128M
must ucow dev del "$id"
pass
