"""Controller-side overhead of playbooks/hetero_run.yml: wall time minus the run's critical path.

    .venv/bin/python benchmarks/bench_controller_overhead.py --hosts 1 --repeat 3
    .venv/bin/python benchmarks/bench_controller_overhead.py --hosts 16 --repeat 3
    .venv/bin/python benchmarks/bench_controller_overhead.py --hosts 1 --connection local

Each repetition runs the real playbook (discovery, fleet table, hetero run, the report callback
of ansible.cfg) with ``ansible-playbook`` against N hosts of the SSH lab (tests/lab: one sshd per
host on loopback, simulated H100 with 3 MIG slices each: the main benchmark and 2 backgrounds,
tests/fixtures/hetero/fake_bench.py under the real LoadGen, 5 s main run), or against this
machine over the local connection. The critical path is taken from the fetched results: from
the first benchmark launch on any host to the last benchmark exit on any host. Target: under
5 s for one host; for 16 SSH hosts under 1.6x that. Also printed: the CPU seconds of the
controller's own processes (ansible-playbook, its workers, ssh clients) and the 1-minute load
average, because the lab's hosts share this machine's cores with the controller.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (  # noqa: E402
    open_backend,
)
from lab import HostSpec, SshLab  # noqa: E402
from lab.runner import ANSIBLE_CFG  # noqa: E402
from lab.sshlab import LAB_MARKER  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "hetero"


def make_slices(state: Path, count: int) -> None:
    import pynvml

    backend = open_backend("sim", str(state), "1xH100-SXM5-80GB")
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    for _slice in range(count):
        nvml.nvmlGpuInstanceCreateComputeInstance(nvml.nvmlDeviceCreateGpuInstance(handle, 19), 0)
    backend.close()


def hostvars(results: Path, main_ms: int) -> dict[str, Any]:
    return {
        "heteromig_gpu_backend": "sim",
        "heteromig_sim_gpus": "1xH100-SXM5-80GB",
        "heteromig_host_pythonpath": str(ROOT / "collections"),
        "heteromig_results_dir": str(results),
        "heteromig_hetero_harness": "fake_loadgen",
        "heteromig_hetero_harness_profile_dirs": [str(FIXTURES / "profiles")],
        "heteromig_hetero_harness_vars": {"fake_bench": str(FIXTURES / "fake_bench.py")},
        "heteromig_hetero_main_benchmark_duration": main_ms,
        "heteromig_hetero_start_time_buffer": 500,
        "heteromig_hetero_stop_grace": 2000,
    }


def critical_path(results: Path, run_id: str) -> tuple[float, int]:
    first, last, hosts = None, None, 0
    for path in (results / run_id).glob("*/result.json"):
        hosts += 1
        data = json.loads(path.read_text())
        for event in data["timeline"]:
            if event["event"] == "launch":
                first = event["t"] if first is None else min(first, event["t"])
            if event["event"] == "exit":
                last = event["t"] if last is None else max(last, event["t"])
        if data["verdict"] != "VALID":
            raise SystemExit("%s: %s %s" % (path, data["verdict"], data["reasons"]))
    if first is None or last is None:
        raise SystemExit("no timeline in %s" % results)
    return last - first, hosts


def run_once(inventory: Path, results: Path, env: dict[str, str], run_id: str) -> dict[str, float]:
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        str(inventory),
        str(ROOT / "playbooks" / "hetero_run.yml"),
        "-e",
        "heteromig_hetero_run_id=" + run_id,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ansible-playbook, its workers and ssh clients (not the hosts' sshd sessions and modules)
    controller_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit("ansible-playbook failed:\n" + done.stdout[-4000:] + done.stderr[-2000:])
    path, hosts = critical_path(results, run_id)
    return {
        "wall_s": wall,
        "critical_path_s": path,
        "overhead_s": wall - path,
        "hosts": hosts,
        "controller_cpu_s": controller_cpu,
        "loadavg_1m": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--main-ms", type=int, default=5000)
    parser.add_argument("--connection", choices=["ssh", "local"], default="ssh")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (results)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hm-bench-ctl-"))
    results = work / "results"
    env = dict(os.environ)
    env.update(
        {
            "PATH": "%s%s%s" % (Path(sys.executable).parent, os.pathsep, env.get("PATH", "")),
            "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
            "ANSIBLE_NOCOLOR": "1",
        }
    )
    lab = None
    try:
        if args.connection == "ssh":
            names = ["h%02d" % (i + 1) for i in range(args.hosts)]
            lab = SshLab(
                [HostSpec(n, hostvars(results, args.main_ms)) for n in names], work / "lab"
            )
            hosts = {}
            for name in names:
                make_slices(lab.hostdir(name) / "nvml-sim.json", 3)
                hosts[name] = lab.host_vars(name)
            env.update(
                {
                    LAB_MARKER: str(lab.labdir),
                    "ANSIBLE_SSH_CONTROL_PATH_DIR": str(lab.control_dir),
                    "ANSIBLE_LOCAL_TEMP": str(lab.labdir / "tmp"),
                }
            )
        else:
            hosts = {}
            for i in range(args.hosts):
                name = "local%02d" % (i + 1)
                root = work / name
                root.mkdir()
                make_slices(root / "nvml-sim.json", 3)
                hosts[name] = dict(
                    hostvars(results, args.main_ms),
                    ansible_connection="local",
                    ansible_python_interpreter=sys.executable,
                    heteromig_host_root=str(root),
                    heteromig_sim_state=str(root / "nvml-sim.json"),
                )
        inventory = work / "inventory.yml"
        inventory.write_text(yaml.safe_dump({"gpu_hosts": {"hosts": hosts}}, sort_keys=False))
        samples = []
        for index in range(args.repeat):
            sample = run_once(inventory, results, env, "bench-%d" % index)
            samples.append(sample)
            print(json.dumps({k: round(v, 3) for k, v in sample.items()}), flush=True)
        summary = {
            "hosts": args.hosts,
            "connection": args.connection,
            "main_ms": args.main_ms,
            "repeat": args.repeat,
            "median_wall_s": round(statistics.median(s["wall_s"] for s in samples), 2),
            "median_critical_path_s": round(
                statistics.median(s["critical_path_s"] for s in samples), 2
            ),
            "median_overhead_s": round(statistics.median(s["overhead_s"] for s in samples), 2),
            "max_overhead_s": round(max(s["overhead_s"] for s in samples), 2),
            "median_controller_cpu_s": round(
                statistics.median(s["controller_cpu_s"] for s in samples), 2
            ),
            "cpus": os.cpu_count(),
        }
        print(json.dumps(summary))
    finally:
        if lab is not None:
            lab.close(check=False)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
