#!/bin/sh
# The tree example through the command line: take s1, s2, s3, s4 (different content
# each); apply s2; take s5; apply s4; write. All five snapshots and the current state read
# their own content (convert -l, every way of naming a snapshot, raw and ucow output), the
# lists (snapshot -l, info) show the tree, check is clean. The expected bytes come from a raw
# file given the same writes (ucow io -f raw), copied at each snapshot.
. "$CLI_LIB"
IMG=t.img
# step "CMD..." : the same commands on the image and on exp.raw (the expected current state)
step() {
	set --
	for c in $CMDS; do set -- "$@" -c "$(echo "$c" | tr _ ' ')"; done
	expect_ok $UCOW io "$@" $IMG
	expect_ok $UCOW io -f raw "$@" exp.raw
}
snap() {
	expect_ok $UCOW snapshot -c "$1" $IMG
	cp exp.raw "exp-$1.raw"
}
# same_as EXPECTED ARGS...: ucow convert ARGS -O raw IMG out.raw gives EXPECTED's bytes
same_as() {
	want=$1
	shift
	rm -f got.raw
	expect_ok $UCOW convert "$@" -O raw $IMG got.raw
	cmp got.raw "$want" || fail "convert $* differs from $want"
}

expect_ok $UCOW create -q -o chunk_size=64k,block_size=4k $IMG 4M
expect_ok $UCOW create -q -f raw exp.raw 4M
CMDS="write_-P_0x11_0_1M write_-P_0x12_100000_5000"; step; snap s1
CMDS="write_-P_0x21_512k_1M write_-z_3M_70000 write_-P_0x22_4194303_1"; step; snap s2
CMDS="write_-P_0x31_65535_2 discard_1M_64k write_-P_0x32_2000000_300000"; step; snap s3
CMDS="write_-P_0x41_0_4M write_-z_5000_12345"; step; snap s4
expect_ok $UCOW snapshot -a s2 $IMG
cp exp-s2.raw exp.raw
same_as exp.raw
CMDS="write_-P_0x51_1234567_89012 write_-P_0x52_0_1"; step; snap s5
expect_ok $UCOW snapshot -a s4 $IMG
cp exp-s4.raw exp.raw
CMDS="write_-P_0x61_3M_100 write_-P_0x62_65530_70000"; step

# every snapshot and the current state read their own content
for s in s1 s2 s3 s4 s5; do
	same_as exp-$s.raw -l $s
done
same_as exp.raw
for i in 1 2 3 4 5; do cmp -s exp-s$i.raw exp.raw && fail "s$i has the current content"; done
# a snapshot by id, snapshot.name=, snapshot.id=, both; -O ucow then back to raw
same_as exp-s3.raw -l 3
same_as exp-s5.raw -l snapshot.name=s5
same_as exp-s2.raw -l snapshot.id=2
same_as exp-s4.raw -l snapshot.id=4,snapshot.name=s4
expect_ok $UCOW convert -l s1 -O ucow $IMG s1.img
expect_ok $UCOW info s1.img
grep -q '^Snapshot list' out && fail "a converted snapshot has snapshots"
expect_ok $UCOW convert s1.img got.raw
cmp got.raw exp-s1.raw || fail "convert -l s1 -O ucow differs"

# the list: 5 entries, ids 1..5, parents along the tree, the current state descends from s4
expect_ok $UCOW snapshot -l --output=json $IMG
json_ok out
$PY - <<'PY' || fail "snapshot -l --output=json: $(cat out)"
import json, time
v = json.load(open('out'))
assert len(v) == 5, v
by = {e['name']: e for e in v}
assert [by['s%d' % i]['id'] for i in range(1, 6)] == [1, 2, 3, 4, 5], v
assert [by['s%d' % i]['parent'] for i in range(1, 6)] == [0, 1, 2, 3, 2], v
assert by['s5']['parent'] == by['s2']['id']
assert [e['name'] for e in v if e['current-parent']] == ['s4'], v
for e in v:
    assert e['virtual-size'] == 4 << 20, e
    assert abs(e['date-sec'] - time.time()) < 600 and 0 <= e['date-nsec'] < 10**9, e
    assert e['disk-usage'] > 0, e
PY
expect_ok $UCOW snapshot -l $IMG
[ "$(grep -c '^[1-5] ' out)" -eq 5 ] || fail "snapshot -l shows $(grep -c '^[1-5] ' out) rows"
grep -q '^4 .* \*$' out || fail "snapshot -l does not mark s4 as the current state's parent"
grep -qE '^5 +s5 +2 ' out || fail "snapshot -l: s5's parent is not 2"
# info lists them too, like qemu-img info
expect_ok $UCOW info $IMG
grep -qx 'snapshots: 5' out || fail "info: no 'snapshots: 5' line"
grep -qx 'Snapshot list:' out || fail "info: no snapshot list"
[ "$(sed -n '/^Snapshot list:/,$p' out | grep -c '^[1-5] ')" -eq 5 ] || fail "info lists not 5"
expect_ok $UCOW info --output=json $IMG
json_ok out
$PY - <<'PY' || fail "info --output=json: $(cat out)"
import json
d = json.load(open('out'))
v = d['snapshots']
assert [e['name'] for e in v] == ['s1', 's2', 's3', 's4', 's5'], v
for e in v:
    for k in ('id', 'name', 'parent', 'date-sec', 'date-nsec', 'virtual-size', 'disk-usage'):
        assert k in e, (k, e)
assert v[4]['parent'] == v[1]['id']
PY
expect_ok $UCOW info --output=json --backing-chain $IMG
json_ok out
expect_ok $UCOW check $IMG
# an image without snapshots: an empty list, no "Snapshot list:" block
expect_ok $UCOW info --output=json s1.img
$PY -c "import json; assert json.load(open('out'))['snapshots'] == []" || fail "info json of no snapshots"

# convert -l errors: one line, exit 1, no OUT left behind, an existing OUT left as it was
expect_err 1 "^ucow: $IMG: no snapshot 'zz'\$" $UCOW convert -l zz $IMG none.raw
no_file none.raw
expect_err 1 "^ucow: $IMG: no snapshot 'zz'\$" $UCOW convert -l snapshot.name=zz -O ucow $IMG none.img
no_file none.img
expect_err 1 "^ucow: $IMG: no snapshot '9'\$" $UCOW convert -l snapshot.id=9 $IMG none.raw
expect_err 1 "^ucow: $IMG: no snapshot '9'\$" $UCOW convert -l 9 $IMG none.raw
expect_err 1 "no snapshot 's1' with id 2" $UCOW convert -l snapshot.id=2,snapshot.name=s1 $IMG none.raw
no_file none.raw
echo old >old.raw
expect_err 1 "no snapshot 'zz'" $UCOW convert -l zz $IMG old.raw
[ "$(cat old.raw)" = old ] || fail "an existing OUT was changed"
expect_err 1 "convert: the snapshot name is empty" $UCOW convert -l '' $IMG none.raw
expect_err 1 "convert: unknown snapshot option 'snapshot.tag'" $UCOW convert -l snapshot.tag=s1 $IMG none.raw
expect_err 1 "convert: snapshot.name is empty" $UCOW convert -l snapshot.name= $IMG none.raw
expect_err 1 "exp.raw: a raw image has no snapshots" $UCOW convert -f raw -l s1 exp.raw none.raw
expect_err 1 "exp.raw: not a ucow image" $UCOW convert -l s1 exp.raw none.raw
expect_err 1 "nofile.img: No such file or directory" $UCOW convert -l s1 nofile.img none.raw
no_file none.raw
expect_ok $UCOW check $IMG
ok "snapshot tree"
