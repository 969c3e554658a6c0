#!/bin/sh
# `make bench`: the benchmark suite (ucow against raw files and qcow2, see
# Documentation/performance.md). The host scenarios' logic is in bench.py (options are passed
# through: tests/bench/run.sh --help); S7/S8 (ublk devices) run in the real-kernel test bed
# (tests/vm/run.sh --script tests/bench/vm-ublk.sh). BUILD names the build folder, as for make.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/bench.py" --build "${BUILD:-build}" "$@"
case " $* " in *" --only "*|*" --help "*|*" -h "*) exit 0 ;; esac
mkdir -p "$here/../../results"
out="$here/../../results/vm-ublk-$(date +%Y%m%d-%H%M%S).txt"
echo "S7/S8: ublk devices in the test bed (emulated: compare within this run only)"
BUILD=${BUILD:-build} "$here/../vm/run.sh" --script "$here/vm-ublk.sh" | tee "$out" | grep -E '^(S7|S8|FAIL)'
