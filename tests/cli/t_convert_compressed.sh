#!/bin/sh
# ucow convert -c -O ucow: compressed chunks. A source of mixed content (compressible text,
# random bytes, zeros, a size that is no multiple of the chunk) converted with -c reads back
# identical, takes less disk than the plain conversion, info counts the compressed chunks,
# check inflates every stream; -o compression_level and the refusals; -B with -c (the
# overlay plus its backing equals the source); random writes, zero-writes and discards over
# the compressed image, with snapshots between rounds, against a raw copy given the same
# writes (the snapshots read back as the copy was); the space of the packs comes back once
# every stream is written over.
. "$CLI_LIB"
SEED=${COMPRESS_SEED:-$$}
echo "seed $SEED (COMPRESS_SEED=$SEED reruns this)"

$PY - "$SEED" src.raw <<'PY' || fail "making the source"
import os, random, sys
r = random.Random(int(sys.argv[1]))
size = 24 * 1048576 + 12288
out = bytearray(size)
pos = 0
while pos < size:
    n = min(r.choice([4096, 65536, 300000, 1048576]), size - pos)
    k = r.random()
    if k < 0.45:
        w = (b"ucow %d compressed chunk " % r.randrange(1000)) * (n // 20 + 1)
        out[pos:pos + n] = w[:n]
    elif k < 0.7:
        out[pos:pos + n] = r.randbytes(n)
    pos += n
open(sys.argv[2], "wb").write(out)
PY

expect_ok $UCOW convert -f raw -O ucow src.raw plain.ucow
expect_ok $UCOW convert -f raw -c -O ucow src.raw c.ucow
expect_ok $UCOW compare -f raw -F ucow src.raw c.ucow
expect_ok $UCOW check c.ucow
expect_ok $UCOW info c.ucow
grep -q "^compressed chunks: [1-9]" out || fail "info shows no compressed chunks: $(cat out)"
expect_ok $UCOW info --output=json c.ucow
grep -q '"compressed-chunks": [1-9]' out || fail "info JSON has no compressed-chunks"
pd=$(du -k plain.ucow | cut -f1) cd=$(du -k c.ucow | cut -f1)
[ "$cd" -lt "$pd" ] || fail "compressed image takes ${cd}k, the plain one ${pd}k"
ok "convert -c -O ucow: identical, check clean, ${cd}k on disk against ${pd}k plain"

# levels: 1 and 9 work and read the same; 9 is not larger than 1
expect_ok $UCOW convert -f raw -c -o compression_level=1,chunk_size=256k -O ucow src.raw c1.ucow
expect_ok $UCOW convert -f raw -c -o chunk_size=256k,compression_level=9 -O ucow src.raw c9.ucow
expect_ok $UCOW compare -f raw -F ucow src.raw c1.ucow
expect_ok $UCOW compare -f raw -F ucow src.raw c9.ucow
expect_ok $UCOW info --output=json c9.ucow
grep -q '"chunk-size": 262144' out || fail "chunk_size=256k not taken with compression_level"
[ "$(du -k c9.ucow | cut -f1)" -le "$(du -k c1.ucow | cut -f1)" ] || fail "level 9 larger than 1"
expect_err 1 "compression_level=0: not 1 to 9" $UCOW convert -f raw -c -o compression_level=0 -O ucow src.raw bad.ucow
expect_err 1 "compression_level=1: needs -c" $UCOW convert -f raw -o compression_level=1 -O ucow src.raw bad.ucow
expect_err 1 "c needs a format with compression" $UCOW convert -f raw -c src.raw bad.raw
[ ! -e bad.ucow ] && [ ! -e bad.raw ] || fail "a refused convert left a file"
ok "compression_level 1 and 9, refusals leave nothing"

# -B: only what differs from the base, compressed; overlay + base = source
$PY - src.raw base.raw <<'PY' || fail "making the base"
import sys
d = bytearray(open(sys.argv[1], "rb").read())
for off in range(0, len(d), 3 * 1048576):	# the base differs in places
    d[off:off + 70000] = bytes(70000)
open(sys.argv[2], "wb").write(d)
PY
expect_ok $UCOW convert -f raw -c -B base.raw -F raw -O ucow src.raw ov.ucow
expect_ok $UCOW compare -f raw -F ucow src.raw ov.ucow
expect_ok $UCOW check ov.ucow
ok "-c -B: the overlay over its base reads as the source"

# random writes over the compressed image and a raw copy, snapshots between rounds
cp src.raw copy.raw
for round in 1 2 3 4; do
	$PY - "$SEED$round" 25178112 >cmds <<'PY'
import random, sys
r = random.Random(sys.argv[1])
size = int(sys.argv[2])
for i in range(30):
    ln = r.choice([512, 4096, 12288, 65536, 1048576 + 4096])
    off = r.randrange(0, (size - ln) // 512) * 512
    k = r.random()
    if k < 0.6:
        print(f"write -P {r.randrange(1, 255)} {off} {ln}")
    elif k < 0.8:
        print(f"write -z {off} {ln}")
    else:
        print(f"discard {off} {ln}")
PY
	set --
	while read -r line; do set -- "$@" -c "$line"; done <cmds
	expect_ok $UCOW io "$@" c.ucow
	# the raw copy: discards read as zeros there as well
	sed 's/^discard /write -z /' cmds >cmds.raw
	set --
	while read -r line; do set -- "$@" -c "$line"; done <cmds.raw
	expect_ok $UCOW io -f raw "$@" copy.raw
	expect_ok $UCOW compare -f ucow -F raw c.ucow copy.raw
	expect_ok $UCOW snapshot -c "r$round" c.ucow
	cp copy.raw "snap$round.raw"
done
expect_ok $UCOW check c.ucow
for round in 1 3; do
	expect_ok $UCOW convert -l "r$round" -O raw c.ucow "view$round.raw"
	cmp -s "view$round.raw" "snap$round.raw" || fail "snapshot r$round differs from the copy"
done
expect_ok $UCOW snapshot -d r1 c.ucow
expect_ok $UCOW snapshot -a r3 c.ucow
expect_ok $UCOW compare -f ucow -F raw c.ucow snap3.raw
expect_ok $UCOW check c.ucow
ok "random writes, zero-writes, discards and snapshots over compressed chunks"

# every stream written over, the snapshots gone: the packs' space comes back
for s in r2 r3 r4; do expect_ok $UCOW snapshot -d $s c.ucow; done
expect_ok $UCOW io -c "write -P 7 0 25178112" c.ucow
expect_ok $UCOW info --output=json c.ucow
! grep -q '"compressed-chunks"' out || fail "compressed chunks left after writing everything"
expect_ok $UCOW check c.ucow
used=$(du -k c.ucow | cut -f1)
[ "$used" -le $((25178112 / 1024 + 5 * 1024)) ] || fail "c.ucow still takes ${used}k"
ok "packs punched once nothing maps them (${used}k)"
