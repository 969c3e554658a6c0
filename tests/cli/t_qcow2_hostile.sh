#!/bin/sh
# Hostile qcow2 images (issue 12): a generator mutates a real qcow2 image made by qemu-img
# (64 KiB and 512-byte clusters; data, zero and compressed clusters, a backing file, an
# internal snapshot) field by field and byte by byte: huge and misplaced L1 tables, L1 and
# L2 entries past the end, unaligned, pointing into the header or into the tables
# themselves (overlapping tables), compressed entries with huge or overflowing sizes, lying
# snapshot tables, bad header lengths and feature bits, random flips in the metadata. Every
# image goes through info, snapshot -l, convert (current state and -l) and io reads:
# each command must end by itself (a timeout), with status 0 or 1, never a signal, and a
# failure must say one line starting with "ucow: " naming the file, leaving no output file.
# In make check this also runs on the ASan + UBSan build (asan-cli/qcow2_hostile).
. "$CLI_LIB"
SEED=${QCOW2_SEED:-$$}
echo "seed $SEED (QCOW2_SEED=$SEED reruns this)"

# two originals: 64 KiB clusters with everything, and 512-byte clusters (many tables)
head -c 1048576 /dev/urandom >back.raw
expect_ok qemu-img create -q -f qcow2 -b back.raw -F raw o64.qcow2 2M
expect_ok qemu-io -f qcow2 -c 'write -P 1 0 192k' -c 'write -z 256k 64k' \
	-c 'write -P 2 1536k 64k' o64.qcow2
expect_ok qemu-img snapshot -c snap o64.qcow2
expect_ok qemu-io -f qcow2 -c 'write -P 3 64k 64k' o64.qcow2
expect_ok qemu-img create -q -f raw src.raw 1M
expect_ok qemu-io -f raw -c 'write -P 4 0 512k' src.raw
expect_ok qemu-img convert -c -f raw -O qcow2 -o cluster_size=512 src.raw o512.qcow2
expect_ok $UCOW info o64.qcow2
expect_ok $UCOW info o512.qcow2

mkdir -p h
$PY - "$SEED" h <<'PY' || fail "the generator failed"
import os, random, struct, sys
seed, out = sys.argv[1], sys.argv[2]
r = random.Random(seed)
n = 0

def be64(b, o): return struct.unpack('>Q', b[o:o + 8])[0]
def be32(b, o): return struct.unpack('>I', b[o:o + 4])[0]
def emit(name, b):
    global n
    open(os.path.join(out, '%03d-%s.qcow2' % (n, name)), 'wb').write(bytes(b))
    n += 1

for orig in ('o64.qcow2', 'o512.qcow2'):
    base = bytearray(open(orig, 'rb').read())
    cs = 1 << be32(base, 20)
    size = len(base)
    l1_off, l1_n = be64(base, 40), be32(base, 36)
    snap_off = be64(base, 64)
    # the first L2 table and a compressed entry (o512) or a data entry (o64)
    l2 = be64(base, l1_off) & 0x00fffffffffffe00
    huge = [0xffffffffffffffff, 1 << 63, 1 << 62, (1 << 62) - 512, size, size + cs,
            size - 1, 1, 8, cs - 8, 0]
    def put(o, fmt, v, tag):
        b = bytearray(base)
        b[o:o + struct.calcsize(fmt)] = struct.pack(fmt, v)
        emit(tag, b)
    # header fields
    for v in [0, 1, 0xffffffff, 0x8000000, l1_n + 1, l1_n * 1000]:
        put(36, '>I', v, 'l1size')
    for v in huge + [l1_off + 8, 0x200, cs]:
        put(40, '>Q', v, 'l1off')
    for v in [0, 1 << 62, (1 << 63) + 5, 1 << 55, size * cs]:
        put(24, '>Q', v, 'vsize')
    for v in [0, 8, 9, 21, 22, 31, 63, 64, 0xffffffff]:
        put(20, '>I', v, 'clbits')
    for v in [0, 72, 103, 104, 105, 112, cs, cs + 8, 0xffffffff]:
        put(100, '>I', v, 'hdrlen')
    for v in [1, 2, 4, 8, 16, 32, 1 << 63, 0xffffffffffffffff]:
        put(72, '>Q', v, 'incompat')
    for v in huge:
        put(8, '>Q', v, 'bname-off')
    for v in [0, 1, 1023, 1024, 0xffffffff]:
        put(16, '>I', v, 'bname-len')
    for v in [0, 1, 0xffff, 65536, 65537, 0xffffffff]:
        put(60, '>I', v, 'nsnaps')
    for v in huge + [l1_off, 0x200]:
        put(64, '>Q', v, 'snapoff')
    # L1 entries: past the end, unaligned, into the header, onto the L1 table itself
    for v in huge + [l1_off, l1_off | (1 << 63), 0x200, cs | 1, l2 + 8, l2 | (1 << 60)]:
        put(l1_off, '>Q', v, 'l1e')
    # L2 entries: data past the end, unaligned, into the tables, compressed oddities
    for i in range(1):
        for v in huge + [l1_off, l2, l2 | (1 << 63), (1 << 62) | (size - 1),
                         (1 << 62) | 0x3fffffffffffffff, (1 << 62) | 1,
                         (1 << 62) | (r.getrandbits(40) << 9), r.getrandbits(64)]:
            put(l2 + 8 * i, '>Q', v, 'l2e')
    # the snapshot table (o64): each field of the first entry
    if snap_off:
        for off, fmt, vals in [(0, '>Q', huge), (8, '>I', [0, 0xffffffff, 1 << 22]),
                               (12, '>H', [0, 0xffff, 200]), (14, '>H', [0xffff, 200]),
                               (36, '>I', [0xffffffff, 1025, 7]),
                               (48, '>Q', huge)]:
            for v in vals:
                put(snap_off + off, fmt, v, 'snap')
    # random flips in the metadata (header, L1, first L2, snapshot table)
    regions = [(0, 512), (l1_off, max(8, l1_n * 8)), (l2, cs)]
    if snap_off:
        regions.append((snap_off, 128))
    for k in range(20):
        b = bytearray(base)
        for _ in range(r.randrange(1, 8)):
            o, ln = r.choice(regions)
            p = o + r.randrange(ln)
            if p < len(b):
                b[p] = r.randrange(256)
        emit('flip', b)
    # truncated copies
    for cut in [72, 104, cs, l1_off + 4, l2 + cs // 2, size - 1]:
        emit('cut', base[:cut])
print(n, 'images')
PY
ls h | wc -l >count.txt
[ "$(cat count.txt)" -gt 200 ] || fail "only $(cat count.txt) images generated"
cp back.raw h/back.raw

# each command: ends within its time, exit 0 or 1, never a signal; a failure is one line
check() {	# check FILE CMD...
	f=$1
	shift
	timeout -s KILL 20 "$@" >out 2>err
	st=$?
	case $st in
	0) ;;
	1) [ "$(wc -l <err)" -eq 1 ] && grep -q "^ucow: " err ||
		fail "$f: '$*' failed without one 'ucow: ' line: $(head -c 300 err)" ;;
	*) fail "$f: '$*' exited $st (a signal or a hang: 137 is the timeout): $(head -c 300 err)" ;;
	esac
}
bad=0 good=0
for f in h/*.qcow2; do
	check "$f" $UCOW info "$f"
	[ $st -eq 0 ] && good=$((good + 1)) || bad=$((bad + 1))
	check "$f" $UCOW snapshot -l "$f"
	check "$f" $UCOW io -r -f qcow2 -c 'read 0 64k' -c 'read 1M 4k' "$f"
	check "$f" $UCOW convert -f qcow2 -O raw "$f" x.raw
	[ $st -eq 0 ] || no_file x.raw
	rm -f x.raw
	check "$f" $UCOW convert -l snap -f qcow2 -O raw "$f" x.raw
	[ $st -eq 0 ] || no_file x.raw
	rm -f x.raw
done
ok "$(cat count.txt) hostile images: $good opened, $bad refused; no crash, hang or unclear error"
