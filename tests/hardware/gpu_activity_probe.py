"""Read-only capture: GPU activity sampling through real NVML, against nvidia-smi.

Run on a host with a real NVIDIA GPU and torch with CUDA (the device machine), from the
repository root::

    python3 tests/hardware/gpu_activity_probe.py OUT_DIR

What it does, all read-only (no MIG, clock, persistence or reset change):

1. Probes the NVML calls the sampler relies on and records each answer or NVML error:
   ``nvmlDeviceGetUtilizationRates``, ``nvmlDeviceGetMemoryInfo``, ``nvmlGpmQueryDeviceSupport``,
   ``nvmlGpmMigSampleGet`` (a GPU instance id on a GPU without MIG), ``nvmlGpmSampleGet`` +
   ``nvmlGpmMetricsGet`` (whole GPU), ``nvmlDeviceGetMigDeviceHandleByIndex``.
2. Runs ``_gpu_activity.ActivitySampler`` (the runner's own sampler, through
   ``_gpu_backend.open_backend('nvml')``) over a whole-GPU plan while a torch process loads the
   GPU: idle, full load (bf16 matmuls), half load (busy/sleep 50/50 ms), idle. The load process
   prints when each phase begins and ends.
3. Runs ``nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used -lms 250`` alongside, as
   an independent reading of the same GPU.
4. Runs the sampler over a plan naming a MIG device that does not exist (MIG is disabled), to
   record what it says then.

Writes OUT_DIR/gpu_activity_capture.json and OUT_DIR/nvidia_smi_util.csv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml import (  # noqa: E402
    _gpu_activity as A,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (  # noqa: E402
    nvml_error_text,
    open_backend,
)

LOAD = r"""
import sys, time, torch
x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
y = x @ x
torch.cuda.synchronize()
def phase(name, seconds, duty):
    print("begin", name, repr(time.time()), flush=True)
    end = time.time() + seconds
    while time.time() < end:
        if duty >= 1.0:
            for _ in range(8):
                y = x @ x
            torch.cuda.synchronize()
        else:
            busy_until = time.time() + 0.05
            while time.time() < busy_until:
                y = x @ x
                torch.cuda.synchronize()
            time.sleep(0.05)
    print("end", name, repr(time.time()), flush=True)
phase("full", 6.0, 1.0)
phase("half", 5.0, 0.5)
"""


def probe(calls: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    try:
        value = fn()
    except Exception as exc:  # record NVML's answer, whatever it is
        calls[name] = {
            "ok": False,
            "error": nvml_error_text(exc),
            "code": getattr(exc, "value", None),
        }
        return None
    calls[name] = {"ok": True, "value": value if not isinstance(value, list) else len(value)}
    return value


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    backend = open_backend("nvml")
    nvml = backend.nvml
    gpu = nvml.nvmlDeviceGetHandleByIndex(0)
    uuid = nvml.nvmlDeviceGetUUID(gpu)
    uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
    capture: dict[str, Any] = {
        "driver": nvml.nvmlSystemGetDriverVersion(),
        "nvml_version": nvml.nvmlSystemGetNVMLVersion(),
        "gpu_name": nvml.nvmlDeviceGetName(gpu),
        "gpu_uuid": uuid,
        "arch": nvml.nvmlDeviceGetArchitecture(gpu),
        "mig_mode": list(nvml.nvmlDeviceGetMigMode(gpu)),
        "calls": {},
    }
    calls = capture["calls"]

    def util() -> dict[str, int]:
        rates = nvml.nvmlDeviceGetUtilizationRates(gpu)
        return {"gpu": rates.gpu, "memory": rates.memory}

    probe(calls, "nvmlDeviceGetUtilizationRates(gpu)", util)
    probe(
        calls,
        "nvmlDeviceGetMemoryInfo(gpu)",
        lambda: {
            k: getattr(nvml.nvmlDeviceGetMemoryInfo(gpu), k) for k in ("total", "used", "free")
        },
    )
    support = probe(
        calls,
        "nvmlGpmQueryDeviceSupport(gpu).isSupportedDevice",
        lambda: nvml.nvmlGpmQueryDeviceSupport(gpu).isSupportedDevice,
    )
    probe(
        calls,
        "nvmlDeviceGetMaxMigDeviceCount(gpu)",
        lambda: nvml.nvmlDeviceGetMaxMigDeviceCount(gpu),
    )
    probe(
        calls,
        "nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0)",
        lambda: str(nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0)),
    )
    samples = (
        probe(
            calls,
            "nvmlGpmSampleAlloc x2",
            lambda: [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()],
        )
        if support
        else None
    ) or []
    if samples:
        for gi in (0, 1):
            probe(
                calls,
                "nvmlGpmMigSampleGet(gpu, %d)" % gi,
                lambda gi=gi: bool(nvml.nvmlGpmMigSampleGet(gpu, gi, samples[0])),
            )

        def whole_gpu_gpm() -> dict[str, Any]:
            nvml.nvmlGpmSampleGet(gpu, samples[0])
            time.sleep(0.2)
            nvml.nvmlGpmSampleGet(gpu, samples[1])
            request = nvml.c_nvmlGpmMetricsGet_t()
            request.version = nvml.NVML_GPM_METRICS_GET_VERSION
            request.numMetrics = 1
            request.sample1, request.sample2 = samples[0], samples[1]
            request.metrics[0].metricId = nvml.NVML_GPM_METRIC_GRAPHICS_UTIL
            nvml.nvmlGpmMetricsGet(request)
            return {"nvmlReturn": request.metrics[0].nvmlReturn, "value": request.metrics[0].value}

        probe(
            calls,
            "nvmlGpmSampleGet x2 + nvmlGpmMetricsGet GRAPHICS_UTIL (whole GPU)",
            whole_gpu_gpm,
        )
        for sample in samples:
            nvml.nvmlGpmSampleFree(sample)
    backend.close()

    # 2 + 3: the runner's sampler on the whole GPU, nvidia-smi alongside, torch loading it
    plan = {
        "backend": {"name": "nvml"},
        A.PLAN_KEY: 0.25,
        "benchmarks": [
            {"name": "main", "slice": {"uuid": uuid, "gpu_index": 0, "mig": False}},
        ],
    }
    smi_csv = open(out / "nvidia_smi_util.csv", "w")  # noqa: SIM115 (closed below)
    smi = subprocess.Popen(
        [
            "nvidia-smi",
            "--query-gpu=timestamp,utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
            "-lms",
            "250",
        ],
        stdout=smi_csv,
        stderr=subprocess.STDOUT,
    )
    sampler = A.ActivitySampler(plan)
    sampler.open()
    cpu_in_sample = 0.0
    n_samples = 0

    def run_for(seconds: float) -> None:
        nonlocal cpu_in_sample, n_samples
        end = time.time() + seconds
        while time.time() < end:
            now = time.time()
            if sampler.due(now):
                c0 = time.process_time()
                sampler.sample(now)
                cpu_in_sample += time.process_time() - c0
                n_samples += 1
            time.sleep(max(0.0, min(sampler.next_due, end) - time.time()))

    t_idle = time.time()
    run_for(3.0)
    load = subprocess.Popen(
        [sys.executable, "-c", LOAD], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    while load.poll() is None:
        run_for(0.5)
    run_for(3.0)
    sampler.close()
    smi.terminate()
    smi.wait()
    smi_csv.close()
    load_out = load.stdout.read() if load.stdout else ""
    phases: dict[str, dict[str, float]] = {}
    for line in load_out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("begin", "end"):
            phases.setdefault(parts[1], {})[parts[0]] = float(parts[2])
    capture["sampler"] = sampler.record()
    capture["load"] = {"exit_code": load.returncode, "phases": phases, "output": load_out[-2000:]}
    capture["idle_from"] = t_idle
    capture["sampler_cpu_s_per_sample"] = cpu_in_sample / max(1, n_samples)
    capture["sampler_samples_taken"] = n_samples
    capture["nvidia_smi_exit"] = smi.returncode
    capture["clock_note"] = "nvidia_smi_util.csv timestamps are local time: TZ=%s" % (
        os.environ.get("TZ") or time.strftime("%Z")
    )
    capture["utc_offset_s"] = -time.timezone if not time.daylight else -time.altzone

    # 4: a plan naming a MIG device: MIG is disabled here, so there is none
    mig_plan = {
        "backend": {"name": "nvml"},
        "benchmarks": [
            {
                "name": "main",
                "slice": {
                    "uuid": "MIG-00000000-0000-0000-0000-000000000000",
                    "gpu_index": 0,
                    "gpu_instance_id": 1,
                    "compute_instance_id": 0,
                    "profile": "1g.18gb",
                    "mig": True,
                },
            }
        ],
    }
    mig_sampler = A.ActivitySampler(mig_plan)
    mig_sampler.open()
    mig_sampler.sample()
    mig_sampler.close()
    capture["mig_plan_sampler"] = mig_sampler.record()
    (out / "gpu_activity_capture.json").write_text(
        json.dumps(capture, indent=1, default=str) + "\n"
    )
    print(json.dumps({k: capture[k] for k in ("gpu_name", "mig_mode", "calls")}, default=str))
    print("samples", n_samples, "cpu/sample", capture["sampler_cpu_s_per_sample"])
    print("load", capture["load"]["phases"], "exit", load.returncode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
