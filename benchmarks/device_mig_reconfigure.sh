#!/usr/bin/env bash
# On the bigger machine (wheels from benchmarks/device_carry.sh, carried as .device/): install
# the wheels into that machine's python3 environment and run bench_mig_reconfigure.py, once as
# given (ROUNDS, default 5) and once with --breakdown (BREAKDOWN_ROUNDS, default 3; 0: not at
# all). No GPU is used: the hosts are simulated, with ansible_connection: local.
#
# The wheels include nvidia-ml-py, installed as heteromig.fleet.host_runtime installs it on a
# host (pip, which byte-compiles it). That machine's own copy of pynvml has no bytecode and it
# sets PYTHONDONTWRITEBYTECODE=1, so with it every mig_layout run on a simulated host would
# compile pynvml's 7,400 lines (51-77 ms there, 6-11 ms with bytecode); bench_mig_reconfigure.py says so when it sees
# that. NO_HOST_PYNVML=1 leaves that copy in place, to measure it anyway.
#
# HOOKS_CLIENTS=1 adds the variant with hooks and GPU clients configured. COMPARE_TAR="FILE..."
# (each a `git archive` of another commit, carried along, named NAME.tar) unpacks those trees and
# times them in the same rounds (bench_mig_reconfigure.py --compare-tree NAME=DIR), for an A/B
# on that machine; WHEELS=DIR takes the wheels from DIR instead of .device/wheels.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="$(python3 -c 'import sys; print(sys.executable)')"
wheels=()
for wheel in "${WHEELS:-.device/wheels}"/*.whl; do
    [[ -n "${NO_HOST_PYNVML:-}" && "$wheel" == *nvidia_ml_py* ]] || wheels+=("$wheel")
done
"$py" -m pip install -q --no-index --no-deps "${wheels[@]}"
export PATH="$(dirname "$py"):$PATH"
echo "cpus $(nproc); $(python -c 'import ansible, sys; print(sys.version.split()[0], ansible.__version__)')"
out="${OUT:-/tmp}"
extra=()
[[ -n "${HOOKS_CLIENTS:-}" ]] && extra+=(--hooks-clients)
for tarball in ${COMPARE_TAR:-}; do
    other="$(mktemp -d)"
    tar -xf "$tarball" -C "$other"
    extra+=(--compare-tree "$(basename "$tarball" .tar)=$other")
done
echo "load before: $(cat /proc/loadavg)"
python benchmarks/bench_mig_reconfigure.py --rounds "${ROUNDS:-5}" "${extra[@]}" --json "$out/mig.json" || true
echo "load after: $(cat /proc/loadavg)"
if [[ "${BREAKDOWN_ROUNDS:-3}" != 0 ]]; then
    python benchmarks/bench_mig_reconfigure.py --rounds "${BREAKDOWN_ROUNDS:-3}" --breakdown \
        --json "$out/mig-breakdown.json" || true
fi
