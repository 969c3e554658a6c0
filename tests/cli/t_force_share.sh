#!/bin/sh
# -U (force share) of info, check, map, compare, convert and measure on an image a running
# ucow io holds read-write (holder.py: it wrote and flushed, and stays blocked with the image
# locked and dirty): without -U every command is refused; with -U each one opens it, shows
# the writer's flushed writes (its journal replayed in memory), warns in one line that the
# result may be inconsistent, and changes nothing. A writer of a backing file counts too;
# without a writer, -U says nothing more than the command would.
. "$CLI_LIB"

expect_ok $UCOW create -q -f raw base.raw 4M
expect_ok $UCOW io -f raw -c 'write -P 1 0 4M' base.raw
expect_ok $UCOW create -q -o chunk_size=64k -b base.raw -F raw held.img
expect_ok $UCOW io -c 'write -P 2 0 64k' held.img
expect_ok $UCOW create -q -b held.img -F ucow ov.img
# what held.img will read once the writer has run its commands
expect_ok $UCOW convert held.img want.raw
expect_ok $UCOW io -f raw -c 'write -P 3 1M 128k' -c 'write -z 2M 64k' -c 'write -P 4 3M 1000' want.raw

$PY "$CLI_DIR/holder.py" "$UCOW" held.img ready 'write -P 3 1M 128k' 'write -z 2M 64k' \
	'flush' 'write -P 4 3M 1000' 'flush' &
holder=$!
trap 'kill $holder 2>/dev/null' EXIT
for i in $(seq 300); do [ -s ready ] && break; sleep 0.1; done
[ "$(cat ready)" = ready ] || fail "the writer did not get going: $(cat ready)"
cp held.img held.before

# without -U: the writer keeps everyone out
expect_err 1 "held.img: image is in use by another process" $UCOW map held.img
expect_err 1 "held.img: image is in use by another process" $UCOW info held.img
expect_err 1 "held.img: image is in use by another process" $UCOW check held.img
expect_err 2 "held.img: image is in use by another process" $UCOW compare -F raw held.img want.raw
expect_err 1 "held.img: image is in use by another process" $UCOW convert held.img copy.raw
expect_err 1 "held.img: image is in use by another process" $UCOW measure held.img
expect_err 1 "held.img: image is in use by another process" $UCOW map ov.img
no_file copy.raw

# shared STATUS CMD...: exits STATUS with exactly the one warning line on stderr
shared() {
	want=$1
	shift
	run "$@"
	[ $st -eq "$want" ] || fail "'$*' exited $st, expected $want: $(cat err)"
	[ "$(wc -l <err)" -eq 1 ] || fail "'$*' wrote $(wc -l <err) lines to stderr: $(cat err)"
	grep -q '^ucow: .*: warning: another process has the image open for writing (-U: opened without a lock); what is shown may be inconsistent$' err ||
		fail "'$*': not the warning: $(cat err)"
}
shared 0 $UCOW map -U --output=json held.img
grep -q '"start": 1048576, "length": 131072, "depth": 0, "present": true, "zero": false, "data": true' out ||
	fail "map -U does not show the writer's flushed write: $(cat out)"
grep -q '"start": 2097152, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false }' out ||
	fail "map -U does not show the writer's zeroed chunk: $(cat out)"
shared 0 $UCOW map --force-share ov.img
grep -q '^0x100000  *0x20000  *0x[0-9a-f]*  *\./held.img$\|^0x100000  *0x20000  *0x[0-9a-f]*  *held.img$' out ||
	fail "map -U of an overlay of the held image: $(cat out)"
shared 0 $UCOW info -U held.img
grep -qx 'dirty: true' out || fail "info -U: not dirty: $(cat out)"
shared 0 $UCOW info -U --backing-chain --output=json ov.img
json_ok out
shared 0 $UCOW check -U held.img
grep -q 'No errors were found' out || fail "check -U: $(cat out)"
shared 0 $UCOW compare -U -F raw held.img want.raw
grep -qx 'Images are identical.' out || fail "compare -U: $(cat out)"
shared 0 $UCOW compare -U ov.img -F raw want.raw
shared 0 $UCOW convert -U held.img copy.raw
cmp copy.raw want.raw || fail "convert -U: the copy is not the writer's flushed state"
shared 0 $UCOW convert -U -O ucow held.img copy.img
shared 0 $UCOW measure -U --output=json held.img
json_ok out
$PY -c 'import json, os, sys; d = json.load(open("out")); sys.exit(d["required"] != os.stat("copy.img").st_size)' ||
	fail "measure -U: $(cat out), the copy is $(stat -c %s copy.img) bytes"
cmp held.img held.before || fail "a -U command changed the held image"
# -U stays read-only whatever else is asked
expect_err 1 "held.img: image is in use" $UCOW io -c 'write 0 1' held.img

kill $holder
wait $holder 2>/dev/null
trap - EXIT
# no writer: nothing to warn about, and the same answers as without -U (a plain open first:
# it waits, as every open does, for the lock of a killed writer's files to go)
expect_ok $UCOW info held.img
expect_ok $UCOW map -U --output=json held.img
cp out u.json
expect_ok $UCOW map --output=json held.img
cmp out u.json || fail "map -U and map disagree without a writer"
expect_ok $UCOW compare -U -F raw held.img want.raw
expect_ok $UCOW check -U held.img
expect_ok $UCOW info -U held.img
grep -qx 'dirty: true' out || fail "the killed writer left the image clean?"
# check -U of an image so corrupt it does not open, held by a writer: the verdict comes with
# the warning (a writer caught half way through a change can look like that)
expect_ok $UCOW create -q bad.img 1M
$PY "$CLI_DIR/imgtool.py" flip bad.img 300
$PY "$CLI_DIR/imgtool.py" flip bad.img 4396
run $UCOW check bad.img
[ $st -eq 2 ] || fail "a header broken in both slots: check exited $st"
$PY -c '
import fcntl, sys, time
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
open("locked", "w").write("1")
time.sleep(60)' bad.img &
locker=$!
trap 'kill $locker 2>/dev/null' EXIT
for i in $(seq 50); do [ -s locked ] && break; sleep 0.1; done
expect_err 1 "bad.img: image is in use" $UCOW check bad.img
shared 2 $UCOW check -U bad.img
grep -q '^ERROR: corrupt image' out || fail "check -U of a broken image: $(cat out)"
kill $locker
wait $locker 2>/dev/null
trap - EXIT

expect_ok $UCOW --help
for c in info check map compare convert measure; do
	expect_ok $UCOW $c --help
	grep -q -- '-U, --force-share' out || fail "$c --help does not list -U"
done
ok "force share"
