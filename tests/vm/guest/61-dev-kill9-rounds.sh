#!/bin/bash
# Server faults: 10 rounds of kill -9 of the server of a --recoverable cow device at a
# random moment under fio with verify, each followed by `ucow dev recover`. Round R writes
# its own 8 MiB region (random 4 KiB writes, rate-limited so that the kill lands while
# writes are in flight) and verifies it; the requests in flight at the kill are re-issued
# to the new server, so fio must finish with 0 verify errors. At the end a verify-only pass
# over all 10 regions checks that no later kill lost what earlier rounds wrote, and after
# del the image checks clean.
# vm-timeout: 400
. "$VM_LIB"
need_ucow

ROUNDS=10
REGION=8	# MiB per round
id=""
trap '[ -n "$id" ] && ucow dev del $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
server_pid() { sed -n 's/.*"pid": *\([0-9][0-9]*\).*/\1/p' /run/ucow/dev$id.json; }

must ucow create -q img.ucow $((ROUNDS * REGION + 16))M
dev=$(ucow dev add --recoverable img.ucow) || fail "dev add exited with status $?"
id=${dev#/dev/ublkb}
# one job per round; the same jobs with --verify_only re-read every region at the end
{
	echo "[global]"
	echo "filename=$dev"
	echo "direct=1"
	echo "ioengine=io_uring"
	echo "iodepth=16"
	echo "bs=4k"
	echo "rw=randwrite"
	echo "size=${REGION}M"
	echo "verify=crc32c"
	echo "verify_fatal=1"
	echo "rate_iops=1500"
	for r in $(seq 1 $ROUNDS); do
		echo "[r$r]"
		echo "offset=$(((r - 1) * REGION))M"
	done
} >jobs.fio
RANDOM=$$
inflight=0
t0=$SECONDS
for r in $(seq 1 $ROUNDS); do
	pid=$(server_pid)
	[ -n "$pid" ] || fail "round $r: no server pid in /run/ucow/dev$id.json"
	fio --section=r$r jobs.fio >fio-$r.out 2>&1 &
	fpid=$!
	delay=$((200 + RANDOM % 1200))	# ms; the write phase takes about 1.4 s
	sleep "$((delay / 1000)).$(printf %03d $((delay % 1000)))"
	kill -0 $fpid 2>/dev/null && inflight=$((inflight + 1))
	kill -9 "$pid" || fail "round $r: kill -9 $pid"
	n=0
	while kill -0 "$pid" 2>/dev/null; do
		n=$((n + 1))
		[ $n -lt 100 ] || fail "round $r: server $pid still alive 10 s after kill -9"
		sleep 0.1
	done
	[ -b "$dev" ] || fail "round $r: $dev went away although recoverable"
	new=$(ucow dev recover "$id") || fail "round $r: recover exited with status $?"
	[ "$new" = "$dev" ] || fail "round $r: recover printed '$new'"
	wait $fpid
	rc=$?
	errs=$(grep -c "verify: bad\|bad magic\|crc32c: verify failed" fio-$r.out)
	echo "round $r: killed after ${delay} ms, fio exit $rc, verify errors $errs"
	[ $rc = 0 ] && [ "$errs" = 0 ] || { cat fio-$r.out; fail "round $r: fio failed across the kill and recovery"; }
	grep -q 'READ: bw=' fio-$r.out || { cat fio-$r.out; fail "round $r: fio verified nothing"; }
done
echo "$ROUNDS rounds in $((SECONDS - t0)) s; $inflight kills while fio was running"
[ $inflight -ge $((ROUNDS / 2)) ] || fail "only $inflight of $ROUNDS kills hit fio while it ran"
# one section at a time, as written (fio seeds a job's random offsets by its job number)
for r in $(seq 1 $ROUNDS); do
	fio --verify_only --section=r$r jobs.fio >verify-$r.out 2>&1 ||
		{ cat verify-$r.out; fail "verify-only pass over round $r's region failed after all the kills"; }
	grep -q 'READ: bw=' verify-$r.out || { cat verify-$r.out; fail "verify-only of round $r read nothing"; }
done
echo "verify-only pass over the $ROUNDS regions: no error"
must ucow dev del "$id"
id=""
must ucow check img.ucow
pass
