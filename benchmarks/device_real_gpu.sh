#!/usr/bin/env bash
# On a GPU machine with MIG disabled and nothing to fetch from (the device machine): install
# the wheels that benchmarks/device_carry.sh put into .device/wheels (carried there) into that
# machine's python3 environment, then run benchmarks/bench_real_gpu.py with the arguments given
# and pack what it wrote into $OUT (default /tmp/realgpu-out): real_gpu.json, the log and
# realgpu.tar.gz (nvidia-smi samples, the runs' harness records and LoadGen summaries, each runner
# run's result.json (r<rep>-<kind>-result.json) and reports (reports/<run_id>/), the last runner
# run's results). Read-only towards the GPU's configuration (see bench_real_gpu.py).
#   HM_COMMIT=<commit> bash benchmarks/device_real_gpu.sh --accuracy --reps 5
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-/tmp/realgpu-out}"
mkdir -p "$out"
py="$(python3 -c 'import sys; print(sys.executable)')"
"$py" -m pip install -q --no-index --no-deps .device/wheels/*.whl
export PATH="$(dirname "$py"):$PATH"
nvidia-smi --query-gpu=name,driver_version,mig.mode.current,memory.total,utilization.gpu \
    --format=csv
work=/tmp/realgpu
rm -rf "$work"
status=0
python benchmarks/bench_real_gpu.py --out "$work" "$@" 2>&1 | tee "$out/bench.log" || status=$?
cp "$work/real_gpu.json" "$out/" 2>/dev/null || true
(cd "$work" && find . \( -name real_gpu.json -o -name gpu_samples.csv -o -name '*.log' \
    -o -name heteromig_harness.json -o -name 'r*-result.json' -o -name mlperf_log_summary.txt -o -name accuracy.txt \
    -o -path './last-runner-report/*' -o -path './reports/*' \) -type f -print0 | tar czf "$out/realgpu.tar.gz" --null -T -)
exit "$status"
