#!/bin/sh
# The guest kernel has the ublk driver: ublk_drv loaded at boot, /dev/ublk-control is there,
# and the guest has the two CPUs that multi-queue tests need.
. "$VM_LIB"

grep -q '^ublk_drv ' /proc/modules || fail "ublk_drv is not loaded"
grep -q '^loop ' /proc/modules || fail "loop is not loaded"
wait_for /dev/ublk-control
[ -c /dev/ublk-control ] || fail "/dev/ublk-control is not a character device"
echo "kernel $(uname -r), $(nproc) CPUs, ublk-control $(cat /sys/class/misc/ublk-control/dev)"
[ "$(nproc)" -ge 2 ] || fail "only $(nproc) CPU online: multi-queue needs two"
sh -c 'exec 3<>/dev/ublk-control' || fail "cannot open /dev/ublk-control"
pass
