#!/bin/sh
# resize: grow (the new area reads zeros), relative sizes (+ and -), a shrink refused over
# data and done with --shrink, snapshots keeping their size, raw files, errors (missing file,
# bad sizes, an image in use by another writer), info's JSON size, and a differential
# against qemu-img on qcow2 (tests/cli/resizediff.py).
. "$CLI_LIB"
vsize() { # the virtual size `ucow info --output=json` gives
	$UCOW info --output=json "$@" | $PY -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'
}

expect_ok $UCOW resize --help
for o in '-q' '-f FMT' '--shrink' '--help' '\[+|-\]SIZE'; do
	grep -q -- "$o" out || fail "--help does not list $o"
done

# grow: "Image resized.", the data stays, the new area reads zeros, info says the new size
expect_ok $UCOW create -q -o chunk_size=64k a.img 3M
expect_ok $UCOW io -c 'write -P 1 0 3M' a.img
expect_ok $UCOW resize a.img 10M
grep -qx 'Image resized.' out || fail "no 'Image resized.' line: $(cat out)"
expect_ok $UCOW info --output=json a.img
json_ok out
$PY -c 'import json; d = json.load(open("out")); assert d["virtual-size"] == 10485760, d' ||
	fail "info --output=json after the grow: $(head -c 300 out)"
expect_ok $UCOW io -c 'read -P 1 0 3M' -c 'read -P 0 3M 7M' a.img
expect_ok $UCOW check a.img

# relative sizes with suffixes; -q prints nothing; options after the operands
expect_ok $UCOW resize -q a.img +1M
[ ! -s out ] || fail "-q printed: $(cat out)"
[ "$(vsize a.img)" -eq 11534336 ] || fail "+1M: $(vsize a.img)"
expect_ok $UCOW resize a.img -1M
[ "$(vsize a.img)" -eq 10485760 ] || fail "-1M: $(vsize a.img)"
expect_ok $UCOW resize a.img 12582912 -q
[ "$(vsize a.img)" -eq 12582912 ] || fail "12582912: $(vsize a.img)"
# an odd size: the format asks for no multiple of anything
expect_ok $UCOW resize -q a.img 3146001
expect_ok $UCOW io -c 'write -P 2 3145000 1001' a.img
expect_ok $UCOW resize -q a.img +2M
expect_ok $UCOW io -c 'read -P 1 0 3145000' -c 'read -P 2 3145000 1001' -c 'read -P 0 3146001 2097152' a.img
expect_ok $UCOW check a.img

# a shrink over data: one line, exit 1, nothing changed; with --shrink it is done; a regrow
# reads zeros; a shrink over nothing needs no --shrink
expect_err 1 "a\.img: data lies past the new end \(at byte 2097152\); --shrink drops it" \
	$UCOW resize a.img 2M
[ "$(vsize a.img)" -eq 5243153 ] || fail "a refused shrink changed the size: $(vsize a.img)"
expect_ok $UCOW io -c 'read -P 1 0 3145000' -c 'read -P 2 3145000 1001' a.img
expect_ok $UCOW resize --shrink a.img 2M
[ "$(vsize a.img)" -eq 2097152 ] || fail "--shrink 2M: $(vsize a.img)"
expect_ok $UCOW check a.img
expect_ok $UCOW resize a.img 4M
expect_ok $UCOW io -c 'read -P 1 0 2M' -c 'read -P 0 2M 2M' a.img
expect_ok $UCOW resize a.img 3M
expect_ok $UCOW check a.img

# snapshots keep their own size; applying one gives the image that size
expect_ok $UCOW create -q -o chunk_size=64k s.img 4M
expect_ok $UCOW io -c 'write -P 3 0 4M' s.img
expect_ok $UCOW snapshot -c big s.img
expect_ok $UCOW resize --shrink s.img 1M
expect_ok $UCOW snapshot -c small s.img
expect_ok $UCOW snapshot -l --output=json s.img
$PY -c '
import json
v = {s["name"]: s["virtual-size"] for s in json.load(open("out"))}
assert v == {"big": 4194304, "small": 1048576}, v' || fail "snapshot sizes: $(cat out)"
expect_ok $UCOW resize s.img 8M
expect_ok $UCOW convert -l big s.img big.raw
[ "$(stat -c %s big.raw)" -eq 4194304 ] || fail "snapshot big is $(stat -c %s big.raw) bytes"
expect_ok $UCOW io -f raw -c 'read -P 3 0 4M' big.raw
expect_ok $UCOW snapshot -a big s.img
[ "$(vsize s.img)" -eq 4194304 ] || fail "apply big: $(vsize s.img)"
expect_ok $UCOW io -c 'read -P 3 0 4M' s.img
expect_ok $UCOW snapshot -a small s.img
[ "$(vsize s.img)" -eq 1048576 ] || fail "apply small: $(vsize s.img)"
expect_ok $UCOW check s.img

# raw files: the file's size; never probed; any shrink needs --shrink
expect_ok $UCOW create -q -f raw r.raw 1M
expect_ok $UCOW io -f raw -c 'write -P 5 0 1M' r.raw
expect_err 1 "r\.raw: not a ucow image" $UCOW resize r.raw 2M
expect_ok $UCOW resize -f raw r.raw 2M
[ "$(stat -c %s r.raw)" -eq 2097152 ] || fail "raw grow: $(stat -c %s r.raw) bytes"
expect_ok $UCOW io -f raw -c 'read -P 5 0 1M' -c 'read -P 0 1M 1M' r.raw
expect_err 1 "r\.raw: shrinking a raw image drops whatever lies past the new end; --shrink allows it" \
	$UCOW resize -f raw r.raw 512k
[ "$(stat -c %s r.raw)" -eq 2097152 ] || fail "a refused raw shrink changed the file"
expect_ok $UCOW resize -f raw --shrink r.raw -1536k
[ "$(stat -c %s r.raw)" -eq 524288 ] || fail "raw shrink: $(stat -c %s r.raw) bytes"
expect_ok $UCOW io -f raw -c 'read -P 5 0 512k' r.raw

# errors: one line, exit 1, the image as it was
expect_err 1 "missing\.img: No such file or directory" $UCOW resize missing.img 1M
no_file missing.img
expect_err 1 "resize: missing SIZE" $UCOW resize a.img
expect_err 1 "resize: missing FILE" $UCOW resize
expect_err 1 "resize: too many arguments" $UCOW resize a.img b.img 1M
expect_err 1 "resize: invalid size 'abc'" $UCOW resize a.img abc
expect_err 1 "resize: invalid size '1X'" $UCOW resize a.img 1X
expect_err 1 "resize: invalid size '\+'" $UCOW resize a.img +
expect_err 1 "resize: invalid size '99999999999T': size too large" $UCOW resize a.img 99999999999T
expect_err 1 "resize: unknown format 'vdi'" $UCOW resize -f vdi a.img 1M
expect_err 1 "resize: unknown option '-x'" $UCOW resize -x a.img 1M
expect_err 1 "a\.img: the size must be greater than zero" $UCOW resize a.img 0
expect_err 1 "a\.img: the size must stay greater than zero" $UCOW resize a.img -3M
expect_err 1 "a\.img: 3145728 \+ 18446744073709551615 bytes is too large" \
	$UCOW resize a.img +18446744073709551615
expect_err 1 "a\.img: 2199023255552 bytes is too large for chunk size 65536 .*at most 1099511627776 bytes" \
	$UCOW resize a.img 2T
[ "$(vsize a.img)" -eq 3145728 ] || fail "an error changed the size: $(vsize a.img)"
# in use by another writer (an OFD-compatible lock held by another process)
$PY -c '
import fcntl, sys, time
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)' a.img >lock.out &
lockpid=$!
trap 'kill $lockpid 2>/dev/null' EXIT
wait_locked
expect_err 1 "a\.img: image is in use by another process" $UCOW resize a.img 8M
kill $lockpid
wait $lockpid 2>/dev/null
[ "$(vsize a.img)" -eq 3145728 ] || fail "a refused resize changed the size"
expect_ok $UCOW check a.img

# the same random history of writes and resizes through qemu on qcow2: identical raw bytes
command -v qemu-io >/dev/null && command -v qemu-img >/dev/null ||
	fail "qemu-io / qemu-img not installed (make deps)"
$PY "$CLI_DIR/resizediff.py" --ucow "$UCOW" --seed 11 --steps 48 || fail "resizediff seed 11"
$PY "$CLI_DIR/resizediff.py" --ucow "$UCOW" --seed 12 --steps 48 --chunk 1M || fail "seed 12"
$PY "$CLI_DIR/resizediff.py" --ucow "$UCOW" --seed 13 --steps 48 --base 6291456 \
	--start 2098688 || fail "resizediff seed 13 (over a raw base)"
ok "resize"
