#!/bin/sh
# Every bad input gives one clear "ucow: ..." line on stderr, a non-zero exit, and leaves
# nothing behind (no ublk device, no state file, no server).
# vm-timeout: 200
. "$VM_LIB"
need_ucow
trap 'cd /; rm -rf "$VM_TMP"' EXIT

nproc_ucow() { for _c in /proc/[0-9]*/comm; do cat "$_c" 2>/dev/null; done | grep -cx ucow; }
snapshot() { ls /dev | grep -c '^ublk[bc]'; ls /run/ucow 2>/dev/null | grep -c 'json$'; nproc_ucow; }
before=$(snapshot)
bad() {	# bad WHAT EXPECTED-REGEX CMD...
	_w=$1 _re=$2
	shift 2
	"$@" >out.txt 2>err.txt && fail "$_w: '$*' succeeded"
	echo "$_w: $(cat err.txt)"
	[ ! -s out.txt ] || fail "$_w: printed '$(cat out.txt)' on stdout"
	[ "$(wc -l <err.txt)" = 1 ] || fail "$_w: $(wc -l <err.txt) lines on stderr"
	grep -qE "^ucow: .*($_re)" err.txt || fail "$_w: unexpected message '$(cat err.txt)'"
	sleep 0.2
	[ "$(snapshot)" = "$before" ] || fail "$_w: left something behind: $(ls /dev | grep ublk) $(ls /run/ucow) $(nproc_ucow) ucow processes"
	return 0
}
must ucow create -q good.ucow 64M
must truncate -s 64M plain.raw
printf 'UCOW this is not really an image' >junk.ucow
truncate -s 1M junk.ucow
cp good.ucow corrupt.ucow
dd if=/dev/urandom of=corrupt.ucow bs=1 count=64 seek=4128 conv=notrunc 2>/dev/null  # inside the header

bad missing-file "No such file" ucow dev add missing.ucow
bad raw-as-cow "not a ucow|magic|format" ucow dev add plain.raw
bad junk "not a ucow|magic|corrupt|format" ucow dev add junk.ucow
bad corrupt "not a ucow|magic|corrupt|checksum|format" ucow dev add corrupt.ucow
bad queues-0 "queue count" ucow dev add -q 0 good.ucow
bad queues-x "queue count" ucow dev add -q two good.ucow
bad depth-0 "depth" ucow dev add -d 0 good.ucow
bad depth-big "depth" ucow dev add -d 5000 good.ucow
bad block-size "block size" ucow dev add --block-size 1024 good.ucow
bad target "unknown target" ucow dev add -t vmdk good.ucow
bad null-size "size" ucow dev add -t null
bad no-file "FILE" ucow dev add
bad no-driver "not loaded|ublk-control" env UCOW_UBLK_CONTROL=/nonexistent ucow dev add good.ucow
bad no-driver-list "not loaded|ublk-control" env UCOW_UBLK_CONTROL=/nonexistent ucow dev list
bad del-missing "no device" ucow dev del 42
bad del-bad "invalid device" ucow dev del foo
bad recover-missing "no state" ucow dev recover 42
bad stats-missing "no served device" ucow dev stats 42

# a device ID in use; the image locked by another server
dev=$(ucow dev add -n 3 good.ucow) || fail "dev add -n 3 failed"
before=$(snapshot)
must truncate -s 64M other.raw
bad id-in-use "already exists" ucow dev add -n 3 -t raw other.raw
bad locked "lock|busy|in use" ucow dev add -t cow good.ucow
must ucow dev del 3
pass
