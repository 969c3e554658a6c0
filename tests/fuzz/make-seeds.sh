#!/bin/sh
# Seed corpora of the fuzz targets, made by the tools: BUILD/ucow (create, io, snapshot,
# overlays) and BUILD/fuzz/mkseed (what ucow cannot make: a dirty image, its journal, a side
# log). Small images (1 MiB or less virtual, 64 KiB chunks, 16 KiB journals), so every seed
# is a few hundred KiB at most. Output: BUILD/fuzz/seeds/<target>/, made afresh each time.
#
#   tests/fuzz/make-seeds.sh [BUILD]
set -eu
build=${1:-build}
ucow=$(cd "$build" && pwd)/ucow
mkseed=$(cd "$build" && pwd)/fuzz/mkseed
out=$build/fuzz/seeds
work=$build/fuzz/seedwork
rm -rf "$out" "$work"
mkdir -p "$work"
for t in open read check journal sidelog snapshot qcow2; do mkdir -p "$out/$t"; done
out=$(cd "$out" && pwd)

cd "$work"
O=chunk_size=64k,journal_size=16k
io() { "$ucow" io -i sync "$@" >/dev/null; }
# put bytes (printf octal escapes) at offset off of file f
poke() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }

# -- images ----------------------------------------------------------------------------
"$ucow" create -q -o $O empty.ucow 256k

"$ucow" create -q -o $O plain.ucow 1M
io -c "write -P 0x11 0 4k" -c "write -P 0x22 200k 70k" -c "write -z 512k 64k" -c flush \
   -c "discard 128k 64k" -c "write -P 0x33 900k 1k" plain.ucow

"$ucow" create -q -o $O,block_size=512 b512.ucow 512k
io -c "write -P 0x44 1000 3000" -c "write -P 0x45 300k 512" b512.ucow

# the backing files the fuzz targets provide in their folder under the same names
truncate -s 1M base.raw
"$ucow" create -q -o $O base.ucow 1M
io -c "write -P 0xb1 64k 4k" base.ucow
"$ucow" create -q -b base.raw -F raw -o $O ov-raw.ucow
io -c "write -P 0x55 4k 4k" -c "write -P 0x56 130k 1k" ov-raw.ucow
"$ucow" create -q -b base.ucow -F ucow -o $O ov-ucow.ucow
io -c "write -P 0x57 66k 2k" -c "discard 256k 64k" ov-ucow.ucow

# snapshots: create, apply (the table moves into the data area), delete
"$ucow" create -q -o $O snap.ucow 512k
io -c "write -P 0x61 0 8k" -c "write -P 0x62 130k 4k" snap.ucow
"$ucow" snapshot -c s1 snap.ucow >/dev/null
io -c "write -P 0x63 4k 4k" snap.ucow
"$ucow" snapshot -c s2 snap.ucow >/dev/null
"$ucow" snapshot -a s1 snap.ucow >/dev/null
io -c "write -P 0x64 200k 4k" snap.ucow

"$ucow" create -q -o $O snapdel.ucow 256k
io -c "write -P 0x71 0 4k" snapdel.ucow
"$ucow" snapshot -c a snapdel.ucow >/dev/null
io -c "write -P 0x72 0 4k" -c "write -P 0x73 70k 4k" snapdel.ucow
"$ucow" snapshot -c b snapdel.ucow >/dev/null
"$ucow" snapshot -d a snapdel.ucow >/dev/null

"$mkseed" dirty dirty.ucow		# DIRTY, a snapshot, a journal with records

# compressed chunks (convert -c): text-like chunks packed two or more to a pack, one plain
# (random), a snapshot across them, one written over after it
python3 -c 'import random,sys
r=random.Random(5); w=[b"seed%d "%i for i in range(50)]
d=b"".join(r.choice(w) for _ in range(60000))[:320*1024]+bytes(r.getrandbits(8) for _ in range(65536))
open(sys.argv[1],"wb").write(d+bytes(512*1024-len(d)))' comp.raw
"$ucow" convert -q -f raw -c -o $O -O ucow comp.raw comp.ucow
"$ucow" snapshot -c s1 comp.ucow >/dev/null
io -c "write -P 0x75 70k 2k" comp.ucow

# damaged copies for check (the table is at 8192 in all of them; no checksum covers it)
cp plain.ucow dup.ucow			# entry 1 maps entry 0's chunk again
dd if=plain.ucow of=dup.ucow bs=1 skip=8192 seek=8200 count=8 conv=notrunc status=none
cp plain.ucow pasteof.ucow		# entry 2 points far past the end of the file
poke pasteof.ucow 8208 '\377\377\000\000\000\000\000\000'
cp plain.ucow leak.ucow			# entry 0 forgotten: its chunk leaks
poke leak.ucow 8192 '\000\000\000\000\000\000\000\000'
cp plain.ucow zeromapped.ucow		# entry 0 both mapped and ZERO
poke zeromapped.ucow 8199 '\100'
head -c 8192 plain.ucow >hdronly.ucow	# the header slots alone: every region past the end
cp plain.ucow slota.ucow		# slot A without its magic: slot B alone counts
poke slota.ucow 0 '\000\000\000\000\000\000\000\000'
cp plain.ucow slotb.ucow		# and the other way round
poke slotb.ucow 4096 '\000\000\000\000\000\000\000\000'
cp snap.ucow refcount.ucow		# the first refcount of the data area bumped
# (refcount_offset: header field 152 of the slot with the higher generation, field 184)
rc=$(python3 -c 'import struct,sys
b=open(sys.argv[1],"rb").read(8192)
s=max((0,4096),key=lambda o:struct.unpack_from("<Q",b,o+184)[0])
print(struct.unpack_from("<Q",b,s+152)[0])' refcount.ucow)
poke refcount.ucow $((rc + 4 * 8)) '\007'	# physical chunk 8: data area of a 512k image

# -- per target ------------------------------------------------------------------------
imgs="empty plain b512 ov-raw ov-ucow snap snapdel dirty comp"
damaged="dup pasteof leak zeromapped refcount hdronly slota slotb"
for i in $imgs $damaged; do cp $i.ucow "$out/open/"; done
for i in $imgs $damaged; do cp $i.ucow "$out/check/"; done
for i in snap snapdel dirty refcount plain comp; do cp $i.ucow "$out/snapshot/"; done
# read: the image, then 4 x (u64 offset, u32 length); op 0 unclamped (here in range)
trailer() {
	python3 -c 'import struct,sys
ops=[int(x) for x in sys.argv[1:]]
sys.stdout.buffer.write(b"".join(struct.pack("<QI",ops[i],ops[i+1]) for i in range(0,8,2)))' "$@"
}
for i in $imgs; do
	{ cat $i.ucow; trailer 0 4096 4096 65536 131000 9000 900000 200000; } >"$out/read/$i"
	{ cat $i.ucow; trailer 65535 3 1 1 262143 1 524288 300000; } >"$out/read/$i-odd"
done
"$mkseed" journal "$out/journal/dirty-journal"
# qcow2 (made by qemu-img and qemu-io): versions 2 and 3, small and large clusters, zero
# and compressed (zlib, zstd) clusters, a backing name
head -c 262144 /dev/urandom >q.raw
dd if=/dev/zero of=q.raw bs=4k seek=16 count=16 conv=notrunc status=none
qemu-img convert -q -f raw -O qcow2 -o cluster_size=4k q.raw "$out/qcow2/v3-4k"
qemu-img convert -q -f raw -O qcow2 -o compat=0.10,cluster_size=512 q.raw "$out/qcow2/v2-512"
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=64k q.raw "$out/qcow2/zlib-64k"
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=4k,compression_type=zstd q.raw \
	"$out/qcow2/zstd-4k" 2>/dev/null || true
qemu-img create -q -f qcow2 -o cluster_size=4k "$out/qcow2/zero-4k" 256k
qemu-io -f qcow2 -c 'write -P 0x5a 0 8k' -c 'write -z 8k 64k' "$out/qcow2/zero-4k" >/dev/null
qemu-img create -q -u -f qcow2 -o cluster_size=4k -b q.raw -F raw "$out/qcow2/overlay-4k" 256k
# internal snapshots: two, the image grown between them
qemu-img create -q -f qcow2 -o cluster_size=4k "$out/qcow2/snap-4k" 128k
qemu-io -f qcow2 -c 'write -P 0x11 0 8k' "$out/qcow2/snap-4k" >/dev/null
qemu-img snapshot -c s1 "$out/qcow2/snap-4k"
qemu-img resize -q "$out/qcow2/snap-4k" 256k
qemu-io -f qcow2 -c 'write -P 0x22 4k 8k' "$out/qcow2/snap-4k" >/dev/null
qemu-img snapshot -c s2 "$out/qcow2/snap-4k"
"$mkseed" sidelog "$out/sidelog/dead-server.log"
cd - >/dev/null
rm -rf "$work"
du -sh "$out" | sed 's/^/seeds: /'
