#!/bin/sh
# The whole test suite, as `make check` runs it. Each stage prints PASS/FAIL lines; this
# script counts the test cases they stand for and ends with "N passed, N failed". A stage that fails without saying
# which test failed counts as one failure of its own.
cd "$(dirname "$0")/.."
out=build/check-results.txt
mkdir -p build
: >"$out"
: >build/check-times.txt
stage() {
	name=$1; shift
	echo "=== $name"
	log=build/check-$name.log
	t0=$(date +%s)
	"$@" >"$log" 2>&1
	rc=$?
	cat "$log"
	echo "$name $(($(date +%s) - t0))s" >>build/check-times.txt
	grep -E '^(PASS|FAIL) ' "$log" >>"$out"
	if [ $rc -ne 0 ] && ! grep -q '^FAIL ' "$log"; then
		echo "FAIL stage/$name (exit $rc, log: $log)" | tee -a "$out"
	fi
}
stage build make -j2 all
stage layers python3 tests/check-layers.py --selftest
stage mutation-texts python3 tests/mutations/run.py --texts
stage unit tests/run-unit.sh build
stage fuzz make --no-print-directory fuzz
stage so tests/so/run.sh build
stage install tests/install/run.sh build
stage deb tests/deb/run.sh build
stage cli tests/cli/run.sh build
stage asan make --no-print-directory asan-check
stage tsan make --no-print-directory tsan-check
stage vm make --no-print-directory vm-check
# The long guest tests (a QEMU guest on a ucow device: minutes of nested emulation).
if [ "${UCOW_LONG:-0}" = 1 ]; then
	stage vm-kvm make --no-print-directory vm-kvm-check
else
	echo "=== vm-kvm: skipped (set UCOW_LONG=1 to run make vm-kvm-check)"
fi
# Test cases, not files: a result line "PASS name [N cases]" stands for N passed cases,
# "FAIL name [N passed] ..." for N passed and one failed; any other line for one case.
passed=$(awk '$1 == "PASS" { n = ($3 ~ /^\[[0-9]+$/) ? substr($3, 2) + 0 : 1; p += n }
	$1 == "FAIL" && $3 ~ /^\[[0-9]+$/ && $4 == "passed]" { p += substr($3, 2) }
	END { print p + 0 }' "$out")
failed=$(grep -c '^FAIL ' "$out")
echo
echo "stage times: $(tr '\n' ' ' <build/check-times.txt)"
grep '^FAIL ' "$out" || true
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
