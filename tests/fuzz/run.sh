#!/bin/sh
# Run every fuzz target of BUILD/fuzz (make fuzz / make fuzz-long):
#   1. replay each file of tests/fuzz/regressions/<target>/ (one that crashes is a FAIL),
#   2. fuzz SECONDS seconds from the seeds (tests/fuzz/make-seeds.sh, into BUILD/fuzz/seeds)
#      and the corpus kept from earlier runs (BUILD/fuzz/corpus/<target>).
# One line per target: "PASS fuzz/<target>" or "FAIL fuzz/<target>", with the executions;
# a finding leaves its input in BUILD/fuzz/artifacts/<target>/ and its log in
# BUILD/fuzz/<target>.log. Exits non-zero if any target failed.
#
#   tests/fuzz/run.sh [BUILD [SECONDS]]
build=${1:-build}
secs=${2:-20}
fz=$build/fuzz
LIMITS="-rss_limit_mb=2048 -timeout=10"

# each fuzzer's private folder lives under this one (tmpfs when there is one), removed after
tmpbase=/dev/shm
[ -d "$tmpbase" ] && [ -w "$tmpbase" ] || tmpbase=${TMPDIR:-/tmp}
UCOW_FUZZ_TMP=$(mktemp -d "$tmpbase/ucow-fuzz-run.XXXXXX") || exit 1
export UCOW_FUZZ_TMP
trap 'rm -rf "$UCOW_FUZZ_TMP"' EXIT INT TERM
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for s in /usr/lib/llvm-14/bin/llvm-symbolizer /usr/bin/llvm-symbolizer; do
	[ -x "$s" ] && { export ASAN_SYMBOLIZER_PATH=$s; break; }
done

# The first frames of the crash in a libFuzzer log, and its SUMMARY line.
summary() {
	grep -m1 -E '^SUMMARY:|ERROR: libFuzzer' "$1" | sed 's/^/    /'
	grep -E '^ *#[0-9]+ 0x' "$1" | grep -v -E 'libFuzzer|fuzzer::|compiler-rt|libc.so|__libc_start' |
		head -n 6 | sed 's/^ */      /'
}

rc=0
if ! tests/fuzz/make-seeds.sh "$build" >"$fz/seeds.log" 2>&1; then
	echo "FAIL fuzz/seeds (log: $fz/seeds.log)"; tail -n 5 "$fz/seeds.log" | sed 's/^/    /'
	rc=1
fi
for bin in "$fz"/fuzz_*; do
	[ -x "$bin" ] || continue
	t=${bin##*/fuzz_}
	log=$fz/$t.log
	bad=""
	: >"$log"; rm -f "$log.why"
	# 1. the regressions
	nreg=0
	for f in tests/fuzz/regressions/"$t"/*; do
		[ -f "$f" ] || continue
		nreg=$((nreg + 1))
		if ! timeout 120 "$bin" $LIMITS "$f" >"$log.reg" 2>&1; then
			bad="$bad regression $f crashes;"
			cat "$log.reg" >>"$log"
			summary "$log.reg" >>"$log.why"
		fi
	done
	rm -f "$log.reg"
	# 2. fuzzing
	mkdir -p "$fz/corpus/$t" "$fz/artifacts/$t" "$fz/seeds/$t"
	timeout $((secs * 2 + 120)) "$bin" $LIMITS -max_total_time="$secs" -print_final_stats=1 \
		-artifact_prefix="$fz/artifacts/$t/" "$fz/corpus/$t" "$fz/seeds/$t" >>"$log" 2>&1
	frc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
	ncorp=$(ls "$fz/corpus/$t" | wc -l)
	if [ $frc -ne 0 ]; then
		art=$(grep -o -E "Test unit written to [^ ]+" "$log" | tail -n 1 | sed 's/.* //')
		bad="$bad fuzzing found a problem (exit $frc${art:+, input $art});"
		summary "$log" >>"$log.why"
	fi
	stats="${execs:-0} executions, ${speed:-0}/s, cov ${cov:-?}, corpus $ncorp, $nreg regression inputs"
	if [ -z "$bad" ]; then
		echo "PASS fuzz/$t ($stats)"
	else
		echo "FAIL fuzz/$t ($stats;$bad log: $log)"
		cat "$log.why" 2>/dev/null
		rc=1
	fi
	rm -f "$log.why"
	rm -rf "${UCOW_FUZZ_TMP:?}"/*	# what a crashed fuzzer left behind
done
exit $rc
