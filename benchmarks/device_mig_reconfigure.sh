#!/usr/bin/env bash
# On the bigger machine (wheels from benchmarks/device_carry.sh, carried as .device/): install
# the wheels into that machine's python3 environment and run bench_mig_reconfigure.py, once as
# given (default: 5 rounds) and once with --breakdown (3 rounds). No GPU is used: the hosts are
# simulated, with ansible_connection: local.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="$(python3 -c 'import sys; print(sys.executable)')"
"$py" -m pip install -q --no-index --no-deps .device/wheels/*.whl
export PATH="$(dirname "$py"):$PATH"
echo "cpus $(nproc); $(python -c 'import ansible, sys; print(sys.version.split()[0], ansible.__version__)')"
out="${OUT:-/tmp}"
python benchmarks/bench_mig_reconfigure.py --rounds "${ROUNDS:-5}" --json "$out/mig.json" || true
python benchmarks/bench_mig_reconfigure.py --rounds 3 --breakdown --json "$out/mig-breakdown.json" || true
