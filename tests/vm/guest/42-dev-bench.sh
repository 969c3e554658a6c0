#!/bin/sh
# A short, sane-throughput check of the copy-on-write path against the raw baseline: 4 KiB
# random writes at queue depth 32 (fio, io_uring, direct) on a raw file and a fully
# allocated ucow image, alternated twice. The emulated guest is too noisy for the 90% goal
# to be a pass/fail line here: `make bench` (S7, tests/bench/vm-ublk.sh) measures it with
# medians. This test fails only on a pathological regression (cow below half of raw).
# vm-timeout: 300
. "$VM_LIB"
need_ucow

SIZE=128M
id=""
trap '[ -n "$id" ] && ucow dev del $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
must truncate -s $SIZE img.raw
must ucow create -q img.cow $SIZE
run() {	# run TARGET FILE -> prints IOPS
	dev=$(ucow dev add -t $1 $2) || fail "$1: dev add failed"
	id=${dev#/dev/ublkb}
	fio --filename="$dev" --direct=1 --ioengine=io_uring --rw=randwrite --bs=4k --iodepth=32 \
		--time_based --runtime=4 --ramp_time=1 --norandommap --randrepeat=0 \
		--name=bench --output-format=terse --terse-version=3 >fio.out 2>fio.err ||
		{ cat fio.err; fail "$1: fio failed"; }
	cut -d';' -f49 fio.out	# terse v3: field 49 is write IOPS
	ucow dev del "$id" >/dev/null || fail "$1: del failed"
	id=""
}
for t in raw cow; do	# allocate everything through the device
	dev=$(ucow dev add -t $t img.$t) || fail "$t: dev add failed"
	id=${dev#/dev/ublkb}
	dd if=/dev/zero of="$dev" bs=1M oflag=direct 2>/dev/null
	must ucow dev del "$id"
	id=""
done
r1=$(run raw img.raw); c1=$(run cow img.cow)
r2=$(run raw img.raw); c2=$(run cow img.cow)
raw=$(( (r1 + r2) / 2 )) cow=$(( (c1 + c2) / 2 ))
[ "$raw" -gt 0 ] && [ "$cow" -gt 0 ] || fail "no IOPS measured (raw $raw, cow $cow)"
pct=$(( cow * 100 / raw ))
echo "BENCH 4k-randwrite-qd32 raw=$r1,$r2 cow=$c1,$c2 cow/raw=${pct}%"
must ucow check img.cow
[ $pct -ge 50 ] || fail "cow reaches only ${pct}% of raw"
pass
