#!/bin/sh
# Random write/zero/discard/read sequences on a standalone ucow image vs a model:
# small chunks (64k, 4k blocks; and 512-byte blocks) and the default geometry.
. "$CLI_LIB"
randio --mode standalone --seed 11 --steps 30 --chunk 64k --block 4k || fail "seed 11"
randio --mode standalone --seed 12 --steps 30 --chunk 64k --block 512 --size 3M || fail "seed 12"
randio --mode standalone --seed 13 --steps 30 --size 7M || fail "seed 13"
