#!/bin/sh
# qemu-io with -f raw on the device: patterns written at odd offsets and sizes read back
# exactly, zero writes read as zeros, and the image file holds the same bytes afterwards.
# vm-timeout: 200
. "$VM_LIB"
need_ucow

must ucow create -q disk.ucow 64M
dev=$(ucow dev add disk.ucow) || fail "dev add exited with status $?"
id=${dev#/dev/ublkb}
trap 'ucow dev del $id 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT
q() { qemu-io -f raw "$@" "$dev" >qio.out 2>&1; _r=$?; cat qio.out; [ $_r -eq 0 ] || fail "qemu-io $* failed"; ! grep -qi "fail\|error" qio.out || fail "qemu-io $*: $(head -n 1 qio.out)"; }
q -c "write -P 0x11 0 4k" -c "write -P 0x22 512 1536" -c "write -P 0x33 1M 3M" \
	-c "write -P 0x44 63M 1M" -c "write -z 2M 512k" -c "flush"
q -c "read -P 0x11 0 512" -c "read -P 0x22 512 1536" -c "read -P 0x11 2048 2048" \
	-c "read -P 0x33 1M 1M" -c "read -P 0 2M 512k" -c "read -P 0x33 2621440 1572864" \
	-c "read -P 0x44 63M 1M" -c "read -P 0 8M 8M"
must ucow dev del "$id"
qemu-io -f raw -c "read -P 0x33 1M 1M" disk.ucow >/dev/null 2>&1 && fail "a ucow file was read as raw data"
must ucow convert -O raw disk.ucow flat.raw
qemu-io -f raw -c "read -P 0x22 512 1536" -c "read -P 0 2M 512k" -c "read -P 0x44 63M 1M" flat.raw | tee qio.out
grep -qi "fail" qio.out && fail "the image does not hold what was written through the device"
pass
