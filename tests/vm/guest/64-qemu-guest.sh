#!/bin/sh
# A QEMU guest on a ucow device (issue 15, item 5), opened as Documentation/ublk.md says:
# qemu-system-x86_64 (TCG: no nested KVM) boots this bed's own kernel (/vm/vmlinuz) with a
# tiny initramfs built here (busybox, virtio_blk.ko, an /init), its virtio-blk disk being
# /dev/ublkbN served by `ucow dev add` through
#   -blockdev driver=host_device,filename=/dev/ublkbN,cache.direct=on,aio=io_uring
#   -device virtio-blk-pci
# Boot 1: the inner guest reads what was written from outside (a backing file's data and a
# region written through the device) and writes its own data (random bytes and a 0x5a
# pattern), fsyncs (a FLUSH through virtio-blk, QEMU and ublk) and powers off. Outside: the
# device reads the inner guest's data back; after `ucow dev del`, `ucow io` and a raw
# export read it from the image; `ucow check` is clean; a snapshot is taken. Boot 2 sees
# the same data and overwrites a region; the snapshot still holds the old content.
# Then qemu-io (host_device) and qemu-storage-daemon (host_device exported over NBD) read
# and write the device, checked both ways. The inner guest reports on its serial console
# (stdio) with "NESTED KEY VALUE" lines. Prints its timings ("timing:" lines).
# vm-needs: qemu
# vm-long: yes (about 4 minutes: make vm-kvm-check, in make check with UCOW_LONG=1)
# vm-timeout: 900
. "$VM_LIB"
need_ucow
[ -r /vm/vmlinuz ] || fail "/vm/vmlinuz missing (run.sh adds qemu.cpio for '# vm-needs: qemu')"
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 not in the guest"
trap 'ucow dev del --all 2>/dev/null; [ -n "${qsd:-}" ] && kill "$qsd" 2>/dev/null; cd /; rm -rf "$VM_TMP"' EXIT

up() { cut -d' ' -f1 /proc/uptime; }
since() { awk "BEGIN { printf \"%.1f\", $(up) - $1 }"; }
sum() {	# sum FILE OFFSET_MIB LENGTH_KIB: sha256 of that range (O_DIRECT for devices)
	_fl=""
	[ -b "$1" ] && _fl=iflag=direct
	dd if="$1" bs=64k skip=$(($2 * 16)) count=$(($3 / 64)) $_fl 2>/dev/null | sha256sum | cut -d' ' -f1
}
t_all=$(up)

# --- the inner guest's initramfs ---------------------------------------------------------
mkdir -p inner/bin inner/dev inner/proc inner/sys inner/tmp
must cp /usr/bin/busybox inner/bin/busybox
must cp "/lib/modules/$(uname -r)/virtio_blk.ko" inner/virtio_blk.ko
# The regions (MiB offset, KiB length), the same inside and out:
#   A 0 4096     from the backing file (random), never written
#   B 8 1024     written through the device from outside before boot 1
#   C 16 1024    random bytes written by the inner guest in boot 1
#   P 20 256     0x5a bytes written by the inner guest in boot 1
#   E 16 512     random bytes written by the inner guest in boot 2, over C
cat >inner/init <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "NESTED INIT $(cut -d' ' -f1 /proc/uptime)"
mode=$(sed -n 's/.*nested\.mode=\([a-z0-9]*\).*/\1/p' /proc/cmdline)
sum() { dd if=/dev/vda bs=64k skip=$(($1 * 16)) count=$(($2 / 64)) 2>/dev/null | sha256sum | cut -d' ' -f1; }
insmod /virtio_blk.ko || echo "NESTED ERROR insmod virtio_blk"
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
echo "NESTED SIZE $(blockdev --getsize64 /dev/vda)"
echo "NESTED SUM_A $(sum 0 4096)"
echo "NESTED SUM_B $(sum 8 1024)"
case $mode in
boot1)
	dd if=/dev/urandom of=/tmp/c bs=64k count=16 2>/dev/null
	echo "NESTED WROTE_C $(sha256sum </tmp/c | cut -d' ' -f1)"
	dd if=/tmp/c of=/dev/vda bs=64k seek=256 conv=notrunc,fsync 2>/dev/null || echo "NESTED ERROR write C"
	tr '\000' 'Z' </dev/zero | dd of=/dev/vda bs=64k seek=320 count=4 iflag=fullblock conv=notrunc,fsync 2>/dev/null ||
		echo "NESTED ERROR write P"
	;;
boot2)
	echo "NESTED SUM_C $(sum 16 1024)"
	echo "NESTED SUM_P $(sum 20 256)"
	dd if=/dev/urandom of=/tmp/e bs=64k count=8 2>/dev/null
	echo "NESTED WROTE_E $(sha256sum </tmp/e | cut -d' ' -f1)"
	dd if=/tmp/e of=/dev/vda bs=64k seek=256 conv=notrunc,fsync 2>/dev/null || echo "NESTED ERROR write E"
	;;
esac
sync
blockdev --flushbufs /dev/vda
echo "NESTED DONE $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
EOF
must chmod 755 inner/init
(cd inner && find . | cpio -o -H newc 2>/dev/null) >inner.cpio || fail "cpio of the inner initramfs failed"
echo "inner initramfs: $(stat -c %s inner.cpio) bytes"

# --- the disk: an overlay on a raw backing file, served -----------------------------------
must dd if=/dev/urandom of=base.raw bs=1M count=64 status=none
must ucow create -q -b base.raw -F raw vm.ucow
dev=$(ucow dev add vm.ucow) || fail "dev add exited with status $?"
echo "device: $dev"
must dd if=/dev/urandom of=b.bin bs=64k count=16 status=none
must dd if=b.bin of="$dev" bs=64k seek=128 oflag=direct conv=notrunc status=none
want_a=$(sum base.raw 0 4096)
want_b=$(sha256sum <b.bin | cut -d' ' -f1)

# boot MODE: run the inner guest on $dev; its console goes to MODE.log (and here).
boot() {
	_t0=$(up)
	echo "+ qemu-system-x86_64 ... nested.mode=$1"
	# -cpu qemu64,-cx16: QEMU 7.2's cmpxchg16b emulation breaks SLUB's fast path (see
	# testbed.md); the inner kernel crashed in every boot with it (NULL deref, double fault
	# in kmem_cache_alloc), in none without it. oops=panic + -no-reboot: a crash ends QEMU.
	# The inner console is shown here prefixed with "inner| ", so that the bed's kernel-log
	# check does not take the inner kernel's lines for the outer kernel's.
	# shellcheck disable=SC2054 # the commas are QEMU's
	timeout -k 5 400 qemu-system-x86_64 -accel tcg -cpu qemu64,-cx16 -smp 1 -m 256M \
		-nodefaults -nographic -no-reboot \
		-kernel /vm/vmlinuz -initrd inner.cpio \
		-append "console=ttyS0 panic=-1 oops=panic quiet loglevel=4 nested.mode=$1" \
		-serial stdio \
		-blockdev "driver=host_device,node-name=d0,filename=$dev,cache.direct=on,aio=io_uring" \
		-device virtio-blk-pci,drive=d0 </dev/null 2>"$1.err" |
		awk -v f="$1.log" '{ gsub(/\r/, ""); print >f; print "inner| " $0; fflush() }'
	[ -s "$1.err" ] && { echo "qemu stderr:"; cat "$1.err"; }
	grep -E 'BUG:|Oops|WARNING:|Kernel panic|Call Trace|double fault' "$1.log" &&
		fail "the inner guest's kernel ($1) reported a problem"
	grep -q "NESTED DONE" "$1.log" || fail "inner guest ($1) did not finish: $(tail -n 1 "$1.err")"
	grep "NESTED ERROR" "$1.log" && fail "inner guest ($1) reported an error"
	echo "timing: $1: inner kernel start to its /init $(val "$1" INIT) s, to its poweroff $(val "$1" DONE) s (inner clock); QEMU run $(since "$_t0") s"
}
val() { sed -n "s/.*NESTED $2 //p" "$1.log" | head -n 1; }
check() {	# check MODE KEY WANT
	_v=$(val "$1" "$2")
	[ "$_v" = "$3" ] || fail "$1: inner guest saw $2='$_v', want '$3'"
}

boot boot1
check boot1 SIZE 67108864
check boot1 SUM_A "$want_a"
check boot1 SUM_B "$want_b"
want_c=$(val boot1 WROTE_C)
[ -n "$want_c" ] || fail "boot1: no WROTE_C line"
# through the device, still served
[ "$(sum "$dev" 16 1024)" = "$want_c" ] || fail "the device does not read back the inner guest's region C"
must ucow dev del "${dev#/dev/ublkb}"
# from the image: ucow io (the engine) and a raw export
ucow io -c 'read -P 0x5a 20M 256k' vm.ucow | tee io1.out
grep -q '^read 262144/262144 bytes' io1.out && ! grep -qi 'fail' io1.out ||
	fail "ucow io does not read the inner guest's 0x5a region"
must ucow check vm.ucow
must ucow convert -O raw vm.ucow flat1.raw
[ "$(sum flat1.raw 16 1024)" = "$want_c" ] || fail "the image does not hold the inner guest's region C"
[ "$(sum flat1.raw 8 1024)" = "$want_b" ] || fail "the image lost region B"
want_p=$(sum flat1.raw 20 256)
must ucow snapshot -c boot1 vm.ucow

dev=$(ucow dev add vm.ucow) || fail "second dev add exited with status $?"
boot boot2
check boot2 SUM_A "$want_a"
check boot2 SUM_B "$want_b"
check boot2 SUM_C "$want_c"
check boot2 SUM_P "$want_p"
want_e=$(val boot2 WROTE_E)
[ "$(sum "$dev" 16 512)" = "$want_e" ] || fail "the device does not read back boot 2's region E"

# --- qemu-io and qemu-storage-daemon on the device through host_device -------------------
opts="driver=host_device,filename=$dev,cache.direct=on,aio=io_uring"
qemu-io --image-opts -c 'read -P 0x5a 20M 256k' -c 'write -P 0xc3 24M 1M' -c flush "$opts" | tee qio.out
grep -q 'read 262144/262144' qio.out && grep -q 'wrote 1048576/1048576' qio.out &&
	! grep -qi 'fail' qio.out || fail "qemu-io through host_device"
must qemu-io -f raw -c 'read -P 0xc3 24M 1M' "$dev"
sock=$VM_TMP/nbd.sock
qemu-storage-daemon --blockdev "node-name=d0,$opts" \
	--nbd-server "addr.type=unix,addr.path=$sock" \
	--export type=nbd,id=e0,node-name=d0,name=d0,writable=on >qsd.log 2>&1 &
qsd=$!
wait_for "$sock" 30
nbd="nbd+unix:///d0?socket=$sock"
qemu-io -f raw -c 'read -P 0xc3 24M 1M' -c 'read -P 0x5a 20M 256k' -c 'write -P 0x3c 28M 1M' \
	-c flush "$nbd" | tee qsd-io.out
[ "$(grep -c '^read' qsd-io.out)" = 2 ] && grep -q 'wrote 1048576/1048576' qsd-io.out &&
	! grep -qi 'fail' qsd-io.out || { cat qsd.log; fail "qemu-io through qemu-storage-daemon's NBD export"; }
kill "$qsd"
wait "$qsd"
qsd=""
must ucow dev del "${dev#/dev/ublkb}"
ucow io -c 'read -P 0xc3 24M 1M' -c 'read -P 0x3c 28M 1M' -c 'read -P 0x5a 20M 256k' vm.ucow | tee io2.out
[ "$(grep -c '^read' io2.out)" = 3 ] && ! grep -qi 'fail' io2.out ||
	fail "the image does not hold what qemu-io and qemu-storage-daemon wrote"
must ucow check vm.ucow
must ucow convert -O raw vm.ucow flat2.raw
[ "$(sum flat2.raw 16 512)" = "$want_e" ] || fail "the image does not hold boot 2's region E"
must ucow convert -l boot1 -O raw vm.ucow snap.raw
[ "$(sum snap.raw 16 1024)" = "$want_c" ] || fail "snapshot boot1 does not hold region C as boot 1 left it"
[ "$(sum snap.raw 24 1024)" = "$(sum base.raw 24 1024)" ] || fail "snapshot boot1 changed after it was taken"
echo "timing: whole test $(since "$t_all") s"
pass
