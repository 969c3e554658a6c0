#!/bin/sh
# rebase: onto another backing file with the content kept (what differs copied in, zeros
# as zeros), from none onto one, flattened (-b ""), -u (the name only, also when the old
# backing file is gone or the new one is not there yet), names stored as given and taken
# from the image's folder, the refusals; then qemu-img rebase on the same random chains
# (chaintest.py qemu) and kill -9 at every step of a sample (chaintest.py kill).
. "$CLI_LIB"
view() { $UCOW convert "$1" "$2" >/dev/null || fail "convert $1"; }
backing() {	# the backing name FILE stores, "" for none
	$UCOW info --output=json "$1" >info.json || fail "info $1"
	$PY -c "import json; print(json.load(open('info.json')).get('backing-filename', ''))"
}

expect_ok $UCOW create -q -f raw base.raw 8M
expect_ok $UCOW io -f raw -c 'write -P 0xaa 0 8M' base.raw
expect_ok $UCOW create -q -o chunk_size=64k -b base.raw -F raw mid.img
expect_ok $UCOW io -c 'write -P 0xbb 1M 2M' -c 'discard 5M 1M' mid.img
expect_ok $UCOW create -q -o chunk_size=64k -b mid.img -F ucow top.img
expect_ok $UCOW io -c 'write -P 0xcc 2M 100' -c 'write -z 7M 4096' -c 'write -P 0xdd 1500k 3000' top.img
view top.img want.raw
for f in mid.img top.img; do cp --sparse=always $f $f.0; done

# safe: onto base.raw, past mid.img: mid's part of the content comes into top.img
expect_ok $UCOW rebase -b base.raw -F raw top.img
[ ! -s out ] || fail "rebase printed '$(cat out)'"
[ "$(backing top.img)" = base.raw ] || fail "backing file '$(backing top.img)', not base.raw"
view top.img got.raw
cmp got.raw want.raw || fail "rebase onto base.raw changed what top.img shows"
expect_ok $UCOW check top.img
rm mid.img
view top.img got.raw
cmp got.raw want.raw || fail "top.img still needs mid.img"
cp --sparse=always mid.img.0 mid.img
# onto a file with other data: only what differs, zeros included, is copied in
$PY -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 32768)" >new.raw
cp --sparse=always top.img.0 top.img
run $UCOW rebase -p -b new.raw -F raw top.img
[ $st -eq 0 ] || fail "rebase -p exited $st"
grep -q '(100.00/100%)' err || fail "-p printed no final progress: $(cat err)"
view top.img got.raw
cmp got.raw want.raw || fail "rebase onto new.raw changed what top.img shows"
# again onto the same file: nothing differs, nothing is written
cp --sparse=always top.img top.img.1
expect_ok $UCOW rebase -b new.raw -F raw top.img
view top.img got.raw
cmp got.raw want.raw || fail "a second rebase changed what top.img shows"
# a ucow NEW, named from top.img's folder (the name is stored as given)
mkdir -p d
expect_ok $UCOW create -q -b ../base.raw -F raw d/nb.img
expect_ok $UCOW io -c 'write -P 0x77 3M 1M' d/nb.img
cp --sparse=always top.img.0 top.img
expect_ok $UCOW rebase -b d/nb.img -F ucow top.img
[ "$(backing top.img)" = d/nb.img ] || fail "backing file '$(backing top.img)', not d/nb.img"
view top.img got.raw
cmp got.raw want.raw || fail "rebase onto d/nb.img changed what top.img shows"

# from no backing file onto one: zeros stay zeros
expect_ok $UCOW create -q -o chunk_size=64k solo.img 8M
expect_ok $UCOW io -c 'write -P 0x12 100k 300k' -c 'write -P 0x13 6M 64k' solo.img
view solo.img solo.raw
expect_ok $UCOW rebase -b base.raw -F raw solo.img
view solo.img got.raw
cmp got.raw solo.raw || fail "rebasing an image without a backing file changed its content"
[ "$(backing solo.img)" = base.raw ] || fail "solo.img: backing file '$(backing solo.img)'"
expect_ok $UCOW check solo.img

# -b "": flattened, no backing file any more; the zero runs cost nothing
cp --sparse=always top.img.0 top.img
expect_ok $UCOW rebase -b "" top.img
[ -z "$(backing top.img)" ] || fail "flattened top.img names '$(backing top.img)'"
view top.img got.raw
cmp got.raw want.raw || fail "flattening changed what top.img shows"
expect_ok $UCOW check top.img
expect_ok $UCOW rebase -b "" top.img
view top.img got.raw
cmp got.raw want.raw || fail "flattening a flat image changed it"

# -u: only the name; the content follows the new file
cp --sparse=always top.img.0 top.img
expect_ok $UCOW rebase -u -b new.raw -F raw top.img
[ "$(backing top.img)" = new.raw ] || fail "-u: backing file '$(backing top.img)'"
expect_ok $UCOW io -c 'read -P 0xcc 2M 100' -c 'read -P 0 7M 4096' -c 'read -P 0 0 1' \
	-c 'read -P 0xff 255 1' top.img
# -u -b "": no backing file, nothing copied: what the old one showed reads as zeros
cp --sparse=always top.img top.img.u
expect_ok $UCOW rebase -u -b "" top.img.u
[ -z "$(backing top.img.u)" ] || fail "-u -b '': backing file '$(backing top.img.u)'"
expect_ok $UCOW io -c 'read -P 0xcc 2M 100' -c 'read -P 0 0 1M' top.img.u
# the old backing file gone (moved): -u mends the name, safe mode cannot read it
mv base.raw moved.raw
expect_err 1 "mid.img: backing file 'base.raw' not found" $UCOW rebase -b moved.raw -F raw mid.img
expect_ok $UCOW rebase -u -b moved.raw -F raw mid.img
cp --sparse=always top.img.0 top.img
view top.img got.raw
cmp got.raw want.raw || fail "-u after a move: top.img shows other content"
mv moved.raw base.raw
# the new file need not exist yet with -u
expect_ok $UCOW rebase -u -b later.raw -F raw mid.img
expect_err 1 "mid.img: backing file '.*later.raw' not found" $UCOW io -c 'read 0 1' mid.img
expect_ok $UCOW rebase -u -b base.raw -F raw mid.img
view top.img got.raw
cmp got.raw want.raw || fail "-u back to base.raw: top.img shows other content"
# internal snapshots: -u only
cp --sparse=always top.img.0 top.img
expect_ok $UCOW snapshot -c s1 top.img
expect_err 1 "top.img: has 1 internal snapshot: a safe rebase would change what it reads from the backing file \(delete it first, or use -u\)" \
	$UCOW rebase -b base.raw -F raw top.img
expect_err 1 "top.img: has 1 internal snapshot" $UCOW rebase -b "" top.img
expect_ok $UCOW rebase -u -b mid.img -F ucow top.img
cp --sparse=always top.img.0 top.img

# refused, the header untouched
expect_err 1 "rebase: the new backing file must be given" $UCOW rebase top.img
expect_err 1 "rebase: the new backing file's format must be given \(-F raw\|ucow\|qcow2\)" \
	$UCOW rebase -b base.raw top.img
expect_err 1 "rebase: unknown format 'vmdk'" $UCOW rebase -b base.raw -F vmdk top.img
expect_err 1 "top.img: backing file '[^']*base.raw' is not a qcow2 image \(no qcow2 magic\)" \
	$UCOW rebase -b base.raw -F qcow2 top.img
expect_err 1 "rebase: expected FILE" $UCOW rebase -b base.raw -F raw
expect_err 1 "base.raw: not a ucow image" $UCOW rebase -b "" base.raw
expect_err 1 "base.raw: a raw image has no backing file" $UCOW rebase -f raw -b "" base.raw
expect_err 1 "top.img: backing file 'nope.raw' not found" $UCOW rebase -b nope.raw -F raw top.img
expect_err 1 "top.img: backing chain loops back to top.img" $UCOW rebase -b top.img -F ucow top.img
expect_err 1 "top.img: backing chain loops back to top.img" $UCOW rebase -u -b top.img -F ucow top.img
expect_ok $UCOW create -q -b top.img -F ucow above.img
expect_err 1 "top.img: above.img: backing chain loops back to top.img" $UCOW rebase -b above.img -F ucow top.img
expect_err 1 "top.img: backing file name '/.*' is absolute, outside the image's folder; add --allow-backing-outside" \
	$UCOW rebase -b "$PWD/base.raw" -F raw top.img
expect_err 1 "top.img: backing file name '/.*' is absolute" $UCOW rebase -u -b "$PWD/base.raw" -F raw top.img
mkdir -p sub
expect_ok $UCOW create -q -o chunk_size=64k sub/s.img 8M
expect_ok $UCOW io -c 'write -P 0x21 0 64k' sub/s.img
expect_err 1 "sub/s.img: backing file '../new.raw' lies outside the image's folder; add --allow-backing-outside" \
	$UCOW rebase -b ../new.raw -F raw sub/s.img
expect_err 1 "sub/s.img: backing file '../new.raw' lies outside the image's folder" \
	$UCOW rebase -u -b ../new.raw -F raw sub/s.img
[ -z "$(backing sub/s.img)" ] || fail "a refused rebase named '$(backing sub/s.img)'"
expect_ok $UCOW rebase --allow-backing-outside -b ../new.raw -F raw sub/s.img
[ "$(backing sub/s.img)" = ../new.raw ] || fail "sub/s.img: backing file '$(backing sub/s.img)'"
expect_ok $UCOW io -c 'read -P 0x21 0 64k' -c 'read -P 0 64k 64k' sub/s.img
[ "$(backing top.img)" = mid.img ] || fail "a refused rebase changed the name: '$(backing top.img)'"
view top.img got.raw
cmp got.raw want.raw || fail "a refused rebase changed top.img's content"
# FILE held by another process
$PY -c '
import fcntl, sys, time
f = open(sys.argv[1], "rb")
fcntl.lockf(f, fcntl.LOCK_SH)
print("locked", flush=True)
time.sleep(60)' top.img >lock.out &
lockpid=$!
trap 'kill $lockpid 2>/dev/null' EXIT
wait_locked
expect_err 1 "top.img: image is in use by another process" $UCOW rebase -u -b base.raw -F raw top.img
kill $lockpid
wait $lockpid 2>/dev/null
trap - EXIT
[ "$(backing top.img)" = mid.img ] || fail "a refused rebase -u changed the name"

# qemu-img rebase on the same random chains: every image byte for byte the same
command -v qemu-img >/dev/null || fail "qemu-img not installed (make deps)"
ct() { $PY "$CLI_DIR/chaintest.py" --ucow "$UCOW" --ops rebase,rebase-u,flatten "$@"; }
ct --mode qemu --seed 401 --base raw || fail "qemu, raw base, seed 401"
ct --mode qemu --seed 402 --base ucow --cmds 25 || fail "qemu, ucow base, seed 402"
ct --mode qemu --seed 403 --base raw --grow || fail "qemu, smaller raw base, seed 403"
# killed at every write and sync (and a sample of the ring submissions), then run again
command -v strace >/dev/null || fail "strace not installed (make deps)"
# (the sanitizer build, CLI_SHORT=1: a quarter of the points; the plain run takes them all)
ct --mode kill --seed 411 --base ucow --points $(pts 40) || fail "kill, ucow base, seed 411"
ct --mode kill --seed 412 --base raw --grow --points $(pts 30) || fail "kill, raw base, seed 412"
ok "rebase"
