#!/bin/sh
# `make bench`: the benchmark suite (ucow against raw files and qcow2, see
# Documentation/performance.md). The logic is in bench.py; options are passed through
# (tests/bench/run.sh --help). BUILD names the build folder, as for make.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec python3 "$here/bench.py" --build "${BUILD:-build}" "$@"
