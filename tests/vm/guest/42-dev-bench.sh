#!/bin/sh
# Throughput of the copy-on-write path against the raw baseline, in one run: 4 KiB random
# writes at queue depth 32 (fio, io_uring, direct) on a raw file and on a fully allocated
# ucow image, both served through the same engine I/O path, alternated three times (medians). Prints
# "BENCH ..." lines with the IOPS; fails only when cow falls below 90% of raw (the goal).
# Also records the null target (the transport alone) and a --recoverable cow device.
# vm-timeout: 400
. "$VM_LIB"
need_ucow

SIZE=256M
id=""
trap '[ -n "$id" ] && ucow dev del $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
must truncate -s $SIZE img.raw
must ucow create -q img.cow $SIZE
run() {	# run TARGET FILE|"" [ADD-OPTIONS] -> prints IOPS
	if [ "$1" = null ]; then dev=$(ucow dev add -t null -s $SIZE); else dev=$(ucow dev add -t $1 ${3:-} $2); fi || fail "$1: dev add failed"
	id=${dev#/dev/ublkb}
	fio --filename="$dev" --direct=1 --ioengine=io_uring --rw=randwrite --bs=4k --iodepth=32 \
		--time_based --runtime=8 --ramp_time=1 --norandommap --randrepeat=0 \
		--name=bench --output-format=terse --terse-version=3 >fio.out 2>fio.err ||
		{ cat fio.err; fail "$1: fio failed"; }
	# terse v3: field 49 is write IOPS
	cut -d';' -f49 fio.out
	ucow dev del "$id" >/dev/null || fail "$1: del failed"
	id=""
}
# allocate every chunk of the cow image (and write the raw file) through the device
for t in raw cow; do
	dev=$(ucow dev add -t $t img.$t) || fail "$t: dev add failed"
	id=${dev#/dev/ublkb}
	dd if=/dev/zero of="$dev" bs=1M oflag=direct 2>/dev/null
	must ucow dev del "$id"
	id=""
done
ucow info img.cow | grep allocated
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
null=$(run null)
r1=$(run raw img.raw); c1=$(run cow img.cow)
r2=$(run raw img.raw); c2=$(run cow img.cow)
r3=$(run raw img.raw); c3=$(run cow img.cow)
raw=$(median3 $r1 $r2 $r3) cow=$(median3 $c1 $c2 $c3)
pct=$(( cow * 100 / raw ))
echo "BENCH 4k-randwrite-qd32 null=$null raw=$r1,$r2,$r3 cow=$c1,$c2,$c3 -> median raw=$raw cow=$cow cow/raw=${pct}%"
# the price of --recoverable on cow (write-through: every write FUA), for the record
rec=$(run cow img.cow --recoverable)
echo "BENCH 4k-randwrite-qd32 cow --recoverable=$rec ($(( rec * 100 / cow ))% of cow)"
must ucow check img.cow
[ $pct -ge 90 ] || fail "cow reaches only ${pct}% of raw (goal: 90%)"
pass
