#!/bin/sh
# The cow target keeps data intact: fio verifies (crc32c) random and sequential writes
# from 512 B to 1 MiB at queue depths 1 and 128, several jobs on both queues, into a fresh
# ucow image; then into an overlay over a raw base, where every small write lands in a chunk
# whose other blocks still come from the base (which must still read back unchanged).
# After del the image is clean (ucow check) and ucow io reads what the device wrote.
# vm-timeout: 500
. "$VM_LIB"
need_ucow

verify() {	# verify DEV NAME FIO-ARGS...
	_d=$1 _n=$2
	shift 2
	fio --filename="$_d" --direct=1 --ioengine=io_uring --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --group_reporting "$@" >"fio-$_n.out" 2>&1
	_rc=$?
	grep -E "IOPS|err=" "fio-$_n.out"
	[ $_rc -eq 0 ] || { cat "fio-$_n.out"; fail "fio $_n exited with status $_rc"; }
	grep -q 'READ: bw=' "fio-$_n.out" || fail "fio $_n read nothing back"
}

must ucow create -q disk.ucow 256M
dev=$(ucow dev add disk.ucow) || fail "dev add exited with status $?"
id=${dev#/dev/ublkb}
trap 'ucow dev del $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
echo "device: $dev"
[ "$(blockdev --getsize64 "$dev")" = 268435456 ] || fail "wrong size $(blockdev --getsize64 "$dev")"
verify "$dev" rand-qd1 --bsrange=512-1M --iodepth=1 --size=16M --name=a --rw=randwrite \
	--offset=0 --name=b --rw=randwrite --offset=64M
verify "$dev" rand-qd128 --bsrange=512-1M --iodepth=128 --size=32M \
	--name=a --rw=randwrite --offset=0 --name=b --rw=randwrite --offset=64M \
	--name=c --rw=randwrite --offset=128M --ioengine=libaio
verify "$dev" seq --bsrange=512-1M --iodepth=32 --size=32M --name=a --rw=write --offset=0 \
	--name=b --rw=write --offset=160M
# what the device holds now must be what the engine reads from the file after del
dd if="$dev" of=dev.bin bs=1M count=8 skip=160 iflag=direct 2>/dev/null
must ucow dev del "$id"
must ucow check disk.ucow
must ucow convert -O raw disk.ucow flat.raw
dd if=flat.raw of=file.bin bs=1M count=8 skip=160 2>/dev/null
cmp dev.bin file.bin || fail "the image file does not hold what the device returned"

# overlay over a raw base full of 0xab
must truncate -s 64M base.raw
qemu-io -f raw -c "write -P 0xab 0 64M" base.raw >/dev/null || fail "cannot fill base.raw"
must ucow create -q -b base.raw -F raw over.ucow
dev=$(ucow dev add -q 2 over.ucow) || fail "dev add (overlay) exited with status $?"
id=${dev#/dev/ublkb}
trap 'ucow dev del $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
verify "$dev" overlay --bsrange=512-64k --iodepth=32 --size=16M --name=a --rw=randwrite \
	--offset=0 --name=b --rw=randwrite --offset=16M
qemu-io -f raw -c "read -P 0xab 32M 32M" "$dev" | tee qio.out
grep -q "read 33554432/33554432" qio.out || fail "the base's data does not read back through the overlay"
must ucow dev del "$id"
must ucow check over.ucow
pass
