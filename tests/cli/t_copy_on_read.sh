#!/bin/sh
# Copy-on-read (issue 16, item 3): `create -o copy_on_read=on` records it (info shows it;
# refused without -b, for raw, with a bad value), `io -C` turns it on for one run. Over a
# base served by nbdkit with its log filter, the first pass over the overlay reads the base,
# the second pass (the same reads, then the whole disk) sends the server no read at all, and
# the overlay then equals the base; partial and unaligned reads copy whole blocks (map). A
# copy never covers a newer write: random histories with -C on most runs check every read
# and the whole image against a model (randio.py), over a local base and over the NBD one.
# `dev add --copy-on-read` is refused for the read-only and non-cow cases.
. "$CLI_LIB"
command -v nbdkit >/dev/null || fail "nbdkit not installed (make deps)"
SEED=${COR_SEED:-$$}
echo "seed $SEED (COR_SEED=$SEED reruns this)"
A=--allow-network-backing
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null; done' EXIT

$PY - "$SEED" <<'PY' || fail "making base.raw"
import random, sys
r = random.Random(int(sys.argv[1]))
open("base.raw", "wb").write(bytes(r.getrandbits(8) for _ in range(4 << 20)))
PY

# ---- options ----
expect_err 1 "cor0.ucow: copy_on_read=on needs a backing file \(-b\)" \
	"$UCOW" create -q -f ucow -o copy_on_read=on cor0.ucow 4M
no_file cor0.ucow
expect_err 1 "cor0.ucow: invalid copy_on_read 'yes' \(on or off\)" \
	"$UCOW" create -q -f ucow -b base.raw -F raw -o copy_on_read=yes cor0.ucow
no_file cor0.ucow
expect_err 1 "format raw takes no -o options" \
	"$UCOW" create -q -f raw -o copy_on_read=on cor0.raw 4M
no_file cor0.raw
expect_ok "$UCOW" create -f ucow -b base.raw -F raw -o copy_on_read=on cor0.ucow
grep -q "copy_on_read=on" out || fail "create does not say copy_on_read=on: $(cat out)"
expect_ok "$UCOW" info cor0.ucow
grep -qx "copy on read: on" out || fail "info does not show copy on read"
expect_ok "$UCOW" info --output=json cor0.ucow
grep -q '"copy-on-read": true' out || fail "info JSON has no copy-on-read"
expect_ok "$UCOW" create -q -f ucow -b base.raw -F raw -o copy_on_read=off cor1.ucow
expect_ok "$UCOW" info --output=json cor1.ucow
! grep -q 'copy-on-read' out || fail "copy_on_read=off shows in info"
expect_ok "$UCOW" check cor0.ucow
expect_err 1 "dev add: --copy-on-read writes into the image: the cow target, read-write, only" \
	"$UCOW" dev add --copy-on-read --read-only cor0.ucow
expect_err 1 "dev add: --copy-on-read writes into the image: the cow target, read-write, only" \
	"$UCOW" dev add --copy-on-read -t raw base.raw

# ---- partial reads copy whole blocks (4 KiB), nothing else ----
expect_ok "$UCOW" create -q -f ucow -b base.raw -F raw -o chunk_size=64k cor2.ucow
expect_ok "$UCOW" io -C -c 'read 70000 100' -c 'read 1M 4k' -c 'read 2047k 2k' cor2.ucow
expect_ok "$UCOW" io -c 'alloc 0 4M' -c 'alloc 69632 4096' -c 'alloc 1M 4k' -c 'alloc 2044k 8k' \
	cor2.ucow
sed -n 1p out | grep -q '^16384/4194304 bytes allocated' &&
	sed -n 2p out | grep -q '^4096/4096 bytes allocated' &&
	sed -n 3p out | grep -q '^4096/4096 bytes allocated' &&
	sed -n 4p out | grep -q '^8192/8192 bytes allocated' || fail "blocks copied: $(cat out)"
expect_ok "$UCOW" compare -F raw cor2.ucow base.raw

# ---- over NBD: the second pass sends no read to the server ----
rm -f s.sock
nbdkit -f -U "$PWD/s.sock" --filter=log file base.raw logfile="$PWD/nbd.log" 2>nbd.err &
pids="$pids $!"
for _i in $(seq 100); do [ -S s.sock ] && break; sleep 0.05; done
[ -S s.sock ] || fail "nbdkit did not start: $(cat nbd.err)"
U="nbd+unix:///?socket=$PWD/s.sock"
reads() { grep -c ' Read ' nbd.log; }
expect_ok "$UCOW" create -q -f ucow -b "$U" -F raw $A -o copy_on_read=on net.ucow
# a read-only open does not copy (the image is not written)
expect_ok "$UCOW" io $A -c 'read 0 64k' net.ucow
n0=$(reads)
[ "$n0" -ge 1 ] || fail "the server saw no read"
expect_ok "$UCOW" io -C $A -c 'read 0 300k' -c 'read 1000000 77777' -c 'read 3M 1M' net.ucow
n1=$(reads)
[ "$n1" -gt "$n0" ] || fail "the first pass read nothing from the server ($n0 -> $n1)"
expect_ok "$UCOW" io -C $A -c 'read 0 300k' -c 'read 1000000 77777' -c 'read 3M 1M' net.ucow
n2=$(reads)
[ "$n2" -eq "$n1" ] || fail "the second pass read from the server ($n1 -> $n2 reads)"
ok "first pass $((n1 - n0)) NBD reads, second pass none"
# the rest of the disk, then everything again: nothing more from the server
expect_ok "$UCOW" io -C $A -c 'read 0 4M' net.ucow
n3=$(reads)
expect_ok "$UCOW" io $A -c 'read 0 4M' -c 'alloc 0 4M' net.ucow
grep -q '^4194304/4194304 bytes allocated' out || fail "not all copied: $(cat out)"
[ "$(reads)" -eq "$n3" ] || fail "a read of a fully copied overlay went to the server"
expect_ok "$UCOW" compare $A -F raw net.ucow base.raw
# the overlay is self-contained now: it reads the same without its base
expect_ok "$UCOW" rebase -u -b '' net.ucow
expect_ok "$UCOW" compare -F raw net.ucow base.raw
expect_ok "$UCOW" check net.ucow

# ---- random histories with -C: no copy covers a newer write ----
mkdir -p rl rn
cp base.raw rl/base.raw
cp base.raw rn/base.raw
(cd rl && $PY "$CLI_DIR/randio.py" --ucow "$UCOW" --mode rawbase --seed "$SEED" --steps 16 \
	--cmp-every 4 --size 4M --chunk 64k --base-file base.raw --cor) >rl.log 2>&1 ||
	fail "randio -C over a local base: $(tail -n 3 rl.log)"
(cd rn && $PY "$CLI_DIR/randio.py" --ucow "$UCOW" --mode rawbase --seed "$SEED" --steps 10 \
	--cmp-every 5 --size 4M --base-file base.raw --base-uri "$U" --cor) >rn.log 2>&1 ||
	fail "randio -C over the NBD base: $(tail -n 3 rn.log)"
ok "random histories with copy-on-read: $(tail -n 1 rl.log); $(tail -n 1 rn.log)"
