#!/bin/sh
# Eight devices on eight overlays of one golden base at once: fio with crc32c verify on all
# of them concurrently, unwritten areas of each read back as the base, and afterwards the
# base is byte-for-byte unchanged and every overlay checks clean.
# vm-timeout: 300
. "$VM_LIB"
need_ucow

ids=""
trap 'for i in $ids; do ucow dev del $i 2>/dev/null; done; cd /; rm -rf "$VM_TMP"' EXIT
must ucow create -q base.ucow 64M
must ucow io -c 'write -P 0x5a 0 64M' base.ucow >/dev/null
before=$(sha256sum <base.ucow)
devs=""
for n in 1 2 3 4 5 6 7 8; do
	must ucow create -q -b base.ucow -F ucow ov$n.ucow
	dev=$(ucow dev add -q 1 -d 32 ov$n.ucow) || fail "dev add of overlay $n failed"
	ids="$ids ${dev#/dev/ublkb}"
	devs="$devs $dev"
done
[ "$(ucow dev list | grep -c ov)" = 8 ] || { ucow dev list; fail "dev list does not show 8 devices"; }
n=0
pids=""
for dev in $devs; do
	n=$((n + 1))
	fio --name=ov$n --filename="$dev" --direct=1 --ioengine=io_uring --rw=randwrite \
		--bsrange=4k-64k --iodepth=16 --offset=16M --size=8M --verify=crc32c \
		--do_verify=1 --verify_fatal=1 --output=fio$n.out &
	pids="$pids $!"
done
bad=0
for p in $pids; do wait "$p" || bad=1; done
[ $bad = 0 ] || { tail -n 20 fio*.out; fail "fio verify failed on some device"; }
grep -q "verify" fio1.out || grep -q "err= 0" fio1.out || fail "fio printed no result"
for dev in $devs; do	# outside the written range: the base's bytes
	ucow io -f raw -c 'read -P 0x5a 0 16M' -c 'read -P 0x5a 32M 32M' "$dev" >/dev/null ||
		fail "$dev does not read the base where it was not written"
done
for i in $ids; do must ucow dev del "$i"; done
ids=""
[ "$(sha256sum <base.ucow)" = "$before" ] || fail "the base image changed"
for n in 1 2 3 4 5 6 7 8; do must ucow check ov$n.ucow; done
pass
