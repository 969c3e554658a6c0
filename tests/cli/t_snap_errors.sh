#!/bin/sh
# ucow snapshot, bad input: each case is exactly one stderr line starting with "ucow: ",
# exit 1, and the image is unchanged afterwards (same list, same content, check clean).
. "$CLI_LIB"
IMG=e.img
expect_ok $UCOW create -q -o chunk_size=64k $IMG 2M
expect_ok $UCOW io -c 'write -P 1 0 100000' $IMG
expect_ok $UCOW snapshot -c x $IMG
expect_ok $UCOW io -c 'write -P 2 50000 100000' $IMG
expect_ok $UCOW snapshot -c y $IMG
expect_ok $UCOW snapshot -a x $IMG
$UCOW snapshot -l $IMG >list.before || fail "snapshot -l"
$UCOW snapshot -l --output=json $IMG >json.before || fail "snapshot -l --output=json"
$UCOW convert $IMG cur.before || fail "convert"
$UCOW convert -l y $IMG y.before || fail "convert -l y"
# unchanged: the image is as it was before the failed command
unchanged() {
	$UCOW snapshot -l $IMG >list.now || fail "snapshot -l after '$*'"
	cmp -s list.before list.now || fail "the snapshot list changed after '$*': $(cat list.now)"
	$UCOW snapshot -l --output=json $IMG >json.now
	cmp -s json.before json.now || fail "the json list changed after '$*'"
	rm -f cur.now y.now
	$UCOW convert $IMG cur.now && cmp -s cur.before cur.now || fail "content changed after '$*'"
	$UCOW convert -l y $IMG y.now && cmp -s y.before y.now || fail "snapshot y changed after '$*'"
	$UCOW check $IMG >/dev/null || fail "check after '$*' exited $?"
}
# bad: STATUS PATTERN ARGS... (ucow snapshot ARGS must fail like that, the image unchanged)
bad() {
	p=$1
	shift
	expect_err 1 "$p" $UCOW snapshot "$@"
	unchanged "$@"
}
long=$($PY -c "print('n' * 128)")
max=$($PY -c "print('m' * 127)")

expect_ok $UCOW snapshot --help
grep -q '^usage: ucow snapshot' out || fail "snapshot --help prints no usage"
expect_err 1 "^ucow: missing.img: No such file or directory\$" $UCOW snapshot -c a missing.img
expect_err 1 "^ucow: missing.img: No such file or directory\$" $UCOW snapshot -l missing.img
no_file missing.img
head -c 65536 /dev/urandom >plain.raw
cp plain.raw plain.orig
expect_err 1 "^ucow: plain.raw: not a ucow image" $UCOW snapshot -c a plain.raw
expect_err 1 "^ucow: plain.raw: not a ucow image" $UCOW snapshot -l plain.raw
cmp -s plain.raw plain.orig || fail "a raw file was changed"
mkdir adir
expect_err 1 "^ucow: adir: " $UCOW snapshot -l adir
bad "^ucow: $IMG: a snapshot named 'x' exists already\$" -c x $IMG
bad "^ucow: $IMG: a snapshot named 'y' exists already\$" -c y $IMG
bad "^ucow: $IMG: no snapshot 'zz'\$" -a zz $IMG
bad "^ucow: $IMG: no snapshot 'zz'\$" -d zz $IMG
bad "^ucow: $IMG: no snapshot '7'\$" -a 7 $IMG
bad "^ucow: $IMG: no snapshot '7'\$" -d 7 $IMG
bad "give only one of -l, -c, -a, -d" -c a -d x $IMG
bad "give only one of -l, -c, -a, -d" -a x -c a $IMG
bad "give only one of -l, -c, -a, -d" -c a -c b $IMG
bad "give only one of -l, -c, -a, -d" -l -d x $IMG
bad "the snapshot name is empty" -c '' $IMG
bad "the snapshot name is empty" -a '' $IMG
bad "^ucow: $IMG: snapshot name must be 1 to 127 bytes\$" -c "$long" $IMG
bad "^ucow: $IMG: no snapshot '$long'\$" -d "$long" $IMG
bad "option '-c' needs an argument" $IMG -c
bad "unknown option '-Z'" -Z $IMG
bad "unknown option '--bogus'" --bogus $IMG
bad "snapshot: unknown output format 'yaml'" -l --output=yaml $IMG
bad "missing FILE" -c a
bad "too many arguments" -c a $IMG $IMG

# a read-only file: -c (and -a, -d) cannot open it read-write; -l still works
ro=
if [ "$(id -u)" != 0 ]; then
	chmod a-w $IMG && ro=chmod
elif command -v chattr >/dev/null && chattr +i $IMG 2>/dev/null; then
	ro=chattr
	trap 'chattr -i $IMG 2>/dev/null' EXIT
fi
if [ -n "$ro" ]; then
	for a in "-c a" "-a y" "-d y"; do
		expect_err 1 "^ucow: $IMG: (Permission denied|Operation not permitted)" \
			$UCOW snapshot $a $IMG
	done
	expect_ok $UCOW snapshot -l $IMG
	cmp -s out list.before || fail "-l of a read-only image differs"
	unchanged "read-only"
	if [ $ro = chattr ]; then chattr -i $IMG; else chmod u+w $IMG; fi
else
	echo "note: cannot make a read-only file here (root without chattr +i); skipped"
fi

# a 127-byte name is fine; after all this the image still works
expect_ok $UCOW snapshot -c "$max" $IMG
expect_ok $UCOW convert -l "$max" $IMG m.raw
cmp m.raw cur.before || fail "the 127-byte snapshot differs"
expect_ok $UCOW snapshot -d "$max" $IMG
unchanged "127-byte name"
ok "snapshot errors"
