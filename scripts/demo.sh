#!/bin/sh
# make demo: create a base image and an overlay, serve the overlay as /dev/ublkbN, run fio,
# make a file system... (scripts/demo-guest.sh does the steps). On a host with a ublk driver
# it runs here, for real (as root); otherwise inside the real-kernel test bed (tests/vm/).
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
if [ "$(id -u)" = 0 ] && { [ -e /dev/ublk-control ] || modprobe ublk_drv 2>/dev/null; } &&
   [ -e /dev/ublk-control ]; then
	echo "demo: this host has a ublk driver; running for real"
	dir=$(mktemp -d /tmp/ucow-demo.XXXXXX)
	trap 'rm -rf "$dir"' EXIT
	cd "$dir"
	PATH="$OLDPWD/$BUILD:$PATH" sh "$OLDPWD/scripts/demo-guest.sh"
else
	echo "demo: no ublk driver on this host; running inside the real-kernel test bed"
	echo "demo: (a Debian 6.12 kernel under QEMU emulation, see Documentation/testbed.md)"
	BUILD=$BUILD tests/vm/run.sh --script scripts/demo-guest.sh
fi
