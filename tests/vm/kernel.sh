#!/bin/sh
# Fetch and unpack the guest kernel for the real-kernel test bed; print the folder that
# holds it (boot/vmlinuz-*, lib/modules/*). Idempotent: the unpacked kernel is cached in
# .cache/vm/ (ignored by git) and reused; nothing is downloaded when it is there.
#
#   tests/vm/kernel.sh [--refresh]
#
# The kernel is the newest linux-image-6.12*-cloud-amd64-unsigned of bookworm-backports
# (Debian 12's own 6.1 kernel has no ublk). It is fetched with `apt-get download` under a
# private apt configuration in a temporary folder: one deb822 entry whose URIs (and
# Signed-By) are copied from this machine's own /etc/apt/sources.list.d/debian.sources,
# only the suite changed. No mirror name is ever written into the repository.
#
# Environment: UCOW_VM_CACHE (default <repo>/.cache/vm), UCOW_VM_KERNEL_DIR (use this
# unpacked kernel tree instead; nothing is fetched), UCOW_VM_KERNEL_REFRESH=1 (same as
# --refresh: look for a newer package even when one is cached).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cache=${UCOW_VM_CACHE:-$top/.cache/vm}
refresh=${UCOW_VM_KERNEL_REFRESH:-0}
[ "${1:-}" = --refresh ] && refresh=1
machine_sources=/etc/apt/sources.list.d/debian.sources
pattern='^linux-image-6\.12.*-cloud-amd64-unsigned$'

die() { echo "vm-kernel: $*" >&2; exit 1; }

valid() {	# valid DIR: DIR holds a kernel and the ublk module
	ls "$1"/boot/vmlinuz-* >/dev/null 2>&1 &&
	ls "$1"/lib/modules/*/kernel/drivers/block/ublk_drv.ko* >/dev/null 2>&1
}

if [ -n "${UCOW_VM_KERNEL_DIR:-}" ]; then
	valid "$UCOW_VM_KERNEL_DIR" || die "UCOW_VM_KERNEL_DIR=$UCOW_VM_KERNEL_DIR has no boot/vmlinuz-* with lib/modules/*/kernel/drivers/block/ublk_drv.ko*"
	echo "$UCOW_VM_KERNEL_DIR"
	exit 0
fi

mkdir -p "$cache/kernel" || die "cannot create $cache/kernel"
# One fetch at a time (several checkouts or make -j may call this together).
exec 9>"$cache/kernel/.lock"
flock 9 || die "cannot lock $cache/kernel/.lock"

current=$(cat "$cache/kernel/current" 2>/dev/null || true)
if [ "$refresh" != 1 ] && [ -n "$current" ] && valid "$cache/kernel/$current"; then
	echo "$cache/kernel/$current"
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
	echo "Suites: bookworm-backports"
	echo "Components: main"
	[ -n "$signed" ] && echo "Signed-By: $signed"
} >"$tmp/backports.sources"
set -- -o "Dir::Etc::SourceList=$tmp/backports.sources" -o Dir::Etc::SourceParts=/dev/null \
	-o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" \
	-o "Dir::Cache::Archives=$tmp/cache/archives"

echo "vm-kernel: looking for the newest 6.12 cloud kernel in bookworm-backports" >&2
apt-get "$@" -qq --error-on=any update >"$tmp/update.log" 2>&1 ||
	{ cat "$tmp/update.log" >&2; die "apt-get update of bookworm-backports failed (no network?)"; }
pkg=$(apt-cache "$@" search --names-only "$pattern" | awk '{print $1}' | sort -V | tail -n 1)
[ -n "$pkg" ] || die "no package matching $pattern in bookworm-backports"

if [ "$pkg" = "$current" ] && valid "$cache/kernel/$current"; then
	echo "vm-kernel: $pkg is already the cached kernel" >&2
	echo "$cache/kernel/$current"
	exit 0
fi

echo "vm-kernel: downloading $pkg" >&2
(cd "$tmp/dl" && apt-get "$@" -qq download "$pkg") >"$tmp/download.log" 2>&1 ||
	{ cat "$tmp/download.log" >&2; die "apt-get download $pkg failed"; }
deb=$(ls "$tmp"/dl/*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || die "apt-get download $pkg left no .deb"

rm -rf "$cache/kernel/$pkg.new"
dpkg -x "$deb" "$cache/kernel/$pkg.new" || die "dpkg -x $deb failed"
valid "$cache/kernel/$pkg.new" || die "$pkg holds no vmlinuz or no ublk_drv module"
rm -rf "$cache/kernel/$pkg"
mv "$cache/kernel/$pkg.new" "$cache/kernel/$pkg"
echo "$pkg" >"$cache/kernel/current.new" && mv "$cache/kernel/current.new" "$cache/kernel/current"
echo "vm-kernel: unpacked $pkg into $cache/kernel/$pkg" >&2
echo "$cache/kernel/$pkg"
