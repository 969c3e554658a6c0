#!/bin/sh
# make deb: the Debian packages ucow, libcowcore1 and libcowcore-dev (Documentation/packaging.md,
# "Debian package"), built by dpkg-buildpackage out of a scratch copy of the tree in BUILD/deb/src
# (the files git tracks or would add, as they are in the work tree); the .debs land in BUILD/deb. The version
# and the changelog entry are made here from the Makefile's VERSION (tools/util.h) and the git
# describe of the tree, so the package, the .pc file and ucow --version cannot disagree.
#   UCOW_VERSION=X.Y.Z UCOW_DESCRIBE=D scripts/deb.sh BUILD      (make deb sets both)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
case $build in /*) ;; *) build=$(pwd)/$build ;; esac
version=${UCOW_VERSION:?set by make deb}
describe=${UCOW_DESCRIBE:-not built from git}
out=$build/deb
src=$out/src

rm -rf "$out"
mkdir -p "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# the files git knows or would add, as they are in the work tree (one deleted there is
	# left out)
	git ls-files -z --cached --others --exclude-standard | xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
		tar --null -T - -cf - | tar -xf - -C "$src"
	date=$(git log -1 --format=%aD)
else
	tar --exclude=./build --exclude=./.git -cf - . | tar -xf - -C "$src"
	date=$(date -R)
fi

# the changelog entry of this build (dated with the last commit: the build is reproducible)
maint=$(sed -n 's/^Maintainer: //p' debian/control)
cat >"$src/debian/changelog" <<EOT
ucow ($version) unstable; urgency=medium

  * Built by make deb from git $describe.

 -- $maint  $date
EOT
printf '%s\n' "$describe" >"$src/debian/git-describe"

# -J2: two jobs (DEB_BUILD_OPTIONS=parallel=2); no signing; a make around this one must not
# pass its flags, variables or job server into the package's own build; and git, run in the
# copy, must not find the repository around it (the copy knows its describe from the file)
log=$out/build.log
echo "  DEB     $out (dpkg-buildpackage, log: $log)"
if ! (cd "$src" && env -u MAKEFLAGS -u MFLAGS -u MAKEOVERRIDES -u MAKELEVEL -u GIT_DIR \
	-u GIT_WORK_TREE GIT_CEILING_DIRECTORIES="$out" dpkg-buildpackage -us -uc -b -J2) \
	>"$log" 2>&1; then
	tail -n 40 "$log" >&2
	echo "deb: dpkg-buildpackage failed (log: $log)" >&2
	exit 1
fi
ls "$out"/*.deb
