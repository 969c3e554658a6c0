# ucow dev serve's NAME.conf (checked before the driver is needed) and dev udev-name (read
# from the state file): man ucow-dev, "NAME.conf".
. "$CLI_LIB"
export UCOW_UBLK_CONTROL=$PWD/no-ublk-control UCOW_RUN_DIR=$PWD/run
mkdir -p conf run
c() { printf "$2" >"conf/$1.conf"; }
c bad1 'image = rel.ucow\n'
expect_err 1 'conf/bad1.conf:1: image .rel.ucow. is not an absolute path' $UCOW dev serve --config-dir conf bad1
c bad2 '# a comment\n\ncolour = red\n'
expect_err 1 'bad2.conf:3: unknown key .colour.' $UCOW dev serve --config-dir conf bad2
c bad3 'image=/x\nqueues = 0\n'
expect_err 1 'bad3.conf:2: invalid queues .0. \(1\.\.4096\)' $UCOW dev serve --config-dir conf bad3
c bad4 'image=/x\nimage=/y\n'
expect_err 1 "bad4.conf:2: 'image' given twice" $UCOW dev serve --config-dir conf bad4
c bad5 'image=/x\noptions = direct,fast\n'
expect_err 1 "bad5.conf:2: unknown option 'fast'" $UCOW dev serve --config-dir conf bad5
c bad6 'queues = 2\n'
expect_err 1 "bad6.conf: no 'image = FILE'" $UCOW dev serve --config-dir conf bad6
c bad7 'image\n'
expect_err 1 "bad7.conf:1: not 'key = value'" $UCOW dev serve --config-dir conf bad7
c bad8 'depth =\n'
expect_err 1 "bad8.conf:1: 'depth' has no value" $UCOW dev serve --config-dir conf bad8
c bad9 'image=/x\nprefetch = 1k\n'
expect_err 1 "dev add: invalid --prefetch rate '1k'" $UCOW dev serve --config-dir conf bad9
c bad10 'image=/x\nprefetch = a=b\n'
expect_err 1 "bad10.conf:2: invalid prefetch 'a=b' \(on, or a rate such as 64M\)" $UCOW dev serve --config-dir conf bad10
c bad11 'image=/x\nprefetch = on\noptions = read-only\n'
expect_err 1 "dev add: --prefetch writes into the image: the cow target, read-write, only" $UCOW dev serve --config-dir conf bad11
expect_err 1 'nope.conf: No such file or directory' $UCOW dev serve --config-dir conf nope
expect_err 1 "dev serve: invalid name '../etc/x'" $UCOW dev serve --config-dir conf ../etc/x
expect_err 1 "dev serve: invalid name '-x'" $UCOW dev serve --config-dir conf -- -x
# a good file gets as far as the image, then the driver
c good ' image = /nonexistent/a.ucow \nqueues=2\ndepth = 64\noptions = direct,read-only\n'
expect_err 1 '/nonexistent/a.ucow: No such file or directory' $UCOW dev serve --config-dir conf good
$UCOW create -q a.ucow 1M || fail create
c good "image = $PWD/a.ucow\n"
expect_err 1 'ublk driver is not loaded' $UCOW dev serve --config-dir conf good
c good "image = $PWD/a.ucow\nprefetch = 8M\n"
expect_err 1 'ublk driver is not loaded' $UCOW dev serve --config-dir conf good
expect_ok $UCOW dev serve --help
grep -q -- '--config-dir DIR' out || fail "serve --help"

# udev-name: the name from the state file; none, or a bad one, is an error
st() {	# st ID NAME-JSON
	cat >"run/dev$1.json" <<EOT
{ "version": 2, "id": $1, "pid": 1, "target": "cow", "file": "$PWD/a.ucow", $2
  "queues": 1, "depth": 128, "block-size": 512, "size": 1048576, "direct": false,
  "read-only": false, "recoverable": true, "allow-backing-outside": false, "features": 0,
  "socket": "" }
EOT
}
st 3 '"name": "vm1",'
expect_ok $UCOW dev udev-name 3
[ "$(cat out)" = vm1 ] || fail "udev-name 3 printed '$(cat out)'"
expect_ok $UCOW dev udev-name /dev/ublkb3
[ "$(cat out)" = vm1 ] || fail "udev-name /dev/ublkb3 printed '$(cat out)'"
st 4 ''
expect_err 1 'device 4 has no name' $UCOW dev udev-name 4
st 5 '"name": "../../etc",'
expect_err 1 '"name": not a device name' $UCOW dev udev-name 5
expect_err 1 'device 6: .*dev6.json: No such file' $UCOW dev udev-name 6
