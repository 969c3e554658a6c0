#!/bin/sh
# qcow2 images (read-only) against qemu-img: random images made by qemu-img/qemu-io (v2 and
# v3, clusters 512 B .. 2 MiB, zero clusters, zlib and zstd compression, chains over qcow2,
# raw and ucow, dirty images) read by 'ucow convert -O raw' byte for byte as 'qemu-img
# convert -O raw' reads them; a ucow overlay on a qcow2 base; info, map, compare, check;
# the features not read (encryption, external data file, extended L2, corrupt) refused.
. "$CLI_LIB"
SEED=${QCOW2_SEED:-$$}
echo "seed $SEED (QCOW2_SEED=$SEED reruns this)"

# qio FILE N SIZE CLUSTER ZERO: N random writes (patterns, some zero writes when ZERO=1)
qio() {
	$PY - "$SEED$1" "$2" "$3" "$4" "$5" >cmds.$$ <<'PY'
import random, sys
seed, n, size, cl, zero = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == '1'
r = random.Random(seed)
for i in range(n):
    ln = r.choice([512, 4096, cl, 3 * cl, r.randrange(1, 300) * 512])
    ln = min(ln, size)
    off = r.randrange(0, (size - ln) // 512 + 1) * 512
    if zero and r.random() < 0.25:
        print(f"-c\nwrite -z {off} {ln}")
    else:
        print(f"-c\nwrite -P {r.randrange(1, 255)} {off} {ln}")
PY
	f=$1
	tr '\n' '\0' <cmds.$$ | xargs -0 qemu-io -f qcow2 "$f" >/dev/null || fail "qemu-io on $f"
}

# same FILE: ucow's raw export equals qemu-img's, and compare agrees
same() {
	qemu-img convert -O raw "$1" "$1.ref" || fail "qemu-img convert $1"
	expect_ok $UCOW convert -O raw "$1" "$1.out"
	cmp "$1.ref" "$1.out" || fail "$1: ucow reads another content than qemu-img"
	expect_ok $UCOW compare "$1" -F raw "$1.ref"
	rm -f "$1.out"
	# the engine's read path itself, buffered and O_DIRECT, on the first 4 MiB (convert and
	# compare skip what map calls zero)
	qemu-io -f raw -r -c 'read -v 0 4M' "$1.ref" | grep -E '^[0-9a-f]{8}:' | md5sum >want.$$
	for dio in "" -n; do
		$UCOW io $dio -r -q -c 'read -v 0 4M' "$1" | grep -E '^[0-9a-f]{8}:' | md5sum >got.$$
		cmp -s want.$$ got.$$ || fail "$1: ucow io $dio reads another content than qemu-io"
	done
}

# 1. single images: every version x cluster size, plain, then compressed (zlib, zstd)
n=0
for compat in 0.10 1.1; do
	for cl in 512 4096 65536 2097152; do
		size=$(( (cl * 37 + 12345) / 512 * 512 ))
		[ $size -lt 8388608 ] && size=$((size + 8388608))
		f=p$n.qcow2
		qemu-img create -q -f qcow2 -o compat=$compat,cluster_size=$cl $f $size ||
			fail "qemu-img create $f"
		qio $f 40 $size $cl $([ $compat = 1.1 ] && echo 1 || echo 0)
		same $f
		qemu-img convert -c -O qcow2 -o compat=$compat,cluster_size=$cl $f c$n.qcow2 ||
			fail "qemu-img convert -c"
		same c$n.qcow2
		if [ $compat = 1.1 ]; then
			qemu-img convert -c -O qcow2 -o cluster_size=$cl,compression_type=zstd \
				$f z$n.qcow2 || fail "qemu-img convert -c zstd"
			same z$n.qcow2
			expect_ok $UCOW info z$n.qcow2
			grep -q '^compression type: zstd$' out || fail "info: no zstd"
		fi
		n=$((n + 1))
	done
done
ok "v2/v3, 512 B .. 2 MiB clusters, zlib and zstd"

# 2. chains: qcow2 over qcow2 over raw; qcow2 over ucow; names relative to the image
mkdir -p sub
head -c 16M /dev/urandom >sub/base.raw
qemu-img create -q -f qcow2 -b base.raw -F raw sub/mid.qcow2 || fail "create mid"
qio sub/mid.qcow2 30 16777216 65536 1
qemu-img create -q -f qcow2 -o cluster_size=4k -b mid.qcow2 -F qcow2 sub/top.qcow2 ||
	fail "create top"
qio sub/top.qcow2 30 16777216 4096 1
# zero clusters over data below (whole clusters: qemu marks them zero, not written)
qemu-io -f qcow2 -c 'write -z 0 1M' sub/mid.qcow2 >/dev/null || fail "write -z mid"
qemu-io -f qcow2 -c 'write -z 8M 64k' -c 'write -z 12M 4k' sub/top.qcow2 >/dev/null ||
	fail "write -z top"
qemu-img map --output=json sub/top.qcow2 | grep -q '"depth": 0, "present": true, "zero": true, "data": false' ||
	fail "no zero cluster in top.qcow2"
same sub/top.qcow2
# the engine's read path itself (convert and compare skip what map calls zero)
expect_ok $UCOW io -r -c 'read -P 0 8M 64k' -c 'read -P 0 12M 4k' sub/top.qcow2
expect_ok $UCOW info --backing-chain sub/top.qcow2
[ "$(grep -c '^image: ' out)" -eq 3 ] || fail "info --backing-chain: $(cat out)"
# no backing format named: probed (raw here)
qemu-img create -q -f qcow2 -b base.raw -F raw sub/nofmt.qcow2 16M || fail "create nofmt"
qio sub/nofmt.qcow2 10 16777216 65536 0
# the backing format extension becomes one of an unknown type (ignored by readers)
$PY - sub/nofmt.qcow2 <<'PY' || fail "dropping the backing format"
import struct, sys
b = bytearray(open(sys.argv[1], 'rb').read())
pos = struct.unpack('>I', b[100:104])[0]
while struct.unpack('>I', b[pos:pos + 4])[0] not in (0, 0xe2792aca):
    pos += 8 + ((struct.unpack('>I', b[pos + 4:pos + 8])[0] + 7) & ~7)
assert struct.unpack('>I', b[pos:pos + 4])[0] == 0xe2792aca
b[pos:pos + 4] = struct.pack('>I', 0x7e57ab1e)
open(sys.argv[1], 'wb').write(b)
PY
expect_ok $UCOW info sub/nofmt.qcow2
grep -q '^backing file format' out && fail "a backing format shown: $(cat out)"
same sub/nofmt.qcow2
expect_ok $UCOW create -q -f ucow -b base.raw -F raw sub/u.ucow
expect_ok $UCOW io -c 'write -P 9 1M 3M' sub/u.ucow
qemu-img create -q -f qcow2 -b u.ucow -F raw sub/overu.qcow2 16M || fail "create overu"
# qemu cannot read ucow: rewrite the backing format extension to 'ucow' by hand, after
# checking the answer through a raw twin
expect_ok $UCOW convert -O raw sub/u.ucow sub/u.flat
qemu-img create -q -f qcow2 -b u.flat -F raw sub/overf.qcow2 16M || fail "create overf"
qio sub/overu.qcow2 10 16777216 65536 1
cp sub/overu.qcow2 sub/overf.qcow2
$PY - sub/overu.qcow2 sub/overf.qcow2 <<'PY' || fail "patching the backing names"
import struct, sys
for path, name, fmt in ((sys.argv[1], b'u.ucow', b'ucow'), (sys.argv[2], b'u.flat', b'raw')):
    b = bytearray(open(path, 'rb').read())
    boff, blen = struct.unpack('>QI', b[8:20])
    hlen = struct.unpack('>I', b[100:104])[0]
    # extensions: rewrite the backing format one in place, the name after them
    pos = hlen
    while True:
        t, l = struct.unpack('>II', b[pos:pos + 8])
        if t == 0:
            break
        if t == 0xe2792aca:
            b[pos + 4:pos + 8] = struct.pack('>I', len(fmt))
            b[pos + 8:pos + 8 + ((l + 7) & ~7)] = bytes((l + 7) & ~7)
            b[pos + 8:pos + 8 + len(fmt)] = fmt
        pos += 8 + ((l + 7) & ~7)
    b[boff:boff + blen] = bytes(blen)
    b[boff:boff + len(name)] = name
    b[16:20] = struct.pack('>I', len(name))
    open(path, 'wb').write(b)
PY
qemu-img convert -O raw sub/overf.qcow2 sub/overf.ref || fail "qemu-img convert overf"
expect_ok $UCOW convert -O raw sub/overu.qcow2 sub/overu.out
cmp sub/overf.ref sub/overu.out || fail "qcow2 over ucow reads wrong"
ok "chains over qcow2, raw (named and probed) and ucow"

# 3. a ucow overlay on a compressed qcow2 base: random writes compared with the same writes
#    on a raw copy of the base; the base is left as it was
expect_ok $UCOW create -q -f ucow -o chunk_size=64k -b c5.qcow2 -F qcow2 vm.ucow
expect_ok $UCOW info vm.ucow
grep -q '^backing file format: qcow2$' out || fail "overlay info: $(cat out)"
cp c5.qcow2.ref vm.ref
sum0=$(md5sum <c5.qcow2)
$PY - "$SEED" "$(stat -c %s vm.ref)" >ops <<'PY'
import random, sys
r = random.Random(sys.argv[1] + 'ov')
size = int(sys.argv[2])
for i in range(30):
    ln = r.randrange(1, 200000)
    off = r.randrange(0, size - ln)
    print(f"write -P {r.randrange(1, 255)} {off} {ln}")
PY
while read -r op; do set -- $op; echo "-c"; echo "$op"; done <ops | tr '\n' '\0' |
	xargs -0 $UCOW io vm.ucow >/dev/null || fail "ucow io on the overlay"
while read -r op; do echo "-c"; echo "$op"; done <ops | tr '\n' '\0' |
	xargs -0 qemu-io -f raw vm.ref >/dev/null || fail "qemu-io on the raw copy"
expect_ok $UCOW convert -O raw vm.ucow vm.out
cmp vm.ref vm.out || fail "overlay on a qcow2 base reads wrong"
[ "$(md5sum <c5.qcow2)" = "$sum0" ] || fail "the qcow2 base changed"
expect_ok $UCOW compare vm.ucow -F raw vm.ref
ok "ucow overlay on a compressed qcow2 base"

# 4. the commands around it: map, check, writes refused, commit/rebase onto qcow2 refused
expect_ok $UCOW map --output=json sub/top.qcow2
$PY - <<'PY' || fail "map of a qcow2 chain: $(head -c 300 out)"
import json
m = json.load(open('out'))
assert m[0]['start'] == 0 and sum(x['length'] for x in m) == 16777216, m
assert any(x['depth'] == 0 and x['data'] for x in m), m
assert any(x['depth'] == 2 for x in m), m
PY
expect_err 63 "use 'qemu-img check'" $UCOW check c0.qcow2
expect_err 1 "qcow2 images are read-only in ucow" $UCOW io -c 'write 0 512' c0.qcow2
expect_ok $UCOW io -f qcow2 -r -c 'read 0 512' c0.qcow2
expect_err 1 "format 'qcow2' is read-only" $UCOW create -f qcow2 x.qcow2 1M
no_file x.qcow2
expect_ok $UCOW create -q -f ucow -b p1.qcow2 -F qcow2 cm.ucow
expect_ok $UCOW io -c 'write -P 7 0 4k' cm.ucow
run $UCOW commit cm.ucow
[ $st -ne 0 ] || fail "commit onto a qcow2 base succeeded"
expect_ok $UCOW convert -O raw cm.ucow cm.out
ok "map, check, refusals"

# 5. dirty (a crash of qemu-io with lazy refcounts) read as it is; corrupt refused
qemu-img create -q -f qcow2 -o lazy_refcounts=on d.qcow2 8M || fail "create d"
qemu-io -f qcow2 -c 'write -P 5 1M 1M' -c 'write -z 3M 64k' -c abort d.qcow2 >/dev/null 2>&1
expect_ok $UCOW info d.qcow2
grep -q '^dirty: true$' out || fail "dirty bit not shown: $(cat out)"
expect_ok $UCOW convert -O raw d.qcow2 d.out
expect_ok $UCOW io -f raw -c 'read -P 5 1M 1M' -c 'read -P 0 0 1M' d.out
cp p5.qcow2 bad.qcow2
$PY - bad.qcow2 <<'PY'
import sys
b = bytearray(open(sys.argv[1], 'rb').read()); b[79] |= 2; open(sys.argv[1], 'wb').write(b)
PY
expect_err 1 "marked corrupt" $UCOW convert -O raw bad.qcow2 bad.out
no_file bad.out
expect_err 63 "qemu-img check" $UCOW check bad.qcow2
# features not read
qemu-img create -q -f qcow2 -o data_file=ext.raw ext.qcow2 1M || fail "create ext"
expect_err 1 "external data file are not supported" $UCOW info ext.qcow2
# extended L2 entries (subclusters): read; with 16 KiB clusters qemu-img refuses nothing
# either, so the smallest legal size is 16 KiB (512-byte subclusters); smaller is corrupt
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=4k ex.qcow2 1M 2>/dev/null &&
	fail "qemu-img made extended L2 entries with 4 KiB clusters"
cp p1.qcow2 enc.qcow2
$PY - enc.qcow2 <<'PY'
import sys
b = bytearray(open(sys.argv[1], 'rb').read()); b[35] = 2; open(sys.argv[1], 'wb').write(b)
PY
expect_err 1 "encrypted qcow2 images are not supported" $UCOW info enc.qcow2
# a loop through qcow2 backing names
qemu-img create -q -f qcow2 -b loop2.qcow2 -F qcow2 -u loop1.qcow2 1M || fail "create loop1"
qemu-img create -q -f qcow2 -b loop1.qcow2 -F qcow2 -u loop2.qcow2 1M || fail "create loop2"
expect_err 1 "loops back" $UCOW convert -O raw loop1.qcow2 l.out
no_file l.out
ok "dirty, corrupt, encrypted, external data, loops"

# 4. extended L2 entries (subclusters of a 32nd of a cluster): subcluster writes, zero
# subclusters, unallocated ones reading from a backing file, compressed clusters among them
for cl in 16384 65536 2097152; do
	size=$((cl * 40 + 8192))
	head -c $size /dev/urandom >xb$cl.raw
	qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=$cl -b xb$cl.raw -F raw \
		x$cl.qcow2 $size || fail "create x$cl"
	sc=$((cl / 32))
	qemu-io -f qcow2 -c "write -P 7 $sc $sc" -c "write -P 8 $((cl + 3 * sc)) $((5 * sc))" \
		-c "write -z $((2 * cl + sc)) $((2 * sc))" -c "write -P 9 $((4 * cl)) $((2 * cl))" \
		-c "write -z $((8 * cl)) $cl" x$cl.qcow2 >/dev/null || fail "qemu-io x$cl"
	qio x$cl.qcow2 30 $size $cl 1
	expect_ok $UCOW info x$cl.qcow2
	same x$cl.qcow2
	qemu-img convert -c -O qcow2 -o extended_l2=on,cluster_size=$cl x$cl.qcow2 xc$cl.qcow2 ||
		fail "qemu-img convert -c x$cl"
	same xc$cl.qcow2
done
ok "extended L2: subclusters of 16 KiB, 64 KiB and 2 MiB clusters, over a backing file"
