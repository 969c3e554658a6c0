#!/bin/sh
# The same random sequences through qemu-io on qcow2 images of the same shape: the
# flattened bytes (qemu-img convert vs ucow convert) must be identical. On the qemu side
# discards are sent as "write -z": qemu's discard on a qcow2 overlay may expose backing
# data, while ours must read back as zeros (randio.py compares both with the model too).
. "$CLI_LIB"
command -v qemu-io >/dev/null && command -v qemu-img >/dev/null ||
	fail "qemu-io / qemu-img not installed (make deps)"
randio --qemu --mode standalone --seed 41 --steps 30 --chunk 64k || fail "seed 41"
randio --qemu --mode rawbase --seed 42 --steps 30 --chunk 64k || fail "seed 42"
randio --qemu --mode ucowbase --seed 43 --steps 30 || fail "seed 43"
randio --qemu --mode ucowbase --seed 44 --steps 30 --chunk 64k --grow 196608 || fail "seed 44"
