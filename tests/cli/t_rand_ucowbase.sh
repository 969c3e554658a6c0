#!/bin/sh
# Random sequences on a ucow overlay over a ucow base that holds data of its own; the base
# must read the same afterwards.
. "$CLI_LIB"
randio --mode ucowbase --seed 31 --steps 30 --chunk 64k --block 4k || fail "seed 31"
randio --mode ucowbase --seed 32 --steps 30 --size 7M || fail "seed 32"
randio --mode ucowbase --seed 33 --steps 30 --chunk 128k --grow 200003 || fail "seed 33"
