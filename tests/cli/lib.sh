# Helpers for tests/cli/t_*.sh (sourced). $UCOW is the binary under test; the current
# folder is a fresh scratch folder. A failed check prints "not ok: <why>" and exits 1.
set -u
: "${UCOW:?run through tests/cli/run.sh}"
PY=${PYTHON:-python3}
# the interpreter itself, not a wrapper script (pyenv shims cost ~0.4 s a call)
PY=$($PY -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=python3

fail() {
	echo "not ok: $*"
	exit 1
}

# pts N: N, or a quarter of it (at least 4) when CLI_SHORT=1 (make asan-check: the
# sanitizer build repeats the command-line suite, where the costliest loops need not run
# in full a second time)
pts() {
	if [ "${CLI_SHORT:-0}" = 1 ]; then
		n=$(($1 / 4))
		[ $n -ge 4 ] || n=4
		echo $n
	else
		echo "$1"
	fi
}

ok() {
	echo "ok: $*"
}

# run CMD...: run a command, keep its stdout, stderr and status in out, err, st.
run() {
	"$@" >out 2>err
	st=$?
	echo "+ $* -> $st"
	sed 's/^/  out| /' out | head -n 20
	sed 's/^/  err| /' err | head -n 5
}

# expect_ok CMD...: must exit 0 with nothing on stderr.
expect_ok() {
	run "$@"
	[ $st -eq 0 ] || fail "'$*' exited $st: $(head -n 1 err)"
	[ ! -s err ] || fail "'$*' wrote to stderr: $(head -n 1 err)"
}

# expect_err STATUS PATTERN CMD...: must exit STATUS with exactly one stderr line that
# starts with "ucow: " and matches the grep -E PATTERN.
expect_err() {
	want=$1 pat=$2
	shift 2
	run "$@"
	[ $st -eq "$want" ] || fail "'$*' exited $st, expected $want"
	[ "$(wc -l <err)" -eq 1 ] || fail "'$*' wrote $(wc -l <err) lines to stderr, expected 1"
	grep -q '^ucow: ' err || fail "'$*': stderr does not start with 'ucow: ': $(cat err)"
	grep -qE -- "$pat" err || fail "'$*': stderr '$(cat err)' does not match '$pat'"
}

# no_file NAME...: nothing by these names (nor a temporary sibling) was left behind.
no_file() {
	for f in "$@"; do
		[ ! -e "$f" ] || fail "$f was left behind"
		d=$(dirname "$f")
		b=$(basename "$f")
		ls -a "$d" 2>/dev/null | grep -q "^\.$b\.ucow-" && fail "a temporary file of $f was left behind"
	done
	return 0
}

# json_ok FILE: FILE holds valid JSON.
json_ok() {
	$PY -m json.tool "$1" >/dev/null || fail "$1 is not valid JSON: $(head -c 300 "$1")"
}

# pyrand: the random-sequence driver.
randio() {
	$PY "$CLI_DIR/randio.py" --ucow "$UCOW" "$@"
}

# wait_locked: wait until a lock holder started in the background has printed "locked" into
# lock.out (a loaded machine can take seconds to start python); fail after 30 s.
wait_locked() {
	for _i in $(seq 300); do grep -q locked lock.out 2>/dev/null && return 0; sleep 0.1; done
	fail "the lock holder did not start within 30 s"
}
