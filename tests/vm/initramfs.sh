#!/bin/sh
# Build the base of the test bed's initramfs: busybox, the real tools tests run (each with
# the shared libraries ldd lists and the dynamic loader), /etc basics and the kernel modules.
# The project's own files (/init, guest tests, ucow) are NOT here: run.sh appends them as a
# second, small cpio archive on every run, so editing a test never rebuilds this part.
#
#   tests/vm/initramfs.sh KERNEL_DIR OUT_DIR
#
# Writes OUT_DIR/base.cpio and OUT_DIR/base.files (the file list, used by run.sh to avoid
# duplicating libraries). Rebuilds only when an input changed (kept in OUT_DIR/base.manifest):
# this script, the kernel, busybox, a tool, or the package database.
# Extra tools: UCOW_VM_TOOLS="name ..." (looked up in PATH on the host).
#
# With a third argument "qemu", also writes OUT_DIR/qemu.cpio (manifest
# OUT_DIR/qemu.manifest), what a guest test needs to run QEMU itself (qemu-system-x86_64,
# qemu-storage-daemon, the libraries of theirs the base lacks, SeaBIOS and the linuxboot
# option ROM, and the guest's own kernel as /vm/vmlinuz). About 45 MB, so run.sh builds and
# appends it only for the tests that ask for it with a "# vm-needs: qemu" line (and for
# --shell): the other runs pay for it neither at build time nor at boot.
set -eu
kdir=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)

# The real tools users run on a block device, and what the guest tests need. Each must be
# installed on the host (scripts/deps.sh installs them). dash is /bin/sh; timeout, env,
# xargs and setsid are the real ones so that commands they start are looked up in PATH.
TOOLS="dash bash timeout env xargs setsid flock unshare nsenter dmesg ps pgrep pkill
fio mke2fs mkfs.ext4 e2fsck fsck.ext4 tune2fs dumpe2fs debugfs resize2fs
qemu-img qemu-io qemu-nbd losetup blkdiscard blockdev blkid lsblk wipefs fstrim fallocate
mount umount dd cmp sha256sum md5sum stat truncate sync dmsetup udevadm vdpa ${UCOW_VM_TOOLS:-}"
# Kernel modules (loaded by /init: ublk_drv, loop; the others are there for tests to insmod;
# dm-log-writes and dm-flakey need dm-mod first).
MODULES="ublk_drv loop null_blk nbd brd virtio_blk dm-mod dm-log-writes dm-flakey
dm-bufio dm-bio-prison dm-persistent-data dm-thin-pool vhost_iotlb vdpa vduse virtio_vdpa"
# Modules that a kernel may have built in or folded elsewhere (libcrc32c: into lib/crc32 in
# newer kernels): shipped when found.
OPT_MODULES="libcrc32c"

die() { echo "vm-initramfs: $*" >&2; exit 1; }

kver=$(ls "$kdir/lib/modules" | head -n 1)
[ -n "$kver" ] || die "no lib/modules/* in $kdir"
bb=$(command -v busybox) || die "busybox not found (install busybox-static)"
busybox --list-full >/dev/null 2>&1 || die "$bb is not a busybox with --list-full"
ldd "$bb" >/dev/null 2>&1 && die "$bb is dynamically linked: install busybox-static"

mkdir -p "$out" && out=$(cd "$out" && pwd)
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

# Up to date? The inputs: this script, the kernel, busybox, every tool, and the package
# database (any package installed or upgraded since may have changed a library).
manifest=$(
	echo "script $(cksum <"$here/initramfs.sh")"
	echo "kernel $kdir $kver"
	echo "dpkg $(stat -c '%s %Y' /var/lib/dpkg/status 2>/dev/null)"
	for f in "$bb" /etc/mke2fs.conf $(for t in $TOOLS; do command -v "$t" || echo "missing:$t"; done); do
		echo "$f $(stat -L -c '%s %Y' "$f" 2>/dev/null)"
	done
)
pairs=$(mktemp) && trap 'rm -f "$pairs"' EXIT
# pairs: "DEST SRC" lines; DEST is the path inside the image.
add() { echo "$1 $2" >>"$pairs"; }
add_libs() {	# add_libs BINARY: the libraries and loader ldd lists for it
	ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' |
	while read -r lib; do
		[ -e "$lib" ] || die "$1 needs $lib which does not exist"
		add "$lib" "$lib"
	done
}

# The base, unless up to date.
build_base() {
	if [ -s "$out/base.cpio" ] && [ -s "$out/base.files" ] &&
	   [ "$manifest" = "$(cat "$out/base.manifest" 2>/dev/null)" ]; then
		return 0
	fi
	add /usr/bin/busybox "$bb"
	for t in $TOOLS; do
		src=$(command -v "$t") || die "tool '$t' not found on the host: run 'make deps'"
		case $src in
		/usr/*) dest=$src ;;
		*) dest=/usr$src ;;
		esac
		add "$dest" "$src"
		add_libs "$src"
	done
	for m in $MODULES $OPT_MODULES; do
		ko=$(find "$kdir/lib/modules/$kver/kernel" -name "$m.ko*" | head -n 1)
		[ -n "$ko" ] || case " $OPT_MODULES " in
			*" $m "*) continue ;;
			*) die "module $m not found in $kdir/lib/modules/$kver" ;;
			esac
		add "/lib/modules/$kver/$m.ko" "$ko"
	done
	[ -r /etc/mke2fs.conf ] && add /etc/mke2fs.conf /etc/mke2fs.conf

	echo "vm-initramfs: building $out/base.cpio" >&2
	stage=$out/base.stage
	rm -rf "$stage"
	mkdir -p "$stage"
	cd "$stage"
	# A merged /usr, like Debian 12: /bin, /sbin, /lib, /lib64 point into /usr.
	mkdir -p usr/bin usr/sbin usr/lib usr/lib64 etc dev proc sys tmp run mnt root var
	for d in bin sbin lib lib64; do ln -s usr/$d $d; done
	ln -s /run var/run
	ln -s /tmp var/tmp

	sort -u "$pairs" | while read -r dest src; do
		mkdir -p ".$(dirname "$dest")"
		case $src in
		*.ko.xz) xz -dc "$src" >".$dest" ;;
		*.ko.gz) gzip -dc "$src" >".$dest" ;;
		*.ko.zst) zstd -qdc "$src" >".$dest" ;;
		*) cp -L "$src" ".$dest" ;;
		esac
	done

	# /bin/sh is dash, as on Debian. Debian's busybox runs its own applets in preference to PATH
	# (ash, env, xargs, timeout... would run busybox's losetup or mount instead of the real
	# ones), so busybox is only the provider of the commands no real tool here provides.
	ln -s dash usr/bin/sh
	# busybox applets, where no real tool of that name was copied in.
	cp "$bb" usr/bin/busybox
	busybox --list-full | while read -r applet; do
		case $applet in
		bin/*|sbin/*) applet=usr/$applet ;;
		esac
		[ -e "$applet" ] || [ -L "$applet" ] || ln -s /usr/bin/busybox "$applet"
	done

	echo 'root:x:0:0:root:/root:/bin/sh' >etc/passwd
	echo 'root:x:0:' >etc/group
	: >etc/fstab
	ln -s /proc/self/mounts etc/mtab
	echo ucow-vm >etc/hostname

	find . -mindepth 1 | sed 's,^\./,/,' | sort >"$out/base.files.new"
	find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 >"$out/base.cpio.new"
	cd "$out"
	rm -rf "$stage"
	mv base.cpio.new base.cpio
	mv base.files.new base.files
	echo "$manifest" >base.manifest
}
build_base
# qemu.cpio only when asked (the third argument "qemu"): run.sh asks when a test needs it
[ "${3:-}" = qemu ] || exit 0

# --- qemu.cpio: QEMU in the guest (tests with "# vm-needs: qemu") ----------------------
# Firmware QEMU 7.2 loads for "-nodefaults -nographic -kernel ... -device virtio-blk-pci":
# SeaBIOS, the DMA variant of the Linux boot option ROM, and the TPR patching ROM (without
# it QEMU warns), found through -L's default search path (/usr/share/qemu and
# /usr/share/seabios next to the binary).
QEMU_TOOLS="qemu-system-x86_64 qemu-storage-daemon"
# Debian builds TCG as a module QEMU loads at start (accel-tcg-x86_64.so).
QEMU_FILES="/usr/share/seabios/bios-256k.bin /usr/share/qemu/linuxboot_dma.bin /usr/share/qemu/kvmvapic.bin
$(ls /usr/lib/*/qemu/accel-tcg-x86_64.so 2>/dev/null || echo /usr/lib/MULTIARCH/qemu/accel-tcg-x86_64.so)"
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$vmlinuz" ] || die "no boot/vmlinuz-* in $kdir"
qmanifest=$(
	echo "script $(cksum <"$here/initramfs.sh")"
	echo "base $(stat -c '%s %Y' "$out/base.files")"
	echo "dpkg $(stat -c '%s %Y' /var/lib/dpkg/status 2>/dev/null)"
	for f in "$vmlinuz" $QEMU_FILES $(for t in $QEMU_TOOLS; do command -v "$t" || echo "missing:$t"; done); do
		echo "$f $(stat -L -c '%s %Y' "$f" 2>/dev/null)"
	done
)
if [ -s "$out/qemu.cpio" ] &&
   [ "$qmanifest" = "$(cat "$out/qemu.manifest" 2>/dev/null)" ]; then
	exit 0
fi
: >"$pairs"
for t in $QEMU_TOOLS; do
	src=$(command -v "$t") || die "tool '$t' not found on the host: run 'make deps'"
	add "/usr/bin/$t" "$src"
	add_libs "$src"
done
for f in $QEMU_FILES; do
	[ -r "$f" ] || die "$f not found (install qemu-system-x86 and seabios: 'make deps')"
	add "$f" "$f"
	case $f in *.so) add_libs "$f" ;; esac
done
add /vm/vmlinuz "$vmlinuz"
echo "vm-initramfs: building $out/qemu.cpio" >&2
stage=$out/qemu.stage
rm -rf "$stage"
mkdir -p "$stage"
cd "$stage"
sort -u "$pairs" | while read -r dest src; do
	case $dest in /lib/*|/lib64/*|/bin/*|/sbin/*) dest=/usr$dest ;; esac
	grep -qxF "$dest" "$out/base.files" && continue	# already in the base
	mkdir -p ".$(dirname "$dest")"
	cp -L "$src" ".$dest"
done
# Directories only (no /lib or /bin symlinks here: the base has them and an archive
# unpacked later must not replace them).
find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 >"$out/qemu.cpio.new"
cd "$out"
rm -rf "$stage"
mv qemu.cpio.new qemu.cpio
echo "$qmanifest" >qemu.manifest
