#!/bin/sh
# Internal snapshots of qcow2 images (made by qemu-img snapshot -c): listed by `ucow snapshot
# -l` (human and JSON), copied by `convert -l` (name, id, snapshot.name=, snapshot.id=) byte
# for byte as `qemu-img convert -l` copies them (at the snapshot's own size: qemu-img pads
# to the current size with zeros), also through a backing file and with compressed
# clusters; unknown snapshots, and hostile snapshot tables (huge counts, unaligned, entries
# out of bounds, a huge or misplaced L1 table) refused with one line while the current state
# still reads; snapshot -c/-a/-d refused (qcow2 is read-only in ucow).
. "$CLI_LIB"

# same SNAP FILE SIZE: ucow's copy of snapshot SNAP is qemu-img's, cut to SIZE (the rest of
# qemu-img's is zeros)
same() {
	rm -f u.raw q.raw
	expect_ok $UCOW convert -l "$1" -O raw "$2" u.raw
	qemu-img convert -l "$1" -O raw "$2" q.raw || fail "qemu-img convert -l $1"
	[ "$(stat -c %s u.raw)" = "$3" ] || fail "snapshot $1 of $2: $(stat -c %s u.raw) bytes, expected $3"
	cmp -n "$3" u.raw q.raw || fail "snapshot $1 of $2: ucow reads another content than qemu-img"
	qs=$(stat -c %s q.raw)
	[ "$qs" -le "$3" ] || cmp -n $((qs - $3)) -i "$3":0 q.raw /dev/zero ||
		fail "qemu-img's padding of snapshot $1 is not zeros"
}

expect_ok qemu-img create -q -f qcow2 -o cluster_size=4k s.qcow2 1M
expect_ok qemu-io -f qcow2 -c 'write -P 1 0 64k' -c 'write -P 9 900k 8k' s.qcow2
expect_ok qemu-img snapshot -c first s.qcow2
expect_ok qemu-io -f qcow2 -c 'write -P 2 16k 16k' -c 'write -z 900k 4k' s.qcow2
expect_ok qemu-img resize -q s.qcow2 2M
expect_ok qemu-io -f qcow2 -c 'write -P 3 1536k 64k' s.qcow2
expect_ok qemu-img snapshot -c second s.qcow2
expect_ok qemu-io -f qcow2 -c 'write -P 4 0 4k' s.qcow2

expect_ok $UCOW snapshot -l s.qcow2
grep -Eq '^1 +first +- ' out && grep -Eq '^2 +second +- ' out || fail "the list: $(cat out)"
expect_ok $UCOW snapshot -l --output=json s.qcow2
json_ok out
$PY - out <<'PY' || fail "snapshot -l --output=json"
import json, sys
v = json.load(open(sys.argv[1]))
assert [(s['id'], s['name'], s['virtual-size']) for s in v] == [(1, 'first', 1048576), (2, 'second', 2097152)], v
PY
same first s.qcow2 1048576
same second s.qcow2 2097152
same 1 s.qcow2 1048576
same snapshot.id=2 s.qcow2 2097152
same snapshot.name=first s.qcow2 1048576
expect_ok $UCOW convert -O raw s.qcow2 cur.raw
qemu-img convert -O raw s.qcow2 curq.raw && cmp cur.raw curq.raw || fail "the current state differs"
ok "list, and convert -l by name, id and qemu-img's forms, as qemu-img reads them"

# through a backing file, and compressed clusters
expect_ok qemu-img create -q -f qcow2 -o cluster_size=64k base.qcow2 4M
expect_ok qemu-io -f qcow2 -c 'write -P 5 0 4M' base.qcow2
expect_ok qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2
expect_ok qemu-io -f qcow2 -c 'write -P 6 1M 64k' ov.qcow2
expect_ok qemu-img snapshot -c s ov.qcow2
expect_ok qemu-io -f qcow2 -c 'write -P 7 1M 128k' ov.qcow2
same s ov.qcow2 4194304
expect_ok qemu-img convert -c -O qcow2 s.qcow2 c.qcow2
expect_ok qemu-img snapshot -c z c.qcow2
expect_ok qemu-io -f qcow2 -c 'write -P 8 0 1M' c.qcow2
same z c.qcow2 2097152
ok "a snapshot of an overlay (reads through its backing file); compressed clusters"

# refusals
expect_err 1 "s.qcow2: no snapshot 'third'" $UCOW convert -l third -O raw s.qcow2 x.raw
expect_err 1 "read-only" $UCOW snapshot -c third s.qcow2
expect_err 1 "read-only" $UCOW snapshot -d first s.qcow2
expect_err 1 "read-only" $UCOW snapshot -a first s.qcow2
no_file x.raw
ok "unknown snapshot, changes refused"

# hostile tables: each a one-line error naming the file; the current state still reads
# put FILE OFFSET HEX: overwrite bytes
put() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
snapoff=$($PY -c "import struct; print(struct.unpack('>Q', open('s.qcow2','rb').read()[64:72])[0])")
hostile() {	# hostile NAME OFFSET BYTES [list]: with list, the table lists (the L1 is bad)
	cp s.qcow2 "h-$1.qcow2"
	put "h-$1.qcow2" "$2" "$3"
	if [ "${4:-}" = list ]; then
		expect_ok $UCOW snapshot -l "h-$1.qcow2"
	else
		expect_err 1 "h-$1.qcow2: corrupt qcow2 image" $UCOW snapshot -l "h-$1.qcow2"
	fi
	expect_err 1 "h-$1.qcow2: corrupt qcow2 image" $UCOW convert -l first -O raw "h-$1.qcow2" x.raw
	no_file x.raw
	expect_ok $UCOW convert -O raw "h-$1.qcow2" hc.raw
	cmp hc.raw cur.raw || fail "$1: the current state reads differently"
}
hostile count 60 '\377\377\377\377'				# nb_snapshots 2^32-1
hostile count2 60 '\000\001\000\000'				# 65536 entries: past the table
hostile unaligned 71 '\010'					# snapshots_offset + 8
hostile past-end 64 '\000\000\001\000\000\000\000\000'		# snapshots_offset 2^40
hostile idsize $((snapoff + 12)) '\377\377'			# id_str_size 65535
hostile id0 $((snapoff + 12)) '\000\000'			# no id
hostile extra $((snapoff + 36)) '\000\001\000\000'		# extra_data_size 64 KiB
hostile l1off $((snapoff + 7)) '\001' list				# L1 table unaligned
hostile l1size $((snapoff + 8)) '\000\000\000\000' list		# L1 of 0 entries for 1 MiB
hostile l1huge $((snapoff + 8)) '\377\377\377\377' list		# L1 of 2^32-1 entries
hostile disksize $((snapoff + 48)) '\177\377\377\377\377\377\377\377' list	# 2^63 bytes
ok "hostile snapshot tables refused, one line each, the current state intact"
