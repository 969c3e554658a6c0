#!/bin/sh
# ucow io: exact output lines, -v dumps like qemu-io's, pattern checks, read-only opens,
# raw files, big and empty requests, every I/O backend.
. "$CLI_LIB"

expect_ok $UCOW create -q -o chunk_size=64k io.img 32M
run $UCOW io -c 'write -P 0x12 0 4k' -c 'write 1k 2k' -c 'read -P 18 0 1k' \
	-c 'read -P 0xcd 1k 2k' -c 'write -z 100 7' -c 'discard 64k 64k' -c flush \
	-c 'read -P 0x12 90 20' -c 'read -P 0 64k 64k' -c 'write -P 022 0 0' io.img
[ $st -eq 1 ] || fail "a failed pattern check must make io exit 1 (got $st)"
cat >want <<'W'
wrote 4096/4096 bytes at offset 0
wrote 2048/2048 bytes at offset 1024
read 1024/1024 bytes at offset 0
read 2048/2048 bytes at offset 1024
wrote 7/7 bytes at offset 100
discard 65536/65536 bytes at offset 65536
flushed
Pattern verification failed at offset 100, 20 bytes
read 20/20 bytes at offset 90
read 65536/65536 bytes at offset 65536
wrote 0/0 bytes at offset 0
W
diff -u want out || fail "io output differs from the expected lines"
[ ! -s err ] || fail "stderr: $(cat err)"

# -v: the same dump as qemu-io's
expect_ok $UCOW io -c 'write -P 0x41 3 9' -c 'write -P 0x7e 20 5' io.img
expect_ok $UCOW io -c 'read -v 0 40' -c 'read -v 4000 37' io.img
grep -v '^read ' out >mine
expect_ok $UCOW convert io.img io.raw
qemu-io -f raw -c 'read -v 0 40' -c 'read -v 4000 37' io.raw | grep -E '^[0-9a-f]{8}:' >theirs
[ -s theirs ] || fail "qemu-io printed no dump"
diff -u theirs mine || fail "-v dump differs from qemu-io's"

# reads only: the image is opened read-only (a shared lock is enough)
$PY -c '
import fcntl, sys, time
f = open(sys.argv[1], "rb")
fcntl.lockf(f, fcntl.LOCK_SH)
print("locked", flush=True)
time.sleep(60)' io.img >lock.out &
lockpid=$!
trap 'kill $lockpid 2>/dev/null' EXIT
wait_locked
expect_ok $UCOW io -c 'read -P 0x41 3 9' -c 'read 0 1M' io.img
expect_ok $UCOW info io.img
expect_ok $UCOW convert io.img io2.raw
expect_ok $UCOW check io.img
expect_err 1 "io.img: image is in use by another process" $UCOW io -c 'read 0 1' -c flush io.img
expect_err 1 "io.img: image is in use by another process" $UCOW io -c 'write 0 1' io.img
kill $lockpid
wait $lockpid 2>/dev/null

# a raw file through -f raw
expect_ok $UCOW create -q -f raw r.raw 1M
expect_ok $UCOW io -f raw -c 'write -P 0x33 10 5' -c 'read -P 0x33 10 5' -c 'read -P 0 15 100' r.raw
[ "$(od -An -tx1 -j8 -N9 r.raw | tr -d ' \n')" = "000033333333330000" ] || fail "raw file content: $(od -An -tx1 -j8 -N9 r.raw)"
[ "$(stat -c %s r.raw)" -eq 1048576 ] || fail "raw file size changed"

# big requests (split inside the tool), every backend
for be in uring aio sync; do
	p=$(printf '%d' "'$(echo $be | cut -c1)")
	expect_ok $UCOW io -i $be -c "write -P $p 1000 20M" -c "read -P $p 1000 20M" -c flush io.img
	expect_ok $UCOW io -i $be -c "read -P $p 1000 20M" -c "read -P 0 $((20 * 1048576 + 1000)) 1M" io.img
done
expect_ok $UCOW io -c 'write -z 0 32M' -c 'read -P 0 0 32M' io.img
expect_ok $UCOW check io.img
ok "io basics"
