#!/bin/sh
# libcowcore.so.1: its soname, that it exports exactly the functions cowcore.h declares (the
# version script, both directions), and a program built against the public header and the
# shared library alone that creates, writes and reads an image (so_read.c).
#   tests/so/run.sh BUILD
build=${1:-build}
lib=$build/libcowcore.so.1
rc=0
result() { echo "$1 so/$2"; [ "$1" = PASS ] || rc=1; }

soname=$(readelf -d "$lib" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
if [ "$soname" = libcowcore.so.1 ]; then result PASS soname
else echo "  soname: expected libcowcore.so.1, got '$soname'"; result FAIL soname; fi

tmp=$(mktemp -d /tmp/ucow-so.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
nm -D --defined-only "$lib" | awk '$2 == "T" { print $3 }' | sed 's/@.*//' | sort -u >"$tmp/exported"
grep -oE '\bcow_[a-z0-9_]+[[:space:]]*\(' cowcore/cowcore.h | sed 's/[[:space:]]*($//' |
	sort -u >"$tmp/declared"
if [ -s "$tmp/declared" ] && cmp -s "$tmp/exported" "$tmp/declared"; then
	result PASS exports
else
	echo "  exported but not in cowcore.h (<) / declared but not exported (>):"
	diff "$tmp/exported" "$tmp/declared" | grep '^[<>]' | sed 's/^/    /'
	result FAIL exports
fi
if readelf -d "$build/tests/so_read" | grep -q 'NEEDED.*libcowcore.so.1' &&
   "$build/tests/so_read" "$tmp"; then
	result PASS read-through-shared-library
else
	result FAIL read-through-shared-library
fi
exit $rc
