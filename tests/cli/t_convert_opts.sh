#!/bin/sh
# ucow convert's qemu-img options: -B BACKING -F FMT (a new overlay holding only what differs
# from BACKING, zeros over its data included), -n (into an existing raw file or ucow image,
# zero runs written as zeros), --target-is-zero, -S SIZE (zero detection; 0 fully
# allocates), -q silencing -p, -m N and -W; and their misuse refused with one line, nothing
# written.
. "$CLI_LIB"

# a chain: base.ucow (data at 0-8M and 50M-51M), top.ucow over it (its own data at 1M,
# zeros written over base data at 50M, data past the base's end)
expect_ok $UCOW create -q -f ucow base.ucow 100M
expect_ok $UCOW io -c 'write -P 1 0 8M' -c 'write -P 2 50M 1M' base.ucow
expect_ok $UCOW create -q -f ucow -b base.ucow -F ucow top.ucow 120M
expect_ok $UCOW io -c 'write -P 3 1M 64k' -c 'write -z 50M 64k' -c 'write -P 4 110M 4k' top.ucow

# -B: the output over base.ucow reads as top.ucow, and holds only what differs
expect_ok $UCOW convert -O ucow -B base.ucow -F ucow top.ucow new.ucow
$UCOW info new.ucow >info.out
grep -q '^backing file: base.ucow$' info.out || fail "new.ucow has no backing base.ucow: $(cat info.out)"
grep -q '^allocated chunks: 3/120$' info.out || fail "new.ucow holds more than what differs: $(grep allocated info.out)"
expect_ok $UCOW compare top.ucow new.ucow
expect_ok $UCOW io -c 'read -P 0 50M 64k' -c 'read -P 2 51904k 64k' -c 'read -P 3 1M 64k' new.ucow
ok "-B: three chunks of its own, reads as the source (zeros over the base's data too)"
# a raw backing file, and the same content through a qcow2 one
expect_ok $UCOW convert -O raw base.ucow base.raw
expect_ok $UCOW convert -O ucow -B base.raw -F raw top.ucow new2.ucow
expect_ok $UCOW compare top.ucow new2.ucow
expect_ok qemu-img convert -f raw -O qcow2 base.raw base.qcow2
expect_ok $UCOW convert -O ucow -B base.qcow2 -F qcow2 top.ucow new3.ucow
expect_ok $UCOW compare top.ucow new3.ucow
ok "-B over raw and qcow2 backing files"

# -n into a raw file full of random bytes: identical after; --target-is-zero leaves the
# zero runs alone (so here the random bytes stay)
head -c $((120 * 1048576)) /dev/urandom >t.raw
expect_ok $UCOW convert -n top.ucow t.raw
expect_ok $UCOW compare -F raw top.ucow t.raw
[ "$(stat -c %s t.raw)" = $((120 * 1048576)) ] || fail "-n changed the target's size"
head -c $((120 * 1048576)) /dev/urandom >t.raw
expect_ok $UCOW convert -n --target-is-zero top.ucow t.raw
expect_ok $UCOW io -f raw -c 'read -P 3 1M 64k' -c 'read -P 4 110M 4k' t.raw
run $UCOW compare -F raw top.ucow t.raw
[ $st -eq 1 ] || fail "--target-is-zero wrote the zero runs too (compare exited $st)"
ok "-n onto a raw file; --target-is-zero skips the zero runs"
# -n into an existing ucow image (-O ucow), and a bigger raw target
expect_ok $UCOW create -q -f ucow e.ucow 200M
expect_ok $UCOW io -c 'write -P 9 0 200M' e.ucow
expect_ok $UCOW convert -n -O ucow top.ucow e.ucow
expect_ok $UCOW convert -O raw e.ucow e.raw
expect_ok truncate -s 120M e.raw
expect_ok $UCOW compare -F raw top.ucow e.raw
expect_ok $UCOW io -c 'read -P 9 120M 80M' e.ucow
ok "-n into a ucow image"
# refusals: a smaller target, no target, an image without -O, misuse of the options
expect_ok truncate -s 100M small.raw
expect_err 1 'small.raw: is 104857600 bytes, smaller than top.ucow \(125829120 bytes\)' $UCOW convert -n top.ucow small.raw
[ "$(stat -c %s small.raw)" = 104857600 ] || fail "the refused -n changed small.raw"
expect_err 1 'none.raw: does not exist \(-n writes into an existing image\)' $UCOW convert -n top.ucow none.raw
expect_err 1 'e.ucow: is an image: give its format \(-O ucow\)' $UCOW convert -n top.ucow e.ucow
expect_err 1 'needs -n' $UCOW convert --target-is-zero top.ucow x.raw
expect_err 1 '-F needs -B' $UCOW convert -F raw top.ucow x.raw
expect_err 1 '-B needs -F' $UCOW convert -O ucow -B base.ucow top.ucow x.ucow
expect_err 1 '-B makes a new ucow image' $UCOW convert -B base.ucow -F ucow top.ucow x.raw
expect_err 1 '-B makes a new ucow image' $UCOW convert -n -O ucow -B base.ucow -F ucow top.ucow e.ucow
expect_err 1 '-n writes into an existing raw or ucow image' $UCOW convert -n -O qcow2 top.ucow x.qcow2
expect_err 1 "backing file 'nope.ucow'|nope.ucow" $UCOW convert -O ucow -B nope.ucow -F ucow top.ucow x.ucow
no_file x.raw x.ucow x.qcow2 none.raw
ok "refusals: one line each, nothing written"

# -S: 0 writes every byte (fully allocated), a larger SIZE skips only longer zero runs
expect_ok $UCOW convert -S 0 -O raw top.ucow full.raw
blocks=$(stat -c %b full.raw)
[ $((blocks * 512)) -ge $((120 * 1048576)) ] || fail "-S 0: full.raw has only $((blocks * 512)) bytes allocated"
expect_ok $UCOW convert -O raw top.ucow sparse.raw
[ $(($(stat -c %b sparse.raw) * 512)) -lt $((16 * 1048576)) ] || fail "default: sparse.raw is not sparse"
cmp full.raw sparse.raw || fail "-S 0 changed the content"
# 8 KiB of zeros inside data: skipped with the default 4k, written with -S 64k
expect_ok $UCOW create -q -f ucow z.ucow 1M
expect_ok $UCOW io -c 'write -P 5 0 64k' -c 'write -z 16k 8k' z.ucow
expect_ok $UCOW convert -O raw z.ucow z4.raw
expect_ok $UCOW convert -S 64k -O raw z.ucow z64.raw
cmp z4.raw z64.raw || fail "-S changed the content"
[ "$(stat -c %b z4.raw)" -lt "$(stat -c %b z64.raw)" ] || fail "-S 64k did not write the 8 KiB zero run"
expect_err 1 "-S '1000': not a multiple of 512" $UCOW convert -S 1000 top.ucow x.raw
expect_err 1 "-S '4M': not a multiple of 512 up to 2M" $UCOW convert -S 4M top.ucow x.raw
expect_err 1 "-S 'x'" $UCOW convert -S x top.ucow x.raw
no_file x.raw
ok "-S: 0 fully allocates, the size of the zero runs skipped, bad values refused"

# -q silences -p
run $UCOW convert -p -q -O raw top.ucow q.raw
[ $st -eq 0 ] && [ ! -s err ] || fail "-p -q printed progress: $(cat err)"
run $UCOW convert -p -O raw top.ucow p.raw
grep -q '100' err || fail "-p printed no progress"
ok "-q silences -p"

# -m N requests in flight, -W writes in any order: the same content for every setting, into
# new raw and ucow files and in place (-n) over random bytes
expect_ok $UCOW convert -O raw top.ucow ref.raw
head -c 125829120 /dev/urandom >rnd.raw
for m in 1 3 16; do
	for w in "" -W; do
		expect_ok $UCOW convert -m $m $w -O raw top.ucow m.raw
		cmp ref.raw m.raw || fail "-m $m $w: raw output differs"
		expect_ok $UCOW convert -m $m $w -O ucow top.ucow m.ucow
		expect_ok $UCOW compare -F raw m.ucow ref.raw
		cp rnd.raw n.raw
		expect_ok $UCOW convert -n -m $m $w top.ucow n.raw
		cmp ref.raw n.raw || fail "-n -m $m $w: in place differs"
	done
done
expect_err 1 "-m '0': not a number of requests from 1 to 16" $UCOW convert -m 0 top.ucow x.raw
expect_err 1 "-m '17'" $UCOW convert -m 17 top.ucow x.raw
expect_err 1 "-m 'two'" $UCOW convert -m two top.ucow x.raw
no_file x.raw
ok "-m 1/3/16 and -W: identical output (raw, ucow, in place); bad -m refused"
