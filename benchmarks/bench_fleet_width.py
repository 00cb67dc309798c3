"""Fleet width: 64 hosts' mains at once with forks = 5 (playbooks/hetero_run.yml).

    .venv/bin/python benchmarks/bench_fleet_width.py --hosts 64 --repeat 3
    .venv/bin/python benchmarks/bench_fleet_width.py --hosts 64 --repeat 2 --main-ms 30000

Simulated hosts over the local connection: an inventory generated in a temporary directory,
every host with its own heteromig host root (its runtime, its runs, its simulated H100 cut into
two 1g.10gb MIG slices: the main benchmark on one, a background on the other). The benchmarks
are light stand-ins: tests/fixtures/hetero/fake_bench.py with ``--fake-result VALID`` (it prints
the readiness marker, sleeps through its duration and writes LoadGen-format logs with the power
window, so the run's timed window is the stand-in's own). The real playbook runs with
``-f 5``: every play, the start of every host's run (``wait: false``), then the watches.

Each repetition runs the playbook on one host, then on all of them (interleaved). Measured:

- **Overlap.** Every host's main timed window (result.json ``main.timed_window``) overlaps every
  other one: the latest begin comes before the earliest end.
- **Launch.** A host's launch time: from the start of the task that starts the runs ("Start the
  run on every host") to its main's timed begin. Target: the last host's launch time within
  2x the one-host launch time (median of the one-host runs) plus 10 s.
- **Controller memory.** The peak, sampled every 0.25 s, of the ansible-playbook processes (the
  main process and its forked workers): RSS summed (pages shared by the forks counted in each)
  and PSS summed (the real footprint); also the PSS of the whole process tree below
  ansible-playbook (modules and the processes they start over the local connection; the hosts'
  runners detach from it).

One JSON line per run, then a summary with median and spread, the 1-minute load average with
each line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _campaign_bench import (
    ANSIBLE_PLAYBOOK,
    ROOT,
    TreeMemory,
    loadavg,
    now_utc,
    playbook_env,
    read_timing,
    spread,
    task_start,
)

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend

FIXTURES = ROOT / "tests" / "fixtures" / "hetero"
PLAYBOOK = ROOT / "playbooks" / "hetero_run.yml"
START_TASK = "Start the run on every host (main on one MIG slice, backgrounds on the others)"
WATCH_TASK = "Run the main benchmark on one MIG slice, backgrounds on every other slice"
FORKS = 5


def make_slices(state: Path) -> None:
    import pynvml

    backend = open_backend("sim", str(state), "1xH100-SXM5-80GB")
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    for _slice in range(2):
        nvml.nvmlGpuInstanceCreateComputeInstance(nvml.nvmlDeviceCreateGpuInstance(handle, 19), 0)
    backend.close()


def host_vars(root: Path, results: Path, main_ms: int) -> dict[str, Any]:
    stand_in = ["--fake-result", "VALID", "--warmup", "0.1"]
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_remote_tmp": str(root / ".ansible" / "tmp"),
        "heteromig_host_root": str(root),
        "heteromig_sim_state": str(root / "nvml-sim.json"),
        "heteromig_gpu_backend": "sim",
        "heteromig_sim_gpus": "1xH100-SXM5-80GB",
        "heteromig_host_pythonpath": str(ROOT / "collections"),
        "heteromig_results_dir": str(results),
        "heteromig_hetero_harness": "fake_loadgen",
        "heteromig_hetero_harness_profile_dirs": [str(FIXTURES / "profiles")],
        "heteromig_hetero_harness_vars": {
            "fake_bench": str(FIXTURES / "fake_bench.py"),
            "fake": {"main": stand_in, "bg-1": stand_in},
        },
        "heteromig_hetero_main_benchmark_duration": main_ms,
        "heteromig_hetero_start_time_buffer": 500,
        "heteromig_hetero_stop_grace": 2000,
        "heteromig_hetero_poll_interval": 2000,
    }


def inventory(work: Path, count: int, main_ms: int) -> Path:
    fleet = work / ("fleet-%d" % count)
    results = fleet / "results"
    hosts = {}
    for index in range(count):
        name = "f%03d" % (index + 1)
        root = fleet / name
        root.mkdir(parents=True)
        make_slices(root / "nvml-sim.json")
        hosts[name] = host_vars(root, results, main_ms)
    path = fleet / "inventory.yml"
    path.write_text(yaml.safe_dump({"gpu_hosts": {"hosts": hosts}}, sort_keys=False))
    return path


def run_once(work: Path, inv: Path, count: int, tag: str) -> dict[str, Any]:
    run_id = "fleet-%s" % tag
    timing = work / ("timing-%s.jsonl" % tag)
    env = playbook_env(work, timing, ANSIBLE_LOCAL_TEMP=str(work / "ansible-local"))
    argv = [
        ANSIBLE_PLAYBOOK,
        "-i",
        str(inv),
        "-f",
        str(FORKS),
        str(PLAYBOOK),
        "-e",
        "heteromig_hetero_run_id=" + run_id,
    ]
    load_before = loadavg()
    log = work / ("output-%s.log" % tag)
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )
        with TreeMemory(proc.pid) as memory:
            rc = proc.wait()
    wall = time.monotonic() - start
    if rc != 0:
        raise SystemExit("%s failed (rc %d):\n%s" % (tag, rc, log.read_text()[-5000:]))
    lines = read_timing(timing)
    t_start = task_start(lines, START_TASK)
    t_watch = task_start(lines, WATCH_TASK)
    results = inv.parent / "results" / run_id
    windows = {}
    for path in sorted(results.glob("*/result.json")):
        data = json.loads(path.read_text())
        window = (data["main"] or {}).get("timed_window") or {}
        if data["verdict"] != "VALID" or window.get("begin") is None:
            raise SystemExit("%s: %s %s" % (path, data["verdict"], data["reasons"]))
        windows[data["host"]] = (float(window["begin"]), float(window["end"]))
    if len(windows) != count:
        raise SystemExit("%d results for %d hosts in %s" % (len(windows), count, results))
    begins = [b for b, _e in windows.values()]
    ends = [e for _b, e in windows.values()]
    launch = [b - t_start for b in begins]
    return {
        "hosts": count,
        "tag": tag,
        "playbook_wall_s": round(wall, 2),
        "prepare_s": round(t_start - lines[0]["t"], 2),
        "start_task_s": round(t_watch - t_start, 2),
        "first_launch_s": round(min(launch), 2),
        "last_launch_s": round(max(launch), 2),
        "launch_spread_s": round(max(begins) - min(begins), 2),
        "common_window_s": round(min(ends) - max(begins), 2),
        "all_overlap": max(begins) < min(ends),
        "main_window_s": spread([e - b for b, e in windows.values()]),
        **{k: round(v, 1) for k, v in memory.peak.items()},
        "loadavg_1m_before": load_before,
        "loadavg_1m": loadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--main-ms", type=int, default=30000, help="main_benchmark_duration")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hm-bench-fleet-"))
    try:
        one_inv = inventory(work, 1, args.main_ms)
        wide_inv = inventory(work, args.hosts, args.main_ms)
        ones, wides = [], []
        for index in range(args.repeat):
            one = run_once(work, one_inv, 1, "one-%d" % index)
            print(json.dumps(one), flush=True)
            ones.append(one)
            wide = run_once(work, wide_inv, args.hosts, "wide-%d" % index)
            print(json.dumps(wide), flush=True)
            wides.append(wide)
        one_launch = spread([o["last_launch_s"] for o in ones])["median"]
        bound = 2 * one_launch + 10
        summary = {
            "summary": "fleet_width",
            "date": now_utc(),
            "cpus": os.cpu_count(),
            "hosts": args.hosts,
            "forks": FORKS,
            "main_ms": args.main_ms,
            "repeat": args.repeat,
            "one_host_launch_s": spread([o["last_launch_s"] for o in ones]),
            "last_host_launch_s": spread([w["last_launch_s"] for w in wides]),
            "bound_s": round(bound, 2),
            "launch_met": [w["last_launch_s"] <= bound for w in wides],
            "all_overlap": [w["all_overlap"] for w in wides],
            "common_window_s": spread([w["common_window_s"] for w in wides]),
            "start_task_s": spread([w["start_task_s"] for w in wides]),
            "playbook_wall_s": spread([w["playbook_wall_s"] for w in wides]),
            "controller_rss_mib": spread([w["controller_rss_mib"] for w in wides]),
            "controller_pss_mib": spread([w["controller_pss_mib"] for w in wides]),
            "tree_pss_mib": spread([w["tree_pss_mib"] for w in wides]),
            "one_host_controller_pss_mib": spread([o["controller_pss_mib"] for o in ones]),
            "loadavg_1m": spread([r["loadavg_1m"] for r in ones + wides]),
        }
        print(json.dumps(summary), flush=True)
    finally:
        if args.keep:
            print("work directory kept: %s" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
