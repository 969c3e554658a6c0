# Helpers for guest tests; source it first:   . "$VM_LIB"
# (not a test itself: the harness never runs lib.sh).
#
# A guest test is tests/vm/guest/NN-name.sh, run by /init in the guest as root, in a
# session of its own, with its working folder a fresh $VM_TMP on tmpfs. It prints whatever
# helps debugging and exactly one result line: "PASS vm/NN-name" or
# "FAIL vm/NN-name <reason>" -- use pass and fail below, which also end the test.
# A "# vm-timeout: SECONDS" line sets its time limit (default 300 s). Environment:
# VM_NAME (NN-name), VM_TMP (working folder), VM_LIB (this file), UCOW (path of the ucow
# binary, empty when it was not built). Anything it leaves running is killed afterwards.

set -u

UCOW=$(command -v ucow || true)

# pass: print the PASS line and end the test.
pass() {
	echo "PASS vm/$VM_NAME"
	exit 0
}

# fail REASON...: print the FAIL line and end the test.
fail() {
	echo "FAIL vm/$VM_NAME $*"
	exit 1
}

# must CMD ARGS...: show the command, run it, fail the test if it fails.
must() {
	echo "+ $*"
	"$@" || fail "'$*' exited with status $?"
}

# need_ucow: fail unless the ucow binary is in the guest.
need_ucow() {
	[ -n "$UCOW" ] || fail "ucow binary not in the guest (was build/ucow built?)"
}

# load_module NAME [PARAM=VALUE...]: insmod a kernel module shipped in the guest (ublk_drv and loop are
# loaded at boot; null_blk, nbd, brd, virtio_blk, dm-mod, dm-log-writes and dm-flakey are
# available, load dm-mod before the other two; so are dm-thin-pool and vduse with their
# dependencies, tests/bench/vm-peers.sh loads them in order).
load_module() {
	_m=$1
	shift
	# /proc/modules spells dm-mod as dm_mod
	grep -q "^$(echo "$_m" | tr - _) " /proc/modules && return 0
	must insmod "/lib/modules/$(uname -r)/$_m.ko" "$@"
}

# wait_for PATH [SECONDS]: wait until PATH exists (device nodes appear asynchronously).
wait_for() {
	_n=0
	while [ ! -e "$1" ]; do
		[ "$_n" -ge $((${2:-10} * 10)) ] && fail "$1 did not appear within ${2:-10}s"
		sleep 0.1
		_n=$((_n + 1))
	done
}
