#!/bin/sh
# The kernel loop device on a tmpfs file passes fio's data verification: two jobs (io_uring
# and libaio, one per CPU) write their own 32 MiB region at random with crc32c checksums,
# then read it all back and check every block. Bound by --size, never --time_based (a timed
# write phase never reaches the verify phase).
. "$VM_LIB"

dev=""
trap '[ -n "$dev" ] && losetup -d "$dev"' EXIT
must truncate -s 64M backing.img
dev=$(losetup -f --show backing.img) || fail "losetup failed"
echo "loop device $dev"
# Options before the first --name apply to both jobs.
fio --filename="$dev" --direct=1 --rw=randwrite --bsrange=4k-64k --iodepth=16 --size=32M \
	--verify=crc32c --do_verify=1 --verify_fatal=1 --group_reporting \
	--name=uring --ioengine=io_uring --offset=0 \
	--name=aio --ioengine=libaio --offset=32M >fio.out 2>&1
rc=$?
cat fio.out
[ $rc -eq 0 ] || fail "fio exited with status $rc"
grep -q 'READ: bw=' fio.out || fail "fio did not read anything back: nothing was verified"
pass
