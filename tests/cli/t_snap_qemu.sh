#!/bin/sh
# Snapshots differentially against QEMU (snapdiff.py): the same random writes, zero-writes
# and snapshot create/apply/delete on a qcow2 image (qemu-io, qemu-img snapshot) and on a
# ucow image (ucow io, ucow snapshot); every 10 steps the current state and every live
# snapshot, exported by each tool (qemu-img convert -l snapshot.name=NAME vs ucow convert
# -l NAME), must be byte-identical. Standalone images; t_snap_qemu_base.sh does overlays.
. "$CLI_LIB"
command -v qemu-io >/dev/null && command -v qemu-img >/dev/null ||
	fail "qemu-io / qemu-img not installed (make deps)"
snapdiff() { $PY "$CLI_DIR/snapdiff.py" --ucow "$UCOW" "$@"; }
snapdiff --seed 101 --chunk 64k --block 4k || fail "seed 101"
snapdiff --seed 102 || fail "seed 102"
snapdiff --seed 103 --chunk 64k --block 512 || fail "seed 103"
