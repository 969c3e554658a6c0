#!/bin/sh
# The ublk side's JSON: state files, `dev list --output=json`, `dev stats --output=json`
# and the control socket carry byte strings that are not UTF-8 (an image file name, snapshot
# names) without raw bytes in any JSON (as "file-hex" / "name-hex"), keys are kebab-case,
# online snapshots with such names are created, listed and deleted; a state file that is
# malformed, over-size or of the wrong types is refused with a message naming it, and the
# commands go on (list warns, recover and stats fail with one line).
# vm-timeout: 240
. "$VM_LIB"
need_ucow

trap 'ucow dev del --all 2>/dev/null; rm -f /run/ucow/dev97.json /run/ucow/dev98.json /run/ucow/dev99.json; cd /; rm -rf "$VM_TMP"' EXIT
ff=$(printf '\377')
img="img-$ff-$(printf '\001').ucow"
must ucow create -q "$img" 64M
dev=$(ucow dev add "$img") || fail "dev add of a file name that is not UTF-8 failed"
id=${dev#/dev/ublkb}
echo "device: $dev"

# the state file: version 2, kebab-case, the path as hex, no raw byte
cat /run/ucow/dev$id.json
grep -q '"version": 2' /run/ucow/dev$id.json || fail "state file: no version 2"
grep -q '"block-size": 512' /run/ucow/dev$id.json || fail "state file: no block-size"
grep -q '"file-hex": "2f.*696d672dff2d012e75636f77"' /run/ucow/dev$id.json ||
	fail "state file: no file-hex"
grep -q "$ff" /run/ucow/dev$id.json && fail "state file holds a raw 0xff byte"

# dev list --output=json
ucow dev list --output=json >list.json || fail "dev list --output=json exited $?"
cat list.json
grep -q '"file-hex": "2f.*696d672dff2d012e75636f77"' list.json || fail "list: no file-hex"
grep -q "$ff" list.json && fail "list --output=json holds a raw 0xff byte"
for k in '"read-only": false' '"block-size": 512' '"recoverable": false' '"depth": 128' \
	"\"device\": \"$dev\"" '"target": "cow"' '"queues": '; do
	grep -q "$k" list.json || fail "list --output=json lacks $k"
done
grep -q '"[a-z]*_[a-z_]*":' list.json && fail "list --output=json has snake_case keys"

# online snapshots named with bytes that are not UTF-8, and with JSON's special characters
n1="s$ff$(printf '\376')"
n2='q"u\o/te'
must ucow snapshot -c "$n1" "$img"
must ucow snapshot -c "$n2" "$img"
ucow snapshot -l "$img" >snaps.txt || fail "online snapshot -l failed"
cat -v snaps.txt
grep -q "$n1" snaps.txt || fail "online list lacks the non-UTF-8 name"
grep -qF "$n2" snaps.txt || fail "online list lacks '$n2'"
ucow info "$img" | grep -q "^snapshots: 2" || fail "online info does not count 2 snapshots"
must ucow snapshot -d "$n1" "$img"
ucow snapshot -l "$img" | grep -q "$n1" && fail "the non-UTF-8 snapshot was not deleted"
out=$(ucow snapshot -d "$n1" "$img" 2>&1) && fail "deleting it twice succeeded"
echo "second delete: $out"
echo "$out" | grep -q "$n1" && fail "the error message carried the name's raw bytes: $out"

# dev stats --output=json: kebab-case
ucow dev stats "$id" --output=json >stats.json || fail "dev stats --output=json exited $?"
cat stats.json
for k in '"queue-ios"' '"lat-ns"' '"write-zeroes"' '"p99.9"' '"pauses"' '"last-us"'; do
	grep -q "$k" stats.json || fail "stats --output=json lacks $k"
done

# hostile state files: named in the message, the commands go on
printf '{"version": 2, "id": 99, "pid": "1"' >/run/ucow/dev99.json
printf '{"version": 2, "id": 98, "pid": 1, "target": "cow", "file": "/x", "queues": 99999, "depth": 1, "block-size": 512, "size": 4096, "direct": false, "read-only": false, "recoverable": false, "features": 0, "socket": ""}' >/run/ucow/dev98.json
head -c 40000 /dev/zero | tr '\0' ' ' >/run/ucow/dev97.json
ucow dev list >list.out 2>list.err || fail "dev list failed with bad state files: $(cat list.err)"
cat list.err
grep -q "^ucow: warning: /run/ucow/dev99.json: bad state file: malformed JSON (truncated)" list.err ||
	fail "list: no warning for the truncated state file"
grep -q "^ucow: warning: /run/ucow/dev98.json: bad state file: \"queues\": out of range" list.err ||
	fail "list: no warning for the out-of-range state file"
grep -q "^ucow: warning: /run/ucow/dev97.json: bad state file: too long" list.err ||
	fail "list: no warning for the over-size state file"
grep -qE "^$id +live +cow " list.out || fail "list lost the good device"
out=$(ucow dev recover 99 2>&1) && fail "recover of a bad state file succeeded"
echo "$out"
[ "$out" = "ucow: /run/ucow/dev99.json: bad state file: malformed JSON (truncated)" ] ||
	fail "recover message: $out"
out=$(ucow dev stats 98 2>&1) && fail "stats of a bad state file succeeded"
echo "$out" | grep -q "^ucow: /run/ucow/dev98.json: bad state file" || fail "stats message: $out"

must ucow dev del "$id"
[ ! -e /run/ucow/dev$id.json ] || fail "state file left behind"
must ucow check "$img"
pass
