#!/bin/sh
# ublk's own spellings on the real driver (issue 13, item 7): add -t cow -f FILE and
# -t loop -f FILE, list -n ID (one device; an error for none), list -v (size, block size,
# options, state file), stats -n ID, del -n ID, recover -n ID after a kill -9, del -a; a
# raw file served as cow is one line naming -t raw. (Parsing and --help: tests/cli/t_habits.)
# vm-timeout: 200
. "$VM_LIB"
need_ucow
trap 'ucow dev del -a 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT

must ucow create -q disk.ucow 64M
must truncate -s 64M plain.raw
d1=$(ucow dev add -t cow -f disk.ucow -n 5) || fail "add -t cow -f FILE -n 5 exited $?"
[ "$d1" = /dev/ublkb5 ] || fail "add -n 5 printed '$d1'"
d2=$(ucow dev add -t loop -f plain.raw) || fail "add -t loop -f FILE exited $?"
id2=${d2#/dev/ublkb}
must qemu-io -f raw -c "write -P 0x33 0 1M" "$d1"
must qemu-io -f raw -c "write -P 0x44 0 1M" "$d2"

# list -n: that device only; -v adds size, block size, options, state file
ucow dev list -n 5 >l.txt || fail "list -n 5 exited $?"
cat l.txt
[ "$(grep -c '^[0-9]' l.txt)" = 1 ] && grep -qE "^5 +live +cow .*/disk.ucow" l.txt ||
	fail "list -n 5 does not show device 5 alone"
ucow dev list -n "$id2" | grep -qE "^$id2 +live +raw .*/plain.raw" || fail "-t loop is not served as raw"
ucow dev list -v -n 5 >v.txt || fail "list -v exited $?"
cat v.txt
grep -q "size: 67108864 bytes (64 MiB), logical block: 512 bytes, largest request: " v.txt &&
	grep -q "options: read-write" v.txt && grep -q "state file: .*/dev5.json, socket: " v.txt ||
	fail "list -v lacks size, options or state file"
[ "$(ucow dev list -v | grep -c '^     size: ')" = 2 ] || fail "list -v: not one size line per device"
ucow dev list -n 42 >out.txt 2>err.txt && fail "list -n 42 succeeded without a device 42"
[ ! -s out.txt ] && grep -qx "ucow: no device 42" err.txt || fail "list -n 42: '$(cat err.txt)'"
[ "$(ucow dev list -n 5 --output=json | grep -c '"id": ')" = 1 ] || fail "list -n 5 --output=json"
ucow dev stats -n 5 | grep -q write || fail "stats -n 5"

# del -n; the data is in the image
must ucow dev del -n 5
[ ! -e /dev/ublkb5 ] || fail "del -n 5 left /dev/ublkb5"
must ucow check disk.ucow
must ucow io -c "read -P 0x33 0 1M" disk.ucow

# recover -n after the server was killed
d3=$(ucow dev add --recoverable -t cow -f disk.ucow) || fail "add --recoverable exited $?"
id3=${d3#/dev/ublkb}
pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' /run/ucow/dev$id3.json)
must qemu-io -f raw -c "write -P 0x55 1M 1M" "$d3"
must kill -9 "$pid"
sleep 1
[ -b "$d3" ] || fail "$d3 went away although recoverable"
new=$(ucow dev recover -n "$id3") || fail "recover -n $id3 exited $?"
[ "$new" = "$d3" ] || fail "recover -n printed '$new'"
must qemu-io -f raw -c "read -P 0x55 1M 1M" -c "read -P 0x33 0 1M" "$d3"

# a raw file as cow: one line, naming dev add's -t (another file: plain.raw is served)
must truncate -s 16M other.raw
ucow dev add -t cow -f other.raw >out.txt 2>err.txt && fail "a raw file was served as cow"
cat err.txt
[ ! -s out.txt ] && [ "$(wc -l <err.txt)" = 1 ] &&
	grep -q "other.raw: not a ucow image (no ucow magic); use -t raw for a raw file" err.txt ||
	fail "raw as cow: '$(cat err.txt)'"

# del -a: every device
must ucow dev del -a
[ ! -e "$d2" ] && [ ! -e "$d3" ] || fail "del -a left a device"
[ -z "$(ls /run/ucow 2>/dev/null | grep 'json$')" ] || fail "del -a left state files"
must ucow check disk.ucow
pass
