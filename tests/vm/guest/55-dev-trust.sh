#!/bin/sh
# What a root-run server trusts: an image whose backing file lies outside its folder is
# refused (one line naming the image and --allow-backing-outside) and served with the flag,
# which the state file keeps for a recovery; `dev del` signals only the process the driver
# names as the server, never a pid a tampered state file names.
# vm-timeout: 200
. "$VM_LIB"
need_ucow
trap 'cd /; rm -rf "$VM_TMP"' EXIT

mkdir a b
must dd if=/dev/urandom of=a/base.raw bs=1M count=8 status=none
must ucow create -q -b ../a/base.raw -F raw b/up.ucow
ucow dev add b/up.ucow >out.txt 2>err.txt && fail "dev add of an image whose backing file is outside its folder succeeded"
echo "refused: $(cat err.txt)"
[ "$(wc -l <err.txt)" = 1 ] || fail "$(wc -l <err.txt) lines on stderr"
grep -q "lies outside the image's folder; add --allow-backing-outside" err.txt ||
	fail "unexpected message '$(cat err.txt)'"
ls /dev | grep -q '^ublkb' && fail "a device was left behind"

dev=$(ucow dev add --allow-backing-outside b/up.ucow) || fail "dev add --allow-backing-outside failed"
[ -b "$dev" ] || fail "$dev is not a block device"
id=${dev#/dev/ublkb}
must cmp "$dev" a/base.raw
grep -q '"allow-backing-outside": true' /run/ucow/dev$id.json ||
	fail "the state file does not keep --allow-backing-outside: $(cat /run/ucow/dev$id.json)"

# a state file whose pid names another process: dev del must not signal it
sleep 300 &
victim=$!
sed -i "s/\"pid\": *[0-9]*/\"pid\": $victim/" /run/ucow/dev$id.json
grep -q "\"pid\": $victim" /run/ucow/dev$id.json || fail "could not plant pid $victim in the state file"
must ucow dev del "$id"
kill -0 "$victim" 2>/dev/null || fail "dev del signalled pid $victim, which a tampered state file named"
kill "$victim"
[ -e "$dev" ] && fail "$dev is still there after dev del"
pass
