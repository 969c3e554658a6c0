#!/bin/sh
# S7/S8 of `make bench`, run inside the real-kernel test bed (tests/vm/run.sh --script):
# fio 4 KiB random reads and writes at queue depth 32 on /dev/ublkbN for the cow target, the
# raw target and the kernel loop device (direct I/O) on the same kind of file; and the cow
# target with 2 queues against 1. Sides alternate, 3 runs each, medians. The guest is
# emulated (QEMU TCG): compare only within this run.
set -u
SIZE=256M
RUNTIME=${RUNTIME:-4}
id=""
trap '[ -n "$id" ] && ucow dev del $id 2>/dev/null' EXIT
truncate -s $SIZE img.raw
ucow create -q img.cow $SIZE
# allocate everything through the device, the same way for both files
for t in raw cow; do
	dev=$(ucow dev add -t $t img.$t) || exit 1
	id=${dev#/dev/ublkb}
	dd if=/dev/zero of="$dev" bs=1M oflag=direct 2>/dev/null
	ucow dev del "$id" >/dev/null; id=""
done
fio_iops() {	# fio_iops DEV RW -> IOPS
	fio --filename="$1" --direct=1 --ioengine=io_uring --rw=$2 --bs=4k --iodepth=32 \
		--time_based --runtime=$RUNTIME --ramp_time=1 --norandommap --randrepeat=0 \
		--name=b --output-format=terse --terse-version=3 2>/dev/null |
		awk -F';' -v rw=$2 '{print (rw == "randread") ? $8 : $49}'
}
side() {	# side NAME RW -> IOPS of one run
	case $1 in
	loop)	dev=$(losetup -f --show --direct-io=on img.raw); fio_iops "$dev" $2; losetup -d "$dev"; return ;;
	raw)	dev=$(ucow dev add -t raw img.raw) ;;
	cow)	dev=$(ucow dev add -t cow -q 1 img.cow) ;;
	cow-q2)	dev=$(ucow dev add -t cow -q 2 img.cow) ;;
	esac
	id=${dev#/dev/ublkb}
	fio_iops "$dev" $2
	ucow dev del "$id" >/dev/null; id=""
}
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
for rw in randwrite randread; do
	for s in raw cow loop cow-q2; do eval "v_$(echo $s | tr - _)=''"; done
	for i in 1 2 3; do
		for s in raw cow loop cow-q2; do
			n=$(echo $s | tr - _)
			eval "v_$n=\"\$v_$n \$(side $s $rw)\""
		done
	done
	raw=$(median3 $v_raw) cow=$(median3 $v_cow) loop=$(median3 $v_loop) q2=$(median3 $v_cow_q2)
	echo "S7 $rw: cow=$cow raw=$raw loop=$loop IOPS (runs: cow$v_cow / raw$v_raw / loop$v_loop) cow/raw=$((cow * 100 / raw))%"
	echo "S8 $rw: cow 2 queues=$q2 vs 1 queue=$cow IOPS ($((q2 * 100 / cow))%)"
done
ucow check img.cow >/dev/null || { echo "ucow check failed"; exit 1; }
