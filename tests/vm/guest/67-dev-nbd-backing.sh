#!/bin/sh
# A device whose base is served by qemu-nbd inside the guest (issue 16, items 1-2): refused
# without consent (nothing served, one line), served with the host's setting file; the
# device reads the base through two queues' connections and takes writes (fio verify); the
# server killed: reads of the overlay's own data go on, reads of the base fail with EIO
# after the timeout (bounded), `dev stats` says failed since when; the server back: the same
# device reads the base again and `dev stats` says connected; the other queue's lost
# connection reconnects at its next read without waiting out its back-off.
# vm-timeout: 280
. "$VM_LIB"
need_ucow
spid=""
trap '[ -n "$spid" ] && kill -9 $spid 2>/dev/null; ucow dev del -a >/dev/null 2>&1; cd /; rm -rf "$VM_TMP"' EXIT

S=$VM_TMP/nbd.sock
serve() {	# qemu-nbd on the Unix socket S, read-only, persistent, 8 clients
	rm -f "$S"
	qemu-nbd -f raw -r -t -e 8 -k "$S" base.raw &
	spid=$!
	wait_for "$S" 20
}
must dd if=/dev/urandom of=base.raw bs=1M count=16 status=none
serve
U="nbd+unix:///?socket=$S"
must ucow create -q -f ucow -b "$U" -F raw --allow-network-backing ov.ucow

ucow dev add ov.ucow >out.txt 2>err.txt && fail "dev add of an image over an NBD base succeeded without consent"
echo "refused: $(cat err.txt)"
[ "$(wc -l <err.txt)" = 1 ] || fail "$(wc -l <err.txt) lines on stderr"
grep -q "network backing is not allowed (--allow-network-backing allows it)" err.txt ||
	fail "unexpected message '$(cat err.txt)'"
ls /dev | grep -q '^ublkb' && fail "a device was left behind"

printf '# host settings\nallow-network-backing = yes\nnbd-timeout = 4\n' >ucow.conf
dev=$(UCOW_SETTINGS=$VM_TMP/ucow.conf ucow dev add -q 2 ov.ucow) || fail "dev add with the setting file failed"
[ -b "$dev" ] || fail "$dev is not a block device"
id=${dev#/dev/ublkb}
grep -q '"allow-network-backing": true' /run/ucow/dev$id.json ||
	fail "the state file does not keep the consent: $(cat /run/ucow/dev$id.json)"
grep -q '"nbd-timeout-ms": 4000' /run/ucow/dev$id.json || fail "the state file lacks the timeout"
must cmp "$dev" base.raw
# the first 8 MiB become the overlay's own data, written and verified by fio
must fio --name=w --filename="$dev" --direct=1 --rw=randwrite --bs=4k --size=8M --iodepth=16 \
	--ioengine=libaio --verify=crc32c --do_verify=1 --numjobs=1 --randrepeat=1 --output=fio.out
must dd if="$dev" of=own.img bs=1M count=8 iflag=direct status=none
ucow dev stats "$id" >stats.txt || fail "dev stats failed"
cat stats.txt
grep -q "^network backing: $U: connected (" stats.txt || fail "dev stats does not say connected"

kill -9 $spid
wait $spid 2>/dev/null
spid=""
# the overlay's own data needs no server
must dd if="$dev" of=own2.img bs=1M count=8 iflag=direct status=none
must cmp own.img own2.img
# the base does: an I/O error after the 4 s timeout, no hang (read on CPU 0, so queue 0's
# connection is the lost one, backing off: tries at once, 0.5, 1.5 and 3.5 s later, the next
# at 7.5 s)
t0=$(date +%s)
if taskset -c 0 timeout 60 dd if="$dev" of=/dev/null bs=4k skip=3000 count=1 iflag=direct \
	2>dd.err; then
	fail "a read of the base succeeded with the server gone"
fi
t=$(($(date +%s) - t0))
echo "read of the base failed after ${t}s: $(cat dd.err)"
grep -q "Input/output error" dd.err || fail "not an I/O error: $(cat dd.err)"
[ "$t" -le 20 ] || fail "the error took ${t}s (timeout 4 s)"
ucow dev stats "$id" >stats.txt || fail "dev stats failed"
cat stats.txt
# (the other queue's idle connection counts until a read of its own finds it gone)
grep -q "^network backing: $U: \(failed\|reconnecting\) ([01] connection" stats.txt ||
	fail "dev stats does not say failed"
grep -q "^  failing since " stats.txt || fail "dev stats does not say since when"
ucow dev stats --output=json "$id" >stats.json || fail "dev stats --output=json failed"
grep -q '"state": "\(failed\|reconnecting\)"' stats.json || fail "JSON state: $(cat stats.json)"
grep -q '"failed-since-ms": ' stats.json || fail "JSON lacks failed-since-ms"

serve
# back: the same device reads the base again, on CPU 1: queue 1's idle connection, dead since
# the kill, is replaced at once
ok=0
for _i in 1 2 3 4 5 6 7 8 9 10; do
	if taskset -c 1 dd if="$dev" of=back.img bs=1M skip=8 count=8 iflag=direct status=none \
		2>/dev/null; then
		ok=1
		break
	fi
	sleep 1
done
[ $ok = 1 ] || fail "the device did not read the base again after the server came back"
dd if=base.raw of=want.img bs=1M skip=8 count=8 status=none
must cmp back.img want.img
ucow dev stats "$id" >stats.txt || fail "dev stats failed"
cat stats.txt
# one queue's connection back: the server is back, though queue 0's is still down
grep -q "^network backing: $U: connected (1 connection)" stats.txt ||
	fail "dev stats does not say connected again"
grep -q "failing since" stats.txt && fail "dev stats still says failing"
# and queue 0 connects at its next read, not after the rest of its back-off (~3 s)
c0=$(cut -d' ' -f1 /proc/uptime)
taskset -c 0 dd if="$dev" of=q0.img bs=4k skip=2560 count=1 iflag=direct status=none 2>dd.err ||
	fail "a read of the base on CPU 0 failed: $(cat dd.err)"
c1=$(cut -d' ' -f1 /proc/uptime)
ms=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%d", (b - a) * 1000 }')	# (".08": no octal)
echo "queue 0 read the base again in ${ms} ms"
[ "$ms" -lt 2000 ] || fail "queue 0's read took ${ms} ms: it waited out its back-off"
dd if=base.raw of=want.img bs=4k skip=2560 count=1 status=none
must cmp q0.img want.img
ucow dev stats "$id" >stats.txt || fail "dev stats failed"
grep -q "^network backing: $U: connected (2 connections)" stats.txt ||
	fail "dev stats does not say 2 connections: $(cat stats.txt)"
must ucow dev del "$id"
must ucow check --allow-network-backing ov.ucow
pass
