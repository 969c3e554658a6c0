#!/bin/sh
# Random sequences on a ucow overlay over a raw base (base never changes), including an
# overlay bigger than its base (an odd number of bytes bigger: reads past the base are 0).
. "$CLI_LIB"
randio --mode rawbase --seed 21 --steps 30 --chunk 64k --block 4k || fail "seed 21"
randio --mode rawbase --seed 22 --steps 30 --size 7M || fail "seed 22"
randio --mode rawbase --seed 23 --steps 30 --chunk 64k --grow 300001 || fail "seed 23"
