#!/bin/sh
# Bad input: one line on stderr starting with "ucow: ", exit 1, nothing half-written.
. "$CLI_LIB"

# --- the front end
expect_err 1 'no command' $UCOW
expect_err 1 "unknown command 'frobnicate'" $UCOW frobnicate
expect_err 1 "unknown option '--bogus'" $UCOW --bogus
for c in create info io convert check commit rebase resize; do
	expect_ok $UCOW $c --help
	grep -q "^usage: ucow $c" out || fail "ucow $c --help prints no usage"
	expect_ok $UCOW $c -h
	expect_err 1 "$c: unknown option '--bogus'.*--help" $UCOW $c --bogus x
	expect_err 1 "$c: unknown option '-Z'" $UCOW $c -Z x
done
expect_ok $UCOW --version
grep -qE '^ucow version [0-9]+\.[0-9]+\.[0-9]+ \(.+\)$' out || fail "--version: no version and build"
expect_ok $UCOW --help
grep -q 'man ucow' out || fail "--help does not point at the man page"
expect_ok $UCOW --help
grep -q 'create' out || fail "--help lists no commands"

# --- create: sizes
expect_err 1 "x.img: invalid size '1Q'" $UCOW create x.img 1Q
no_file x.img
expect_err 1 "x.img: invalid size '12\.5M'" $UCOW create x.img 12.5M
expect_err 1 "x.img: invalid size '-1': size must not be negative" $UCOW create x.img -- -1
expect_err 1 "unknown option '-1'" $UCOW create x.img -1
expect_err 1 "x.img: invalid size '99999999999999999999999': size too large" \
	$UCOW create x.img 99999999999999999999999
expect_err 1 "x.img: invalid size '20000000T': size too large" $UCOW create x.img 20000000T
expect_err 1 "x.img: .*(too large|too big|at most|limit|exceeds)" $UCOW create x.img 900P
expect_err 1 "x.img: size must be greater than 0" $UCOW create x.img 0
expect_err 1 "x.img: no SIZE given" $UCOW create x.img
expect_err 1 "x.img: size must be greater than 0" $UCOW create -f raw x.img 0
expect_err 1 "x.img: (File too large|.*too large)" $UCOW create -f raw x.img 9000000T
expect_err 1 "too many arguments" $UCOW create x.img 1M 2M
expect_err 1 "no FILE given" $UCOW create
expect_err 1 "create: format 'qcow2' is read-only in ucow" $UCOW create -f qcow2 x.img 1M
expect_err 1 "create: unknown format 'vmdk'" $UCOW create -f vmdk x.img 1M
expect_err 1 "option '-f' needs an argument" $UCOW create x.img 1M -f
no_file x.img

# --- create: options and backing files
expect_err 1 "x.img: .*chunk" $UCOW create -o chunk_size=3k x.img 1M
expect_err 1 "x.img: .*block" $UCOW create -o chunk_size=64k,block_size=1M x.img 1M
expect_err 1 "x.img: unknown option 'colour' for format ucow" $UCOW create -o colour=red x.img 1M
expect_err 1 "x.img: invalid chunk_size 'big'" $UCOW create -o chunk_size=big x.img 1M
expect_err 1 "x.img: format raw takes no -o options" $UCOW create -f raw -o chunk_size=64k x.img 1M
expect_err 1 "x.img: -F FMT is required with -b" $UCOW create -b base.raw x.img
expect_err 1 "x.img: a raw image cannot have a backing file" $UCOW create -f raw -b b -F raw x.img 1M
expect_err 1 "x.img: -F given without -b" $UCOW create -F raw x.img 1M
expect_err 1 "unknown backing format 'vmdk'" $UCOW create -b base.raw -F vmdk x.img
expect_err 1 "x.img: cannot open backing file 'nothere.raw': .*(No such file|not found)" \
	$UCOW create -b nothere.raw -F raw x.img
no_file x.img
expect_ok $UCOW create -q -f raw plain.raw 1M
expect_err 1 "x.img: cannot open backing file 'plain.raw': not a ucow image" \
	$UCOW create -b plain.raw -F ucow x.img
mkdir sub
expect_err 1 "sub/x.img: cannot open backing file 'plain.raw'" \
	$UCOW create -b plain.raw -F raw sub/x.img
no_file x.img sub/x.img
expect_err 1 "nodir/x.img: cannot create: No such file or directory" $UCOW create nodir/x.img 1M
expect_err 1 "sub: cannot replace: Is a directory" $UCOW create sub 1M

# replacing a file keeps the old one intact when creation fails
echo keep >old.img
expect_err 1 "old.img: invalid size" $UCOW create old.img 1Q
expect_err 1 "old.img: .*chunk" $UCOW create -o chunk_size=7 old.img 1M
[ "$(cat old.img)" = keep ] || fail "a failed create changed the existing file"
no_file .old.img
expect_ok $UCOW create -q old.img 1M
expect_ok $UCOW info old.img

# --- info / check / io on things that are not (good) images
expect_err 1 "missing.img: No such file or directory" $UCOW info missing.img
expect_err 1 "plain.raw: not a ucow image" $UCOW info plain.raw
expect_ok $UCOW info -f raw plain.raw
expect_err 1 "sub: (is a directory|Is a directory)" $UCOW info sub
expect_err 1 "info: unknown output format 'xml'" $UCOW info --output=xml old.img
expect_err 1 "missing.img: No such file or directory" $UCOW check missing.img
expect_err 1 "plain.raw: not a ucow image" $UCOW check plain.raw
expect_err 1 "missing.img: No such file or directory" $UCOW io -c 'read 0 1' missing.img
expect_err 1 "plain.raw: not a ucow image" $UCOW io -c 'read 0 1' plain.raw
: >empty.img
expect_err 1 "empty.img: " $UCOW info empty.img
expect_err 1 "empty.img: " $UCOW io -c 'write 0 1' empty.img
[ ! -s empty.img ] || fail "io on an empty file wrote to it"

# truncated images
expect_ok $UCOW create -q -o chunk_size=64k good.img 4M
expect_ok $UCOW io -c 'write -P 7 0 1M' good.img
for n in 100 4096 8192 20000; do
	cp good.img trunc.img
	truncate -s $n trunc.img
	expect_err 1 "trunc.img: " $UCOW info trunc.img
	expect_err 1 "trunc.img: " $UCOW io -c 'read 0 512' trunc.img
	[ "$(stat -c %s trunc.img)" -eq $n ] || fail "opening a truncated image changed its size"
done

# --- io: commands
# no -c: the commands come from stdin (here none)
expect_ok $UCOW io good.img </dev/null
[ ! -s out ] || fail "io with no commands printed '$(cat out)'"
expect_err 1 "io: no FILE given" $UCOW io -c 'read 0 1'
expect_err 1 "unknown command 'frob'" $UCOW io -c 'frob 0 1' good.img
expect_err 1 "invalid offset '12x'" $UCOW io -c 'read 12x 1' good.img
expect_err 1 "invalid length '-5'.*negative" $UCOW io -c 'read 0 -5' good.img
expect_err 1 "io: 'read -1 512': invalid offset '-1': must not be negative" \
	$UCOW io -c 'read -1 512' good.img
expect_err 1 "expected OFF LEN" $UCOW io -c 'write 0' good.img
expect_err 1 "expected OFF LEN" $UCOW io -c 'write 0 1 2' good.img
expect_err 1 "-P needs a byte value" $UCOW io -c 'write -P 256 0 1' good.img
expect_err 1 "-P needs a byte value" $UCOW io -c 'read -P zz 0 1' good.img
expect_err 1 "-z and -P cannot go together" $UCOW io -c 'write -z -P 1 0 1' good.img
expect_err 1 "unknown option '-z'" $UCOW io -c 'read -z 0 1' good.img
expect_err 1 "flush takes no arguments" $UCOW io -c 'flush 0' good.img
expect_err 1 "unknown I/O backend 'spdk'" $UCOW io -i spdk -c 'read 0 1' good.img
expect_err 1 "-r \(read-only\) given with a write" $UCOW io -r -c 'write 0 1' good.img
expect_err 1 "good.img: read at offset 4194303 \(2 bytes\) is past the end of the image \(4194304 bytes\)" \
	$UCOW io -c 'read 4194303 2' good.img
expect_err 1 "good.img: write at offset 4194304 \(1 bytes\) is past the end" \
	$UCOW io -c 'write 4194304 1' good.img
expect_err 1 "offset \+ length overflows" $UCOW io -c 'discard 18446744073709551615 1' good.img
# commands before the failing one ran; the failing one stops the run
run $UCOW io -c 'write -P 3 0 512' -c 'write 5G 1' -c 'write -P 4 0 512' good.img
[ $st -eq 1 ] || fail "a failing command does not make io exit 1"
grep -q 'wrote 512/512 bytes at offset 0' out || fail "the command before the failure did not run"
[ "$(wc -l <out)" -eq 1 ] || fail "commands after a failure ran"
expect_ok $UCOW io -c 'read -P 3 0 512' good.img

# --- read-only files and locked images
chmod 444 good.img
if [ "$(id -u)" = 0 ]; then
	as_user="setpriv --reuid=65534 --regid=65534 --clear-groups"
	chmod 755 .
else
	as_user=""
fi
expect_err 1 "good.img: Permission denied \(open it read-only\?\)" $as_user $UCOW io -c 'write 0 1' good.img
expect_ok $as_user $UCOW io -c 'read -P 3 0 512' good.img
expect_ok $as_user $UCOW io -r -c 'read -P 3 0 512' good.img
chmod 644 good.img
$PY -c '
import fcntl, sys, time
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)' good.img >lock.out &
lockpid=$!
trap 'kill $lockpid 2>/dev/null' EXIT
wait_locked
expect_err 1 "good.img: image is in use by another process" $UCOW io -c 'write 0 1' good.img
expect_err 1 "good.img: image is in use by another process" $UCOW io -c 'read 0 1' good.img
expect_err 1 "good.img: cannot replace: file is in use" $UCOW create good.img 1M
expect_err 1 "good.img: cannot replace: file is in use" $UCOW convert old.img good.img
kill $lockpid
wait $lockpid 2>/dev/null

# --- convert
expect_err 1 "expected SRC DST" $UCOW convert old.img
expect_err 1 "missing.img: No such file or directory" $UCOW convert missing.img out.raw
no_file out.raw
expect_err 1 "plain.raw: not a ucow image" $UCOW convert plain.raw out.raw
no_file out.raw
expect_err 1 "convert: unknown format 'vdi'" $UCOW convert -O vdi old.img out.raw
expect_err 1 "out.raw: format raw takes no -o options" $UCOW convert -o chunk_size=64k old.img out.raw
expect_err 1 "out.img: unknown option 'x' for format ucow" $UCOW convert -O ucow -o x=1 old.img out.img
expect_err 1 "out.img: .*chunk" $UCOW convert -O ucow -o chunk_size=5k old.img out.img
no_file out.raw out.img
expect_err 1 "nodir/out.raw: cannot create: No such file or directory" $UCOW convert old.img nodir/out.raw
expect_err 1 "sub: cannot replace: Is a directory" $UCOW convert old.img sub
expect_err 1 "old.img: is the source image" $UCOW convert old.img old.img
expect_ok $UCOW create -q -b old.img -F ucow ov.img
expect_err 1 "old.img: is the source image or one of its backing files" $UCOW convert ov.img old.img
expect_ok $UCOW check old.img
# a write that fails after DST was made (file size limit): the half-written destination is removed
expect_ok $UCOW create -q -o chunk_size=64k src.img 4M
expect_ok $UCOW io -c 'write -P 9 0 4M' src.img
limited() {
	$PY -c 'import resource, signal, os, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
os.execv(sys.argv[2], sys.argv[2:])' "$@"
}
expect_err 1 "out.img: write failed at offset [0-9]+: .*File too large" \
	limited 1500000 $UCOW convert -O ucow -o journal_size=64k src.img out.img
expect_err 1 "out.raw: cannot create: File too large" limited 1500000 $UCOW convert src.img out.raw
no_file out.img out.raw
expect_err 1 "big.img: .*File too large" limited 100000 $UCOW create big.img 1M
no_file big.img
ok "all error cases"
