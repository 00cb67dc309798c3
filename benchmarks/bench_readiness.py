"""Readiness detection latency of the host runner with chatty backgrounds.

    .venv/bin/python benchmarks/bench_readiness.py --runs 20 --backgrounds 6 --rate 20000

Each run starts the real runner (plugins/module_utils/agent/_hetero_runner.py, as the hetero_runner
module starts it) with ``--backgrounds`` backgrounds, each benchmarks/hetero_writer.py writing
``--rate`` lines/s to its merged stdout/stderr pipe and, at a random moment 0.5-1.5 s in, the
line ``[I] ts=<epoch> running actual test.``. The latency of one background is the runner's
readiness timestamp minus the ``ts`` in its marker line. Every writer's achieved rate is read
from its log (it prints its line count on SIGTERM). Target: p99 under 20 ms at 6 x 20,000
lines/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _run_contract as C  # noqa: E402
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _run_control as RC  # noqa: E402

WRITER = str(ROOT / "benchmarks" / "hetero_writer.py")
MARK = re.compile(r"ts=(\d+\.\d+) running actual test\.")
RATE = re.compile(r"WRITER lines=(\d+) seconds=([\d.]+)")


def plan(root: Path, run_id: str, backgrounds: int, rate: float) -> dict:
    run_dir = root / "runs" / run_id

    def bench(name: str, argv: list[str]) -> dict:
        return {
            "name": name,
            "role": "main" if name == "main" else "background",
            "benchmark": "writer",
            "scenario": "Offline",
            "action": "run_harness",
            "slice": {"uuid": "MIG-bench-" + name},
            "argv": [sys.executable, WRITER, *argv],
            "env": {},
            "log_dir": str(run_dir / name),
        }

    benches = [bench("main", ["--rate", "0", "--marker-after", "0", "--duration", "0.2"])]
    for index in range(backgrounds):
        after = "%.3f" % random.uniform(0.5, 1.5)
        benches.append(bench("bg-%d" % (index + 1), ["--rate", str(rate), "--marker-after", after]))
    return {
        "format": C.PLAN_FORMAT,
        "version": C.PLAN_VERSION,
        "run_id": run_id,
        "run_dir": str(run_dir),
        "benchmarks": benches,
        "lease_s": 0,
        "choreography": {
            "start_time_buffer": 0.0,
            "stop_grace": 2.0,
            "background_start_timeout": 30.0,
        },
    }


def one_run(
    root: Path, run_id: str, backgrounds: int, rate: float
) -> tuple[list[float], list[float]]:
    p = plan(root, run_id, backgrounds, rate)
    RC.start(p, str(root), sys.executable, str(ROOT / "collections"), check_layout_first=False)
    status: dict = {}
    deadline = time.monotonic() + 60
    while not status.get("done") and time.monotonic() < deadline:
        status = RC.poll_status(p["run_dir"], status.get("seq"), 2.0, 0)
    if not status.get("done"):
        raise SystemExit("run %s did not finish" % run_id)
    latencies, rates = [], []
    for event in status["result"]["timeline"]:
        if event["event"] == "ready" and event["benchmark"] != "main":
            match = MARK.search(event["detail"])
            if match:
                latencies.append(event["t"] - float(match.group(1)))
    for bench in status["result"]["benchmarks"]:
        if bench["name"] == "main":
            continue
        found = RATE.findall(Path(bench["log_dir"], "stdout.log").read_text()[-4096:])
        if found:
            lines, seconds = found[-1]
            rates.append(int(lines) / float(seconds))
    if len(latencies) != backgrounds:
        raise SystemExit(
            "run %s: %d of %d backgrounds detected" % (run_id, len(latencies), backgrounds)
        )
    return latencies, rates


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 120 samples is the 119th smallest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100.0 * len(ordered)))) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backgrounds", type=int, default=6)
    parser.add_argument("--rate", type=float, default=20000.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)
    root = Path(tempfile.mkdtemp(prefix="hm-bench-ready-"))
    latencies: list[float] = []
    rates: list[float] = []
    try:
        for index in range(args.runs):
            lat, rate = one_run(root, "r%03d" % index, args.backgrounds, args.rate)
            latencies += lat
            rates += rate
            print("run %d: max %.1f ms" % (index, max(lat) * 1000), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()
    print(
        json.dumps(
            {
                "backgrounds": args.backgrounds,
                "target_rate_lines_per_s": args.rate,
                "achieved_rate_lines_per_s_median": round(statistics.median(rates)),
                "achieved_rate_lines_per_s_min": round(min(rates)),
                "samples": len(latencies),
                "p50_ms": round(percentile(latencies, 50) * 1000, 2),
                "p99_ms": round(percentile(latencies, 99) * 1000, 2),
                "max_ms": round(max(latencies) * 1000, 2),
                "loadavg_1m_after": round(load[0], 2),
                "cpus": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
