#!/bin/sh
# The nbdkit plugin (issue 16, item 4): a ucow overlay served by `nbdkit nbdkit-ucow-plugin.so
# IMAGE` on a Unix socket takes random writes, FUA writes, zeroes, trims and flushes from
# qemu-io over NBD exactly as a raw twin takes them locally; four connections write at once
# (multi-conn); the image then checks clean and reads as the twin. A snapshot is served
# read-only (snapshot=NAME) and reads as `convert -l`; readonly=true refuses writes and
# leaves the file untouched; bad parameters, a missing image and a backing file outside the
# image's folder stop nbdkit with its error. Block status (nbdinfo --map) shows the base's
# data and holes, a zeroed chunk and the overlay's data as they are.
. "$CLI_LIB"
P=$(dirname "$UCOW")/nbdkit-ucow-plugin.so
[ -f "$P" ] || fail "no plugin at $P"
command -v nbdkit >/dev/null || fail "nbdkit not installed (make deps)"
SEED=${NBD_SEED:-$$}
echo "seed $SEED (NBD_SEED=$SEED reruns this)"
# an ASan build of the plugin (make asan-check): nbdkit itself is not instrumented, so the
# sanitizer runtimes are preloaded into it (nbdkit's own allocations are not leak-checked)
san=$(ldd "$P" | awk '/lib(asan|ubsan)\.so/ { printf "%s%s", sep, $3; sep = ":" }')
nbdkit() {	# nbdkit itself, with the runtimes its sanitized plugin needs (only it)
	if [ -n "$san" ]; then
		LD_PRELOAD="$san" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
			command nbdkit "$@"
	else
		command nbdkit "$@"
	fi
}
[ -n "$san" ] && echo "sanitized plugin: nbdkit runs with LD_PRELOAD=$san"
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null; done' EXIT

# serve SOCK ARGS...: nbdkit on SOCK in the background; waits until it listens
serve() {
	sock=$1
	shift
	rm -f "$sock"
	nbdkit -f -U "$sock" "$P" "$@" 2>"$sock.err" &
	spid=$!
	pids="$pids $spid"
	for i in $(seq 100); do
		[ -S "$sock" ] && return 0
		kill -0 $spid 2>/dev/null || break
		sleep 0.05
	done
	fail "nbdkit $* did not start: $(cat "$sock.err")"
}
stop() { kill "$spid" && wait "$spid" 2>/dev/null; return 0; }
uri() { echo "nbd+unix:///?socket=$PWD/$1"; }

# cmds N SIZE: N random qemu-io commands (writes, FUA writes, zeroes, discards, flushes)
cmds() {
	$PY - "$SEED$1" "$1" "$2" <<'PY'
import random, sys
r = random.Random(sys.argv[1])
n, size = int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    ln = r.choice([512, 4096, 65536, 1 << 20, r.randrange(1, 400) * 512])
    off = r.randrange(0, (size - ln) // 512 + 1) * 512
    k = r.random()
    if k < 0.55:
        print(f"write -P {r.randrange(1, 255)} {off} {ln}")
    elif k < 0.7:
        print(f"write -f -P {r.randrange(1, 255)} {off} {ln}")
    elif k < 0.85:
        print(f"write -z {off} {ln}")
    elif k < 0.95:
        # a trim leaves the range unspecified: zero it right after, on both sides
        print(f"discard {off} {ln}")
        print(f"write -z {off} {ln}")
    else:
        print("flush")
PY
}
# qio TARGET ARGS... < commands: run them with qemu-io
qio() {
	t=$1
	shift
	sed 's/^/-c\n/' | tr '\n' '\0' | xargs -0 qemu-io "$@" "$t" >/dev/null || fail "qemu-io on $t"
}

expect_ok $UCOW create -q -f ucow base.ucow 32M
expect_ok $UCOW io -c 'write -P 0x11 0 32M' base.ucow
expect_ok $UCOW create -q -f ucow -b base.ucow -F ucow ov.ucow
expect_ok $UCOW convert -O raw ov.ucow twin.raw

# 1. random writes over NBD, the same locally on the twin
cmds 300 33554432 >c.txt
serve s1 ov.ucow
qio "$(uri s1)" -f raw <c.txt
grep -v '^discard ' c.txt | qio twin.raw -f raw
nbdinfo "$(uri s1)" >info.txt || fail "nbdinfo"
grep -q 'can_multi_conn: true' info.txt && grep -q 'can_fua: true' info.txt &&
	grep -q 'can_trim: true' info.txt && grep -q 'is_read_only: false' info.txt ||
	fail "nbdinfo: $(cat info.txt)"
qemu-img convert -f raw -O raw "$(uri s1)" served.raw || fail "qemu-img convert from NBD"
cmp served.raw twin.raw || fail "the NBD export differs from the twin"
# and qemu-img compare of the export against the image read locally (a snapshot of it: the
# served image is locked) through ucow's own reader
run $UCOW convert -U -O raw ov.ucow local.raw
[ $st -eq 0 ] && grep -q "another process has the image open for writing" err ||
	fail "convert -U of the served image: $st, $(cat err)"
qemu-img compare -f raw -F raw "$(uri s1)" local.raw >cmp.out 2>&1 ||
	fail "qemu-img compare of the export and the image read locally: $(cat cmp.out)"
stop
expect_ok $UCOW check ov.ucow
expect_ok $UCOW compare -F raw ov.ucow twin.raw
ok "300 random writes, FUA writes, zeroes, trims and flushes over NBD; the image checks clean"

# 2. four connections at once (multi-conn), each its own 4 MiB
serve s2 ov.ucow
qp=""
for i in 0 1 2 3; do
	timeout 60 qemu-io -f raw -c "write -P $((0x40 + i)) $((i * 4))M 4M" -c flush \
		"$(uri s2)" >/dev/null &
	qp="$qp $!"
done
for j in $qp; do wait "$j" || fail "a parallel connection failed"; done
for i in 0 1 2 3; do
	qemu-io -f raw -c "read -P $((0x40 + i)) $((i * 4))M 4M" "$(uri s2)" >/dev/null ||
		fail "connection $i's data"
done
stop
for i in 0 1 2 3; do
	expect_ok $UCOW io -c "read -P $((0x40 + i)) $((i * 4))M 4M" ov.ucow
done
expect_ok $UCOW check ov.ucow
ok "four connections wrote at once"

# 3. a snapshot, read-only
expect_ok $UCOW snapshot -c s ov.ucow
expect_ok $UCOW io -c 'write -P 0x99 0 1M' ov.ucow
expect_ok $UCOW convert -l s -O raw ov.ucow snap.raw
serve s3 ov.ucow snapshot=s
nbdinfo "$(uri s3)" | grep -q 'is_read_only: true' || fail "the snapshot export is writable"
qemu-img convert -f raw -O raw "$(uri s3)" served.raw || fail "qemu-img convert of the snapshot"
cmp served.raw snap.raw || fail "the snapshot export differs from convert -l"
qemu-io -f raw -c 'write 0 4k' "$(uri s3)" >w.out 2>&1 && fail "a write to the snapshot export succeeded"
stop
expect_ok $UCOW io -c 'read -P 0x99 0 1M' ov.ucow
ok "snapshot=s: read-only, reads as convert -l"

# 4. readonly=true leaves the file untouched
sum=$(sha256sum <ov.ucow)
serve s4 ov.ucow readonly=true
qemu-io -f raw -c 'write 0 4k' "$(uri s4)" >w.out 2>&1 && fail "a write to a readonly export succeeded"
qemu-io -r -f raw -c 'read -P 0x99 0 1M' "$(uri s4)" >/dev/null || fail "readonly export: read"
stop
[ "$(sha256sum <ov.ucow)" = "$sum" ] || fail "readonly=true changed the file"
ok "readonly=true"

# 5. refusals: nbdkit stops with the reason
bad() {	# bad PATTERN ARGS...
	pat=$1
	shift
	rm -f b.sock
	if [ -n "$san" ]; then
		# nbdkit with preloaded sanitizer runtimes does not always exit after a failed
		# start (nbdkit's exit path, not the plugin's): the message is what counts here
		timeout -s KILL 8 env LD_PRELOAD="$san" ASAN_OPTIONS=detect_leaks=0 \
			nbdkit -f -U b.sock "$P" "$@" >b.out 2>&1 && fail "nbdkit $* started"
	else
		nbdkit -f -U b.sock "$P" "$@" >b.out 2>&1 && fail "nbdkit $* started"
	fi
	grep -qE -- "$pat" b.out || fail "nbdkit $*: '$(cat b.out)' does not match '$pat'"
}
bad "No such file|nope.ucow" nope.ucow
bad "unknown parameter 'colour'" ov.ucow colour=blue
bad "no snapshot 'zz'" ov.ucow snapshot=zz
bad "missing" snapshot=s
mkdir -p sub
expect_ok $UCOW create -q -f ucow -b ../base.ucow -F ucow sub/out.ucow
bad "outside" sub/out.ucow
serve s5 sub/out.ucow allow-backing-outside=true
qemu-io -f raw -c 'read -P 0x11 8M 1M' "$(uri s5)" >/dev/null || fail "allow-backing-outside: read"
stop
ok "bad parameters, a missing image, a backing file outside: refused with the reason"

# 6. block status: ranges that read as zeros without data are holes, through the chain
truncate -s 8M eb.raw
dd if=/dev/urandom of=eb.raw bs=1M count=2 conv=notrunc status=none
expect_ok $UCOW create -q -f ucow -b eb.raw -F raw eo.ucow
expect_ok $UCOW io -c 'write -P 7 4M 1M' -c 'write -z 6M 1M' -c 'write -P 9 7M 4k' eo.ucow
serve s6 eo.ucow
nbdinfo --map "$(uri s6)" | awk '{ print $1, $2, $3 }' >map.txt || fail "nbdinfo --map"
cat >want.txt <<'MAP'
0 2097152 0
2097152 2097152 3
4194304 1048576 0
5242880 2097152 3
7340032 4096 0
7344128 1044480 3
MAP
cmp map.txt want.txt || fail "block status: $(cat map.txt)"
qemu-img convert -f raw -O raw "$(uri s6)" served.raw || fail "qemu-img convert of s6"
stop
expect_ok $UCOW compare -F raw eo.ucow served.raw
ok "block status: base data, base holes, a zeroed chunk, overlay data"
