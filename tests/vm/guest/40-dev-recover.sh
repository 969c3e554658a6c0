#!/bin/sh
# --recoverable: kill -9 of the server under fio load, `ucow dev recover ID` starts a new
# server, I/O continues (requests in flight are re-issued), fio's verify passes (for cow,
# thanks to the side log: acknowledged mappings not yet flushed), and after del the image
# checks clean. Done for cow and raw. Then a dead cow server deleted instead of recovered.
# vm-timeout: 500
. "$VM_LIB"
need_ucow

id=""
trap '[ -n "$id" ] && ucow dev del $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
for t in cow raw; do
	if [ $t = raw ]; then must truncate -s 256M img.$t; else must ucow create -q img.$t 256M; fi
	dev=$(ucow dev add -t $t --recoverable img.$t) || fail "$t: dev add exited with status $?"
	id=${dev#/dev/ublkb}
	ucow dev list --output=json | grep -q user_recovery_reissue ||
		{ ucow dev list; fail "$t: recovery not negotiated"; }
	pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' /run/ucow/dev$id.json)
	fio --filename="$dev" --direct=1 --ioengine=io_uring --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --bsrange=4k-256k --iodepth=32 --size=48M --group_reporting \
		--name=a --rw=randwrite --offset=0 --name=b --rw=write --offset=128M \
		>fio-$t.out 2>&1 &
	fpid=$!
	sleep 4
	kill -0 $fpid 2>/dev/null || { cat fio-$t.out; fail "$t: fio ended before the kill"; }
	must kill -9 "$pid"
	sleep 1
	[ -b "$dev" ] || fail "$t: $dev went away although recoverable"
	ucow dev list | grep -E "^$id " | tee l.out
	grep -q "no-server" l.out || fail "$t: list does not show the dead server"
	new=$(ucow dev recover "$id") || fail "$t: recover exited with status $?"
	[ "$new" = "$dev" ] || fail "$t: recover printed '$new'"
	npid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' /run/ucow/dev$id.json)
	[ "$npid" != "$pid" ] || fail "$t: same server pid after recover"
	wait $fpid
	rc=$?
	grep -E "IOPS|err=|verify" fio-$t.out
	[ $rc = 0 ] || { cat fio-$t.out; fail "$t: fio failed across the recovery (status $rc)"; }
	grep -q 'READ: bw=' fio-$t.out || fail "$t: fio read nothing back"
	must ucow dev del "$id"
	id=""
	[ $t = cow ] && must ucow check img.cow
done

# a dead recoverable server need not be recovered: del removes the device and leaves the
# image clean, with every write the dead server acknowledged (unflushed: their mappings were
# only in its side log, which del folds in and removes)
dev=$(ucow dev add --recoverable img.cow) || fail "dev add failed"
id=${dev#/dev/ublkb}
pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' /run/ucow/dev$id.json)
must dd if=/dev/urandom of=d.bin bs=64k count=64 status=none
must dd if=d.bin of="$dev" bs=64k seek=3200 oflag=direct status=none
ls /run/ucow/side-*.log >/dev/null 2>&1 || fail "no side log for a recoverable cow device"
must kill -9 "$pid"
sleep 1
must ucow dev del "$id"
id=""
[ ! -e "$dev" ] || fail "$dev still there after del of a dead recoverable device"
ucow info img.cow | grep -q "dirty: false" || fail "image left dirty after del"
must ucow check img.cow
must ucow convert -O raw img.cow img.raw2
cmp -n 4194304 -i 209715200:0 img.raw2 d.bin || fail "writes acknowledged before the kill were lost"
ls /run/ucow/side-*.log 2>/dev/null && fail "the side log is still there after del"
pass
