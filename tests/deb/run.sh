#!/bin/bash
# The Debian packages (a stage of make check; Documentation/packaging.md, "Debian package"):
#   - make deb builds ucow, libcowcore1 and libcowcore-dev of the Makefile's VERSION;
#   - lintian on the .changes reports no error and no warning;
#   - dpkg --root installs the three into a throw-away root, each with exactly the files
#     packaging.md lists for it;
#   - the installed ucow --version runs (the engine is linked in: no LD_LIBRARY_PATH), a
#     program builds against the installed -dev files and runs on the installed library,
#     the programs the unit and the udev rule run are installed;
#   - purging the packages leaves nothing but dpkg's database.
#   tests/deb/run.sh BUILD
build=${1:-build}
case $build in /*) ;; *) build=$(pwd)/$build ;; esac
cd "$(dirname "$0")/../.." || exit 1
rc=0
result() {	# result PASS|FAIL NAME [WHY]
	echo "$1 deb/$2${3:+ $3}"
	[ "$1" = PASS ] || rc=1
}
version=$(sed -n 's/^#define UCOW_VERSION_STR "\(.*\)"/\1/p' tools/util.h)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
out=$build/deb
tmp=$(mktemp -d /tmp/ucow-deb.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s)

# ---- build
if make --no-print-directory BUILD="$build" deb >"$tmp/make.log" 2>&1; then
	missing=
	for p in ucow libcowcore1 libcowcore-dev; do
		[ -f "$out/${p}_${version}_$arch.deb" ] || missing="$missing ${p}_${version}_$arch.deb"
	done
	if [ -z "$missing" ]; then
		result PASS build
	else
		result FAIL build "not made:$missing"
	fi
else
	sed 's/^/    /' "$tmp/make.log" | tail -n 30
	result FAIL build "make deb failed (log: $out/build.log)"
	exit 1
fi
t1=$(date +%s)

# ---- lintian, on the .changes: the packages, their -dbgsym packages, the .buildinfo
changes=$out/ucow_${version}_$arch.changes
if ! command -v lintian >/dev/null; then
	result FAIL lintian "lintian is not installed (make deps)"
else
	lintian "$changes" >"$tmp/lintian.out" 2>"$tmp/lintian.err"
	lrc=$?
	sed 's/^/    /' "$tmp/lintian.out"
	if [ $lrc -ne 0 ] && ! grep -q '^[EW]: ' "$tmp/lintian.out"; then
		sed 's/^/    /' "$tmp/lintian.err" | tail -n 5
		result FAIL lintian "lintian failed (exit $lrc)"
	elif grep -q '^E: ' "$tmp/lintian.out"; then
		result FAIL lintian "$(grep -c '^E: ' "$tmp/lintian.out") error(s)"
	elif grep -q '^W: ' "$tmp/lintian.out"; then
		result FAIL lintian "$(grep -c '^W: ' "$tmp/lintian.out") warning(s): fix them, or override with a reason (packaging.md)"
	else
		result PASS lintian
	fi
fi
t2=$(date +%s)

# ---- install into a throw-away root: an empty dpkg database is all dpkg --root needs here
# (the packages have no maintainer scripts, which it would run chrooted into the root)
root=$tmp/root
admin=$root/var/lib/dpkg
mkdir -p "$admin/info" "$admin/updates" "$admin/triggers"
: >"$admin/status"; : >"$admin/available"
debs=()
for p in ucow libcowcore1 libcowcore-dev; do debs+=("$out/${p}_${version}_$arch.deb"); done
if dpkg --root="$root" --force-depends --force-not-root -i "${debs[@]}" >"$tmp/dpkg.log" 2>&1 &&
   [ "$(dpkg-query --admindir="$admin" -W -f='${db:Status-Abbrev}${Package}\n' | sort)" = \
     "$(printf 'ii libcowcore-dev\nii libcowcore1\nii ucow\n')" ]; then
	result PASS dpkg-install
else
	sed 's/^/    /' "$tmp/dpkg.log" | grep -v -e 'depends on' -e 'is not installed' | tail -n 15
	result FAIL dpkg-install
	exit 1
fi

# each package's files (no directories) against the list of packaging.md
for p in ucow libcowcore1 libcowcore-dev; do
	sed -n "/^\`\`\`files-$p\$/,/^\`\`\`\$/p" Documentation/packaging.md | sed '1d;$d' |
		sed "s|x86_64-linux-gnu|$multiarch|" | sort >"$tmp/want-$p"
	dpkg-query --admindir="$admin" -L "$p" | while IFS= read -r f; do
		[ -d "$root$f" ] && [ ! -L "$root$f" ] || printf '%s\n' "$f"
	done | sort >"$tmp/got-$p"
	bad=
	for f in $(cat "$tmp/got-$p"); do [ -e "$root$f" ] || [ -L "$root$f" ] || bad="$bad $f"; done
	if [ ! -s "$tmp/want-$p" ]; then
		result FAIL "files-$p" "no list for $p in Documentation/packaging.md"
	elif cmp -s "$tmp/want-$p" "$tmp/got-$p" && [ -z "$bad" ]; then
		result PASS "files-$p"
	else
		echo "  $p: documented, not installed (<) / installed, not documented (>):"
		diff "$tmp/want-$p" "$tmp/got-$p" | grep '^[<>]' | sed 's/^/    /'
		result FAIL "files-$p" "${bad:+listed by dpkg but absent:$bad}"
	fi
done
# nothing else in the root but dpkg's own database
extra=$(cd "$root" && find . ! -type d ! -path './var/lib/dpkg/*' | sed 's|^\.||' | sort |
	comm -23 - <(cat "$tmp"/got-* | sort))
if [ -z "$extra" ]; then
	result PASS files-nothing-else
else
	result FAIL files-nothing-else "$(echo $extra)"
fi

# the installed ucow: the engine is linked in (no libcowcore.so.1 needed), version and describe
ucow=$root/usr/bin/ucow
describe=$(git describe --always --dirty --tags 2>/dev/null || echo "not built from git")
v=$("$ucow" --version 2>&1)
if ! readelf -d "$ucow" | grep -q 'NEEDED.*libcowcore' &&
   [ "$v" = "ucow version $version ($describe)" ]; then
	result PASS installed-version
else
	result FAIL installed-version "got '$v', want 'ucow version $version ($describe)'"
fi

# the -dev files: pkg-config finds them in the root, a program builds and runs on libcowcore1
export PKG_CONFIG_PATH=$root/usr/lib/$multiarch/pkgconfig PKG_CONFIG_SYSROOT_DIR=$root
flags=$(pkg-config --cflags --libs libcowcore 2>&1)
# shellcheck disable=SC2086
if [ "$(pkg-config --modversion libcowcore 2>&1)" = "$version" ] &&
   gcc -std=gnu11 -Wall -Wextra -Werror -o "$tmp/so_read" tests/so/so_read.c $flags \
	>"$tmp/cc.log" 2>&1 && readelf -d "$tmp/so_read" | grep -q 'NEEDED.*libcowcore.so.1' &&
   mkdir -p "$tmp/work" && LD_LIBRARY_PATH=$root/usr/lib/$multiarch "$tmp/so_read" "$tmp/work" &&
   [ "$(readlink "$root/usr/lib/$multiarch/libcowcore.so")" = libcowcore.so.1 ]; then
	result PASS dev-files
else
	sed 's/^/    /' "$tmp/cc.log" | head -n 10
	result FAIL dev-files "pkg-config: '$flags'"
fi

# the programs the unit and the udev rule run are the installed ones
unit=$root/lib/systemd/system/ucow@.service
rule=$root/lib/udev/rules.d/60-ucow.rules
ue=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit" 2>/dev/null)
re=$(sed -n 's/.*PROGRAM="\([^ ]*\).*/\1/p' "$rule" 2>/dev/null)
if [ "$ue" = /usr/bin/ucow ] && [ "$re" = /usr/bin/ucow ] && [ -x "$root$ue" ]; then
	result PASS unit-and-rule-paths
else
	result FAIL unit-and-rule-paths "ExecStart '$ue', udev PROGRAM '$re'"
fi

# purge: nothing of the packages is left
if dpkg --root="$root" --force-depends --force-not-root --purge ucow libcowcore-dev libcowcore1 \
	>"$tmp/purge.log" 2>&1 &&
   [ -z "$(cd "$root" && find . ! -type d ! -path './var/lib/dpkg/*')" ] &&
   [ -z "$(dpkg-query --admindir="$admin" -W 2>/dev/null)" ]; then
	result PASS dpkg-purge
else
	sed 's/^/    /' "$tmp/purge.log" | tail -n 10
	(cd "$root" && find . ! -type d ! -path './var/lib/dpkg/*') | sed 's/^/    left: /' | head
	result FAIL dpkg-purge
fi
# make deps installs what the package build needs on a fresh system: every Build-Depends of
# debian/control (debhelper-compat is debhelper's) and build-essential, which
# dpkg-buildpackage requires of every build
want=$( (echo build-essential
	sed -n '/^Build-Depends:/,/^[A-Z]/p' debian/control | sed '$d; s/^Build-Depends://' |
		tr ',' '\n' | sed 's/([^)]*)//; s/[[:space:]]//g; s/^debhelper-compat$/debhelper/') |
	grep . | sort -u)
have=$(sed -n '/^PKGS="/,/"$/p' scripts/deps.sh | tr -d '"' | sed 's/^PKGS=//' | tr ' ' '\n' | grep . | sort -u)
notin=$(comm -23 <(echo "$want") <(echo "$have") | tr '\n' ' ')
if [ "$(echo "$want" | wc -l)" -ge 5 ] && [ -z "$notin" ]; then
	result PASS build-deps-in-make-deps
else
	result FAIL build-deps-in-make-deps "not in scripts/deps.sh: $notin"
fi
t3=$(date +%s)
echo "deb: make deb $((t1 - t0)) s, lintian $((t2 - t1)) s, install and checks $((t3 - t2)) s"
exit $rc
