"""CPU used by the host runner while it waits (the main benchmark's run).

    .venv/bin/python benchmarks/bench_runner_idle.py --seconds 30 --backgrounds 6 --rate 0
    .venv/bin/python benchmarks/bench_runner_idle.py --seconds 30 --backgrounds 6 --rate 100

Starts the real runner with ``--backgrounds`` backgrounds (benchmarks/hetero_writer.py, ready at
once, then writing ``--rate`` lines/s each: 0 is a quiet timed phase, as NVIDIA's harnesses are)
and a main benchmark that runs ``--seconds``. The runner's CPU time (utime + stime from
/proc/<pid>/stat) is sampled when the main benchmark starts and when it ends; the result is that
CPU time over the wall time between, in percent of one core. The lease is renewed every 5 s as
the controller's status polls would. Target: under 2 %.

``--sampling sim`` (the default) samples GPU activity as a real run does (``_gpu_activity``,
every ``--interval`` seconds): the benchmarks run on simulated 1g.10gb MIG slices of an H100
(MIG enabled in a simulator state file), so each sample is a GPM sample of every GPU instance
and a memory reading through the simulator. ``--sampling off`` sets the plan's
``gpu_sample_interval_s`` to 0. Interleave the two for a comparison::

    for i in 1 2 3; do for s in off sim; do
        .venv/bin/python benchmarks/bench_runner_idle.py --seconds 20 --sampling $s; done; done
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "collections"))

import pynvml  # noqa: E402

from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _run_contract as C  # noqa: E402
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _run_control as RC  # noqa: E402
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml import (  # noqa: E402
    _gpu_activity as A,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (  # noqa: E402
    open_backend,
)

WRITER = str(ROOT / "benchmarks" / "hetero_writer.py")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def mig_slices(state: str, count: int) -> list[dict]:
    """``count`` 1g.10gb MIG slices of a simulated H100 (MIG enabled), as the plan names them."""
    backend = open_backend("sim", state, "1xH100-SXM5-80GB")
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    for _n in range(count):
        nvml.nvmlGpuInstanceCreateComputeInstance(nvml.nvmlDeviceCreateGpuInstance(handle, 19), 0)
    slices = []
    for index in range(count):
        mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        slices.append(
            {
                "uuid": nvml.nvmlDeviceGetUUID(mig),
                "profile": "1g.10gb",
                "gpu_index": 0,
                "gpu_instance_id": nvml.nvmlDeviceGetGpuInstanceId(mig),
                "compute_instance_id": 0,
                "mig": True,
            }
        )
    backend.close()
    return slices


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--backgrounds", type=int, default=6)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--sampling", choices=("off", "sim"), default="sim")
    parser.add_argument("--interval", type=float, default=A.DEFAULT_INTERVAL_S)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hm-bench-idle-"))
    run_dir = root / "runs" / "idle"
    state = str(root / "nvml-sim.json")
    slices = mig_slices(state, args.backgrounds + 1)

    def bench(name: str, argv: list[str]) -> dict:
        index = 0 if name == "main" else int(name.split("-")[1])
        return {
            "name": name,
            "role": "main" if name == "main" else "background",
            "benchmark": "writer",
            "scenario": "Offline",
            "action": "run_harness",
            "slice": slices[index],
            "argv": [sys.executable, WRITER, *argv],
            "env": {},
            "log_dir": str(run_dir / name),
        }

    benches = [
        bench("main", ["--rate", "0", "--marker-after", "0", "--duration", str(args.seconds)])
    ]
    benches += [
        bench("bg-%d" % (i + 1), ["--rate", str(args.rate), "--marker-after", "0.05"])
        for i in range(args.backgrounds)
    ]
    plan = {
        "format": C.PLAN_FORMAT,
        "version": C.PLAN_VERSION,
        "run_id": "idle",
        "run_dir": str(run_dir),
        "benchmarks": benches,
        "lease_s": 30.0,
        "choreography": {"start_time_buffer": 0.0, "stop_grace": 2.0},
        "backend": {"name": "sim", "sim_state": state},
        A.PLAN_KEY: args.interval if args.sampling == "sim" else 0,
    }
    try:
        status = RC.start(
            plan, str(root), sys.executable, str(ROOT / "collections"), check_layout_first=False
        )
        pid = status["pid"]
        while status.get("phase") != "main_running":
            status = RC.poll_status(str(run_dir), status.get("seq"), 5.0, 30.0)
        time.sleep(1.0)  # past the main's start-up
        t0, c0 = time.monotonic(), cpu_seconds(pid)
        while True:
            status = RC.poll_status(str(run_dir), None, 5.0, 30.0)  # renews the lease
            bench_main = status["benchmarks"]["main"]
            if bench_main["state"] != "running" or time.monotonic() - t0 > args.seconds - 2:
                break
            time.sleep(5.0)
        t1, c1 = time.monotonic(), cpu_seconds(pid)
        while not status.get("done"):
            status = RC.poll_status(str(run_dir), status.get("seq"), 5.0, 30.0)
        activity = json.loads((run_dir / "result.json").read_text())["gpu_activity"]
        print(
            json.dumps(
                {
                    "backgrounds": args.backgrounds,
                    "lines_per_s_each": args.rate,
                    "window_s": round(t1 - t0, 2),
                    "runner_cpu_s": round(c1 - c0, 3),
                    "runner_cpu_percent_of_one_core": round(100.0 * (c1 - c0) / (t1 - t0), 3),
                    "verdict_phase": status.get("phase"),
                    "sampling": args.sampling,
                    "sampling_state": activity["state"],
                    "sampling_error": activity["error"],
                    "series": len(activity["series"]),
                    "samples_per_series": len(activity["series"][0]["t"])
                    if activity["series"]
                    else 0,
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
            )
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
