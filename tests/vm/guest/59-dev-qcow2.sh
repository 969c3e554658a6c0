#!/bin/sh
# qcow2 through ucow dev add (issue 12, item 2): a ucow overlay on a compressed qcow2 golden
# image (made by qemu-img: zlib clusters, zero clusters) served with -t cow reads what
# qemu-img's raw export of the qcow2 holds, takes writes (they land in the overlay; the
# qcow2 file is unchanged), and the qcow2 image itself is served read-only with -t qcow2
# (refused without --read-only, naming the option). `convert -n` writes the qcow2 image into
# a served raw device in place (over random bytes), and `convert -O qcow2 -c` exports the
# device back: qemu-img checks and reads it as the original.
# vm-timeout: 300
. "$VM_LIB"
need_ucow
trap 'ucow dev del --all 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT

must dd if=/dev/urandom of=seed.raw bs=1M count=16 status=none
must dd if=/dev/zero of=seed.raw bs=1M seek=4 count=4 conv=notrunc status=none
must qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=64k seed.raw golden.qcow2
must qemu-io -f qcow2 -c 'write -z 12M 1M' golden.qcow2
must qemu-img convert -q -f qcow2 -O raw golden.qcow2 want.raw
must cp want.raw want0.raw
sum=$(sha256sum <golden.qcow2)

must ucow create -q -f ucow -b golden.qcow2 -F qcow2 vm.ucow
dev=$(ucow dev add -t cow vm.ucow) || fail "dev add of an overlay on qcow2 failed"
id=${dev#/dev/ublkb}
cmp "$dev" want.raw || fail "the overlay on qcow2 does not read as qemu-img's export"
must dd if=/dev/urandom of=w.bin bs=64k count=3 status=none
must dd if=w.bin of="$dev" bs=64k seek=33 oflag=direct status=none
must dd if=w.bin of=want.raw bs=64k seek=33 conv=notrunc status=none
cmp "$dev" want.raw || fail "after writes, the overlay differs from the model"
must ucow dev del "$id"
[ "$(sha256sum <golden.qcow2)" = "$sum" ] || fail "the qcow2 base changed"
must ucow check vm.ucow

out=$(ucow dev add -t qcow2 golden.qcow2 2>&1) && fail "a qcow2 image was served read-write"
echo "$out" | grep -q "the qcow2 target is read-only: add --read-only" || fail "qcow2 rw: '$out'"
dev=$(ucow dev add -t qcow2 --read-only golden.qcow2) || fail "dev add -t qcow2 --read-only failed"
cmp "$dev" want0.raw || fail "the qcow2 image served read-only differs from qemu-img's export"
must ucow dev del "${dev#/dev/ublkb}"

# convert -n onto a block device: the qcow2 image written into a served raw file full of
# random bytes (zero runs written as zeros), then the same device back out as qcow2
must dd if=/dev/urandom of=disk.raw bs=1M count=20 status=none
dev=$(ucow dev add -t raw disk.raw) || fail "dev add -t raw failed"
must ucow convert -n -f qcow2 golden.qcow2 "$dev"
cmp -n 16777216 "$dev" want0.raw || fail "convert -n onto $dev: the device differs from qemu-img's export"
must ucow convert -f raw -O qcow2 -c "$dev" back.qcow2
must ucow dev del "${dev#/dev/ublkb}"
must qemu-img check -q back.qcow2
qemu-img convert -q -f qcow2 -O raw back.qcow2 back.raw || fail "qemu-img convert of back.qcow2"
cmp -n 16777216 back.raw want0.raw || fail "the device's qcow2 export differs"
pass
