"""Issue 5's two real-GPU figures, on a host whose GPU has MIG disabled (shared-GPU mode).

    python3 benchmarks/bench_real_gpu.py --out DIR [--model synth-mlp-large] [--duration-ms 10000]

Read-only towards the GPU's configuration: it never touches MIG mode, instances, clocks or
resets; it only runs CUDA work through the embedded harness (PyTorch on the GPU).

Three measurements of the same main benchmark (Offline, the GPU's UUID as CUDA_VISIBLE_DEVICES):
  A  alone, launched by hand;
  C  launched by hand while the background benchmarks (started by hand, Offline) are in their
     timed phase;
  B  launched by heteromig's runner through playbooks/hetero_run.yml (allow_shared_gpu), with
     the same backgrounds.
Interference ratio = B / A. Runner overhead = B / C (target >= 0.98).
Prints one JSON document and writes it to DIR/real_gpu.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HARNESS = "ansible_collections.heteromig.fleet.plugins.module_utils._loadgen_harness"
BACKGROUNDS = ["synth-conv-1d", "synth-mlp-large", "synth-mlp-small"]
MARKER = re.compile(rb"running actual test\.\s*$", re.M)


def gpu_uuid() -> str:
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        if pynvml.nvmlDeviceGetMigMode(handle)[0]:
            sys.exit("this benchmark is for a GPU with MIG disabled (shared-GPU mode)")
        return str(pynvml.nvmlDeviceGetUUID(handle))
    finally:
        pynvml.nvmlShutdown()


def harness(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", HARNESS, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kwargs,
    )


def run_args(
    model: str, log_dir: Path, engines: Path, duration_ms: int, background: bool
) -> list[str]:
    args = [
        "run",
        "--model",
        model,
        "--scenario",
        "Offline",
        "--mode",
        "PerformanceOnly",
        "--min-duration-ms",
        str(duration_ms),
        "--log-dir",
        str(log_dir),
        "--engine-dir",
        str(engines),
        "--allow-shared-gpu",
    ]
    if background:
        args += ["--min-query-count", "1"]
    return args


def samples_per_second(log_dir: Path) -> float:
    text = (log_dir / "mlperf_log_summary.txt").read_text()
    match = re.search(r"Samples per second\s*:\s*([0-9.e+]+)", text)
    if not match:
        raise SystemExit("no 'Samples per second' in %s" % log_dir)
    return float(match.group(1))


def wait_ready(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    seen = [b""] * len(procs)
    deadline = time.time() + timeout
    ready = [False] * len(procs)
    for proc in procs:
        os.set_blocking(proc.stdout.fileno(), False)  # type: ignore[union-attr]
    while not all(ready):
        if time.time() > deadline:
            raise SystemExit("backgrounds not ready in %.0f s" % timeout)
        for index, proc in enumerate(procs):
            chunk = proc.stdout.read() or b""  # type: ignore[union-attr]
            seen[index] += chunk
            if MARKER.search(seen[index]):
                ready[index] = True
            elif proc.poll() is not None:
                raise SystemExit("background %d exited early:\n%s" % (index, seen[index][-2000:]))
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", default="synth-mlp-large")
    parser.add_argument("--duration-ms", type=int, default=10000)
    opts = parser.parse_args()
    out = opts.out.resolve()
    host_root = out / "host"
    engines = host_root / "engines"
    engines.mkdir(parents=True, exist_ok=True)
    uuid = gpu_uuid()
    env = dict(
        os.environ,
        CUDA_VISIBLE_DEVICES=uuid,
        HETEROMIG_GPU_BACKEND="nvml",
        PYTHONPATH=str(REPO / "collections"),
    )
    figures: dict[str, Any] = {
        "gpu_uuid": uuid,
        "model": opts.model,
        "duration_ms": opts.duration_ms,
        "backgrounds": BACKGROUNDS,
    }

    for model in sorted({opts.model, *BACKGROUNDS}):
        build = harness(
            [
                "build-engine",
                "--model",
                model,
                "--scenario",
                "Offline",
                "--engine-dir",
                str(engines),
                "--allow-shared-gpu",
            ],
            env,
        )
        output = build.communicate()[0]
        if build.returncode:
            raise SystemExit(output.decode(errors="replace"))

    alone = out / "A-alone"
    main_proc = harness(run_args(opts.model, alone, engines, opts.duration_ms, False), env)
    main_out = main_proc.communicate()[0]
    if main_proc.returncode:
        raise SystemExit(main_out.decode(errors="replace")[-3000:])
    figures["A_alone_samples_per_second"] = samples_per_second(alone)

    bg_ms = opts.duration_ms * 6
    bgs = [
        harness(run_args(m, out / ("C-bg-%d" % i), engines, bg_ms, True), env)
        for i, m in enumerate(BACKGROUNDS)
    ]
    try:
        wait_ready(bgs, 300)
        by_hand = out / "C-main-by-hand"
        main_proc = harness(run_args(opts.model, by_hand, engines, opts.duration_ms, False), env)
        main_out = main_proc.communicate()[0]
        if main_proc.returncode:
            raise SystemExit(main_out.decode(errors="replace")[-3000:])
        figures["C_by_hand_under_load_samples_per_second"] = samples_per_second(by_hand)
    finally:
        for proc in bgs:
            proc.terminate()
        for proc in bgs:
            proc.wait(30)

    run_id = "realgpu-%d" % int(time.time())
    playbook = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
            "playbooks/hetero_run.yml",
            "-i",
            "tests/hardware/shared-gpu.yml",
            "-e",
            "heteromig_host_root=%s" % host_root,
            "-e",
            "heteromig_hetero_run_id=%s" % run_id,
            "-e",
            "heteromig_hetero_main_benchmark=%s" % opts.model,
            "-e",
            "heteromig_hetero_main_benchmark_duration=%d" % opts.duration_ms,
            "-e",
            "ansible_python_interpreter=%s" % sys.executable,
        ],
        cwd=REPO,
        env=dict(
            os.environ,
            HETEROMIG_REPORT_DIR=str(out / "reports"),
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    (out / "playbook.log").write_text(playbook.stdout + playbook.stderr)
    if playbook.returncode:
        raise SystemExit("hetero_run.yml failed:\n" + playbook.stdout[-4000:])
    mains = glob.glob(
        str(REPO / "results" / run_id / "**" / "main" / "mlperf_log_summary.txt"), recursive=True
    )
    if len(mains) != 1:
        raise SystemExit("expected one fetched main summary, found %s" % mains)
    figures["B_runner_under_load_samples_per_second"] = samples_per_second(Path(mains[0]).parent)
    figures["interference_ratio_B_over_A"] = round(
        figures["B_runner_under_load_samples_per_second"] / figures["A_alone_samples_per_second"], 4
    )
    figures["runner_overhead_B_over_C"] = round(
        figures["B_runner_under_load_samples_per_second"]
        / figures["C_by_hand_under_load_samples_per_second"],
        4,
    )
    figures["shared_gpu_stdout"] = [
        line for line in playbook.stdout.splitlines() if "SHARED" in line.upper() or "VALID" in line
    ][:20]
    (out / "real_gpu.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
