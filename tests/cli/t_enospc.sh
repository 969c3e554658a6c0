#!/bin/sh
# A full disk: a write that the file system cuts short says "No space left on device", not
# "Input/output error" (issue 11 #8). The file size limit (ulimit -f, SIGXFSZ ignored) makes
# the kernel cut a write short at the limit, as a full disk does; the image engine reports
# the short write as ENOSPC, on every I/O backend.
. "$CLI_LIB"

expect_ok $UCOW create -f raw full.raw 2M
for be in sync uring aio; do
	# 512 blocks of 512 or 1024 bytes (dash / bash): the 2 MiB write crosses the limit
	run sh -c "ulimit -f 512 && trap '' XFSZ && exec $UCOW io -f raw -i $be -c 'write -P 7 0 2M' full.raw"
	[ $st -ne 0 ] || fail "$be: a write past the file size limit succeeded"
	grep -q 'No space left on device' err || fail "$be: stderr '$(cat err)' does not say 'No space left on device'"
	grep -q 'Input/output error' err && fail "$be: a short write reads as an I/O error: $(cat err)"
	ok "$be: $(cat err)"
done
