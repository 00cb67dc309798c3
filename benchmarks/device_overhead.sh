#!/usr/bin/env bash
# On the bigger machine (see benchmarks/device_carry.sh): install the carried sshd and wheels,
# then run bench_controller_overhead.py for each host count given (default: 1 16), 3 runs each.
# The libraries are copied only where that machine lacks them (cp -n).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=benchmarks/_device_setup.sh
source benchmarks/_device_setup.sh
[[ $# -gt 0 ]] || set -- 1 16
for hosts in "$@"; do
    python benchmarks/bench_controller_overhead.py --hosts "$hosts" --repeat 3
done
