#!/bin/sh
# Backing files of an image from elsewhere: convert follows only backing files named
# relative to the image and lying inside its folder (symbolic links resolved); an absolute
# name, a name that climbs out, or a link that leads out is refused with one line naming
# the image and the way to allow it (--allow-backing-outside). Chains inside the folder,
# and create (the user names the backing file), work as before.
. "$CLI_LIB"
mkdir -p a b
$PY -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 4096)" >a/base.raw
cp a/base.raw b/base.raw
expect_ok $UCOW create -q -b ../a/base.raw -F raw b/up.img
expect_ok $UCOW create -q -b "$PWD/a/base.raw" -F raw b/abs.img
ln -s ../a/base.raw b/link.raw
expect_ok $UCOW create -q -b link.raw -F raw b/link.img
expect_ok $UCOW create -q -b base.raw -F raw b/mid.img
expect_ok $UCOW create -q -b mid.img -F ucow b/top.img
mkdir b/sub
expect_ok $UCOW create -q -b ../mid.img -F ucow b/sub/deep.img

why="add --allow-backing-outside if it is trusted"
expect_err 1 "b/up.img: backing file '../a/base.raw' lies outside the image's folder; $why" \
	$UCOW convert b/up.img out.raw
no_file out.raw
expect_err 1 "b/abs.img: backing file name '.*' is absolute, outside the image's folder; $why" \
	$UCOW convert b/abs.img out.raw
expect_err 1 "b/link.img: backing file 'link.raw' lies outside the image's folder; $why" \
	$UCOW convert b/link.img out.raw
# a sub-folder's image may not climb to its parent either: the opened image's folder bounds
expect_err 1 "b/sub/deep.img: backing file '../mid.img' lies outside the image's folder" \
	$UCOW convert b/sub/deep.img out.raw

for img in up abs link; do
	expect_ok $UCOW convert --allow-backing-outside b/$img.img $img.raw
	cmp $img.raw a/base.raw || fail "convert --allow-backing-outside of $img.img differs from its base"
done
expect_ok $UCOW convert b/top.img top.raw
cmp top.raw a/base.raw || fail "a chain inside the folder converts wrongly"
# reading the image in place (info, check, io) is not a copy for someone else: unchanged
expect_ok $UCOW info b/up.img
expect_ok $UCOW check b/up.img
ok "backing files outside the image's folder are followed only when allowed"
