#!/bin/bash
# The installed product (a stage of make check):
#   - the option lists of --help, the man pages and cli.md / ublk.md agree (options.py);
#   - make install into a DESTDIR with a PREFIX and LIBDIR of its own gives exactly the
#     documented files (Documentation/packaging.md); pkg-config finds the library there, a
#     small program builds against the installed header and library alone and runs; the
#     installed ucow runs and its man pages render;
#   - the bash completion completes commands, options, snapshot names;
#   - systemd-analyze verify accepts the unit;
#   - make uninstall leaves nothing behind.
#   tests/install/run.sh BUILD
build=${1:-build}
case $build in /*) ;; *) build=$(pwd)/$build ;; esac
cd "$(dirname "$0")/../.." || exit 1
rc=0
result() {	# result PASS|FAIL NAME [WHY]
	echo "$1 install/$2${3:+ $3}"
	[ "$1" = PASS ] || rc=1
}
tests/install/options.py "$build" || rc=1

tmp=$(mktemp -d /tmp/ucow-install.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/root
prefix=/opt/ucow-test
libdir=$prefix/lib64
mk() { make --no-print-directory BUILD="$build" PREFIX=$prefix LIBDIR=$libdir \
	DESTDIR="$dest" "$@"; }

# the documented file list, with this test's PREFIX and LIBDIR
cat >"$tmp/want" <<EOT
$prefix/bin/ucow
$prefix/include/cowcore.h
$prefix/lib/systemd/system/ucow@.service
$prefix/lib/udev/rules.d/60-ucow.rules
$prefix/share/bash-completion/completions/ucow
$prefix/share/man/man1/ucow.1
$prefix/share/man/man5/ucow-format.5
$prefix/share/man/man8/ucow-dev.8
$prefix/share/doc/ucow/ucow-example.conf
$libdir/libcowcore.a
$libdir/libcowcore.so
$libdir/libcowcore.so.1
$libdir/nbdkit/plugins/nbdkit-ucow-plugin.so
$libdir/pkgconfig/libcowcore.pc
EOT
sort -o "$tmp/want" "$tmp/want"
if mk install >"$tmp/install.log" 2>&1; then
	(cd "$dest" && find . ! -type d | sed 's|^\.||' | sort) >"$tmp/got"
	if cmp -s "$tmp/want" "$tmp/got"; then
		result PASS file-list
	else
		echo "  installed files: missing (<) / not documented (>):"
		diff "$tmp/want" "$tmp/got" | grep '^[<>]' | sed 's/^/    /'
		result FAIL file-list
	fi
else
	sed 's/^/    /' "$tmp/install.log" | tail -n 15
	result FAIL file-list "make install failed"
fi

# the library through pkg-config, as a user of the installed -dev files finds it
export PKG_CONFIG_PATH=$dest$libdir/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
flags=$(pkg-config --cflags --libs libcowcore 2>&1)
if [ "$(pkg-config --modversion libcowcore 2>&1)" = "$(sed -n 's/^#define UCOW_VERSION_STR "\(.*\)"/\1/p' tools/util.h)" ] &&
   echo " $flags " | grep -q -- " -I$dest$prefix/include " &&
   echo " $flags " | grep -q -- " -L$dest$libdir -lcowcore "; then
	result PASS pkg-config
else
	result FAIL pkg-config "pkg-config --cflags --libs libcowcore: '$flags'"
fi
# shellcheck disable=SC2086
if gcc -std=gnu11 -Wall -Wextra -Werror -o "$tmp/so_read" tests/so/so_read.c $flags \
	>"$tmp/cc.log" 2>&1 && readelf -d "$tmp/so_read" | grep -q 'NEEDED.*libcowcore.so.1' &&
   mkdir -p "$tmp/work" && LD_LIBRARY_PATH=$dest$libdir "$tmp/so_read" "$tmp/work"; then
	result PASS link-installed-library
else
	sed 's/^/    /' "$tmp/cc.log" | head -n 10
	result FAIL link-installed-library
fi
# the static library through pkg-config --static (its Libs.private name every library the
# engine needs), and the program it makes needs no libcowcore.so
sflags=$(pkg-config --static --cflags --libs libcowcore 2>&1 | sed 's/ -lcowcore / -l:libcowcore.a /')
# shellcheck disable=SC2086
if gcc -std=gnu11 -Wall -Wextra -Werror -o "$tmp/so_read_static" tests/so/so_read.c $sflags \
	>"$tmp/cc.log" 2>&1 && ! readelf -d "$tmp/so_read_static" | grep -q 'NEEDED.*libcowcore' &&
   mkdir -p "$tmp/work-static" && "$tmp/so_read_static" "$tmp/work-static"; then
	result PASS link-static-library
else
	sed 's/^/    /' "$tmp/cc.log" | head -n 10
	result FAIL link-static-library "pkg-config --static: '$sflags'"
fi
v=$("$dest$prefix/bin/ucow" --version 2>&1)
if echo "$v" | grep -qE '^ucow version [0-9.]+ \(.+\)$'; then
	result PASS installed-version
else
	result FAIL installed-version "'$v'"
fi
bad=
for m in man1/ucow.1 man5/ucow-format.5 man8/ucow-dev.8; do
	page=$dest$prefix/share/man/$m
	txt=$(MANWIDTH=80 man -l "$page" 2>"$tmp/man.err")
	# every page renders without a warning and has its name and sections
	if [ -s "$tmp/man.err" ] || ! echo "$txt" | grep -q '^NAME' ||
	   ! echo "$txt" | grep -q '^SEE ALSO'; then
		bad="$bad $m"
		head -n 3 "$tmp/man.err" | sed 's/^/    /'
	fi
done
if [ -z "$bad" ] && MANWIDTH=80 man -l "$dest$prefix/share/man/man5/ucow-format.5" 2>/dev/null |
	grep -q 'header_crc' && MANWIDTH=80 man -l "$dest$prefix/share/man/man1/ucow.1" 2>/dev/null |
	grep -q '^   ucow snapshot'; then
	result PASS man-pages
else
	result FAIL man-pages "bad:$bad"
fi

# bash completion: commands, options, snapshot names of the image on the command line
comp() {	# comp WORDS...: the completions of the last word
	bash -c '
		. /usr/share/bash-completion/bash_completion 2>/dev/null || exit 3
		. "$1"; shift
		export PATH=$(dirname "$UCOW_BIN"):$PATH
		COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
		_ucow ucow "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
		printf "%s\n" "${COMPREPLY[@]}"' comp "$dest$prefix/share/bash-completion/completions/ucow" "$@"
}
export UCOW_BIN=$dest$prefix/bin/ucow
if [ ! -f /usr/share/bash-completion/bash_completion ]; then
	result FAIL completion "bash-completion is not installed (make deps)"
else
	(cd "$tmp/work" && "$UCOW_BIN" create -q c.ucow 1M && "$UCOW_BIN" snapshot -c first c.ucow &&
	 "$UCOW_BIN" snapshot -c second c.ucow) >/dev/null
	a=$(comp ucow sn | tr '\n' ' ')
	b=$(cd "$tmp/work" && comp ucow snapshot c.ucow -a "" | sort | tr '\n' ' ')
	c=$(comp ucow info --b | tr '\n' ' ')
	d=$(comp ucow dev rec | tr '\n' ' ')
	e=$(comp ucow dev add --rec | tr '\n' ' ')
	if [ "$a" = "snapshot " ] && [ "$b" = "first second " ] && [ "$c" = "--backing-chain " ] &&
	   [ "$d" = "recover " ] && [ "$e" = "--recoverable " ]; then
		result PASS completion
	else
		result FAIL completion "got '$a' '$b' '$c' '$d' '$e'"
	fi
fi

# the unit, as systemd reads it (the paths it names must exist: the installed ucow)
if command -v systemd-analyze >/dev/null; then
	unit=$dest$prefix/lib/systemd/system/ucow@.service
	sed "s|$prefix/bin/ucow|$dest$prefix/bin/ucow|g" "$unit" >"$tmp/ucow@.service"
	if (cd "$tmp" && systemd-analyze verify --man=no "$tmp/ucow@.service" >"$tmp/sa.log" 2>&1) &&
	   [ ! -s "$tmp/sa.log" ] && cp "$tmp/ucow@.service" "$tmp/ucow@vm1.service" &&
	   (cd "$tmp" && systemd-analyze verify --man=no "$tmp/ucow@vm1.service" >"$tmp/sa.log" 2>&1) &&
	   [ ! -s "$tmp/sa.log" ]; then
		result PASS systemd-analyze-verify
	else
		sed 's/^/    /' "$tmp/sa.log" | head -n 10
		result FAIL systemd-analyze-verify
	fi
else
	result FAIL systemd-analyze-verify "no systemd-analyze"
fi

if mk uninstall >"$tmp/uninstall.log" 2>&1 && [ ! -e "$dest" ] ||
   [ -z "$(find "$dest" 2>/dev/null)" ]; then
	result PASS uninstall
else
	echo "  left behind:"; find "$dest" | sed 's/^/    /' | head -n 20
	result FAIL uninstall
fi
exit $rc
