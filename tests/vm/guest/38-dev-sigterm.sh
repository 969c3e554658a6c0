#!/bin/sh
# SIGTERM to the server (and SIGINT to a --foreground server) shuts down clean: the device
# goes away, the state file and socket are removed, the image is marked clean.
# vm-timeout: 200
. "$VM_LIB"
need_ucow
trap 'cd /; rm -rf "$VM_TMP"' EXIT

wait_gone() {	# wait_gone PID DEV
	_n=0
	while kill -0 "$1" 2>/dev/null || [ -e "$2" ]; do
		_n=$((_n + 1))
		[ $_n -lt 200 ] || fail "server $1 / $2 still there 20 s after the signal"
		sleep 0.1
	done
}
must ucow create -q disk.ucow 128M
dev=$(ucow dev add disk.ucow) || fail "dev add exited with status $?"
id=${dev#/dev/ublkb}
pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' /run/ucow/dev$id.json)
must dd if=/dev/urandom of="$dev" bs=1M count=16 oflag=direct
ucow info disk.ucow | grep dirty
must kill -TERM "$pid"
wait_gone "$pid" "$dev"
[ ! -e /dev/ublkc$id ] || fail "/dev/ublkc$id left behind"
[ ! -e /run/ucow/dev$id.json ] || fail "state file left behind"
[ ! -e /run/ucow/dev$id.sock ] || fail "socket left behind"
ucow info disk.ucow | tee info.out
grep -q "dirty: false" info.out || fail "image not closed clean after SIGTERM"
must ucow check disk.ucow

# foreground: the path on stdout, SIGINT stops it
ucow dev add --foreground disk.ucow >fg.out 2>fg.err &
fpid=$!
n=0
while ! grep -q /dev/ublkb fg.out; do
	n=$((n + 1))
	[ $n -lt 100 ] || { cat fg.err; fail "--foreground never printed the device"; }
	sleep 0.1
done
dev=$(cat fg.out)
[ "$(wc -l <fg.out)" = 1 ] || fail "--foreground printed more than the device path"
[ -b "$dev" ] || fail "$dev is not a block device"
must dd if="$dev" of=/dev/null bs=1M count=4 iflag=direct
kill -INT $fpid
wait $fpid
rc=$?
[ $rc = 0 ] || { cat fg.err; fail "--foreground server exited with $rc after SIGINT"; }
[ ! -e "$dev" ] || fail "$dev still there after SIGINT"
grep -q "dirty: false" <<EOT || fail "image not clean after SIGINT"
$(ucow info disk.ucow)
EOT
pass
