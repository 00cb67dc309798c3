#!/usr/bin/env bash
# On the bigger machine (see benchmarks/device_carry.sh, whose .device/ must be carried): install
# the carried wheels into that machine's own python3 environment, then run the fleet-width
# benchmark there (local connection: no sshd needed), passing on the arguments, e.g.
#   bash benchmarks/device_campaign.sh --hosts 64 --repeat 3 --main-ms 20000
# BENCH_SRC=DIR runs the benchmark from DIR (e.g. a `git archive` export of one commit carried
# under .device/) instead of this checkout, so that uncommitted work in the tree is not measured.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(python3 -c 'import sys; print(sys.executable)')"
"$py" -m pip install -q --no-index --no-deps "$repo"/.device/wheels/*.whl
export PATH="$(dirname "$py"):$PATH"
echo "cpus $(nproc); $(python -c 'import ansible, sys; print(sys.version.split()[0], ansible.__version__)'); $(uptime)"
cd "${BENCH_SRC:-$repo}"
python benchmarks/bench_fleet_width.py "$@"
echo "$(uptime)"
