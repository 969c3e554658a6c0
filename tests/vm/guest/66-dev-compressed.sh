#!/bin/sh
# Compressed golden images served (issue 12): a qcow2 golden image made by qemu-img with zlib
# clusters, and a ucow golden image with compressed chunks (ucow convert -c of the same
# content), each the base of two overlays served at once with fio crc32c verify on all four;
# the unwritten areas read the base's content through the devices, the bases are unchanged
# and every overlay checks clean. Then the compressed ucow image itself is served
# read-write: fio verify over it (each first write copies a compressed chunk into a plain
# one), the rest still reads the original content, and check is clean.
# vm-timeout: 300
. "$VM_LIB"
need_ucow

ids=""
trap 'for i in $ids; do ucow dev del $i 2>/dev/null; done; cd /; rm -rf "$VM_TMP"' EXIT
# compressible content with some random and zero runs
must dd if=/dev/zero of=seed.raw bs=1M count=32 status=none
must ucow io -f raw -c 'write -P 0x61 0 32M' -c 'write -z 8M 4M' -c 'write -P 0x3c 20M 3M' \
	seed.raw
must dd if=/dev/urandom of=seed.raw bs=1M seek=28 count=2 conv=notrunc status=none
must qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=64k seed.raw golden.qcow2
must ucow convert -q -c -f raw -O ucow seed.raw golden.ucow
ucow info golden.ucow | grep -q "^compressed chunks: [1-9]" || fail "golden.ucow has no compressed chunks"
qsum=$(sha256sum <golden.qcow2)
usum=$(sha256sum <golden.ucow)

devs=""
for base in qcow2 ucow; do
	for n in 1 2; do
		must ucow create -q -f ucow -b golden.$base -F $base ov-$base$n.ucow
		dev=$(ucow dev add -q 1 -d 32 ov-$base$n.ucow) || fail "dev add over golden.$base failed"
		ids="$ids ${dev#/dev/ublkb}"
		devs="$devs $dev"
	done
done
n=0
pids=""
for dev in $devs; do
	n=$((n + 1))
	fio --name=ov$n --filename="$dev" --direct=1 --ioengine=io_uring --rw=randwrite \
		--bsrange=4k-64k --iodepth=16 --offset=16M --size=4M --verify=crc32c \
		--do_verify=1 --verify_fatal=1 --output=fio$n.out &
	pids="$pids $!"
done
bad=0
for p in $pids; do wait "$p" || bad=1; done
[ $bad = 0 ] || { tail -n 20 fio*.out; fail "fio verify failed on an overlay of a compressed base"; }
for dev in $devs; do	# outside the written range: the golden content
	cmp -n 16777216 "$dev" seed.raw || fail "$dev does not read the base before 16M"
	cmp -n 8388608 "$dev" seed.raw 25165824 25165824 || fail "$dev does not read the base after 24M"
done
for i in $ids; do must ucow dev del "$i"; done
ids=""
[ "$(sha256sum <golden.qcow2)" = "$qsum" ] || fail "golden.qcow2 changed"
[ "$(sha256sum <golden.ucow)" = "$usum" ] || fail "golden.ucow changed"
for f in ov-*.ucow; do must ucow check "$f"; done

# the compressed image itself, read-write
dev=$(ucow dev add -q 2 -d 32 golden.ucow) || fail "dev add of the compressed image failed"
ids=${dev#/dev/ublkb}
cmp "$dev" seed.raw || fail "the compressed image served differs from its source"
fio --name=inplace --filename="$dev" --direct=1 --ioengine=io_uring --rw=randwrite \
	--bsrange=4k-128k --iodepth=32 --offset=4M --size=6M --verify=crc32c --do_verify=1 \
	--verify_fatal=1 --output=fio-inplace.out || { tail -n 20 fio-inplace.out; fail "fio verify on the compressed image failed"; }
cmp -n 4194304 "$dev" seed.raw || fail "the compressed image changed before 4M"
cmp -n 20971520 "$dev" seed.raw 12582912 12582912 || fail "the compressed image changed after 12M"
must ucow dev del "$ids"
ids=""
must ucow check golden.ucow
pass
