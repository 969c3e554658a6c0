#!/bin/sh
# Snapshots differentially against QEMU (snapdiff.py), on overlays of a raw base:
# qemu-img create -f qcow2 -b base.raw -F raw vs ucow create -b base.raw -F raw. In both,
# what neither the current state nor a snapshot wrote reads from the base, also after an
# apply (checked by hand before this test was written: qemu-img snapshot -a on a qcow2
# overlay keeps unallocated clusters falling through to the backing file, as ours do).
# One seed has overlays bigger than the base (an odd number of bytes; past it reads 0).
. "$CLI_LIB"
command -v qemu-io >/dev/null && command -v qemu-img >/dev/null ||
	fail "qemu-io / qemu-img not installed (make deps)"
snapdiff() { $PY "$CLI_DIR/snapdiff.py" --ucow "$UCOW" --base "$@"; }
snapdiff --seed 201 --chunk 64k --block 4k || fail "seed 201"
snapdiff --seed 202 || fail "seed 202"
snapdiff --seed 203 --chunk 64k --grow 300001 || fail "seed 203"
