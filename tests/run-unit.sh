#!/bin/sh
# Run every unit test binary in BUILD/tests; one result line each.
# Prints "PASS name" / "FAIL name"; exits non-zero if any failed.
build=${1:-build}
prefix=${2:-unit}
prefix=${2:-unit}
rc=0
for t in "$build"/tests/test_*; do
	[ -x "$t" ] || continue
	name=$prefix/$(basename "$t")
	log="$t.log"
	if timeout 300 "$t" >"$log" 2>&1; then
		echo "PASS $name"
	else
		echo "FAIL $name (log: $log)"; tail -n 20 "$log" | sed 's/^/    /'
		rc=1
	fi
done
exit $rc
