#!/bin/sh
# The qemu-io / qemu-img / ublk habits (issue 13, item 7): ucow io's 0x numbers, map, alloc,
# length, info, help, quit, -q and commands from stdin (a pipe and a terminal), each with
# exact output and map/alloc/length against qemu-io; ucow dev's ublk-style options and
# per-subcommand --help (parsing only: no ublk driver here, the bed's 48-dev-habits runs
# them); and the one-line rule: every bad option or value, on every subcommand, gives exactly
# one stderr line that names no option the subcommand lacks.
. "$CLI_LIB"
# no driver: a dev command that parsed its arguments stops at the control device
export UCOW_UBLK_CONTROL="$PWD/no-ublk-control" UCOW_RUN_DIR="$PWD/run"

want() {	# want NAME: out must equal the here-document on stdin
	cat >want.txt
	diff -u want.txt out || fail "$1: output differs from the expected lines"
}

# --- io: 0x offsets and lengths
expect_ok $UCOW create -q -o chunk_size=64k h.ucow 1M
expect_ok $UCOW io -c 'write -P 0x5a 0x1000 0x800' -c 'read -P 0x5a 4096 2048' \
	-c 'read -P 90 0X1000 0x800' -c 'read -P 0 0x1800 0x10' h.ucow
want "hex" <<'W'
wrote 2048/2048 bytes at offset 4096
read 2048/2048 bytes at offset 4096
read 2048/2048 bytes at offset 4096
read 16/16 bytes at offset 6144
W
expect_err 1 "^ucow: io: 'read 0x 1': invalid offset '0x': not a hex number" \
	$UCOW io -c 'read 0x 1' h.ucow
expect_err 1 "io: 'read 0 0x1k': invalid length '0x1k': .*no suffix" $UCOW io -c 'read 0 0x1k' h.ucow
expect_err 1 "invalid offset '0x10000000000000000': too large" \
	$UCOW io -c 'read 0x10000000000000000 1' h.ucow
expect_err 1 "^ucow: io: 'read -1 512': invalid offset '-1': must not be negative \(try 'ucow io --help'\)$" \
	$UCOW io -c 'read -1 512' h.ucow
expect_err 1 "io: 'write -P 1 0 -0x10': invalid length '-0x10': must not be negative" \
	$UCOW io -c 'write -P 1 0 -0x10' h.ucow
expect_err 1 "h.ucow: read at offset 1048575 \(2 bytes\) is past the end" \
	$UCOW io -c 'read 0xfffff 0x2' h.ucow

# --- map, alloc, length, info: exact lines (qemu-io's format)
expect_ok $UCOW create -q -o chunk_size=64k m.ucow 1M
expect_ok $UCOW io -q -c 'write 0 64k' -c 'write 512k 4k' m.ucow
[ ! -s out ] || fail "-q printed '$(cat out)'"
expect_ok $UCOW io -c map -c 'alloc 0 128k' -c 'alloc 0' -c 'alloc 100k 512' -c 'alloc 0x1000 0x200' \
	-c 'alloc 1536 512' -c 'alloc 1000000 512' -c 'alloc 0 1M' -c 'alloc 0 2M' -c 'alloc 1M' \
	-c 'alloc 0 0' -c length m.ucow
want "map/alloc/length" <<'W'
64 KiB (0x10000) bytes     allocated at offset 0 bytes (0x0)
448 KiB (0x70000) bytes not allocated at offset 64 KiB (0x10000)
4 KiB (0x1000) bytes     allocated at offset 512 KiB (0x80000)
508 KiB (0x7f000) bytes not allocated at offset 516 KiB (0x81000)
65536/131072 bytes allocated at offset 0 bytes
512/512 bytes allocated at offset 0 bytes
0/512 bytes allocated at offset 100 KiB
512/512 bytes allocated at offset 4 KiB
512/512 bytes allocated at offset 1.500 KiB
0/512 bytes allocated at offset 976.562 KiB
69632/1048576 bytes allocated at offset 0 bytes
69632/1048576 bytes allocated at offset 0 bytes
0/0 bytes allocated at offset 1 MiB
0/0 bytes allocated at offset 0 bytes
1 MiB
W
# map and alloc only look: the image is opened read-only (a read-only file is enough)
chmod 444 m.ucow
expect_ok $UCOW io -c map -c 'alloc 0' -c length -c info m.ucow
chmod 644 m.ucow
expect_ok $UCOW io -c info m.ucow
want "info ucow" <<'W'
format name: ucow
virtual size: 1 MiB (1048576 bytes)
chunk size: 64 KiB
block size: 4 KiB
W
truncate -s 1500 odd.raw
expect_ok $UCOW io -f raw -c info -c length -c map -c 'alloc 1k 1k' odd.raw
want "info raw" <<'W'
format name: raw
virtual size: 1.465 KiB (1500 bytes)
1.465 KiB
1.465 KiB (0x5dc) bytes     allocated at offset 0 bytes (0x0)
476/476 bytes allocated at offset 1 KiB
W
truncate -s 3G big.raw
expect_ok $UCOW create -q -b big.raw -F raw ov.ucow
expect_ok $UCOW io -c info -c length ov.ucow
want "info overlay" <<'W'
format name: ucow
virtual size: 3 GiB (3221225472 bytes)
chunk size: 1 MiB
block size: 4 KiB
backing file: big.raw (format raw)
3 GiB
W

# the same answers as qemu-io on qcow2 (4 KiB clusters = ucow's 4 KiB blocks): random
# 4 KiB-aligned writes (and, in an overlay, zero writes: they hide the base, so they count
# as allocated) on a standalone image and on an overlay over a raw base
$PY - >cmds.txt <<'P' || fail "generating the commands"
import random
r = random.Random(13)
for kind in ("s", "o"):
    for _ in range(40):
        off, n = r.randrange(0, 1024) * 4096, r.randrange(1, 40) * 4096
        n = min(n, (4 << 20) - off)
        z = "-z " if kind == "o" and r.random() < 0.3 else ""
        print(kind, "write %s%d %d" % (z, off, n))
    for _ in range(12):
        off = r.randrange(0, 4 << 20)
        print(kind, "alloc %d %d" % (off, r.randrange(1, 300000)))
    print(kind, "map")
P
truncate -s 4M base.raw
$PY -c 'import os; f = open("base.raw", "r+b"); f.seek(1 << 20); f.write(os.urandom(65536))'
qemu-img create -q -f qcow2 -o cluster_size=4k s.qcow2 4M || fail "qemu-img create"
qemu-img create -q -f qcow2 -o cluster_size=4k -b base.raw -F raw o.qcow2 4M || fail "qemu-img create"
expect_ok $UCOW create -q -o chunk_size=64k s.ucow 4M
expect_ok $UCOW create -q -o chunk_size=64k -b base.raw -F raw o.ucow
for k in s o; do
	set --
	while read -r kind cmd; do [ "$kind" = $k ] && set -- "$@" -c "$cmd"; done <cmds.txt
	qemu-io "$@" $k.qcow2 | grep -E 'allocated at' >theirs.$k || fail "qemu-io on $k.qcow2"
	expect_ok $UCOW io "$@" $k.ucow
	grep -E 'allocated at' out >mine.$k
	[ "$(wc -l <mine.$k)" -gt 12 ] || fail "too few map/alloc lines"
	diff -u theirs.$k mine.$k || fail "map/alloc differ from qemu-io's ($k)"
done
for n in 512 1536 1000000000 1099511627776; do
	truncate -s $n len.raw
	qemu-io -f raw -c length -c map len.raw >theirs
	expect_ok $UCOW io -f raw -c length -c map len.raw
	diff -u theirs out || fail "length/map of $n bytes differ from qemu-io's"
done

# --- help
expect_ok $UCOW io -c help h.ucow
for c in read write discard flush map alloc length info truncate help quit; do
	grep -q "^$c .*-- " out || fail "help does not list $c"
done
expect_ok $UCOW io -c 'help alloc' h.ucow
want "help alloc" <<'W'
alloc OFF [LEN] -- how many of the LEN bytes (default 512) at OFF the image holds itself
W
expect_err 1 "io: 'help frob': no command 'frob'" $UCOW io -c 'help frob' h.ucow
expect_ok $UCOW io --help
grep -q "map " out && grep -q "alloc OFF" out && grep -q "^  -q " out || fail "--help lacks the new commands or -q"

# --- truncate (cow_resize): grow, shrink (drops what lies past), bad sizes refused
cp h.ucow t.ucow
expect_ok $UCOW io -c 'truncate 8M' -c length t.ucow
grep -qx '8 MiB' out || fail "truncate 8M: $(cat out)"
expect_ok $UCOW io -c 'write -P 7 7M 4k' -c 'truncate 1M' -c length -c 'truncate 8M' \
	-c 'read -P 0 7M 4k' t.ucow
grep -qx '1 MiB' out && ! grep -q 'verification failed' out || fail "truncate shrink: $(cat out)"
expect_err 1 "io: 'truncate': expected SIZE" $UCOW io -c 'truncate' t.ucow
expect_err 1 "io: -r \(read-only\) given with a write, discard or truncate" $UCOW io -r -c 'truncate 2M' t.ucow
expect_ok $UCOW check t.ucow

# --- -C: what a read takes from the backing chain is written into the image
$PY -c "import os; open('cb.raw','wb').write(os.urandom(1 << 20))"
expect_ok $UCOW create -q -b cb.raw -F raw -o chunk_size=64k cor.ucow
expect_ok $UCOW io -c 'alloc 64k 64k' cor.ucow
grep -q '^0/65536 bytes allocated' out || fail "before -C: $(cat out)"
expect_ok $UCOW io -C -c 'read 64k 64k' -c 'read 200000 1000' cor.ucow
expect_ok $UCOW io -c 'alloc 64k 64k' -c 'alloc 200000 1000' cor.ucow
grep -q '^65536/65536 bytes allocated' out && grep -q '^1000/1000 bytes allocated' out ||
	fail "after -C: $(cat out)"
expect_ok $UCOW compare -F raw cor.ucow cb.raw
expect_err 1 "io: -C writes what it reads into the image: not with -r" $UCOW io -r -C -c 'read 0 1' cor.ucow

# --- -q: no result lines; pattern failures, dumps and answers stay
expect_ok $UCOW create -q q.ucow 1M
run $UCOW io -q -c 'write -P 7 0 4k' -c 'read -P 8 0 16' -c flush -c 'discard 0 4k' -c 'read -v 0 16' \
	-c 'alloc 0 8k' -c length q.ucow
[ $st -eq 1 ] || fail "a failed pattern check under -q must exit 1"
want "-q" <<'W'
Pattern verification failed at offset 0, 16 bytes
00000000:  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
4096/8192 bytes allocated at offset 0 bytes
1 MiB
W
expect_ok $UCOW io -c 'write -q 0 1' -c 'read -q -P 0xcd 0 1' -c 'discard -q 0 1' -c 'read 0 1' q.ucow
want "per-command -q" <<'W'
read 1/1 bytes at offset 0
W

# --- commands from stdin: the pipe of the issue, errors go on, quit, comments
printf 'write 0 4k\nread 0 4k\n' >in.txt
expect_ok $UCOW io q.ucow <in.txt
want "stdin" <<'W'
wrote 4096/4096 bytes at offset 0
read 4096/4096 bytes at offset 0
W
printf '# a comment\n\nwrite -P 0x11 0x2000 512\nfrob 1\nwrite 2M 1\n  read -P 0x11 8192 512\nalloc 0x2000\nquit\nwrite 0 1M\n' >in.txt
run $UCOW io q.ucow <in.txt
[ $st -eq 1 ] || fail "failed stdin commands must make io exit 1 (got $st)"
want "stdin with errors" <<'W'
wrote 512/512 bytes at offset 8192
read 512/512 bytes at offset 8192
512/512 bytes allocated at offset 8 KiB
W
[ "$(wc -l <err)" -eq 2 ] || fail "expected 2 error lines, got: $(cat err)"
head -n 1 err | grep -qx "ucow: q.ucow: unknown command 'frob' in 'frob 1' (read, write, discard, flush, map, alloc, length, info, help, quit) (try 'help')" ||
	fail "stdin parse error: $(head -n 1 err)"
tail -n 1 err | grep -q "^ucow: q.ucow: write at offset 2097152 (1 bytes) is past the end" ||
	fail "stdin I/O error: $(tail -n 1 err)"
expect_ok $UCOW io -c 'read -P 0x11 0x2000 512' -c 'read -P 0 4096 4096' q.ucow	# quit stopped the run
# -r: a write is refused, the rest runs, the file is not touched
sum=$(sha256sum <q.ucow)
printf 'write 0 1\nread -P 0xcd 0 1\n' >in.txt
run $UCOW io -r q.ucow <in.txt
[ $st -eq 1 ] || fail "a refused write must make io exit 1"
grep -qx "ucow: q.ucow: write at offset 0: the image is open read-only" err || fail "read-only: $(cat err)"
want "-r stdin" <<'W'
read 1/1 bytes at offset 0
W
[ "$(sha256sum <q.ucow)" = "$sum" ] || fail "io -r changed the image"

# a terminal gets the 'ucow> ' prompt (and a newline at Ctrl-D); a pipe gets none (above)
$PY - "$UCOW" q.ucow >tty.out <<'P' || fail "pty run failed: $(cat tty.out)"
import os, pty, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "io", sys.argv[2]])
a = termios.tcgetattr(fd)
a[3] &= ~termios.ECHO
termios.tcsetattr(fd, termios.TCSANOW, a)
os.write(fd, b"length\nalloc 0 4k\n")
time.sleep(0.3)
os.write(fd, b"\x04")
out = b""
while True:
    try:
        d = os.read(fd, 4096)
    except OSError:
        break
    if not d:
        break
    out += d
_, st = os.waitpid(pid, 0)
sys.stdout.write(out.decode().replace("\r\n", "\n"))
sys.exit(0 if os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0 else 1)
P
printf 'ucow> 1 MiB\nucow> 4096/4096 bytes allocated at offset 0 bytes\nucow> \n' >want.txt
diff -u want.txt tty.out || fail "the terminal session differs"
ok "prompt on a terminal"

# --- dev: ublk's spellings parse; with no driver they stop at the control device
expect_ok $UCOW create -q d.ucow 1M
truncate -s 1M d.raw
nodrv="ublk-control not found|driver is not loaded"
expect_err 1 "$nodrv" $UCOW dev add -t cow -f d.ucow
expect_err 1 "$nodrv" $UCOW dev add -t loop -f d.raw
expect_err 1 "$nodrv" $UCOW dev add -f d.ucow -n 3 -q 1 -d 16
expect_err 1 "$nodrv" $UCOW dev add d.ucow
expect_err 1 "$nodrv" $UCOW dev add -t null -s 1M
expect_err 1 "$nodrv" $UCOW dev del -n 0
expect_err 1 "$nodrv" $UCOW dev del -a
expect_err 1 "$nodrv" $UCOW dev del --all --force
expect_err 1 "$nodrv" $UCOW dev list -n 0
expect_err 1 "$nodrv" $UCOW dev list -v
expect_err 1 "$nodrv" $UCOW dev list -v -n 2 --output=json
expect_err 1 "^ucow: no state for device 4 in " $UCOW dev recover -n 4
expect_err 1 "^ucow: no served device 4$" $UCOW dev stats -n 4
expect_err 1 "^ucow: no served device 4$" $UCOW dev stats /dev/ublkb4
expect_err 1 "dev add: invalid size '5000': must be a multiple of 4 KiB" $UCOW dev add -t null -s 5000
expect_err 1 "dev add: invalid size '2k': must be a multiple of 4 KiB" $UCOW dev add -t null -s 2k
expect_err 1 "dev add: FILE given twice \(-f d.ucow and 'd.raw'\)" $UCOW dev add -f d.ucow d.raw
expect_err 1 "dev add: -f given twice" $UCOW dev add -f d.ucow -f d.ucow
expect_err 1 "dev add: no FILE given" $UCOW dev add -t loop
expect_err 1 "dev add: the null target takes no FILE" $UCOW dev add -t null -s 1M -f d.raw
expect_err 1 "dev add: unknown target 'vmdk' \(cow, raw, loop, qcow2, null\)" $UCOW dev add -t vmdk -f d.ucow
expect_err 1 "^ucow: missing.ucow: No such file or directory$" $UCOW dev add -t cow -f missing.ucow
expect_err 1 "dev del: the device is given twice \(-n 1 and '2'\)" $UCOW dev del -n 1 2
expect_err 1 "dev del: -n given twice" $UCOW dev del -n 1 -n 2
expect_err 1 "dev del: --all takes no device" $UCOW dev del -a -n 1
expect_err 1 "dev del: invalid device 'x'" $UCOW dev del -n x
expect_err 1 "dev del: no device given \(ID, /dev/ublkbN, -n ID or --all\)" $UCOW dev del
expect_err 1 "dev list: invalid device 'zero'" $UCOW dev list -n zero
expect_err 1 "dev recover: no device given" $UCOW dev recover
expect_err 1 "dev recover: option '--foreground' takes no argument" $UCOW dev recover --foreground=1 -n 1
[ ! -e run ] || [ -z "$(ls run)" ] || fail "dev commands without a driver left $(ls run) in the run folder"

# dev SUB --help: that subcommand's usage only; dev --help: all of them
for sub in add del list recover features stats; do
	expect_ok $UCOW dev $sub --help
	head -n 1 out | grep -q "^usage: ucow dev $sub" || fail "dev $sub --help: $(head -n 1 out)"
	grep -E "^(usage: |       )ucow dev " out | grep -vE "ucow dev $sub( |$)" | grep -q . &&
		fail "dev $sub --help shows the usage of other subcommands"
	expect_ok $UCOW dev $sub -h
done
expect_ok $UCOW dev add --help
for o in -t -f -n -q -d -s --direct --read-only --recoverable --foreground --block-size --snapshot \
	--allow-backing-outside; do
	grep -qE -- "^  $o([ ,]|$)" out || fail "dev add --help does not describe $o"
done
grep -q loop out || fail "dev add --help does not name the loop target"
expect_ok $UCOW dev del --help
grep -qE -- "^  -n ID" out && grep -qE -- "^  -a, --all" out && grep -qE -- "^  --force" out ||
	fail "dev del --help: -n, -a, --force"
expect_ok $UCOW dev list --help
grep -qE -- "^  -n ID" out && grep -qE -- "^  -v, --verbose" out || fail "dev list --help: -n, -v"
expect_ok $UCOW dev --help
for sub in add del list recover features stats; do
	grep -q "ucow dev $sub" out || fail "dev --help does not show $sub"
done

# --- the one-line rule. bad CMD...: exit 1 (compare: 2), nothing on stdout, exactly one
# stderr line "ucow: ...", and every option the line names (but the bad one fed, $fed) is in
# the subcommand's --help (help.txt).
bad() {
	run "$@"
	bad_st=1
	[ "$sub" = compare ] && bad_st=2
	[ $st -eq $bad_st ] || fail "'$*' exited $st, expected $bad_st"
	[ ! -s out ] || fail "'$*' printed on stdout: $(head -n 1 out)"
	[ "$(wc -l <err)" -eq 1 ] || fail "'$*' wrote $(wc -l <err) lines to stderr: $(cat err)"
	grep -q '^ucow: ' err || fail "'$*': $(cat err)"
	for tok in $(grep -oE -- "(^|[ '(])--?[A-Za-z][A-Za-z-]*" err | sed -E "s/^[ '(]//"); do
		[ "$tok" = "${fed%%=*}" ] && continue
		grep -qE -- "(^|[^A-Za-z-])$tok([^A-Za-z-]|$)" help.txt ||
			fail "'$*' names $tok, which '$sub' does not have: $(cat err)"
	done
	return 0
}
truncate -s 1M p.raw
for sub in create info io convert check map compare measure commit rebase snapshot bench \
	"dev add" "dev del" "dev list" "dev recover" "dev stats" "dev features"; do
	$UCOW $sub --help >help.txt || fail "$sub --help"
	for fed in -Z --bogus --bogus=1 --help=1; do
		bad $UCOW $sub $fed x.ucow
	done
	case $sub in
	create) args="-f -b -F -o" ;;
	info | check) args="-f --output" ;;
	map) args="-f --output --start-offset --max-length" ;;
	compare) args="-f -F" ;;
	measure) args="-f -O -o --size --output" ;;
	io) args="-c -f -i" ;;
	convert) args="-f -l -O -o" ;;
	commit) args="-b -f" ;;
	rebase) args="-b -F -f" ;;
	snapshot) args="-c -a -d --output" ;;
	bench) args="-c -d -f -s -S -o -t -i --pattern --flush-interval" ;;
	"dev add") args="-t -f -n -q -d -s --block-size --snapshot" ;;
	"dev list" | "dev stats") args="-n --output" ;;
	"dev del" | "dev recover") args="-n" ;;
	*) args="" ;;
	esac
	for fed in $args; do
		bad $UCOW $sub $fed
		grep -q "option '$fed' needs an argument" err || fail "$sub $fed: $(cat err)"
	done
done
fed=none
# bad values and misuse, each naming only options its command has
sub=create; $UCOW create --help >help.txt
bad $UCOW create -f qcow2 x.ucow 1M
bad $UCOW create -b p.raw -F ucow x.ucow
grep -q "use -F raw" err || fail "create: no -F hint: $(cat err)"
bad $UCOW create -F raw x.ucow 1M
bad $UCOW create -q -o chunk_size=3k x.ucow 1M	# -q: no "Formatting" line (qemu-img prints it first too)
for sub in info check io bench convert map compare measure; do
	$UCOW $sub --help >help.txt
	case $sub in io) bad $UCOW io -c 'read 0 1' p.raw ;; convert) bad $UCOW convert p.raw y.raw ;;
	compare) bad $UCOW compare -F raw p.raw p.raw ;; *) bad $UCOW $sub p.raw ;; esac
	grep -q "not a ucow image (no ucow magic); use -f raw for a raw image" err ||
		fail "$sub on a raw file: $(cat err)"
done
# an overlay whose backing file lost its ucow magic: the image is at fault, -f cannot help
expect_ok $UCOW create -q lost.ucow 1M
expect_ok $UCOW create -q -b lost.ucow -F ucow onlost.ucow
cp p.raw lost.ucow
sub=io; $UCOW io --help >help.txt
bad $UCOW io -c 'read 0 1' onlost.ucow
grep -q "onlost.ucow: backing file '.*lost.ucow' is not a ucow image (no ucow magic), though the image names its format ucow" err ||
	fail "backing file not ucow: $(cat err)"
grep -q "use -f" err && fail "a backing file's format is not -f's: $(cat err)"
sub=snapshot; $UCOW snapshot --help >help.txt
bad $UCOW snapshot -l p.raw
grep -qx "ucow: p.raw: not a ucow image (no ucow magic)" err || fail "snapshot on raw: $(cat err)"
bad $UCOW snapshot -c a -d b h.ucow
bad $UCOW snapshot --output=xml -l h.ucow
sub=convert; $UCOW convert --help >help.txt
bad $UCOW convert -l s1 p.raw y.raw
bad $UCOW convert -O vdi h.ucow y.raw
bad $UCOW convert -o chunk_size=64k h.ucow y.raw
sub=map; $UCOW map --help >help.txt
bad $UCOW map --start-offset=1x h.ucow
bad $UCOW map --output=xml h.ucow
sub=compare; $UCOW compare --help >help.txt
bad $UCOW compare h.ucow
bad $UCOW compare -F qcow2 h.ucow p.raw
sub=measure; $UCOW measure --help >help.txt
bad $UCOW measure --size 1M h.ucow
bad $UCOW measure -O raw -o chunk_size=64k --size 1M
bad $UCOW measure -U --size 1M
sub=check; $UCOW check --help >help.txt
bad $UCOW check -r leaks -U h.ucow
sub=io; $UCOW io --help >help.txt
bad $UCOW io -i spdk -c 'read 0 1' h.ucow
bad $UCOW io -r -c 'write 0 1' h.ucow
bad $UCOW io -c 'write -z -P 1 0 1' h.ucow
bad $UCOW io -c 'read -z 0 1' h.ucow
sub=bench; $UCOW bench --help >help.txt
bad $UCOW bench -d 0 h.ucow
bad $UCOW bench -t bogus h.ucow
bad $UCOW bench --flush-interval=x -w h.ucow
bad $UCOW bench --flush-interval=4 h.ucow
sub="dev add"; $UCOW dev add --help >help.txt
bad $UCOW dev add -q 0 d.ucow
bad $UCOW dev add -d 5000 d.ucow
bad $UCOW dev add --block-size 1024 d.ucow
bad $UCOW dev add -s 1M d.ucow
bad $UCOW dev add -t null
bad $UCOW dev add --snapshot s -t raw d.raw
bad $UCOW dev add --snapshot s --recoverable d.ucow
sub="dev list"; $UCOW dev list --help >help.txt
bad $UCOW dev list --output=xml
sub="dev stats"; $UCOW dev stats --help >help.txt
bad $UCOW dev stats
sub=dev; $UCOW dev --help >help.txt
bad $UCOW dev
bad $UCOW dev frob
fed=-Z
bad $UCOW dev -Z

# --- bench: a read run that reaches no stored data is refused
expect_ok $UCOW create -q -o chunk_size=64k e.ucow 16M
expect_err 1 "e.ucow: nothing to measure: the read benchmark reads no stored data" $UCOW bench -c 100 e.ucow
expect_ok $UCOW io -q -c 'write 8M 4k' e.ucow
expect_err 1 "nothing to measure" $UCOW bench -c 100 e.ucow	# 0..400k: not 8M
expect_err 1 "nothing to measure" $UCOW bench -q -c 10 -o 7M -S 3M -s 512 e.ucow	# 7M, 10M, 13M
expect_ok $UCOW bench -q -c 10 -o 7M -S 1M -s 512 e.ucow	# the second request reads 8M
grep -q '^IOPS: ' out || fail "bench printed no IOPS"
expect_ok $UCOW bench -q -c 10 -o 8187k -S 5k -s 1k e.ucow	# 8187k, 8192k
expect_ok $UCOW bench -q -c 10 -w e.ucow	# writes are never refused
# --latency: one line of percentiles, in order; a sample per request, so a bounded count
expect_ok $UCOW bench -q -c 50 -w -d 1 -S 64k --flush-interval=1 --latency e.ucow
grep -E '^Latency \(us\): mean [0-9.]+, p50 [0-9.]+, p99 [0-9.]+, p99.9 [0-9.]+, max [0-9.]+$' out >lat ||
	fail "bench --latency printed no latency line"
awk -F'[ ,]+' '{ if (!($6 > 0 && $6 <= $8 && $8 <= $10 && $10 <= $12)) exit 1 }' lat ||
	fail "latency percentiles out of order: $(cat lat)"
expect_ok $UCOW bench -q -c 10 -w e.ucow
grep -q '^Latency' out && fail "bench printed latency without --latency"
sub=bench; $UCOW bench --help >help.txt
bad $UCOW bench --latency -c 200000000 -w e.ucow
truncate -s 16M rb.raw
expect_ok $UCOW create -q -b rb.raw -F raw ob.ucow
expect_err 1 "ob.ucow: nothing to measure" $UCOW bench -c 10 ob.ucow
expect_err 1 "rb.raw: nothing to measure" $UCOW bench -f raw -c 10 rb.raw
printf x | dd of=rb.raw bs=1 seek=4096 conv=notrunc 2>/dev/null
expect_ok $UCOW bench -q -c 10 ob.ucow	# through the backing file
expect_ok $UCOW bench -q -c 10 -f raw rb.raw
ok "all habits"
