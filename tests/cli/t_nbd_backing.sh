#!/bin/sh
# Backing images on NBD servers (issue 16, items 1 and 2). An overlay whose backing name is
# an NBD URI reads through libnbd: over nbdkit (file and memory plugins) on a Unix socket and
# over qemu-nbd on 127.0.0.1, random histories of writes, zeroes, discards and reads give
# exactly what the same history gives over the same base as a local file (randio.py checks
# each against its model; the images are then compared with each other), also from a server
# that takes only aligned 4 KiB blocks up to 64 KiB a request. The opt-in rule: a
# chain naming a URI is refused by every command without --allow-network-backing, and no
# connection is attempted (a listening socket counts them); hostile URIs are refused even
# with it. A server killed while a read waits: the read fails after --nbd-timeout (elapsed
# time bounded), reads of the overlay's own data keep working meanwhile, and once the server
# is back the same process reads the base again (reconnect). dev add's settings file is
# parsed strictly. TLS: an overlay over nbds+unix:// to a server that requires TLS; nbds://
# over TCP is refused without the CA libnbd checks the server with; URI parameters other
# than socket= are refused.
. "$CLI_LIB"
command -v nbdkit >/dev/null || fail "nbdkit not installed (make deps)"
command -v qemu-nbd >/dev/null || fail "qemu-nbd not installed (make deps)"
SEED=${NBD_SEED:-$$}
echo "seed $SEED (NBD_SEED=$SEED reruns this)"
A=--allow-network-backing
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null; done' EXIT

# serve SOCK ARGS...: nbdkit on the Unix socket SOCK in the background (pid in spid)
serve() {
	sock=$1
	shift
	rm -f "$sock"
	nbdkit -f -U "$sock" "$@" 2>"$sock.err" &
	spid=$!
	pids="$pids $spid"
	for _i in $(seq 100); do
		[ -S "$sock" ] && return 0
		kill -0 $spid 2>/dev/null || break
		sleep 0.05
	done
	fail "nbdkit $* did not start: $(cat "$sock.err")"
}
uri() { echo "nbd+unix:///?socket=$PWD/$1"; }
freeport() {
	$PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# the base: 6 MiB of random runs, each of one byte or of bytes that change at every offset
# (so that a read served from the wrong place shows), and holes
$PY - "$SEED" <<'PY' || fail "making base.raw"
import random, sys
r = random.Random(int(sys.argv[1]))
b = bytearray(6 << 20)
for i in range(60):
    off, ln = r.randrange(0, len(b)), r.randint(1, 300000)
    ln = len(b[off:off + ln])
    if i % 2:
        b[off:off + ln] = bytes([r.randint(1, 255)]) * ln
    else:
        seq = bytes(r.randint(1, 255) for _ in range(251))
        b[off:off + ln] = (seq * (ln // 251 + 1))[:ln]
open("base.raw", "wb").write(b)
PY

# ---- create: the URI recorded as it is, the size read from the server ----
serve f.sock file base.raw
U=$(uri f.sock)
expect_err 1 "ov0.ucow: cannot open backing file 'nbd\+unix:///\?socket=.*f.sock': .*network backing is not allowed \(--allow-network-backing allows it\)" \
	"$UCOW" create -q -f ucow -b "$U" -F raw ov0.ucow
no_file ov0.ucow
expect_err 1 "only raw content is supported on an NBD server \(format ucow given\)" \
	"$UCOW" create -q -f ucow -b "$U" -F ucow $A ov0.ucow
no_file ov0.ucow
expect_ok "$UCOW" create -q -f ucow -b "$U" -F raw $A ov0.ucow
expect_ok "$UCOW" info --output=json ov0.ucow
grep -q "\"backing-filename\": \"nbd+unix:///?socket=$PWD/f.sock\"" out ||
	fail "info does not show the URI as given: $(cat out)"
grep -q '"virtual-size": 6291456' out || fail "the size was not read from the server"
expect_ok "$UCOW" info --backing-chain $A ov0.ucow
grep -q "^image: nbd+unix:///?socket=$PWD/f.sock$" out || fail "the chain does not show the URI"
expect_ok "$UCOW" compare $A ov0.ucow base.raw -F raw
expect_ok "$UCOW" compare $A "$U" -f raw base.raw -F raw
# convert -B and a safe rebase onto the URI keep the content; commit into it is refused
expect_ok "$UCOW" create -q -f ucow -b "$U" -F raw $A ov1.ucow
expect_ok "$UCOW" io $A -c "write -P 0x17 1M 96k" -c "write -z 3M 4k" ov1.ucow
expect_ok "$UCOW" convert $A -O ucow -B "$U" -F raw ov1.ucow cv.ucow
expect_ok "$UCOW" compare $A ov1.ucow cv.ucow
expect_ok "$UCOW" create -q -f ucow -b base.raw -F raw rb.ucow
expect_ok "$UCOW" io -c "write -P 0x29 5M 8k" rb.ucow
expect_ok "$UCOW" convert -O raw rb.ucow rb-before.raw
expect_ok "$UCOW" rebase $A -b "$U" -F raw rb.ucow
expect_ok "$UCOW" compare $A rb.ucow rb-before.raw -F raw
expect_ok "$UCOW" snapshot $A -c s1 ov1.ucow
expect_ok "$UCOW" resize -q $A ov1.ucow 8M
expect_ok "$UCOW" io $A -r -c "read -P 0x17 1M 96k" -c "read -P 0 7M 1M" ov1.ucow
expect_ok "$UCOW" convert $A -l s1 -O raw ov1.ucow s1.raw
expect_ok "$UCOW" compare $A cv.ucow s1.raw -F raw
expect_err 1 "rb.ucow: cannot commit into 'nbd\+unix:.*': an image on an NBD server is read-only" \
	"$UCOW" commit $A rb.ucow

# ---- differential: the same random history over NBD and over the local file ----
dirs=""
differ() {	# NAME URI: randio in NAME/ over URI ("" = the local file), same seed
	mkdir -p "$1"
	cp base.raw "$1/base.raw" 2>/dev/null
	if [ -n "$2" ]; then
		(cd "$1" && $PY "$CLI_DIR/randio.py" --ucow "$UCOW" --mode rawbase --seed "$SEED" \
			--steps 14 --cmp-every 7 --base-file base.raw --base-uri "$2") >"$1.log" 2>&1
	else
		(cd "$1" && $PY "$CLI_DIR/randio.py" --ucow "$UCOW" --mode rawbase --seed "$SEED" \
			--steps 14 --cmp-every 7 --base-file base.raw) >"$1.log" 2>&1
	fi
	st=$?
	echo "+ randio $1 ${2:-local} -> $st"
	tail -n 2 "$1.log" | sed 's/^/  out| /'
	[ $st -eq 0 ] || fail "randio over ${2:-the local file}: $(grep '^not ok' "$1.log")"
	dirs="$dirs $1"
}
differ local ""
differ nbdkit-file "$U"
port=$(freeport)
qemu-nbd -f raw -r -t -e 8 -b 127.0.0.1 -p "$port" base.raw 2>qemu-nbd.err &
qpid=$!
pids="$pids $qpid"
for _i in $(seq 100); do
	nbdinfo --size "nbd://127.0.0.1:$port" >/dev/null 2>&1 && break
	sleep 0.05
done
differ qemu-nbd-tcp "nbd://127.0.0.1:$port"
expect_ok "$UCOW" compare -q $A qemu-nbd-tcp/disk.img local/disk.img
kill $qpid
serve m.sock memory 6M
nbdcopy base.raw "$(uri m.sock)" || fail "nbdcopy into the memory plugin"
differ nbdkit-memory "$(uri m.sock)"
# a server that takes only whole 4 KiB blocks, at most 64 KiB a request (and fails others):
# reads are widened through a bounce buffer and cut
serve b.sock --filter=blocksize-policy file base.raw blocksize-minimum=4096 \
	blocksize-maximum=65536 blocksize-error-policy=error
differ nbdkit-strict "$(uri b.sock)"
# what a server says is checked: an export size its own minimum block size does not divide
head -c 1000000 base.raw >odd.raw
serve o.sock --filter=blocksize-policy file odd.raw blocksize-minimum=4096 \
	blocksize-error-policy=error
expect_err 1 "o.sock: the server gives an export size of 1000000 bytes, not a multiple of its minimum block size 4096" \
	"$UCOW" io $A -f raw -r -c "read 0 4k" "$(uri o.sock)"
for d in nbdkit-file nbdkit-memory nbdkit-strict; do
	expect_ok "$UCOW" compare -q $A "$d/disk.img" local/disk.img
done

# ---- the nbdkit plugin serving an overlay whose base is on an NBD server ----
P=$(dirname "$UCOW")/nbdkit-ucow-plugin.so
# an ASan build of the plugin: nbdkit runs with the sanitizer runtimes preloaded (t_nbdkit.sh)
san=$(ldd "$P" | awk '/lib(asan|ubsan)\.so/ { printf "%s%s", sep, $3; sep = ":" }')
rm -f p.sock
LD_PRELOAD="$san" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
	run nbdkit -U "$PWD/p.sock" "$P" ov0.ucow readonly=true
[ $st -ne 0 ] || fail "the plugin followed a network backing without consent"
grep -q "network backing is not allowed" err || fail "the plugin's refusal: $(cat err)"
LD_PRELOAD="$san" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
	serve p.sock "$P" ov0.ucow readonly=true allow-network-backing=true
expect_ok qemu-img compare -f raw -F raw "$(uri p.sock)" base.raw
kill $spid

# ---- opt-in: refused without the flag, and nothing connects ----
$PY - listen.sock <<'PY' >listen.out 2>&1 &
import socket, sys, os, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); s.listen(16); s.settimeout(0.2)
print("listening", flush=True)
n, end = 0, time.time() + 60
while time.time() < end and not os.path.exists("listen.stop"):
    try:
        c, _ = s.accept(); n += 1; c.close()
    except socket.timeout:
        pass
print("connections", n, flush=True)
PY
lpid=$!
pids="$pids $lpid"
for _i in $(seq 100); do grep -q listening listen.out && break; sleep 0.1; done
L=$(uri listen.sock)
expect_ok "$UCOW" create -q -f ucow crafted.ucow 6M
expect_err 1 "crafted.ucow: its backing image .* is on the network; network backing is not allowed" \
	"$UCOW" rebase -u -b "$L" -F raw crafted.ucow
expect_ok "$UCOW" rebase -u -b "$L" -F raw $A crafted.ucow	# names it; connects nowhere
for c in io io-r convert compare map info check measure commit rebase bench snapshot resize; do
	case $c in
	io) run "$UCOW" io -c "read 0 4k" crafted.ucow ;;
	io-r) run "$UCOW" io -r -c "read 0 4k" crafted.ucow ;;
	convert) run "$UCOW" convert -O raw crafted.ucow crafted.raw ;;
	compare) run "$UCOW" compare crafted.ucow base.raw -F raw ;;
	info) run "$UCOW" info --backing-chain crafted.ucow ;;
	measure) run "$UCOW" measure -O ucow crafted.ucow ;;
	rebase) run "$UCOW" rebase -b base.raw -F raw crafted.ucow ;;
	bench) run "$UCOW" bench -c 10 crafted.ucow ;;
	snapshot) run "$UCOW" snapshot -c s1 crafted.ucow ;;
	resize) run "$UCOW" resize crafted.ucow 7M ;;
	*) run "$UCOW" $c crafted.ucow ;;
	esac
	[ $st -ne 0 ] || fail "'ucow $c' on an image naming a URI succeeded without $A"
	grep -q "network backing is not allowed" err || fail "'ucow $c': $(cat err)"
	[ "$(wc -l <err)" -eq 1 ] || fail "'ucow $c' wrote more than one line: $(cat err)"
done
# the hostile names the engine refuses even with the flag
for bad in "nbd+ssh://evil/x" "nbd+vsock://1:2" "nbd://host/a b" "nbds+vsock://3"; do
	expect_err 1 "crafted.ucow: backing '.*': (transport not allowed|URI has a blank)" \
		"$UCOW" rebase -u -b "$bad" -F raw $A crafted.ucow
done
touch listen.stop
wait $lpid
grep -q "^connections 0$" listen.out || fail "something connected without consent: $(cat listen.out)"
ok "no connection was made to the URI of a refused image"
# with consent it connects (the check above can fail): the listener speaks no NBD
rm -f listen.stop
$PY - listen.sock <<'PY' >listen.out 2>&1 &
import socket, sys, os, time
os.unlink(sys.argv[1]) if os.path.exists(sys.argv[1]) else None
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); s.listen(16); s.settimeout(0.2)
print("listening", flush=True)
n, end = 0, time.time() + 60
while time.time() < end and not os.path.exists("listen.stop"):
    try:
        c, _ = s.accept(); n += 1; c.close()
    except socket.timeout:
        pass
print("connections", n, flush=True)
PY
lpid=$!
pids="$pids $lpid"
for _i in $(seq 100); do grep -q listening listen.out && break; sleep 0.1; done
run "$UCOW" io $A --nbd-timeout 2 -r -c "read 0 4k" crafted.ucow
[ $st -eq 1 ] || fail "a server that speaks no NBD was taken"
grep -q "^ucow: crafted.ucow: .*listen.sock" err || fail "the error does not name the URI: $(cat err)"
touch listen.stop
wait $lpid
grep -q "^connections [1-9]" listen.out || fail "with $A nothing connected: $(cat listen.out)"
ok "with $A the engine connects"

# ---- the server killed while a read waits; reconnection ----
serve k.sock --filter=delay file base.raw rdelay=3
echo $spid >k.pid
K=$(uri k.sock)
expect_ok "$UCOW" create -q -f ucow -b "$K" -F raw $A ovk.ucow
$PY - "$UCOW" "$K" "$PWD" <<'PY' >kill.out 2>&1
import subprocess, sys, time, os, signal
ucow, uri, here = sys.argv[1:4]
base = open("base.raw", "rb").read()
def pat(off):	# a pattern read of 4 KiB of the base at off, whatever byte is there
    b = base[off:off + 4096]
    return b[0] if b == bytes([b[0]]) * 4096 else None
off = next((o for o in range(0, len(base), 4096) if pat(o) is not None and base[o] != 0), None)
if off is None:
    print("not ok: no 4 KiB block of one byte in the base (seed)"); sys.exit(1)
p = subprocess.Popen([ucow, "io", "--allow-network-backing", "--nbd-timeout", "2", "ovk.ucow"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
def cmd(c):
    t = time.time()
    p.stdin.write((c + "\n").encode()); p.stdin.flush()
    line = p.stdout.readline().decode().rstrip()
    return line, time.time() - t
def fail(why):
    print("not ok:", why); p.kill(); sys.exit(1)
l, t = cmd("write -P 7 1M 64k")
if not l.startswith("wrote"): fail("write: " + l)
# a read of the base that the delayed server holds; the server dies meanwhile
t0 = time.time()
p.stdin.write(("read -P %d %d 4096\n" % (base[off], off)).encode()); p.stdin.flush()
time.sleep(0.6)
pid = int(open(os.path.join(here, "k.pid")).read())
os.kill(pid, signal.SIGKILL)
l = p.stdout.readline().decode().rstrip(); t = time.time() - t0
print("read with the server killed: %r after %.2f s" % (l, t))
if "read failed" not in l or "Input/output error" not in l: fail("no I/O error: " + l)
if not 1.8 <= t <= 4.5: fail("the error came after %.2f s, not about the 2 s timeout" % t)
# the overlay's own data needs no server
l, t = cmd("read -P 7 1M 64k")
print("own data with the server down: %r after %.2f s" % (l, t))
if l != "read 65536/65536 bytes at offset 1048576" or t > 1: fail("own data: %r %.2f s" % (l, t))
# still down: another read of the base fails too (after the timeout, no hang)
l, t = cmd("read -P %d %d 4096" % (base[off], off))
print("base read, server still down: %r after %.2f s" % (l, t))
if "read failed" not in l or t > 4.5: fail("second read: %r %.2f s" % (l, t))
# the server is back: the same process reads the base again
os.unlink(os.path.join(here, "k.sock"))
s = subprocess.Popen(["nbdkit", "-f", "-U", os.path.join(here, "k.sock"), "file", "base.raw"])
for _ in range(100):
    if os.path.exists(os.path.join(here, "k.sock")): break
    time.sleep(0.05)
l, t = cmd("read -P %d %d 4096" % (base[off], off))
print("base read, server back: %r after %.2f s" % (l, t))
ok = l == "read 4096/4096 bytes at offset %d" % off and t < 12
p.stdin.close(); p.wait(); s.terminate(); s.wait()
if not ok: fail("after the restart: %r %.2f s" % (l, t))
print("ok: the server killed mid-read: -EIO after the timeout, own data served, reconnected")
PY
st=$?
cat kill.out
[ $st -eq 0 ] || fail "$(grep '^not ok' kill.out)"

# ---- dev add's settings file: strict ----
printf 'allow-network-backing = yes\nnbd-timeout = 5\n' >good.conf
printf '# settings\nallow-network-backing = maybe\n' >bad1.conf
printf 'allow-network-backing = yes\nfoo = 1\n' >bad2.conf
printf 'nbd-timeout = 5\nnbd-timeout = 6\n' >bad3.conf
printf 'nbd-timeout = -1\n' >bad4.conf
printf 'allow-network-backing yes\n' >bad5.conf
expect_err 1 "bad1.conf:2: allow-network-backing must be yes or no" \
	env UCOW_SETTINGS=$PWD/bad1.conf "$UCOW" dev add ov0.ucow
expect_err 1 "bad2.conf:2: unknown key 'foo'" \
	env UCOW_SETTINGS=$PWD/bad2.conf "$UCOW" dev add ov0.ucow
expect_err 1 "bad3.conf:2: 'nbd-timeout' given twice" \
	env UCOW_SETTINGS=$PWD/bad3.conf "$UCOW" dev add ov0.ucow
expect_err 1 "bad4.conf:1: invalid nbd-timeout '-1'" \
	env UCOW_SETTINGS=$PWD/bad4.conf "$UCOW" dev add ov0.ucow
expect_err 1 "bad5.conf:1: not 'key = value'" \
	env UCOW_SETTINGS=$PWD/bad5.conf "$UCOW" dev add ov0.ucow
expect_err 1 "invalid --nbd-timeout 'x'" "$UCOW" io --nbd-timeout x -c length ov0.ucow
expect_err 1 "dev add: invalid --nbd-timeout '0'" "$UCOW" dev add --nbd-timeout 0 ov0.ucow
expect_err 1 "dev serve: the name 'ucow' is reserved" "$UCOW" dev serve --config-dir "$PWD" ucow

# ---- TLS: nbds+unix:// to a server that requires it; nbds:// over TCP needs a CA to check
# the server with (libnbd would accept any certificate without one), refused before any
# connection; URI parameters other than socket= are refused ----
if [ "$(id -u)" = 0 ] && [ ! -e /etc/pki/libnbd/ca-cert.pem ]; then
	mkdir -p tls
	openssl req -x509 -newkey rsa:2048 -nodes -keyout tls/ca-key.pem -out tls/ca-cert.pem \
		-days 2 -subj "/CN=ucow test CA" 2>/dev/null || fail "openssl: CA"
	openssl req -newkey rsa:2048 -nodes -keyout tls/server-key.pem -out tls/server.csr \
		-subj "/CN=localhost" 2>/dev/null || fail "openssl: request"
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >tls/ext.cnf
	openssl x509 -req -in tls/server.csr -CA tls/ca-cert.pem -CAkey tls/ca-key.pem \
		-CAcreateserial -out tls/server-cert.pem -days 2 -extfile tls/ext.cnf 2>/dev/null ||
		fail "openssl: certificate"
	serve t.sock --tls=require --tls-certificates="$PWD/tls" file base.raw
	expect_ok "$UCOW" create -q -f ucow -b "nbds+unix:///?socket=$PWD/t.sock" -F raw $A tl.ucow
	expect_ok "$UCOW" io $A -c "write -P 0x3c 2M 64k" tl.ucow
	expect_ok "$UCOW" io $A -c "read -P 0x3c 2M 64k" -c "read -v 5M 16" tl.ucow
	expect_ok "$UCOW" compare $A "nbds+unix:///?socket=$PWD/t.sock" -f raw base.raw -F raw
	expect_err 2 "server requires TLS" \
		"$UCOW" compare $A "nbd+unix:///?socket=$PWD/t.sock" -f raw base.raw -F raw
	kill $spid
	wait $spid 2>/dev/null
	P=$(freeport)
	nbdkit -f -i 127.0.0.1 -p "$P" --tls=require --tls-certificates="$PWD/tls" file base.raw \
		2>tcp.err &
	tpid=$!
	pids="$pids $tpid"
	sleep 0.3
	expect_err 1 "'nbds://127.0.0.1:$P/': TLS needs a CA certificate to check the server with \(/etc/pki/libnbd/ca-cert.pem is missing; libnbd would accept any server\)" \
		"$UCOW" create -q -f ucow -b "nbds://127.0.0.1:$P/" -F raw $A tt.ucow
	no_file tt.ucow
	kill $tpid
	ok "TLS: nbds+unix:// served, plain refused by the server, nbds:// without a CA refused"
fi
expect_err 1 "URI parameter 'tls-verify-peer' not allowed \(socket= only\)" \
	"$UCOW" create -q -f ucow -b "nbds://127.0.0.1:1/?tls-verify-peer=false" -F raw $A tv.ucow
no_file tv.ucow
ok "done"
