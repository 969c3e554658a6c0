#!/bin/sh
# Fetch and unpack a guest kernel for the real-kernel test bed; print the folder that holds
# it (boot/vmlinuz-*, lib/modules/*). Idempotent: the unpacked kernel is cached in
# .cache/vm/ (ignored by git) and reused; nothing is downloaded when it is there.
#
#   tests/vm/kernel.sh [--refresh] [--series 6.12|new]
#
# Two kernels (series), both Debian "cloud" builds with ublk_drv:
#   6.12 (default)  the newest linux-image-6.12*-cloud-amd64-unsigned of bookworm-backports
#                   (Debian 12's own 6.1 kernel has no ublk): the LTS most guest tests run on
#   new             the newest linux-binary-unsigned-*-cloud-amd64 (the kernel) and its
#                   linux-modules-* of trixie-backports, at least 6.16: what only newer
#                   drivers have (UBLK_F_UPDATE_SIZE: a served disk that grows). Its files
#                   (usr/lib/modules/VER/vmlinuz*) are moved to the layout above.
# Each is fetched with `apt-get download` under a private apt configuration in a temporary
# folder: one deb822 entry whose URIs (and Signed-By) are copied from this machine's own
# /etc/apt/sources.list.d/debian.sources, only the suite changed. No mirror name is ever
# written into the repository.
#
# Environment: UCOW_VM_CACHE (default <repo>/.cache/vm), UCOW_VM_KERNEL_DIR (use this
# unpacked kernel tree instead; nothing is fetched), UCOW_VM_KERNEL_SERIES (same as
# --series), UCOW_VM_KERNEL_REFRESH=1 (same as --refresh: look for a newer package even when
# one is cached).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cache=${UCOW_VM_CACHE:-$top/.cache/vm}
refresh=${UCOW_VM_KERNEL_REFRESH:-0}
series=${UCOW_VM_KERNEL_SERIES:-6.12}
while [ $# -gt 0 ]; do
	case $1 in
	--refresh) refresh=1; shift ;;
	--series) series=${2:-}; shift 2 || shift ;;
	--series=*) series=${1#*=}; shift ;;
	*) echo "vm-kernel: unknown argument '$1'" >&2; exit 2 ;;
	esac
done
machine_sources=/etc/apt/sources.list.d/debian.sources

die() { echo "vm-kernel: $*" >&2; exit 1; }

case $series in
6.12)	suite=bookworm-backports
	pattern='^linux-image-6\.12.*-cloud-amd64-unsigned$'
	kcache=$cache/kernel ;;
new)	suite=trixie-backports
	pattern='^linux-binary-unsigned-[0-9][0-9.]*\+deb[0-9]*-cloud-amd64$'
	kcache=$cache/kernel-new ;;
*)	die "unknown kernel series '$series' (6.12 or new)" ;;
esac

valid() {	# valid DIR: DIR holds a kernel and the ublk module
	ls "$1"/boot/vmlinuz-* >/dev/null 2>&1 &&
	ls "$1"/lib/modules/*/kernel/drivers/block/ublk_drv.ko* >/dev/null 2>&1
}

if [ -n "${UCOW_VM_KERNEL_DIR:-}" ]; then
	valid "$UCOW_VM_KERNEL_DIR" || die "UCOW_VM_KERNEL_DIR=$UCOW_VM_KERNEL_DIR has no boot/vmlinuz-* with lib/modules/*/kernel/drivers/block/ublk_drv.ko*"
	echo "$UCOW_VM_KERNEL_DIR"
	exit 0
fi

mkdir -p "$kcache" || die "cannot create $kcache"
# One fetch at a time (several checkouts or make -j may call this together).
exec 9>"$kcache/.lock"
flock 9 || die "cannot lock $kcache/.lock"

current=$(cat "$kcache/current" 2>/dev/null || true)
if [ "$refresh" != 1 ] && [ -n "$current" ] && valid "$kcache/$current"; then
	echo "$kcache/$current"
	exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found: cannot fetch the guest kernel"
command -v dpkg >/dev/null || die "dpkg not found: cannot unpack the guest kernel"
[ -r "$machine_sources" ] || die "$machine_sources not found: no mirror to fetch the guest kernel from"
uris=$(sed -n 's/^URIs:[[:space:]]*//p' "$machine_sources" | head -n 1)
signed=$(sed -n 's/^Signed-By:[[:space:]]*//p' "$machine_sources" | head -n 1)
[ -n "$uris" ] || die "no URIs: line in $machine_sources"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ucow-vm-apt.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/dl"
# apt drops to user _apt for downloads: let it reach the private folders.
chmod 755 "$tmp"
chown -R _apt "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/dl" 2>/dev/null || true
{
	echo "Types: deb"
	echo "URIs: $uris"
	echo "Suites: $suite"
	echo "Components: main"
	[ -n "$signed" ] && echo "Signed-By: $signed"
} >"$tmp/backports.sources"
set -- -o "Dir::Etc::SourceList=$tmp/backports.sources" -o Dir::Etc::SourceParts=/dev/null \
	-o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" \
	-o "Dir::Cache::Archives=$tmp/cache/archives"

echo "vm-kernel: looking for the newest $series cloud kernel in $suite" >&2
apt-get "$@" -qq --error-on=any update >"$tmp/update.log" 2>&1 ||
	{ cat "$tmp/update.log" >&2; die "apt-get update of $suite failed (no network?)"; }
pkg=$(apt-cache "$@" search --names-only "$pattern" | awk '{print $1}' | sort -V | tail -n 1)
[ -n "$pkg" ] || die "no package matching $pattern in $suite"
pkgs=$pkg
if [ "$series" = new ]; then
	kver=${pkg#linux-binary-unsigned-}
	# at least 6.16 (UBLK_F_UPDATE_SIZE): older ones are what the 6.12 series is for
	[ "$(printf '%s\n%s\n' 6.16 "$kver" | sort -V | head -n 1)" = 6.16 ] ||
		die "$pkg is older than 6.16: no newer kernel in $suite"
	pkgs="$pkg linux-modules-$kver"
fi

if [ "$pkg" = "$current" ] && valid "$kcache/$current"; then
	echo "vm-kernel: $pkg is already the cached kernel" >&2
	echo "$kcache/$current"
	exit 0
fi

echo "vm-kernel: downloading $pkgs" >&2
(cd "$tmp/dl" && apt-get "$@" -qq download $pkgs) >"$tmp/download.log" 2>&1 ||
	{ cat "$tmp/download.log" >&2; die "apt-get download $pkgs failed"; }
ls "$tmp"/dl/*.deb >/dev/null 2>&1 || die "apt-get download $pkgs left no .deb"

new=$kcache/$pkg.new
rm -rf "$new"
for deb in "$tmp"/dl/*.deb; do
	dpkg -x "$deb" "$new" || die "dpkg -x $deb failed"
done
# Newer packages keep everything under usr/lib/modules/VER (vmlinuz there too)
for m in "$new"/usr/lib/modules/*; do
	[ -d "$m" ] || continue
	v=$(basename "$m")
	mkdir -p "$new/boot" "$new/lib/modules"
	for z in "$m"/vmlinuz*; do
		[ -f "$z" ] && mv "$z" "$new/boot/vmlinuz-$v"
	done
	mv "$m" "$new/lib/modules/$v"
done
valid "$new" || die "$pkgs hold no vmlinuz or no ublk_drv module"
rm -rf "${kcache:?}/$pkg"
mv "$new" "$kcache/$pkg"
echo "$pkg" >"$kcache/current.new" && mv "$kcache/current.new" "$kcache/current"
echo "vm-kernel: unpacked $pkgs into $kcache/$pkg" >&2
echo "$kcache/$pkg"
