#!/usr/bin/env bash
# On the bigger machine (see benchmarks/device_carry.sh, whose .device/ must be carried): install
# the carried sshd and wheels, then run bench_sweep.py there, passing on the arguments, e.g.
#   BENCH_SRC=$PWD/.device/src bash benchmarks/device_sweep.sh --repeat 3
# BENCH_SRC=DIR runs the benchmark from DIR (a `git archive` export of one commit carried under
# .device/) instead of this checkout, so that uncommitted work in the tree is not measured.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=benchmarks/_device_setup.sh
source benchmarks/_device_setup.sh
cd "${BENCH_SRC:-.}"
python benchmarks/bench_sweep.py "$@"
echo "$(uptime)"
