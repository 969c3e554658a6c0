#!/bin/sh
# create -o preallocation=off|metadata|falloc|full (qemu-img's meanings) for ucow and raw, and
# convert -O ucow -o preallocation=: every chunk mapped (metadata: no data space; falloc:
# reserved; full: written), the content unchanged (zeros, or an overlay's backing data),
# check clean, writes and reads as usual, snapshots over it; raw: falloc and full reserve
# or write the space, metadata refused; bad values refused with one line, nothing left.
. "$CLI_LIB"
M=1048576

alloc() { echo $(($(stat -c %b "$1") * 512)); }	# bytes the file holds on disk

for m in off metadata falloc full; do
	expect_ok $UCOW create -q -o preallocation=$m p-$m.ucow 64M
	expect_ok $UCOW check p-$m.ucow
	expect_ok $UCOW info --output=json p-$m.ucow
	want=64; [ $m = off ] && want=0
	$PY - out $want <<'PY' || fail "$m: info"
import json, sys
v = json.load(open(sys.argv[1]))
assert v['format-specific']['data']['allocated-chunks'] == int(sys.argv[2]), v
PY
	a=$(alloc p-$m.ucow)
	case $m in
	off|metadata) [ "$a" -lt $((2 * M)) ] || fail "$m: $a bytes on disk" ;;
	falloc|full) [ "$a" -ge $((64 * M)) ] || fail "$m: only $a bytes on disk" ;;
	esac
	expect_ok $UCOW io -c 'read -P 0 0 64M' p-$m.ucow
	expect_ok $UCOW io -c 'write -P 7 3M 12k' -c 'write -P 8 63M 1M' -c 'read -P 7 3M 12k' \
		-c 'read -P 0 0 3M' -c 'read -P 8 63M 1M' p-$m.ucow
	expect_ok $UCOW snapshot -c s p-$m.ucow
	expect_ok $UCOW io -c 'write -P 9 3M 4k' -c 'read -P 9 3M 4k' p-$m.ucow
	expect_ok $UCOW check p-$m.ucow
	expect_ok $UCOW convert -l s -O raw p-$m.ucow s.raw
	expect_ok $UCOW io -f raw -c 'read -P 7 3M 12k' -c 'read -P 0 4M 59M' s.raw
	ok "ucow preallocation=$m: $a bytes on disk, reads zeros, writes, snapshots"
done

# an overlay with its chunks preallocated still reads its backing file's data
expect_ok $UCOW create -q base.ucow 16M
expect_ok $UCOW io -c 'write -P 3 0 16M' base.ucow
expect_ok $UCOW create -q -o preallocation=metadata -b base.ucow -F ucow ov.ucow
expect_ok $UCOW compare base.ucow ov.ucow
expect_ok $UCOW io -c 'write -P 4 1M 4k' -c 'read -P 3 0 1M' -c 'read -P 4 1M 4k' \
	-c 'read -P 3 1052672 1M' ov.ucow
expect_ok $UCOW check ov.ucow
ok "a preallocated overlay reads through to its backing file"

# convert -O ucow -o preallocation=
expect_ok $UCOW convert -O ucow -o preallocation=falloc base.ucow conv.ucow
expect_ok $UCOW compare base.ucow conv.ucow
[ "$(alloc conv.ucow)" -ge $((16 * M)) ] || fail "convert -o preallocation=falloc: not reserved"
ok "convert -o preallocation=falloc"

# raw
expect_ok $UCOW create -q -f raw -o preallocation=off r-off.raw 8M
expect_ok $UCOW create -q -f raw -o preallocation=falloc r-falloc.raw 8M
expect_ok $UCOW create -q -f raw -o preallocation=full r-full.raw 8M
[ "$(alloc r-off.raw)" -lt $M ] || fail "raw off is not sparse"
for m in falloc full; do
	[ "$(alloc r-$m.raw)" -ge $((8 * M)) ] || fail "raw $m: $(alloc r-$m.raw) bytes on disk"
	cmp r-$m.raw r-off.raw || fail "raw $m does not read as zeros"
done
ok "raw: off sparse, falloc and full hold their space, all zeros"

# refusals
expect_err 1 "invalid preallocation 'metadata' \(off, falloc or full for raw\)" \
	$UCOW create -f raw -o preallocation=metadata x.raw 1M
expect_err 1 "invalid preallocation 'some'" $UCOW create -o preallocation=some x.ucow 1M
expect_err 1 "invalid preallocation ''" $UCOW create -o preallocation x.ucow 1M
expect_err 1 "format raw takes no -o options but preallocation=" $UCOW create -f raw -o chunk_size=64k x.raw 1M
expect_err 1 "invalid preallocation 'x'" $UCOW convert -O ucow -o preallocation=x base.ucow x.ucow
no_file x.raw x.ucow
expect_ok $UCOW create -o help x.ucow
grep -q 'preallocation=MODE' out || fail "-o help does not list preallocation"
ok "bad preallocation values refused with one line"
