#!/bin/sh
# kill -9 in the middle of a long "ucow io" run (flushes interleaved): every write followed
# by a completed flush must be there, and "ucow check" must find the image clean (exit 0:
# a crash may lose unflushed writes; it must leave neither corruption nor leaked chunks).
# Every configuration runs; the first failure is reported at the end.
. "$CLI_LIB"
first=""
kt() {
	what=$1
	shift
	$PY "$CLI_DIR/killtest.py" --ucow "$UCOW" "$@" >kt.out 2>&1
	st=$?
	cat kt.out
	if [ $st -ne 0 ] && [ -z "$first" ]; then
		first="$what: $(grep '^not ok: ' kt.out | head -n 1 | cut -c9-)"
	fi
}
kt "standalone, 64k chunks" --seed 51 --runs 2 --chunk 64k
kt "standalone, default chunks" --seed 52 --runs 2
kt "overlay on raw, 64k chunks" --seed 53 --runs 2 --chunk 64k --base
kt "overlay on raw, default chunks" --seed 54 --runs 2 --base
[ -z "$first" ] || fail "$first"
ok "kill -9"
