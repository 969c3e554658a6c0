#!/bin/sh
# Copy-on-read on a real device (issue 16, item 3): an overlay over a base served by qemu-nbd
# inside the guest, added with --copy-on-read (kept in the state file). fio writes and
# verifies the first half while another fio job reads the whole device at random at the
# same time (the copies race with the writes: none may cover one); the reads are checked
# against the base; `dev stats` counts copies; then two sequential passes: after them a
# pass sends the server no read at all. Prefetch (--prefetch=4M): while fio reads without a
# break it backs off (nothing copied, back-offs counted); idle, it copies the rest at the
# rate and ends (dev stats); a read then needs no server, and an online rebase -b '' drops
# the base. The overlays then hold everything: with the server gone they read the same
# without their base, and check clean.
# vm-timeout: 300
. "$VM_LIB"
need_ucow
spid=""
trap '[ -n "$spid" ] && kill -9 $spid 2>/dev/null; ucow dev del -a >/dev/null 2>&1; cd /; rm -rf "$VM_TMP"' EXIT

S=$VM_TMP/nbd.sock
must dd if=/dev/urandom of=base.raw bs=1M count=16 status=none
qemu-nbd -f raw -r -t -e 8 -k "$S" base.raw &
spid=$!
wait_for "$S" 20
U="nbd+unix:///?socket=$S"
must ucow create -q -f ucow -b "$U" -F raw --allow-network-backing ov.ucow

dev=$(ucow dev add -q 2 --allow-network-backing --copy-on-read ov.ucow) || fail "dev add failed"
[ -b "$dev" ] || fail "$dev is not a block device"
id=${dev#/dev/ublkb}
grep -q '"copy-on-read": true' /run/ucow/dev$id.json ||
	fail "the state file does not keep --copy-on-read: $(cat /run/ucow/dev$id.json)"

# writes with verify on the first 8 MiB while random reads cover the whole device
must fio --output=fio.out --direct=1 --ioengine=libaio \
	--name=w --filename="$dev" --rw=randwrite --bs=4k --size=8M --iodepth=16 \
	--verify=crc32c --do_verify=1 --randrepeat=1 \
	--name=r --filename="$dev" --rw=randread --bs=16k --size=16M --iodepth=16 --time_based \
	--runtime=6
# the second half is the base's, whatever was copied
must dd if="$dev" of=half.img bs=1M skip=8 count=8 iflag=direct status=none
dd if=base.raw of=want.img bs=1M skip=8 count=8 status=none
must cmp half.img want.img
ucow dev stats "$id" >stats.txt || fail "dev stats failed"
cat stats.txt
grep -q "^copy-on-read: [1-9][0-9]* copies" stats.txt || fail "no copies counted"

reads() {	# NBD reads the device's connections made so far
	ucow dev stats --output=json "$id" >stats.json || fail "dev stats --output=json failed"
	sed -n 's/.*"reads": \([0-9]*\).*/\1/p' stats.json | tail -n 1
}
must dd if="$dev" of=/dev/null bs=1M iflag=direct status=none
must dd if="$dev" of=/dev/null bs=64k iflag=direct status=none
n1=$(reads)
must dd if="$dev" of=all.img bs=1M iflag=direct status=none
n2=$(reads)
echo "NBD reads: $n1 after two passes, $n2 after a third"
[ -n "$n1" ] && [ "$n1" -gt 0 ] || fail "no NBD reads counted ($n1)"
[ "$n2" = "$n1" ] || fail "the third pass read from the server ($n1 -> $n2)"
grep -q '"copy-on-read": {' stats.json || fail "JSON stats lack copy-on-read: $(cat stats.json)"
must ucow dev del "$id"

# ---- prefetch: the rest of the base copied in the background while the device is idle ----
must ucow create -q -f ucow -b "$U" -F raw --allow-network-backing pf.ucow
t0=$(date +%s)
dev=$(ucow dev add --allow-network-backing --prefetch=4M pf.ucow) || fail "dev add --prefetch failed"
id=${dev#/dev/ublkb}
grep -q '"prefetch-rate": 4194304' /run/ucow/dev$id.json ||
	fail "the state file does not keep --prefetch: $(cat /run/ucow/dev$id.json)"
jnum() {	# KEY: its number in stats.json (the last one)
	sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p" stats.json | tail -n 1
}
# busy: random reads without a break (of the first 4 MiB only: their copies on read must
# leave the prefetch the rest); the prefetch backs off (a step needs 200 ms idle).
# Measured from 1.5 s after fio started to 1.5 s before it ends (it copies before fio runs)
fio --output=busy.out --name=busy --filename="$dev" --direct=1 --ioengine=libaio \
	--rw=randread --bs=4k --iodepth=4 --size=4M --time_based --runtime=6 &
fpid=$!
sleep 1.5
ucow dev stats --output=json "$id" >stats.json || fail "ucow dev stats --output=json failed"
c0=$(jnum copied-bytes)
b0=$(jnum backoffs)
sleep 3
ucow dev stats --output=json "$id" >stats.json || fail "ucow dev stats --output=json failed"
c1=$(jnum copied-bytes)
b1=$(jnum backoffs)
wait $fpid || fail "fio failed: $(cat busy.out)"
echo "prefetch while busy: $c0 -> $c1 bytes copied, back-offs $b0 -> $b1"
[ $((c1 - c0)) -le 1048576 ] || fail "the prefetch went on while the device was busy ($c0 -> $c1)"
[ "$b1" -gt "$b0" ] || fail "no back-off counted while busy"
# idle: it runs to the end, at the rate
for _i in $(seq 120); do
	ucow dev stats "$id" >stats.txt || fail "ucow dev stats failed"
	grep -q "^prefetch: done, 100%" stats.txt && break
	grep -q "^prefetch: failed" stats.txt && fail "prefetch failed: $(cat stats.txt)"
	sleep 0.5
done
t=$(($(date +%s) - t0))
cat stats.txt
grep -q "^prefetch: done, 100%" stats.txt || fail "the prefetch did not end"
ucow dev stats --output=json "$id" >stats.json || fail "ucow dev stats --output=json failed"
c2=$(jnum copied-bytes)
echo "prefetch done in ${t}s, $c2 bytes copied at 4 MiB/s"
[ "$c2" -ge $((12 << 20)) ] || fail "the prefetch copied $c2 bytes (12 MiB at least expected)"
[ "$t" -ge $((c2 / 4194304 - 1)) ] || fail "faster than the rate: $c2 bytes in ${t}s"
n1=$(jnum reads)
must dd if="$dev" of=pf.img bs=1M iflag=direct status=none
ucow dev stats --output=json "$id" >stats.json || fail "ucow dev stats --output=json failed"
[ "$(jnum reads)" = "$n1" ] || fail "a read after the prefetch went to the server"
must cmp pf.img base.raw
# the backing dropped online (nothing left to copy), the device serving on
must ucow rebase -b '' pf.ucow
ucow info pf.ucow >info.txt || fail "ucow info pf.ucow failed"
grep -q "^backing file" info.txt && fail "the backing file is still named: $(cat info.txt)"
must ucow dev del "$id"

# the server gone: the overlay holds everything
kill -9 $spid
wait $spid 2>/dev/null
spid=""
must ucow rebase -u -b '' ov.ucow
must ucow check ov.ucow
dev=$(ucow dev add ov.ucow) || fail "dev add of the self-contained overlay failed"
must dd if="$dev" of=alone.img bs=1M iflag=direct status=none
must cmp alone.img all.img
dd if=all.img of=tail.img bs=1M skip=8 count=8 status=none
must cmp tail.img want.img
must ucow dev del "${dev#/dev/ublkb}"
pass
