#!/bin/sh
# ucow convert -O qcow2 [-c]: images go back to QEMU. For ucow, raw and qcow2 sources with
# random content (clusters 512 B, 4 KiB, 64 KiB, 2 MiB; virtual sizes that are no multiple
# of the cluster; a 4 TiB sparse image), the output passes `qemu-img check`, and
# `qemu-img compare` finds it identical to the source; -c output is smaller for
# compressible data, identical in content, and keeps incompressible clusters plain; the
# output reads back through ucow itself. Bad -o values, -c with a raw DST, and a failed
# write (a full file system) leave nothing behind (-c -O ucow: t_convert_compressed).
. "$CLI_LIB"
SEED=${QCOW2_SEED:-$$}
echo "seed $SEED (QCOW2_SEED=$SEED reruns this)"

# writes FILE FMT SIZE N: N random writes (compressible patterns, random bytes, zeros)
writes() {
	$PY - "$SEED$1" "$4" "$3" >cmds.$$ <<'PY'
import random, sys
r = random.Random(sys.argv[1])
n, size = int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    ln = min(r.choice([512, 4096, 65536, 3 * 65536 + 512, 2 << 20]), size)
    off = r.randrange(0, (size - ln) // 512 + 1) * 512
    k = r.random()
    if k < 0.5:
        print(f"-c\nwrite -P {r.randrange(1, 255)} {off} {ln}")
    elif k < 0.8:
        print(f"-c\nwrite -z {off} {ln}")
    else:
        print(f"-c\nwrite -P 0 {off} {ln}")
PY
	tr '\n' '\0' <cmds.$$ | xargs -0 qemu-io -f "$2" "$1" >/dev/null || fail "qemu-io on $1"
}

# out SRC FMT ARGS...: convert SRC to out.qcow2 with ARGS, then check it against SRC (a
# ucow SRC: against REF_RAW, a raw file of the same content; qemu-img has no ucow driver)
out() {
	src=$1 fmt=$2
	shift 2
	rfmt=$fmt ref=$src
	[ "$fmt" = ucow ] && rfmt=$REF_FMT ref=$REF_RAW
	rm -f out.qcow2
	expect_ok $UCOW convert -f "$fmt" "$@" -O qcow2 "$src" out.qcow2
	qemu-img check -f qcow2 out.qcow2 >check.out 2>&1 || { cat check.out; fail "qemu-img check of $src $*"; }
	grep -q "No errors were found" check.out || { cat check.out; fail "qemu-img check of $src $*: not clean"; }
	qemu-img compare -f "$rfmt" -F qcow2 "$ref" out.qcow2 >/dev/null ||
		fail "qemu-img compare: $src and its qcow2 output ($*) differ"
}

# sources of every kind
expect_ok qemu-img create -q -f qcow2 src.qcow2 100M
writes src.qcow2 qcow2 104857600 40
expect_ok $UCOW create -q -f ucow src.ucow 100M
qemu-img convert -f qcow2 -O raw src.qcow2 src.raw || fail "qemu-img convert"
expect_ok $UCOW convert -f raw -O ucow src.raw src.ucow
REF_RAW=src.raw REF_FMT=raw
for f in qcow2 ucow raw; do
	out src.$f $f
	ok "$f source: qemu-img check clean, identical"
done
plain=$(stat -c %s out.qcow2)

# cluster sizes, and a size that is no multiple of the cluster
for cs in 512 4096 65536 2097152; do
	out src.raw raw -o cluster_size=$cs
	qemu-img info out.qcow2 | grep -q "cluster_size: $cs$" || fail "cluster_size $cs not used"
done
ok "clusters 512 B .. 2 MiB"
expect_ok truncate -s 10000384 odd.raw
expect_ok qemu-io -f raw -c 'write -P 0x5a 9999360 1024' -c 'write -P 7 0 1' odd.raw
out odd.raw raw -o cluster_size=65536
ok "a virtual size of 10000384 bytes (no multiple of 64 KiB)"

# compressed: smaller, identical; random data stays plain
out src.raw raw -c
comp=$(stat -c %s out.qcow2)
[ "$comp" -lt "$plain" ] || fail "-c output ($comp bytes) is not smaller than the plain one ($plain)"
qemu-img check out.qcow2 | grep -q 'compressed clusters' || fail "no compressed clusters reported"
out src.raw raw -c -o compression_level=1,cluster_size=4096
head -c 1048576 /dev/urandom >rnd.raw
out rnd.raw raw -c
qemu-img check out.qcow2 | grep -q '0.00% compressed' || fail "incompressible clusters were stored compressed"
ok "-c: $plain -> $comp bytes, identical; random data stored plain"

# ucow reads its own output, plain and compressed, through the engine
out src.raw raw -c
expect_ok $UCOW convert -O raw out.qcow2 back.raw
cmp src.raw back.raw || fail "ucow reads another content from its qcow2 output"
expect_ok $UCOW compare -F raw out.qcow2 src.raw
ok "ucow reads the output back"

# a large sparse image: L1 sized for 4 TiB, a few clusters far apart
expect_ok $UCOW create -q -f ucow big.ucow 4T
expect_ok $UCOW io -c 'write -P 1 0 64k' -c 'write -P 2 2T 64k' -c 'write -P 3 4095G 4k' big.ucow
expect_ok qemu-img create -q -f qcow2 big.qcow2 4T
expect_ok qemu-io -f qcow2 -c 'write -P 1 0 64k' -c 'write -P 2 2T 64k' -c 'write -P 3 4095G 4k' big.qcow2
REF_RAW=big.qcow2 REF_FMT=qcow2
out big.ucow ucow
[ "$(stat -c %s out.qcow2)" -lt $((2 * 1024 * 1024)) ] || fail "4 TiB sparse output is $(stat -c %s out.qcow2) bytes"
ok "4 TiB sparse: $(stat -c %s out.qcow2) bytes"

# errors: one line, nothing left behind
rm -f out.qcow2
expect_err 1 'cluster_size=3000: not a power of two' $UCOW convert -f raw -O qcow2 -o cluster_size=3000 src.raw out.qcow2
expect_err 1 'cluster_size=4M: not a power of two from 512 to 2M' $UCOW convert -f raw -O qcow2 -o cluster_size=4M src.raw out.qcow2
expect_err 1 'compression_level=1: needs -c' $UCOW convert -f raw -O qcow2 -o compression_level=1 src.raw out.qcow2
expect_err 1 'compression_level=0: not 1 to 9' $UCOW convert -c -f raw -O qcow2 -o compression_level=0 src.raw out.qcow2
expect_err 1 "unknown option for qcow2" $UCOW convert -f raw -O qcow2 -o chunk_size=1M src.raw out.qcow2
expect_err 1 'c needs a format with compression' $UCOW convert -c -f raw src.raw out.raw
expect_err 1 "unknown format 'vmdk'" $UCOW convert -f raw -O vmdk src.raw out.vmdk
no_file out.qcow2 out.raw out.vmdk
ok "bad options refused with one line, nothing written"

# a full file system: the write fails, no output and no temporary file left
if [ "$(id -u)" = 0 ] && mkdir mnt && mount -t tmpfs -o size=600k tmpfs mnt 2>/dev/null; then
	run $UCOW convert -f raw -O qcow2 rnd.raw mnt/full.qcow2
	umount mnt
	[ $st -eq 1 ] || fail "convert onto a full file system exited $st"
	grep -q 'No space left' err || fail "no ENOSPC message: $(cat err)"
	ok "a full file system: exit 1, nothing left behind"
else
	ok "(no tmpfs mount here: the full file system case is skipped)"
fi
rm -rf mnt
