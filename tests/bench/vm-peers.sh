#!/bin/sh
# S9 of `make bench-vm`, run inside the real-kernel test bed (tests/vm/run.sh --script): the
# same fio jobs on every way this bed can offer a copy-on-write block device, one side after
# the other, the order rotating from run to run:
#   cow     ucow's cow target on a ucow image (ucow dev add)
#   cow64k  the same with 64 KiB chunks (dm-thin's block size here: what a first write
#           after a snapshot copies is the same size on both)
#   nbd     a qcow2 image through qemu-nbd --cache=none --aio=io_uring on /dev/nbd0
#   vduse   a qcow2 image through qemu-storage-daemon --export type=vduse-blk (virtio_vdpa)
#   thin    a dm-thin volume: a pool on two loop devices (64 KiB blocks, defaults otherwise)
#   raw     ucow's raw target on a raw file (baseline)
#   loop    the kernel loop device on the same raw file, direct I/O (baseline)
# Jobs: 4 KiB random writes and reads at QD 1 and 32 (RUNTIME seconds each) on a fully
# written device; 1 MiB sequential reads at QD 8 over the device; and "first writes after a
# snapshot": a snapshot is taken (ucow snapshot -c on the served image; qemu-img snapshot -c
# before the export for nbd and vduse; dm-thin create_snap with the volume suspended), then
# 4 KiB writes, one per 64 KiB, QD 32, over the whole device (raw and loop: the same writes,
# no snapshot). Each job prints "S9 JOB SIDE run=N iops=I kib_s=B p50_us=P p99_us=Q".
# The guest is emulated (QEMU TCG): compare only within one run of this script.
# vm-needs: qemu
# vm-timeout: 2400
set -u
SIZE_MB=${SIZE_MB:-256}
RUNTIME=${RUNTIME:-5}
RUNS=${RUNS:-3}
SIDES=${SIDES:-"cow cow64k nbd vduse thin raw loop"}
MOD=/lib/modules/$(uname -r)
dev="" id="" qsd="" nbd="" pool="" lm="" ld=""

for m in dm-mod dm-bufio libcrc32c dm-bio-prison dm-persistent-data dm-thin-pool nbd \
	vhost_iotlb vdpa vduse virtio_vdpa virtio_blk; do
	grep -q "^$(echo $m | tr - _) " /proc/modules || insmod "$MOD/$m.ko" 2>/dev/null ||
		echo "S9 note: insmod $m failed"
done
mkdir -p /var/lock	# qemu-nbd -c locks /var/lock/qemu-nbd-nbdN

up() { cut -d' ' -f1 /proc/uptime; }
wait_dev() {	# wait_dev PATH: a device node that appears asynchronously
	_n=0
	while [ ! -b "$1" ] && [ $_n -lt 100 ]; do sleep 0.1; _n=$((_n + 1)); done
	[ -b "$1" ]
}

# fio_job DEV RW BS QD [fio options...] -> "iops=I kib_s=B p50_us=P p99_us=Q"
# terse v3: read iops/bw are fields 8/7, write 49/48; the completion latency percentiles
# (fio's default list, p50 the 7th and p99 the 13th) start at field 18 (read), 59 (write)
fio_job() {
	_d=$1 _rw=$2 _bs=$3 _qd=$4
	shift 4
	_out=$(fio --filename="$_d" --direct=1 --ioengine=io_uring --rw="$_rw" --bs="$_bs" \
		--iodepth="$_qd" --norandommap --randrepeat=0 --name=s9 --output-format=terse \
		--terse-version=3 "$@" 2>&1)
	echo "$_out" | awk -F';' -v rw="$_rw" '$1 == "3" && $3 == "s9" {
		w = (rw ~ /write/); b = w ? 41 : 0
		split($(24 + b), p50, "="); split($(30 + b), p99, "=")
		printf "iops=%d kib_s=%d p50_us=%d p99_us=%d\n", $(8 + b), $(7 + b), p50[2], p99[2]
		ok = 1
	} END { if (!ok) print "fio-failed" }'
	case $_out in 3\;*) ;; *) echo "$_out" | head -n 5 | sed 's/^/S9 fio: /' >&2 ;; esac
}

# setup SIDE: make the side's image and device (fully written), set $dev
setup() {
	case $1 in
	cow|cow64k)
		if [ $1 = cow64k ]; then
			ucow create -q -o chunk_size=64k img.cow ${SIZE_MB}M || return 1
		else
			ucow create -q img.cow ${SIZE_MB}M || return 1
		fi
		dev=$(ucow dev add -t cow img.cow) || return 1
		id=${dev#/dev/ublkb} ;;
	raw)	truncate -s ${SIZE_MB}M img.raw
		dev=$(ucow dev add -t raw img.raw) || return 1
		id=${dev#/dev/ublkb} ;;
	loop)	truncate -s ${SIZE_MB}M img.raw
		dev=$(losetup -f --show --direct-io=on img.raw) || return 1 ;;
	nbd)	qemu-img create -q -f qcow2 img.qcow2 ${SIZE_MB}M || return 1
		qemu-nbd -c /dev/nbd0 -f qcow2 --cache=none --aio=io_uring img.qcow2 || return 1
		nbd=/dev/nbd0 dev=/dev/nbd0
		_n=0
		while [ "$(cat /sys/block/nbd0/size)" = 0 ] && [ $_n -lt 100 ]; do
			sleep 0.1; _n=$((_n + 1)); done ;;
	vduse)	qemu-img create -q -f qcow2 img.qcow2 ${SIZE_MB}M || return 1
		start_vduse || return 1 ;;
	thin)	truncate -s 16M meta.img
		truncate -s $((2 * SIZE_MB + 64))M data.img	# room to unshare every block
		lm=$(losetup -f --show --direct-io=on meta.img) || return 1
		ld=$(losetup -f --show --direct-io=on data.img) || return 1
		dd if=/dev/zero of="$lm" bs=4k count=1 oflag=direct 2>/dev/null
		dmsetup create s9pool --table "0 $(((2 * SIZE_MB + 64) * 2048)) thin-pool $lm $ld 128 0" ||
			return 1
		pool=s9pool
		dmsetup message s9pool 0 "create_thin 0" || return 1
		# no udev here: the pool by its numbers, the nodes made by dmsetup mknodes
		pmm=$(dmsetup info -c --noheadings -o major,minor s9pool) || return 1
		dmsetup create s9thin --table "0 $((SIZE_MB * 2048)) thin $pmm 0" || return 1
		dmsetup mknodes
		dev=/dev/mapper/s9thin
		wait_dev $dev || return 1 ;;
	esac
	dd if=/dev/zero of="$dev" bs=1M count=$SIZE_MB oflag=direct 2>/dev/null
}

start_vduse() {
	rm -f qsd.out
	qemu-storage-daemon \
		--blockdev file,filename=img.qcow2,cache.direct=on,aio=io_uring,node-name=f \
		--blockdev qcow2,file=f,node-name=q \
		--export type=vduse-blk,id=v0,node-name=q,name=s9vduse,writable=on,num-queues=1 \
		>qsd.out 2>&1 &
	qsd=$!
	_n=0
	while [ ! -e /dev/vduse/s9vduse ] && [ $_n -lt 100 ]; do sleep 0.1; _n=$((_n + 1)); done
	vdpa dev add name s9vduse mgmtdev vduse >>qsd.out 2>&1 || { cat qsd.out; return 1; }
	_n=0
	dev=""
	while [ -z "$dev" ] && [ $_n -lt 100 ]; do
		for b in /sys/bus/vdpa/devices/s9vduse/virtio*/block/*; do
			[ -e "$b" ] && dev=/dev/${b##*/}
		done
		sleep 0.1; _n=$((_n + 1))
	done
	[ -n "$dev" ] || { echo "S9 vduse: no block device on s9vduse"; cat qsd.out; return 1; }
	wait_dev "$dev"
}

stop_vduse() {
	vdpa dev del s9vduse 2>/dev/null
	[ -n "$qsd" ] && kill $qsd 2>/dev/null && wait $qsd 2>/dev/null
	qsd=""
}

teardown() {
	[ -n "$id" ] && ucow dev del "$id" >/dev/null 2>&1
	case $dev in /dev/loop*) losetup -d "$dev" ;; esac
	[ -n "$nbd" ] && qemu-nbd -d "$nbd" >/dev/null 2>&1
	[ -n "$qsd" ] && stop_vduse
	if [ -n "$pool" ]; then
		dmsetup remove s9thin 2>/dev/null
		dmsetup remove s9pool 2>/dev/null
		losetup -d "$lm" "$ld" 2>/dev/null
	fi
	dev="" id="" nbd="" pool="" lm="" ld=""
	rm -f img.cow img.raw img.qcow2 meta.img data.img
}
trap teardown EXIT

# snapshot SIDE: take the snapshot the side offers, the device staying up where it can
snapshot() {
	case $1 in
	cow|cow64k) ucow snapshot -c s1 img.cow ;;
	nbd)	qemu-nbd -d /dev/nbd0 >/dev/null && qemu-img snapshot -c s1 img.qcow2 &&
		qemu-nbd -c /dev/nbd0 -f qcow2 --cache=none --aio=io_uring img.qcow2 && sleep 0.5 ;;
	vduse)	stop_vduse && qemu-img snapshot -c s1 img.qcow2 && start_vduse ;;
	thin)	dmsetup suspend s9thin && dmsetup message s9pool 0 "create_snap 1 0" &&
		dmsetup resume s9thin ;;
	raw|loop) : ;;
	esac
}

one_side() {	# one_side SIDE RUN
	s=$1 r=$2
	t0=$(up)
	if ! setup $s; then
		echo "S9 FAIL $s run=$r: setup failed"
		teardown
		return
	fi
	for job in "randwrite 4k 1" "randwrite 4k 32" "randread 4k 1" "randread 4k 32"; do
		set -- $job
		echo "S9 $1-$2-qd$3 $s run=$r $(fio_job "$dev" $1 $2 $3 --time_based \
			--runtime=$RUNTIME --ramp_time=1)"
	done
	echo "S9 read-1m-qd8 $s run=$r $(fio_job "$dev" read 1M 8)"
	if snapshot $s; then
		echo "S9 first-write-after-snapshot $s run=$r $(fio_job "$dev" write:60k 4k 32)"
	else
		echo "S9 FAIL $s run=$r: snapshot failed"
	fi
	teardown
	echo "S9 time $s run=$r $(awk "BEGIN { printf \"%.1f\", $(up) - $t0 }") s"
}

set -- $SIDES
n=$#
for r in $(seq 1 $RUNS); do
	# rotate the order: run r starts with side number r
	k=$(( (r - 1) % n ))
	i=0
	order=""
	for s in $SIDES; do
		[ $i -ge $k ] && order="$order $s"
		i=$((i + 1))
	done
	i=0
	for s in $SIDES; do
		[ $i -lt $k ] && order="$order $s"
		i=$((i + 1))
	done
	for s in $order; do one_side $s $r; done
done
echo "S9 done"
