#!/bin/sh
# compare: exit 0 same content, 1 different (the first differing byte), 2 an error; images
# of different sizes (the longer one's tail must read as zeros; -s refuses them); chains, ZERO
# chunks, different chunk sizes; the exit status of qemu-img compare on the same pairs
# exported as raw and qcow2; zero runs skipped (two 1 TiB images compare at once); -q, -p.
. "$CLI_LIB"

# the chain: raw base <- ucow mid <- ucow top (a ZERO chunk over the base's data, data that
# continues past the base's end)
expect_ok $UCOW create -q -f raw base.raw 4M
expect_ok $UCOW io -f raw -c 'write -P 1 0 3M' base.raw
expect_ok $UCOW create -q -o chunk_size=64k -b base.raw -F raw mid.img 4M
expect_ok $UCOW io -c 'write -P 2 100k 5000' -c 'write -z 1M 64k' mid.img
expect_ok $UCOW create -q -o chunk_size=256k,block_size=4k -b mid.img -F ucow top.img 6M
expect_ok $UCOW io -c 'write -P 3 2M 4k' -c 'write -P 4 4M 1000' top.img
expect_ok $UCOW convert top.img flat.raw
expect_ok $UCOW convert -f raw -O ucow -o chunk_size=1M flat.raw flat.img

# cmpboth A B WANT [ucow compare options]: ucow compare exits WANT, and so does qemu-img
# compare on A and B exported as raw, and as qcow2
cmpboth() {
	a=$1 b=$2 want=$3
	shift 3
	run $UCOW compare "$@" $a $b
	[ $st -eq "$want" ] || fail "compare $* $a $b exited $st, expected $want: $(cat out err)"
	[ ! -s err ] || fail "compare $a $b wrote to stderr: $(cat err)"
	cp out ucow.out
	for x in a b; do
		eval f=\$$x
		case $f in
		*.raw) cp "$f" $x.x.raw ;;
		*) $UCOW convert "$f" $x.x.raw || fail "export $f" ;;
		esac
		qemu-img convert -f raw -O qcow2 $x.x.raw $x.x.qcow2 || fail "qcow2 export of $f"
	done
	qemu-img compare -q -f raw -F raw a.x.raw b.x.raw
	q=$?
	[ $q -eq "$want" ] || fail "qemu-img compare of the raw exports of $a $b exited $q, ucow $want"
	qemu-img compare -q -f qcow2 -F qcow2 a.x.qcow2 b.x.qcow2
	q=$?
	[ $q -eq "$want" ] || fail "qemu-img compare of the qcow2 exports exited $q, ucow $want"
}

# --- the same content
cmpboth top.img flat.raw 0 -F raw
[ "$(cat ucow.out)" = "Images are identical." ] || fail "identical: $(cat ucow.out)"
cmpboth flat.img top.img 0
cmpboth top.img top.img 0
# --- one byte differs: in data, in a zero run, in a ZERO chunk, in the base's part
for at in 0 102500 1048576 1114111 2101248 3500000 4194304 4195303; do
	cp flat.raw d.raw
	printf '\377' | dd of=d.raw bs=1 seek=$at conv=notrunc 2>/dev/null
	cmpboth top.img d.raw 1 -F raw
	[ "$(cat ucow.out)" = "Content mismatch at offset $at!" ] ||
		fail "byte $at differs: $(cat ucow.out)"
	# qemu-img names the 512-byte sector that holds it
	qemu-img compare -f raw -F raw a.x.raw b.x.raw >q.out
	grep -qx "Content mismatch at offset $((at / 512 * 512))!" q.out ||
		fail "qemu-img reports $(cat q.out) for byte $at"
done
# the ZERO chunk hides the base's data: mid differs from its base exactly there
cmpboth mid.img base.raw 1 -F raw
grep -qx 'Content mismatch at offset 102400!' ucow.out || fail "mid vs base: $(cat ucow.out)"
expect_ok $UCOW io -f raw -c 'write -P 2 100k 5000' -c 'write -z 1M 64k' base.raw
cmpboth mid.img base.raw 0 -F raw

# --- different sizes: the longer one's tail must read as zeros; -s refuses any difference
expect_ok $UCOW create -q -o chunk_size=64k long.img 10M
expect_ok $UCOW io -c 'write -P 1 0 3M' -c 'write -P 2 100k 5000' -c 'write -z 1M 64k' \
	-c 'write -P 3 2M 4k' -c 'write -P 4 4M 1000' -c 'write -z 8M 1M' long.img
cmpboth long.img top.img 0
[ "$(cat ucow.out)" = "$(printf 'Warning: Image size mismatch!\nImages are identical.')" ] ||
	fail "sizes differ, tail zero: $(cat ucow.out)"
cmpboth top.img long.img 0
run $UCOW compare -s top.img long.img
[ $st -eq 1 ] || fail "-s: images of different sizes exit $st"
[ "$(cat out)" = "Strict mode: Image size mismatch!" ] || fail "-s: $(cat out)"
expect_ok $UCOW compare -s top.img flat.img
expect_ok $UCOW io -c 'write -P 9 9437184 1' long.img
cmpboth long.img top.img 1
grep -qx 'Warning: Image size mismatch!' ucow.out || fail "no size warning"
grep -qx 'Content mismatch at offset 9437184!' ucow.out || fail "tail data: $(cat ucow.out)"
cmpboth top.img long.img 1
grep -qx 'Content mismatch at offset 9437184!' ucow.out || fail "tail data, B longer"

# --- data that holds zeros equals a hole; an empty image equals a sparse file
expect_ok $UCOW create -q -o chunk_size=64k z.img 1M
expect_ok $UCOW io -c 'write -P 0 0 512k' z.img
expect_ok $UCOW create -q -f raw z.raw 1M
cmpboth z.img z.raw 0 -F raw
# zero runs are not read: two 1 TiB images (one 16 TiB away from fitting in memory) compare
# in a moment
expect_ok $UCOW create -q huge.img 1T
expect_ok $UCOW io -c 'write -P 5 700G 4k' huge.img
truncate -s 1T huge.raw || fail "truncate"
expect_ok $UCOW io -f raw -c 'write -P 5 700G 4k' huge.raw
start=$(date +%s)
run timeout 60 $UCOW compare -F raw huge.img huge.raw
[ $st -eq 0 ] || fail "1 TiB compare exited $st: $(cat out err)"
[ $(($(date +%s) - start)) -le 20 ] || fail "1 TiB compare took $(($(date +%s) - start)) s: zero runs were read"
expect_ok $UCOW io -f raw -c 'write -P 6 1000G 1' huge.raw
run timeout 60 $UCOW compare -F raw huge.img huge.raw
[ $st -eq 1 ] && grep -qx 'Content mismatch at offset 1073741824000!' out ||
	fail "1 TiB, one byte: $st $(cat out err)"

# --- empty files: the same as each other, and as any file of zeros
: >e1.raw
: >e2.raw
expect_ok $UCOW compare -f raw -F raw e1.raw e2.raw
expect_ok $UCOW compare -s -f raw -F raw e1.raw e2.raw
cmpboth z.raw e1.raw 0 -f raw -F raw
grep -qx 'Warning: Image size mismatch!' ucow.out || fail "empty vs 1M of zeros: $(cat ucow.out)"

# --- -q, -p
run $UCOW compare -q -F raw top.img d.raw
[ $st -eq 1 ] && [ ! -s out ] && [ ! -s err ] || fail "-q: $st, $(cat out err)"
run $UCOW compare -q -F raw top.img flat.raw
[ $st -eq 0 ] && [ ! -s out ] && [ ! -s err ] || fail "-q, same: $st, $(cat out err)"
run $UCOW compare -p -F raw top.img flat.raw
[ $st -eq 0 ] || fail "-p exited $st"
grep -q '(100.00/100%)' err || fail "-p printed no final progress: $(cat err)"

# --- errors: one line, exit 2
expect_err 2 "missing.img: No such file or directory" $UCOW compare missing.img top.img
expect_err 2 "missing.img: No such file or directory" $UCOW compare top.img missing.img
expect_err 2 "flat.raw: not a ucow image \(no ucow magic\); use -F raw for a raw image" \
	$UCOW compare top.img flat.raw
expect_err 2 "flat.raw: not a ucow image \(no ucow magic\); use -f raw for a raw image" \
	$UCOW compare flat.raw top.img
expect_err 2 "compare: expected two images" $UCOW compare top.img
expect_err 2 "compare: too many arguments" $UCOW compare top.img top.img top.img
expect_err 2 "compare: unknown format 'vmdk'" $UCOW compare -F vmdk top.img flat.raw
expect_err 2 "flat.raw: not a qcow2 image" $UCOW compare -F qcow2 top.img flat.raw
expect_err 2 "compare: unknown option" $UCOW compare -x top.img flat.raw
mv base.raw base.moved
expect_err 2 "mid.img: backing file '.*base.raw' not found" $UCOW compare top.img flat.img
mv base.moved base.raw
expect_ok $UCOW compare --help
grep -q -- '-s ' out || fail "--help does not list -s"
ok "compare"
