#!/bin/sh
# Install every build and test dependency of ucow with apt-get. Idempotent: does nothing
# when everything is already installed. Debian 12, as root.
# make fuzz: clang (14 on Debian 12) with libclang-rt-14-dev, which holds libFuzzer and the
# sanitizer runtimes (--no-install-recommends would skip it), and llvm-14 for llvm-symbolizer
# (stack traces with file and line). scdoc builds the man pages; bash-completion, man-db and
# systemd (systemd-analyze) are what tests/install/run.sh checks the installed files with.
# build-essential (dpkg-buildpackage checks it, an implicit build dependency), debhelper,
# dpkg-dev and lintian: make deb and its test (tests/deb/run.sh); the package's other
# build dependencies (debian/control) are in this list already. No fakeroot: the package
# build needs no root (Rules-Requires-Root: no). nbdkit, nbdkit-plugin-dev and libnbd-bin
# (nbdinfo): the nbdkit plugin and its test; libnbd-dev: NBD backing images (the engine
# links libnbd); udev: udevadm, which runs the udev rule in the
# test bed (guest test 49); openssl: the certificates of the NBD-over-TLS test.
set -eu
PKGS="gcc make pkg-config liburing-dev libaio-dev zlib1g-dev libzstd-dev libcmocka-dev fio qemu-utils
qemu-system-x86 busybox-static libjson-c-dev cpio e2fsprogs util-linux xz-utils kmod python3 gnuplot-nox procps time
dmsetup clang libclang-rt-14-dev llvm-14 strace scdoc bash-completion man-db systemd
nbdkit nbdkit-plugin-dev libnbd-bin libnbd-dev udev openssl
build-essential debhelper dpkg-dev lintian"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps: missing packages:$missing (run 'make deps' as root)" >&2
	exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
