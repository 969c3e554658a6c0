#!/bin/bash
# The real-kernel test bed: boot a ublk-capable Linux (Debian's 6.12 cloud kernel) under
# QEMU TCG with an initramfs holding busybox, the real tools (fio, mkfs.ext4, e2fsck,
# qemu-img, ...), the ucow binary and the guest tests, run the tests inside, and report.
#
#   tests/vm/run.sh [--kernel 6.12|new] [--only REGEX]... [--long] [--shard I/N]
#                   [--script FILE]... [--bin FILE]... [--shell] [-v]
#
#   (no option)     run every guest test, tests/vm/guest/*.sh except lib.sh, in name order,
#                   except the long ones (a "# vm-long:" line: minutes of nested QEMU)
#   --only REGEX    run only the tests whose names (e.g. 01-loop-fio) match the extended
#                   regular expression, long or not; may be repeated
#   --long          run the long tests, and only them (--only picks long tests by itself)
#   --shard I/N     of the tests chosen, run share I (0..N-1) of N: the tests are dealt
#                   out heaviest first (tests/vm/weights: seconds of an earlier run) to
#                   the share with the least so far, so that N guests run side by side
#                   (one host core each) end together; logs go to $BUILD/vm-sI/.
#                   UCOW_VM_SHARD_PRELOAD="I:SECONDS ..." counts work a share does
#                   besides (vm-check runs the newer kernel's tests after share 1)
#   --script FILE   also run FILE in the guest (as /vm/scripts/NAME, from a fresh folder
#                   on tmpfs) and show its output here; its exit status is its result.
#                   With --script and no --only, no guest test runs. May be repeated.
#   --bin FILE      also put the executable FILE (and its libraries) in the guest's PATH
#   --shell         end in an interactive shell on the console (tests run first only when
#                   --only or --script is given); leave with 'exit' or Ctrl-A X
#   -v, --verbose   stream the whole guest console here
#   --kernel SERIES the guest kernel (kernel.sh): 6.12 (the default: Debian's LTS) or new
#                   (6.16 or later, from trixie-backports); with new, result lines say
#                   vm-new/NAME and the logs go to $BUILD/vm-new/
#
# Prints one "PASS vm/NAME" or "FAIL vm/NAME reason" line per test, and per extra check:
# vm/setup (kernel, QEMU, initramfs), vm/boot, vm/timeout, vm/kernel-log (BUG, WARNING,
# Oops, Call Trace, hung task, lockdep, panic... anywhere in the guest kernel log).
# Exits non-zero on any failure. Logs of the last run: $BUILD/vm/console.log (all the
# guest printed), $BUILD/vm/results.log (the guest's report), $BUILD/vm/dmesg.log.
#
# Environment: BUILD (default build), UCOW_VM_TIMEOUT (whole run, seconds, default 1200),
# UCOW_VM_TEST_TIMEOUT (per test or script unless it says "# vm-timeout: N", default 300),
# UCOW_VM_APPEND (extra kernel command line), UCOW_VM_QEMU (default qemu-system-x86_64),
# plus those of kernel.sh (UCOW_VM_KERNEL_DIR, ...) and initramfs.sh (UCOW_VM_TOOLS).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
BUILD=${BUILD:-build}
qemu=${UCOW_VM_QEMU:-qemu-system-x86_64}
overall=${UCOW_VM_TIMEOUT:-1200}
per_test=${UCOW_VM_TEST_TIMEOUT:-300}

only=() scripts=() bins=() shell=0 verbose=0 long=0 series=${UCOW_VM_KERNEL_SERIES:-6.12}
shard=""
usage() { sed -n '6,23s/^# \{0,1\}//p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--only) [ $# -ge 2 ] || usage; only+=("$2"); shift 2 ;;
	--only=*) only+=("${1#*=}"); shift ;;
	--script) [ $# -ge 2 ] || usage; scripts+=("$2"); shift 2 ;;
	--script=*) scripts+=("${1#*=}"); shift ;;
	--bin) [ $# -ge 2 ] || usage; bins+=("$2"); shift 2 ;;
	--bin=*) bins+=("${1#*=}"); shift ;;
	--shell) shell=1; shift ;;
	--long) long=1; shift ;;
	--shard) [ $# -ge 2 ] || usage; shard=$2; shift 2 ;;
	--shard=*) shard=${1#*=}; shift ;;
	-v|--verbose) verbose=1; shift ;;
	--kernel) [ $# -ge 2 ] || usage; series=$2; shift 2 ;;
	--kernel=*) series=${1#*=}; shift ;;
	-h|--help) usage ;;
	*) echo "run.sh: unknown argument '$1'" >&2; usage ;;
	esac
done

case $series in
6.12) tag=vm out=$BUILD/vm ;;
new) tag=vm-new out=$BUILD/vm-new ;;
*) echo "run.sh: --kernel $series: 6.12 or new" >&2; usage ;;
esac
if [ -n "$shard" ]; then
	case $shard in
	[0-9]/[1-9]|[0-9]/[1-9][0-9]) ;;
	*) echo "run.sh: --shard $shard: I/N, 0 <= I < N" >&2; usage ;;
	esac
	[ "${shard%/*}" -lt "${shard#*/}" ] || { echo "run.sh: --shard $shard: I must be below N" >&2; usage; }
	out=$out-s${shard%/*}
fi
export UCOW_VM_KERNEL_SERIES=$series

failed=0
# Result lines name vm/TEST; on the new kernel vm-new/TEST (both run in one make check).
retag() { if [ "$tag" = vm ]; then cat; else sed "s#^\(PASS\|FAIL\) vm/#\1 $tag/#"; fi; }
fail() { echo "FAIL $*" | retag; failed=1; }
setup_fail() { fail "vm/setup $*"; echo "vm: giving up; nothing ran in the guest" >&2; exit 1; }

mkdir -p "$out" || setup_fail "cannot create $out"
# One run at a time per build folder (logs and images are shared).
exec 8>"$out/.run.lock"
if ! flock -n 8; then
	echo "vm: another test bed run is using $out; waiting" >&2
	flock 8
fi

# --- kernel, QEMU, base initramfs ------------------------------------------------------
command -v "$qemu" >/dev/null ||
	setup_fail "$qemu not found: install qemu-system-x86 ('make deps')"
if ! kdir=$(tests/vm/kernel.sh 2>"$out/kernel.err"); then
	cat "$out/kernel.err" >&2
	setup_fail "cannot get the guest kernel: $(tail -n 1 "$out/kernel.err")"
fi
cat "$out/kernel.err" >&2	# empty unless it had to fetch
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -n 1)
if ! tests/vm/initramfs.sh "$kdir" "$out" 2>"$out/initramfs.err"; then
	cat "$out/initramfs.err" >&2
	setup_fail "cannot build the initramfs: $(tail -n 1 "$out/initramfs.err")"
fi
cat "$out/initramfs.err" >&2

# --- what to run -----------------------------------------------------------------------
all_tests=()
for f in tests/vm/guest/*.sh; do
	n=$(basename "$f" .sh)
	[ "$n" = lib ] || all_tests+=("$n")
done
is_long() { grep -q '^# vm-long:' "tests/vm/guest/$1.sh"; }
tests=()
if [ ${#only[@]} -gt 0 ]; then
	for n in "${all_tests[@]}"; do
		for re in "${only[@]}"; do
			if echo "$n" | grep -qE -- "$re"; then tests+=("$n"); break; fi
		done
	done
	[ ${#tests[@]} -gt 0 ] || setup_fail "no guest test matches --only ${only[*]}"
elif [ $long = 1 ]; then
	for n in "${all_tests[@]}"; do is_long "$n" && tests+=("$n"); done
elif [ ${#scripts[@]} -eq 0 ] && [ $shell = 0 ]; then
	for n in "${all_tests[@]}"; do is_long "$n" || tests+=("$n"); done
fi
# --shard I/N: deal the tests out, heaviest first, each to the lightest share so far
if [ -n "$shard" ] && [ ${#tests[@]} -gt 0 ]; then
	mapfile -t tests < <(for n in "${tests[@]}"; do
		w=$(awk -v n="$n" '$1 == n { print $2 }' tests/vm/weights 2>/dev/null)
		echo "${w:-20} $n"
	done | sort -k1,1nr -k2 | awk -v want="${shard%/*}" -v nshards="${shard#*/}" '
		BEGIN { n = split(ENVIRON["UCOW_VM_SHARD_PRELOAD"], pre, " ")
			for (i = 1; i <= n; i++) { split(pre[i], kv, ":"); load[kv[1]] = kv[2] } }
		{ best = 0
		  for (i = 1; i < nshards; i++) if (load[i] < load[best]) best = i
		  load[best] += $1
		  if (best == want) print $2 }' | sort)
	[ ${#tests[@]} -gt 0 ] || { echo "vm: share $shard has no test" >&2; exit 0; }
fi
script_names=()
for s in "${scripts[@]}"; do
	[ -f "$s" ] || setup_fail "--script $s: no such file"
	script_names+=("$(basename "$s")")
done
for b in "${bins[@]}"; do
	[ -f "$b" ] && [ -x "$b" ] || setup_fail "--bin $b: not an executable file"
done

# --- the per-run part of the initramfs: /init, tests, scripts, ucow ---------------------
stage=$out/run.stage
rm -rf "$stage"
mkdir -p "$stage/vm/tests" "$stage/vm/scripts" "$stage/usr/bin"
cp tests/vm/init "$stage/init"
chmod 755 "$stage/init"
ln -s /init "$stage/usr/bin/vm-run"
cp tests/vm/guest/lib.sh "$stage/vm/lib.sh"
# the udev rule (49 runs it with udevadm test)
cp dist/udev/60-ucow.rules.in "$stage/vm/60-ucow.rules.in"
# the fio job files of the guides (Documentation/examples), which guest tests run
mkdir -p "$stage/vm/examples"
cp Documentation/examples/*.fio "$stage/vm/examples/"
for n in "${all_tests[@]}"; do
	cp "tests/vm/guest/$n.sh" "$stage/vm/tests/"
done
chmod 755 "$stage"/vm/tests/*.sh 2>/dev/null
for s in "${scripts[@]}"; do
	cp "$s" "$stage/vm/scripts/"
done
chmod 755 "$stage"/vm/scripts/* 2>/dev/null
# A binary and the libraries the base does not already hold.
add_bin() {
	cp "$1" "$stage/usr/bin/" || setup_fail "cannot copy $1"
	local lib norm
	for lib in $(ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
		norm=$lib
		case $norm in /lib/*|/lib64/*|/bin/*|/sbin/*) norm=/usr$norm ;; esac
		grep -qxF "$norm" "$out/base.files" && continue
		mkdir -p "$stage$(dirname "$norm")"
		cp -L "$lib" "$stage$norm" || setup_fail "cannot copy $lib (needed by $1)"
	done
}
ucow_note="not built"
if [ -x "$BUILD/ucow" ]; then
	add_bin "$BUILD/ucow"
	ucow_note="$BUILD/ucow"
fi
# The test bed's own helpers (tests/vm/*.c, built by make into $BUILD/vm-bin).
for b in "$BUILD"/vm-bin/*; do [ -x "$b" ] && add_bin "$b"; done
for b in "${bins[@]}"; do add_bin "$b"; done
{
	echo "VM_TESTS='${tests[*]}'"
	echo "VM_SCRIPTS='${script_names[*]}'"
	echo "VM_SHELL=$shell"
	echo "VM_TEST_TIMEOUT=$per_test"
} >"$stage/vm/run.conf"
(cd "$stage" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0) >"$out/run.cpio" ||
	setup_fail "cpio failed"
rm -rf "$stage"
# QEMU in the guest (qemu.cpio: qemu-system-x86_64, qemu-storage-daemon, firmware and this
# kernel as /vm/vmlinuz, ~45 MB) only for a shell and for the tests and scripts that say
# "# vm-needs: qemu": every other boot would pay for unpacking it.
extra=""
for f in "${tests[@]/#/tests/vm/guest/}" "${scripts[@]}"; do
	case $f in tests/vm/guest/*) f=$f.sh ;; esac
	grep -qE '^# vm-needs:.*(^|[ ,:])qemu([ ,]|$)' "$f" && extra=$out/qemu.cpio
done
[ $shell = 1 ] && extra=$out/qemu.cpio
if [ -n "$extra" ] && ! tests/vm/initramfs.sh "$kdir" "$out" qemu 2>"$out/initramfs.err"; then
	cat "$out/initramfs.err" >&2
	setup_fail "cannot build qemu.cpio: $(tail -n 1 "$out/initramfs.err")"
fi
[ -n "$extra" ] && cat "$out/initramfs.err" >&2
# The kernel unpacks concatenated archives in order: the run part lands on top of the base.
cat "$out/base.cpio" $extra "$out/run.cpio" >"$out/initrd.img" || setup_fail "cannot write $out/initrd.img"

# --- boot ------------------------------------------------------------------------------
# -accel tcg,thread=single -cpu max,-cx16: see Documentation/testbed.md; two vCPUs so that
# multi-queue code really runs in parallel. oops=panic: an Oops stops the guest at once with
# the report on the console, instead of leaving a half-dead kernel to hang the next test;
# panic=-1 then reboots, which -no-reboot turns into QEMU exiting. quiet keeps boot chatter
# off the console, loglevel=5 still lets warnings through (WARN splats and Oops reports are
# printed at level 4, which quiet alone would hide from the console).
append="console=ttyS0 panic=-1 oops=panic quiet loglevel=5 ${UCOW_VM_APPEND:-}"
# shellcheck disable=SC2054 # the commas belong to QEMU's option syntax
qemu_args=(-accel tcg,thread=single -cpu max,-cx16 -smp 2 -m 2G -nographic -nodefaults
	-no-reboot -kernel "$vmlinuz" -initrd "$out/initrd.img" -append "$append")

if [ $shell = 1 ]; then
	echo "vm: booting $(basename "$vmlinuz") with a shell (ucow: $ucow_note); Ctrl-A X quits QEMU" >&2
	exec "$qemu" "${qemu_args[@]}" -serial mon:stdio
fi

console=$out/console.log
results=$out/results.log
rm -f "$console" "$results" "$out/dmesg.log"
echo "vm: booting $(basename "$vmlinuz"): ${#tests[@]} test(s)${scripts:+, ${#scripts[@]} script(s)}; ucow: $ucow_note" >&2
start=$(date +%s.%N)
# Stopped (Ctrl-C, kill): take QEMU down too.
rm -f "$out/qemu.pid"
trap 'echo "vm: interrupted" >&2; [ -s "$out/qemu.pid" ] && kill "$(cat "$out/qemu.pid")" 2>/dev/null; exit 130' INT TERM HUP
# The console is shown live: all of it with -v; else only the output of --script files.
# (In the background, so that the trap runs as soon as a signal comes.)
rm -f "$out/qemu.rc"
{
	timeout --foreground -k 10 "$overall" "$qemu" "${qemu_args[@]}" -serial stdio \
		-serial "file:$results" -pidfile "$out/qemu.pid" </dev/null 2>"$out/qemu.err"
	echo $? >"$out/qemu.rc"
} | tee "$console" |
	awk -v verbose=$verbose -v scripts=" ${script_names[*]%.sh} " '
	{ sub(/\r$/, "") }
	verbose { print "| " $0; fflush(); next }
	/@@ucow-vm (begin|end) vm\// {	# marks may follow terminal escapes on one line
		split(substr($0, index($0, "@@ucow-vm ")), f, " ")
		name = f[3]; sub(/^vm\//, "", name)
		show = (f[2] == "begin" && index(scripts, " " name " ") > 0)
		next
	}
	show && !/^\[ *[0-9]+\.[0-9]+\] / { print; fflush() }' &
wait $!
qemu_rc=$(cat "$out/qemu.rc" 2>/dev/null || echo "?")
trap - INT TERM HUP
elapsed=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }")

# --- report ----------------------------------------------------------------------------
[ -f "$results" ] || : >"$results"
tr -d '\r' <"$results" >"$results.tmp" && mv "$results.tmp" "$results"
sed -n 's/^UCOW-VM DMESG //p' "$results" >"$out/dmesg.log"
result() { sed -n "s/^UCOW-VM RESULT \([A-Z]* vm\/$1\)\( .*\)\{0,1\}$/\1\2/p" "$results" | head -n 1; }
show_section() {	# the tail of what one test printed, from the console log
	tr -d '\r' <"$console" |
		awk -v n="vm/$1" '/@@ucow-vm (begin|end) vm\// {
			split(substr($0, index($0, "@@ucow-vm ")), f, " ")
			if (f[3] == n) on = (f[2] == "begin")
			next
		} on' |
		tail -n 25 | sed 's/^/  | /'
}

is_test() { case " ${tests[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

for n in "${tests[@]}" "${script_names[@]%.sh}"; do
	r=$(result "$n")
	case $r in
	PASS*) echo "$r" | retag ;;
	FAIL*) echo "$r" | retag; failed=1 ;;
	*) fail "vm/$n no result: the guest crashed, hung or timed out first (console: $console)" ;;
	esac
	# What a failed test printed (script output was already shown live).
	case $r in PASS*) ;; *) is_test "$n" && show_section "$n" ;; esac
done
# Results the guest reported for things not asked for (e.g. a module that did not load).
sed -n 's/^UCOW-VM RESULT //p' "$results" | while read -r status name rest; do
	n=${name#vm/}
	case " ${tests[*]} ${script_names[*]%.sh} " in *" $n "*) continue ;; esac
	echo "$status $name $rest"
done | retag | grep . && failed=1

if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
	fail "vm/timeout the guest did not finish within ${overall}s (UCOW_VM_TIMEOUT)"
elif ! grep -q '^UCOW-VM BOOT ' "$results"; then
	fail "vm/boot the guest never reached /init (qemu exit $qemu_rc: $(tail -n 1 "$out/qemu.err"))"
elif ! grep -q '^UCOW-VM DONE' "$results"; then
	fail "vm/boot the guest stopped before the end (qemu exit $qemu_rc; kernel panic?)"
fi

# The kernel log: the guest's full dmesg when it got that far, and the kernel lines of the
# console in any case (a panic never reaches dmesg.log).
w='(^|[^A-Za-z_])'	# a word boundary that awk (mawk) understands
bad="${w}BUG([^A-Za-z_]|\$)|${w}WARNING([^A-Za-z_]|\$)|${w}Oops|Call Trace|blocked for more than|possible recursive locking|possible circular locking|inconsistent lock state|lockdep|Kernel panic|soft lockup|hard LOCKUP|rcu.*(stall|detected stalls)|UBSAN|KASAN|kernel BUG|double fault"

{
	cat "$out/dmesg.log"
	echo "@@console"
	tr -d '\r' <"$console" | grep -aE '^\[ *[0-9]+\.[0-9]+\] '
} | awk -v bad="$bad" '
	$0 == "@@console" { during = ""; next }
	/ucow-vm: begin vm\// { during = "during " $NF; next }
	/ucow-vm: end vm\// { during = "after " $NF; next }
	$0 ~ bad && !seen[$0]++ { print (during ? during : "at boot") ": " $0 }' >"$out/kernel-bad.log"
if [ -s "$out/kernel-bad.log" ]; then
	fail "vm/kernel-log $(wc -l <"$out/kernel-bad.log") suspicious kernel log line(s), first $(head -n 1 "$out/kernel-bad.log")"
	head -n 20 "$out/kernel-bad.log" | sed 's/^/  | /'
elif grep -q '^UCOW-VM DONE' "$results"; then
	echo "PASS $tag/kernel-log"
fi

times=$(sed -n 's/^UCOW-VM TIME vm\/\([^ ]*\) \(.*\)/\1 \2s,/p' "$results" | tr '\n' ' ')
boot=$(sed -n 's/^UCOW-VM BOOT [^ ]* //p' "$results")
echo "vm: ${elapsed}s in all (boot to /init ${boot:-?}s; ${times%, }; QEMU exit $qemu_rc)" >&2
if [ $failed != 0 ]; then
	echo "vm: logs: $console (console), $results (guest report), $out/dmesg.log" >&2
	exit 1
fi
exit 0
