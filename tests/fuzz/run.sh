#!/bin/bash
# Run every fuzz target of BUILD/fuzz (make fuzz / make fuzz-long):
#   1. replay each file of tests/fuzz/regressions/<target>/ (one that crashes is a FAIL),
#   2. fuzz SECONDS seconds from the seeds (tests/fuzz/make-seeds.sh, into BUILD/fuzz/seeds)
#      and the corpus kept from earlier runs (BUILD/fuzz/corpus/<target>), in libFuzzer's
#      fork mode with crashes, timeouts and OOMs ignored: a finding ends its job, not the
#      run, so one known bug does not hide the others.
# One line per target: "PASS fuzz/<target>" or "FAIL fuzz/<target>", with the executions;
# each new finding leaves its input in BUILD/fuzz/artifacts/<target>/, is replayed once and
# its sanitizer summary printed; the whole log is BUILD/fuzz/<target>.log. Exits non-zero
# if any target failed.
#
#   tests/fuzz/run.sh [BUILD [SECONDS]]     FUZZ_TARGETS="open read": only those
# (BUILD relative to the top of the tree, where this runs). FUZZ_JOBS targets fuzz at once
# (default 2, one per core); the lines come out in the targets' order.
cd "$(dirname "$0")/../.." || exit 1
build=${1:-build}
secs=${2:-20}
fz=$build/fuzz
LIMITS="-rss_limit_mb=2048 -timeout=10"

# each fuzzer's private folder lives under this one (tmpfs when there is one), removed after
tmpbase=/dev/shm
[ -d "$tmpbase" ] && [ -w "$tmpbase" ] || tmpbase=${TMPDIR:-/tmp}
tmproot=$(mktemp -d "$tmpbase/ucow-fuzz-run.XXXXXX") || exit 1
trap 'rm -rf "$tmproot"' EXIT INT TERM
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
running=0
if ! tests/fuzz/make-seeds.sh "$build" >"$fz/seeds.log" 2>&1; then
	echo "FAIL fuzz/seeds (log: $fz/seeds.log)"; tail -n 5 "$fz/seeds.log" | sed 's/^/    /'
	rc=1
fi
# one BIN: replay, fuzz and judge one target; its lines in $fz/$t.result, its status in
# $fz/$t.rc; a private folder for what its fuzzer leaves behind
one() {
	bin=$1
	t=${bin##*/fuzz_}
	export UCOW_FUZZ_TMP=$tmproot/$t
	mkdir -p "$UCOW_FUZZ_TMP"
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
			echo "    $f:" >>"$log.why"
			summary "$log.reg" >>"$log.why"
		fi
	done
	rm -f "$log.reg"
	# 2. fuzzing, in fork mode: a crash ends its job, not the run, so a known bug (a
	#    regression still open) does not hide the others for the rest of the time
	mkdir -p "$fz/corpus/$t" "$fz/artifacts/$t" "$fz/seeds/$t"
	before=$(ls "$fz/artifacts/$t")
	timeout $((secs * 2 + 120)) "$bin" $LIMITS -max_total_time="$secs" -fork=1 \
		-ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
		-artifact_prefix="$fz/artifacts/$t/" "$fz/corpus/$t" "$fz/seeds/$t" >>"$log" 2>&1
	frc=$?
	last=$(grep -E '^#[0-9]+: cov:' "$log" | tail -n 1)
	execs=$(echo "$last" | sed -n 's/^#\([0-9]*\):.*/\1/p')
	speed=$(echo "$last" | sed -n 's/.* exec\/s \([0-9]*\).*/\1/p')
	cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	oomtc=$(echo "$last" | sed -n 's/.*oom\/timeout\/crash: \([0-9\/]*\).*/\1/p')
	ncorp=$(ls "$fz/corpus/$t" | wc -l)
	new=""
	for a in $(ls "$fz/artifacts/$t"); do
		echo "$before" | grep -qx "$a" || new="$new $a"
	done
	if [ $frc -ne 0 ]; then
		bad="$bad libFuzzer exited with $frc;"
	fi
	if [ -n "$new" ]; then
		bad="$bad $(echo $new | wc -w) new findings in $fz/artifacts/$t/;"
		# what each one is: replayed once (the first 10), printed once per distinct
		# sanitizer summary
		: >"$log.seen"
		for a in $(echo $new | tr ' ' '\n' | head -n 10); do
			timeout 120 "$bin" $LIMITS "$fz/artifacts/$t/$a" >"$log.one" 2>&1
			cat "$log.one" >>"$log"
			key=$(grep -m1 -E '^SUMMARY:|ERROR: libFuzzer' "$log.one" | sed 's/0x[0-9a-f]*//g')
			if grep -qxF "$key" "$log.seen"; then
				echo "    $fz/artifacts/$t/$a: the same" >>"$log.why"
				continue
			fi
			echo "$key" >>"$log.seen"
			echo "    $fz/artifacts/$t/$a:" >>"$log.why"
			summary "$log.one" >>"$log.why"
		done
		rm -f "$log.seen"
		rm -f "$log.one"
	fi
	stats="${execs:-0} executions, ${speed:-0}/s, cov ${cov:-?}, corpus $ncorp, oom/timeout/crash ${oomtc:-?}, $nreg regression inputs"
	if [ -z "$bad" ]; then
		echo "PASS fuzz/$t ($stats)" >"$fz/$t.result"
		echo 0 >"$fz/$t.rc"
	else
		echo "FAIL fuzz/$t ($stats;$bad log: $log)" >"$fz/$t.result"
		cat "$log.why" >>"$fz/$t.result" 2>/dev/null
		echo 1 >"$fz/$t.rc"
	fi
	rm -f "$log.why"
	rm -rf "${UCOW_FUZZ_TMP:?}"	# what a crashed fuzzer left behind
}

targets=""
for bin in "$fz"/fuzz_*; do
	[ -x "$bin" ] || continue
	t=${bin##*/fuzz_}
	if [ -n "${FUZZ_TARGETS:-}" ]; then
		case " $FUZZ_TARGETS " in *" $t "*) ;; *) continue ;; esac
	fi
	targets="$targets $t"
	rm -f "$fz/$t.result" "$fz/$t.rc"
	if [ "$running" -ge "${FUZZ_JOBS:-2}" ]; then
		wait -n
		running=$((running - 1))
	fi
	one "$bin" &
	running=$((running + 1))
done
wait
for t in $targets; do
	cat "$fz/$t.result" 2>/dev/null || echo "FAIL fuzz/$t (no result)"
	[ "$(cat "$fz/$t.rc" 2>/dev/null)" = 0 ] || rc=1
done
exit $rc
