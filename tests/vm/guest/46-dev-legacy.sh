#!/bin/sh
# The 6.1 code path on the real driver: with UCOW_UBLK_LEGACY=1 the server talks like one for
# a 6.1 kernel (plain control and I/O opcodes, no GET_FEATURES: features come from a probe
# device), which Debian's 6.12 still accepts (BLKDEV_UBLK_LEGACY_OPCODES). The feature
# probe agrees with GET_FEATURES on what matters, and null and cow devices carry verified I/O.
# vm-timeout: 200
. "$VM_LIB"
need_ucow
trap 'UCOW_UBLK_LEGACY=1 ucow dev del --all 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT

ucow dev features | tee new.out
UCOW_UBLK_LEGACY=1 ucow dev features | tee old.out
grep -q "source: probe device" old.out || fail "legacy mode did not probe"
grep -q "control commands: plain opcodes" old.out || fail "legacy mode used ioctl-encoded commands"
for f in user_recovery user_recovery_reissue cmd_ioctl_encode user_copy; do
	grep -qx "  $f" old.out || fail "the probe missed $f"
done
[ "$(ls /dev | grep -c '^ublkc')" = 0 ] || fail "the probe device was left behind"

export UCOW_UBLK_LEGACY=1
dev=$(ucow dev add -t null -s 64M) || fail "legacy null add failed"
must fio --filename="$dev" --direct=1 --ioengine=io_uring --rw=randrw --bsrange=512-256k \
	--iodepth=32 --size=32M --name=null --output=/dev/null
must ucow dev del "$dev"
must ucow create -q disk.ucow 128M
dev=$(ucow dev add --recoverable disk.ucow) || fail "legacy cow add failed"
ucow dev list --output=json | tee l.json
grep -q user_recovery_reissue l.json || fail "recovery not negotiated with plain opcodes"
fio --filename="$dev" --direct=1 --ioengine=io_uring --verify=crc32c --do_verify=1 \
	--verify_fatal=1 --bsrange=512-512k --iodepth=64 --size=32M --rw=randwrite \
	--name=legacy >fio.out 2>&1 || { cat fio.out; fail "fio verify failed with plain opcodes"; }
grep -E "IOPS|err=" fio.out
must ucow dev del "$dev"
must ucow check disk.ucow
pass
