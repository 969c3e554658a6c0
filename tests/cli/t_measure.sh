#!/bin/sh
# measure: "required" and "fully-allocated" against the files ucow really makes: an empty
# image of --size (ucow create), FILE's content (ucow convert -O ucow: its file is never
# larger than required, and smaller by at most what all-zero data costs), every chunk written
# (fully-allocated); -o options; -O raw (the same numbers as qemu-img measure); strict JSON;
# errors.
. "$CLI_LIB"
size() { stat -c %s "$1"; }

# measure ARGS...: run it, set req and full from the human output (checked against the JSON)
measure() {
	expect_ok $UCOW measure "$@"
	[ "$(wc -l <out)" -eq 2 ] || fail "measure $*: $(cat out)"
	req=$(sed -n 's/^required size: \([0-9]*\)$/\1/p' out)
	full=$(sed -n 's/^fully allocated size: \([0-9]*\)$/\1/p' out)
	[ -n "$req" ] && [ -n "$full" ] || fail "measure $*: $(cat out)"
	expect_ok $UCOW measure --output=json "$@"
	$PY - "$req" "$full" <<'PY' || fail "measure --output=json $*: $(cat out)"
import json, sys
raw = open('out', 'rb').read()
assert raw.endswith(b'}\n'), raw
d = json.loads(raw.decode('utf-8'), strict=True)
assert list(d) == ['required', 'fully-allocated'], d
assert all(type(v) is int for v in d.values()), d
assert d == {'required': int(sys.argv[1]), 'fully-allocated': int(sys.argv[2])}, d
assert raw.decode().split('\n')[1].startswith('    "required": '), raw    # qemu-img's layout
PY
}

# --- --size: an empty image, and one with every chunk written
o=chunk_size=64k,block_size=512,journal_size=64k
n=$((5 * 65536 + 1000))
measure --size $n -o $o
expect_ok $UCOW create -q -o $o e.img $n
[ "$req" -eq "$(size e.img)" ] || fail "required $req, an empty image is $(size e.img) bytes"
expect_ok $UCOW io -c "write -P 1 0 $n" e.img
[ "$full" -eq "$(size e.img)" ] || fail "fully-allocated $full, a full image is $(size e.img) bytes"
measure --size 1G
expect_ok $UCOW create -q d.img 1G
[ "$req" -eq "$(size d.img)" ] || fail "default options: required $req, file $(size d.img)"
[ "$full" -eq $((req + 1073741824)) ] || fail "default options: fully-allocated $full"
measure -O ucow --size 16T
[ "$full" -eq $((req + 17592186044416)) ] || fail "16T: $req $full"

# --- FILE: what convert -O ucow makes of it (a chain, flattened)
expect_ok $UCOW create -q -f raw base.raw 8M
expect_ok $UCOW io -f raw -c 'write -P 1 0 3M' -c 'write -P 2 7M 4k' base.raw
expect_ok $UCOW create -q -o chunk_size=64k -b base.raw -F raw mid.img 8M
expect_ok $UCOW io -c 'write -P 3 100k 5000' -c 'write -z 1M 64k' -c 'discard 7M 1M' mid.img
expect_ok $UCOW create -q -b mid.img -F ucow top.img 12M
expect_ok $UCOW io -c 'write -P 4 9M 1000' -c 'write -P 5 10M 2M' top.img
for opts in "" "-o chunk_size=64k" "-o chunk_size=2M,block_size=64k,journal_size=1M" \
	"-o cluster_size=256k"; do
	measure $opts top.img
	rm -f c.img
	expect_ok $UCOW convert -O ucow $opts top.img c.img
	got=$(size c.img)
	[ "$got" -eq "$req" ] || fail "measure $opts: required $req, convert made $got bytes"
	expect_ok $UCOW measure $opts --size 12M
	[ "$(sed -n 's/^fully allocated size: //p' out)" -eq "$full" ] ||
		fail "measure $opts: FILE and --size disagree on fully-allocated"
done
# all-zero data is not written by convert: required is more, by at most one chunk here
expect_ok $UCOW io -c 'write -P 0 5M 64k' top.img
measure -o chunk_size=1M top.img
rm -f c.img
expect_ok $UCOW convert -O ucow -o chunk_size=1M top.img c.img
got=$(size c.img)
[ "$got" -le "$req" ] && [ $((req - got)) -le 1048576 ] ||
	fail "zero data: required $req, convert made $got bytes"
# every chunk holds data: required = fully-allocated = the converted file
head -c 3146240 /dev/urandom >full.raw
measure -f raw -o chunk_size=64k full.raw
[ "$req" -eq "$full" ] || fail "a full source: required $req, fully-allocated $full"
rm -f c.img
expect_ok $UCOW convert -f raw -O ucow -o chunk_size=64k full.raw c.img
[ "$(size c.img)" -eq "$full" ] || fail "a full source: fully-allocated $full, file $(size c.img)"
# an empty image needs its metadata only
expect_ok $UCOW create -q -o chunk_size=64k none.img 100M
measure -o chunk_size=64k none.img
[ "$req" -eq "$(size none.img)" ] || fail "an empty source: required $req"

# an empty raw file cannot become a ucow image (convert refuses it the same way)
: >empty.raw
expect_err 1 "empty.raw: image size must be greater than zero" $UCOW measure -f raw empty.raw
expect_err 1 "empty.img: .*greater than zero" $UCOW convert -f raw -O ucow empty.raw empty.img
measure -f raw -O raw empty.raw
[ "$req" -eq 0 ] && [ "$full" -eq 0 ] || fail "-O raw of an empty file: $req $full"

# --- -O raw: the virtual size, as qemu-img measure says
measure -O raw top.img
[ "$req" -eq 12582912 ] && [ "$full" -eq 12582912 ] || fail "-O raw: $req $full"
expect_ok $UCOW convert top.img top.raw
qemu-img measure -f raw -O raw top.raw >q.out || fail "qemu-img measure"
expect_ok $UCOW measure -f raw -O raw top.raw
cmp out q.out || fail "-O raw differs from qemu-img measure: $(cat out q.out)"
qemu-img measure -O raw --size 5M >q.out || fail "qemu-img measure --size"
expect_ok $UCOW measure -O raw --size 5M
cmp out q.out || fail "-O raw --size differs from qemu-img measure"

# --- errors: one line, exit 1
expect_err 1 "measure: give --size SIZE or FILE \(try" $UCOW measure
expect_err 1 "measure: give --size SIZE or FILE, not both" $UCOW measure --size 1M top.img
expect_err 1 "measure: too many arguments" $UCOW measure top.img top.img
expect_err 1 "measure: invalid size 'x'" $UCOW measure --size x
expect_err 1 "measure: image size must be greater than zero" $UCOW measure --size 0
expect_err 1 "measure: format raw takes no -o options" $UCOW measure -O raw -o chunk_size=64k --size 1M
expect_err 1 "measure: unknown option 'x' for format ucow" $UCOW measure -o x=1 --size 1M
expect_err 1 "measure: chunk_size must be a power of two" $UCOW measure -o chunk_size=5k --size 1M
expect_err 1 "measure: image size too large" $UCOW measure --size 17T
expect_err 1 "measure: -f is for FILE" $UCOW measure -f raw --size 1M
expect_err 1 "missing.img: No such file or directory" $UCOW measure missing.img
expect_err 1 "top.raw: not a ucow image" $UCOW measure top.raw
expect_err 1 "measure: format 'qcow2' is read-only in ucow \(write ucow or raw\)" $UCOW measure -O qcow2 --size 1M
expect_err 1 "measure: unknown format 'vmdk'" $UCOW measure -O vmdk --size 1M
expect_ok $UCOW measure --help
grep -q -- '--size SIZE' out || fail "--help does not list --size"
ok "measure"
