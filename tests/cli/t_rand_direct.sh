#!/bin/sh
# Random sequences with most "ucow io" runs under -n (O_DIRECT on the image files), mixed
# with cached runs. O_DIRECT needs whole 512-byte sectors, so every request is aligned here.
. "$CLI_LIB"
randio --direct --mode standalone --seed 61 --steps 25 --chunk 64k --block 512 || fail "seed 61"
randio --direct --mode rawbase --seed 62 --steps 25 --chunk 64k --block 4k || fail "seed 62"
randio --direct --mode ucowbase --seed 63 --steps 25 || fail "seed 63"
