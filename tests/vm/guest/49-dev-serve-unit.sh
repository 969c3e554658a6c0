#!/bin/sh
# ucow@NAME.service's commands run as systemd runs them (not run by this session: written
# for the bed): ExecStart `ucow dev serve NAME` in the foreground from NAME.conf; the device
# is named (dev udev-name, and the udev rule run by `udevadm test` makes
# /dev/disk/by-ucow/NAME); a second serve of NAME is refused; a
# crash (kill -9) followed by the restart (the same ExecStart) recovers the same device with
# the data written before; stop (SIGTERM) deletes the device and leaves the image clean.
# vm-timeout: 240
. "$VM_LIB"
need_ucow

spid=""
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; ucow dev del --all 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
must ucow create -q vm1.ucow 64M
mkdir -p conf
printf '# as in /etc/ucow\nimage = %s/vm1.ucow\nqueues = 2\n' "$VM_TMP" >conf/vm1.conf

serve() {	# serve: ExecStart=ucow dev serve vm1, in the background as systemd runs it
	ucow dev serve --config-dir conf vm1 >serve.out 2>serve.err &
	spid=$!
	n=0
	until grep -q '^/dev/ublkb' serve.out; do
		[ $n -lt 200 ] || { cat serve.err; fail "serve: no device within 20 s"; }
		sleep 0.1
		n=$((n + 1))
	done
	dev=$(cat serve.out)
	id=${dev#/dev/ublkb}
}
serve
first=$dev
[ -b "$dev" ] || fail "$dev is not a block device"
[ "$(ucow dev udev-name "$id")" = vm1 ] || fail "udev-name $id is not vm1"
# the udev rule itself, as udev runs it (udevadm test: the rules, PROGRAM, the symlink; the
# bed has no udevd), with the rule installed for ucow in /usr/bin
mkdir -p /run/udev/rules.d
sed 's|@BINDIR@|/usr/bin|' /vm/60-ucow.rules.in >/run/udev/rules.d/60-ucow.rules
udevadm test --action=change "/sys/class/block/ublkb$id" >udev.out 2>&1 ||
	{ tail -20 udev.out; fail "udevadm test failed"; }
grep -E "DEVLINKS=.*/dev/disk/by-ucow/vm1" udev.out || { tail -20 udev.out; fail "the rule made no by-ucow link"; }
[ "$(readlink -f /dev/disk/by-ucow/vm1)" = "$dev" ] || fail "/dev/disk/by-ucow/vm1 does not lead to $dev"
ucow dev list --output=json | grep -q '"recoverable": true' || fail "served device not recoverable"
ucow dev serve --config-dir conf vm1 2>err && fail "a second serve of vm1 was accepted"
grep -q 'vm1 is served already' err || fail "second serve: $(cat err)"
must dd if=/dev/urandom of=d.bin bs=64k count=16 status=none
must dd if=d.bin of="$dev" bs=64k seek=8 oflag=direct status=none

# the crash, then systemd's restart: the same ExecStart recovers instead of adding
must kill -9 "$spid"
wait "$spid" 2>/dev/null
sleep 1
[ -b "$first" ] || fail "$first went away after the crash (recoverable)"
serve
[ "$dev" = "$first" ] || fail "the restart made $dev, not a recovery of $first"
must dd if="$dev" of=r.bin bs=64k skip=8 count=16 iflag=direct status=none
cmp d.bin r.bin || fail "data written before the crash differs after the recovery"

# systemctl stop: SIGTERM, the device goes, the image is clean
must kill -TERM "$spid"
wait "$spid"
rc=$?
spid=""
[ $rc = 0 ] || fail "serve exited $rc on SIGTERM"
[ ! -e "$dev" ] || fail "$dev still there after stop"
[ ! -e "/run/ucow/dev$id.json" ] || fail "state file left after stop"
ucow info vm1.ucow | grep -q "dirty: false" || fail "image left dirty"
must ucow check vm1.ucow
pass
