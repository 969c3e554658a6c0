#!/bin/sh
# commit: an overlay's content into its backing file (raw, ucow, a deeper image with -b),
# zeroed and discarded runs as zeros, the overlay emptied (not with -d, nor with -b), the
# refusals (no backing file, snapshots, BASE held by another process, BASE not in the
# chain, outside the folder, a ucow BASE too small), then qemu-img commit on the same
# random chains (chaintest.py qemu) and kill -9 at every step of a sample (chaintest.py kill).
. "$CLI_LIB"
view() { $UCOW convert "$1" "$2" >/dev/null || fail "convert $1"; }
alloc() {	# allocated and zero chunks of a ucow image: "A Z"
	$UCOW info --output=json "$1" >info.json || fail "info $1"
	$PY -c "import json; d = json.load(open('info.json'))['format-specific']['data'];
print(d['allocated-chunks'], d['zero-chunks'])"
}

# raw base <- ucow mid <- ucow top: top's data, zero-writes and discards go into mid
expect_ok $UCOW create -q -f raw base.raw 8M
expect_ok $UCOW io -f raw -c 'write -P 0xaa 0 8M' base.raw
expect_ok $UCOW create -q -o chunk_size=64k -b base.raw -F raw mid.img
expect_ok $UCOW io -c 'write -P 0xbb 1M 2M' -c 'discard 5M 1M' mid.img
expect_ok $UCOW create -q -o chunk_size=64k -b mid.img -F ucow top.img
expect_ok $UCOW io -c 'write -P 0xcc 2M 100' -c 'write -z 6M 4096' -c 'discard 4M 128k' \
	-c 'write -P 0xdd 7340000 70000' -c 'write -P 0xee 65536 1' top.img
view top.img want.raw
for f in base.raw mid.img top.img; do cp --sparse=always $f $f.0; done
expect_ok $UCOW commit top.img
grep -qx 'Image committed.' out || fail "commit printed '$(cat out)', not 'Image committed.'"
view top.img got.raw
cmp got.raw want.raw || fail "top.img shows other content after the commit"
view mid.img got.raw
cmp got.raw want.raw || fail "mid.img does not hold top.img's content"
cmp base.raw base.raw.0 || fail "commit changed base.raw, below the backing file"
[ "$(alloc top.img)" = "0 0" ] || fail "top.img not emptied: $(alloc top.img) allocated/zero chunks"
expect_ok $UCOW check top.img
expect_ok $UCOW check mid.img
# the discarded run reads zeros through the emptied top, from mid
expect_ok $UCOW io -c 'read -P 0 4M 128k' -c 'read -P 0 6M 4096' -c 'read -P 0xaa 6295552 4096' -c 'read -P 0xcc 2M 100' top.img
# again: nothing left to do, nothing changes
expect_ok $UCOW commit -q top.img
[ ! -s out ] || fail "commit -q printed '$(cat out)'"
view mid.img got.raw
cmp got.raw want.raw || fail "a second commit changed mid.img"

# -d: top.img keeps its data; -p: progress on stderr
for f in base.raw mid.img top.img; do cp --sparse=always $f.0 $f; done
run $UCOW commit -p -d top.img
[ $st -eq 0 ] || fail "commit -p -d exited $st"
grep -q '(100.00/100%)' err || fail "-p printed no final progress: $(cat err)"
[ "$(alloc top.img)" = "$(alloc top.img.0)" ] || fail "commit -d changed top.img"
view mid.img got.raw
cmp got.raw want.raw || fail "commit -d: mid.img does not hold top.img's content"

# -b: everything above base.raw goes into it; top.img stays as it was (-b implies -d)
for f in base.raw mid.img top.img; do cp --sparse=always $f.0 $f; done
expect_ok $UCOW commit -b base.raw top.img
cmp base.raw want.raw || fail "commit -b: base.raw does not hold top.img's content"
[ "$(alloc top.img)" = "$(alloc top.img.0)" ] || fail "commit -b emptied top.img"
view top.img got.raw
cmp got.raw want.raw || fail "commit -b: top.img shows other content"
# the images between are left as they were, and show the new base where they have no data
view mid.img got.raw
cmp -s got.raw want.raw && fail "mid.img shows top.img's content: it was written to"
expect_ok $UCOW io -c 'read -P 0xbb 1M 2M' -c 'read -P 0 5M 1M' -c 'read -P 0xdd 7340000 70000' \
	-c 'read -P 0 4M 128k' mid.img
# top.img straight onto base.raw: the same content, one image less
expect_ok $UCOW rebase -u -b base.raw -F raw top.img
view top.img got.raw
cmp got.raw want.raw || fail "commit -b, rebase -u: top.img shows other content"
# BASE named by a path from here, the chain's own name from top's folder, or ./NAME
mkdir -p d
expect_ok $UCOW create -q -f raw d/b.raw 1M
expect_ok $UCOW create -q -b b.raw -F raw d/m.img
expect_ok $UCOW create -q -b m.img -F ucow d/t.img
expect_ok $UCOW io -c 'write -P 7 0 4096' d/t.img
expect_ok $UCOW commit -b d/b.raw d/t.img
expect_ok $UCOW commit -b b.raw d/t.img
expect_ok $UCOW io -f raw -c 'read -P 7 0 4096' -c 'read -P 0 4096 4096' d/b.raw

# a ucow base (itself an overlay of a raw file); a raw base smaller than the overlay grows
expect_ok $UCOW create -q -f raw r.raw 4M
expect_ok $UCOW io -f raw -c 'write -P 0x11 0 4M' r.raw
expect_ok $UCOW create -q -o chunk_size=64k -b r.raw -F raw ub.img
expect_ok $UCOW io -c 'write -P 0x22 1M 1M' ub.img
expect_ok $UCOW create -q -o chunk_size=256k,block_size=64k -b ub.img -F ucow ut.img
expect_ok $UCOW io -c 'write -P 0x33 1536k 2M' -c 'write -P 0x44 100 200' -c 'discard 3840k 256k' ut.img
view ut.img want2.raw
expect_ok $UCOW commit ut.img
view ub.img got.raw
cmp got.raw want2.raw || fail "ucow base: ub.img does not hold ut.img's content"
expect_ok $UCOW io -f raw -c 'read -P 0x11 0 4M' r.raw
expect_ok $UCOW check ub.img
expect_ok $UCOW create -q -f raw small.raw 1M
expect_ok $UCOW create -q -b small.raw -F raw big.img 3M
expect_ok $UCOW io -c 'write -P 0x55 2M 1M' big.img
expect_ok $UCOW commit big.img
[ "$(stat -c %s small.raw)" -eq 3145728 ] || fail "small.raw did not grow: $(stat -c %s small.raw)"
expect_ok $UCOW io -f raw -c 'read -P 0 0 2M' -c 'read -P 0x55 2M 1M' small.raw
expect_ok $UCOW create -q small.img 1M
expect_ok $UCOW create -q -b small.img -F ucow big2.img 3M
expect_err 1 "small.img: is smaller \(1048576 bytes\) than big2.img \(3145728 bytes\); grow it first" \
	$UCOW commit big2.img

# refused, nothing changed
expect_ok $UCOW create -q solo.img 1M
expect_err 1 "solo.img: has no backing file: nothing to commit into" $UCOW commit solo.img
expect_err 1 "small.raw: not a ucow image" $UCOW commit small.raw
expect_err 1 "small.raw: has no backing file" $UCOW commit -f raw small.raw
expect_err 1 "commit: unknown format 'vmdk'" $UCOW commit -f vmdk top.img
expect_err 1 "top.img: not a qcow2 image" $UCOW commit -f qcow2 top.img
expect_err 1 "commit: expected FILE" $UCOW commit
expect_err 1 "commit: too many arguments" $UCOW commit top.img mid.img
expect_err 1 "missing.img: No such file or directory" $UCOW commit missing.img
expect_err 1 "commit: the base image name is empty" $UCOW commit -b '' top.img
for f in base.raw mid.img top.img; do cp --sparse=always $f.0 $f; done
expect_err 1 "top.img: 'nope.img' is not a backing file of this image" $UCOW commit -b nope.img top.img
expect_err 1 "top.img: 'top.img' is not a backing file of this image" $UCOW commit -b top.img top.img
expect_err 1 "top.img: 'solo.img' is not a backing file of this image" $UCOW commit -b solo.img top.img
expect_ok $UCOW snapshot -c s1 top.img
expect_err 1 "top.img: has 1 internal snapshot: a commit would change what it reads from the backing file \(delete it first\)" \
	$UCOW commit top.img
cp --sparse=always top.img.0 top.img
# BASE held by another process (serving another overlay of it): refused, nothing written
$PY -c '
import fcntl, sys, time
f = open(sys.argv[1], "rb")
fcntl.lockf(f, fcntl.LOCK_SH)
print("locked", flush=True)
time.sleep(60)' mid.img >lock.out &
lockpid=$!
trap 'kill $lockpid 2>/dev/null' EXIT
wait_locked
expect_err 1 "mid.img: image is in use by another process" $UCOW commit top.img
kill $lockpid
wait $lockpid 2>/dev/null
view top.img got.raw
cmp got.raw want.raw || fail "a refused commit changed top.img's content"
[ "$(alloc top.img)" = "$(alloc top.img.0)" ] || fail "a refused commit emptied top.img"
view mid.img got.raw
view mid.img.0 mid0.raw
cmp got.raw mid0.raw || fail "a refused commit changed mid.img"
# FILE held by a writer: refused before anything is opened for writing
$PY -c '
import fcntl, sys, time
f = open(sys.argv[1], "r+b")
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)' top.img >lock.out &
lockpid=$!
wait_locked
expect_err 1 "top.img: image is in use by another process" $UCOW commit top.img
kill $lockpid
wait $lockpid 2>/dev/null
trap - EXIT
# a backing file outside FILE's folder is written to only when allowed
mkdir -p in
expect_ok $UCOW create -q -f raw out.raw 1M
expect_ok $UCOW create -q -b ../out.raw -F raw in/o.img
expect_ok $UCOW io -c 'write -P 9 0 512' in/o.img
expect_err 1 "in/o.img: backing file '../out.raw' lies outside the image's folder; add --allow-backing-outside" \
	$UCOW commit in/o.img
expect_ok $UCOW io -f raw -c 'read -P 0 0 512' out.raw
expect_ok $UCOW commit --allow-backing-outside in/o.img
expect_ok $UCOW io -f raw -c 'read -P 9 0 512' out.raw

# qemu-img commit on the same random chains: every image byte for byte the same
command -v qemu-img >/dev/null || fail "qemu-img not installed (make deps)"
ct() { $PY "$CLI_DIR/chaintest.py" --ucow "$UCOW" --ops commit,commit-d,commit-b "$@"; }
ct --mode qemu --seed 301 --base raw || fail "qemu, raw base, seed 301"
ct --mode qemu --seed 302 --base ucow --cmds 25 || fail "qemu, ucow base, seed 302"
ct --mode qemu --seed 303 --base raw --grow || fail "qemu, smaller raw base, seed 303"
# killed at every write and sync (and a sample of the ring submissions), then run again
command -v strace >/dev/null || fail "strace not installed (make deps)"
# (the sanitizer build, CLI_SHORT=1: a quarter of the points; the plain run takes them all)
ct --mode kill --seed 311 --base ucow --points $(pts 40) || fail "kill, ucow base, seed 311"
ct --mode kill --seed 312 --base raw --grow --points $(pts 30) || fail "kill, raw base, seed 312"
ok "commit"
