#!/bin/bash
# The command-line tests: tests/cli/run.sh BUILD_DIR
# Runs every tests/cli/t_*.sh with BUILD_DIR/ucow, each in a fresh scratch folder with a
# time limit, and prints one "PASS cli/<name> [N cases]" or "FAIL cli/<name> [N passed] <why>"
# line per test, N counting its checks (commands run through lib.sh's helpers, "ok:" lines).
# Exits non-zero when any test failed. A test's output goes to BUILD_DIR/cli-logs/<name>.log.
# CLI_TESTS="name ..." runs only those; CLI_TIMEOUT sets the limit in seconds (default 150);
# CLI_JOBS tests run at once (default 2: the tests mostly wait on fsync).
build=${1:-build}
case $build in /*) ;; *) build=$(pwd)/$build ;; esac
here=$(cd "$(dirname "$0")" && pwd)
UCOW=$build/ucow
if [ ! -x "$UCOW" ]; then
	echo "FAIL cli/setup $UCOW was not built"
	exit 1
fi
export UCOW CLI_LIB="$here/lib.sh" CLI_DIR="$here"
logs=$build/cli-logs
mkdir -p "$logs"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ucow-cli.XXXXXX") || exit 1
limit=${CLI_TIMEOUT:-150}
jobs=${CLI_JOBS:-2}
one() {	# one TEST-FILE: run it, print its line; exit status 1 when it failed
	t=$1
	name=$(basename "$t" .sh)
	name=${name#t_}
	dir=$scratch/$name
	log=$logs/$name.log
	mkdir -p "$dir"
	start=$(date +%s)
	(cd "$dir" && exec timeout -k 5 "$limit" sh "$t") >"$log" 2>&1
	st=$?
	secs=$(($(date +%s) - start))
	# its checks: every command run through lib.sh's run (expect_ok, expect_err...) and
	# every "ok:" line; the closing line of make check counts these cases
	n=$(grep -c -e '^+ ' -e '^ok: ' "$log")
	if [ $st -eq 0 ] && [ "$n" -eq 0 ]; then
		st=1
		echo "not ok: the test checked nothing" >>"$log"
	fi
	if [ $st -eq 0 ]; then
		echo "PASS cli/$name [$n cases] (${secs}s)"
		rm -rf "$dir"
		return 0
	fi
	if [ $st -eq 124 ] || [ $st -eq 137 ]; then
		why="timed out after ${limit}s"
	else
		why=$(grep '^not ok: ' "$log" | head -n 1 | cut -c9-)
		[ -n "$why" ] || why="exit status $st"
	fi
	# one write for the whole report, so parallel tests do not interleave it
	printf '%s\n%s\n' "FAIL cli/$name [$n passed] $why (log: $log, files: $dir)" \
		"$(tail -n 15 "$log" | sed 's/^/    /')"
	return 1
}
rc=0
running=0
for want in ${CLI_TESTS:-}; do	# a name that matches no test is a failure, not a pass
	if [ ! -f "$here/t_$want.sh" ]; then
		echo "FAIL cli/$want (no such test: CLI_TESTS=$CLI_TESTS)"
		rc=1
	fi
done
for t in "$here"/t_*.sh; do
	name=$(basename "$t" .sh)
	name=${name#t_}
	if [ -n "${CLI_TESTS:-}" ]; then
		case " $CLI_TESTS " in *" $name "*) ;; *) continue ;; esac
	fi
	if [ $running -ge "$jobs" ]; then
		wait -n || rc=1
		running=$((running - 1))
	fi
	one "$t" &
	running=$((running + 1))
done
while [ $running -gt 0 ]; do
	wait -n || rc=1
	running=$((running - 1))
done
[ $rc -eq 0 ] && rm -rf "$scratch"
exit $rc
