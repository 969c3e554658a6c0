#!/bin/sh
# A request the image cannot satisfy completes with that error and the server keeps
# serving: a 64 MiB image on a 24 MiB file system runs out of space; writes past that fail
# (ENOSPC reaches the writer as an I/O error), reads of what was written still work, the
# device stays, and del still closes the image.
# vm-timeout: 200
. "$VM_LIB"
need_ucow

mkdir -p small
must mount -t tmpfs -o size=24m tmpfs small
trap 'ucow dev del --all 2>/dev/null; umount small 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
must ucow create -q small/d.ucow 64M
dev=$(ucow dev add small/d.ucow) || fail "dev add failed"
must qemu-io -f raw -c "write -P 0x77 0 4M" "$dev"
dd if=/dev/urandom of="$dev" bs=1M seek=8 count=40 oflag=direct 2>dd.err && fail "40 MiB fit in 24 MiB"
cat dd.err
[ -b "$dev" ] || fail "the device went away after a failed write"
qemu-io -f raw -c "read -P 0x77 0 4M" "$dev" | tee q.out
grep -q "read 4194304/4194304" q.out || fail "reads stopped working after the failed writes"
ucow dev stats "$dev" | tee stats.out
awk '$1 == "write" && $4 > 0 { f = 1 } END { exit !f }' stats.out || fail "stats counted no write errors"
rm -f small/filler 2>/dev/null
must ucow dev del "$dev"
pass
