#!/bin/bash
# Run the unit test binaries of BUILD/tests: one result line per cmocka test case,
#   "PASS <prefix>/<binary>/<case>" or "FAIL <prefix>/<binary>/<case>",
# and one FAIL line for a binary that is missing, crashed outside a case, or ran no case
# (UNIT_FILTER=NAME matching nothing is a failure, not a pass). Exits non-zero on any FAIL.
#   tests/run-unit.sh [BUILD [PREFIX [SOURCES...]]]
# SOURCES: the tests/unit/test_*.c whose binaries must exist (default: all of them).
# UNIT_JOBS binaries run at once (default 2: the longest, test_crash, waits on fsync much of
# its time); the lines come out in the order of SOURCES whatever finishes first.
build=${1:-build}
prefix=${2:-unit}
[ $# -ge 2 ] && shift 2 || shift $#
[ $# -gt 0 ] || set -- tests/unit/test_*.c
jobs=${UNIT_JOBS:-2}

one() {	# one SOURCE: run its binary; its lines in $t.out, its status (0 or 1) in $t.rc
	src=$1
	t=$build/tests/$(basename "$src" .c)
	name=$prefix/$(basename "$t")
	out="$t.out"
	if [ ! -x "$t" ]; then
		echo "FAIL $name (not built: $t)" >"$out"
		echo 1 >"$t.rc"
		return
	fi
	log="$t.log"
	timeout 300 "$t" >"$log" 2>&1
	st=$?
	rc=0
	# cmocka: "[       OK ] case" / "[  FAILED  ] case" (the summary repeats the failures)
	sed -n 's/^\[       OK \] \([A-Za-z0-9_]*\)$/PASS \1/p; s/^\[  FAILED  \] \([A-Za-z0-9_]*\)$/FAIL \1/p' \
		"$log" | awk '!seen[$0]++' >"$log.cases"
	sed "s#^\(PASS\|FAIL\) #\1 $name/#" "$log.cases" >"$out"
	ncases=$(wc -l <"$log.cases")
	nfail=$(grep -c '^FAIL ' "$log.cases")
	if [ "$ncases" -eq 0 ]; then
		echo "FAIL $name (no test case ran, exit $st${UNIT_FILTER:+, UNIT_FILTER=$UNIT_FILTER}; log: $log)" >>"$out"
		tail -n 20 "$log" | sed 's/^/    /' >>"$out"
		rc=1
	elif [ $st -ne 0 ] && [ "$nfail" -eq 0 ]; then
		echo "FAIL $name (exit $st outside a test case; log: $log)" >>"$out"
		tail -n 20 "$log" | sed 's/^/    /' >>"$out"
		rc=1
	elif [ "$nfail" -gt 0 ]; then
		grep -B2 -A12 'FAILED\|ERROR\|Assert\|error:' "$log" | head -n 30 | sed 's/^/    /' >>"$out"
		rc=1
	fi
	echo $rc >"$t.rc"
}

running=0
for src in "$@"; do
	t=$build/tests/$(basename "$src" .c)
	rm -f "$t.out" "$t.rc"
	if [ $running -ge "$jobs" ]; then
		wait -n
		running=$((running - 1))
	fi
	one "$src" &
	running=$((running + 1))
done
wait
rc=0
for src in "$@"; do
	t=$build/tests/$(basename "$src" .c)
	cat "$t.out" 2>/dev/null || echo "FAIL $prefix/$(basename "$t") (no result)"
	[ "$(cat "$t.rc" 2>/dev/null)" = 0 ] || rc=1
done
exit $rc
