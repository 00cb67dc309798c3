"""Interference and runner overhead on a real GPU with MIG disabled (shared-GPU mode), issue 18.

    python3 benchmarks/bench_real_gpu.py --out DIR [--main synth-resnet50]
        [--backgrounds synth-bert-large,synth-resnet50] [--duration-ms 5000] [--reps 5]
        [--accuracy] [--deadline-s 540]

Read-only towards the GPU's configuration: it never touches MIG mode, instances, clocks or
resets; it queries NVML and nvidia-smi and runs CUDA work through the embedded harness.

Three measurements of the same main benchmark (Offline, the GPU's UUID as CUDA_VISIBLE_DEVICES,
--allow-shared-gpu), interleaved for --reps repetitions in a rotating order (ACB, CBA, BAC, ...;
with M: AMCB, CBMA, MBAC):
  A  the main alone, launched by hand;
  C  the main launched by hand once the backgrounds (launched by hand as the runner launches
     them: Offline, min_query_count 1, min_duration --bg-duration-ms) are all in their timed
     phase, after the runner's start_time_buffer;
  B  the main launched by heteromig's runner (playbooks/hetero_run.yml, allow_shared_gpu) with
     the same backgrounds, as a list;
  M  (with --kinds ...M) the main alone through the runner (background_benchmarks: none): its
     result.json's gpu_activity holds the runner's own NVML samples of the main alone. (The
     reports do not compare B with M: a shared-GPU run is never an isolated reference there.)
Each measurement keeps the main's LoadGen samples/s and validity, and the GPU's utilisation and
memory (nvidia-smi --query-gpu=utilization.gpu,memory.used -lms 250, sampled all along) during
the main's timed phase. Figures: median and min-max of A, C, B; interference C/A and runner
overhead B/C at the median; A's noise band (max-min)/median against the interference.

--accuracy first runs AccuracyOnly for each GPU model and target (float64 reference).
Writes DIR/real_gpu.json after every measurement (a killed run keeps what it measured). Each
runner run (B, M) keeps its result.json as DIR/r<rep>-<kind>-result.json and its reports
(hetero_report callback: summary.md, report.html, ...) under DIR/reports/<run_id>/; the
measurement records the runner's own gpu_activity figures of the main's timed window.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HARNESS = "ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_harness"
MARKER = re.compile(rb"running actual test\.\s*$", re.M)
START_BUFFER_S = 2.0  # tests/hardware/shared-gpu.yml's heteromig_hetero_start_time_buffer
ORDERS = ("AMCB", "CBMA", "MBAC")


# ------------------------------------------------------------------------------ the GPU
def gpu_facts() -> dict[str, Any]:
    """Read-only: name, UUID, driver, memory and MIG mode of GPU 0 (refuses MIG enabled)."""
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        if pynvml.nvmlDeviceGetMigMode(handle)[0]:
            sys.exit("this benchmark is for a GPU with MIG disabled (shared-GPU mode)")
        return {
            "name": str(pynvml.nvmlDeviceGetName(handle)),
            "uuid": str(pynvml.nvmlDeviceGetUUID(handle)),
            "driver": str(pynvml.nvmlSystemGetDriverVersion()),
            "memory_total_mib": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) >> 20,
            "mig_mode": "disabled",
        }
    finally:
        pynvml.nvmlShutdown()


class Sampler:
    """nvidia-smi's utilisation and memory every 250 ms, stamped on arrival."""

    def __init__(self, path: Path) -> None:
        self.samples: list[tuple[float, int, int]] = []
        self.path = path
        self.proc = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                "-lms",
                "250",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.path, "w", encoding="utf-8") as log:
            log.write("time,utilization_gpu_pct,memory_used_mib\n")
            for line in self.proc.stdout:
                parts = [p.strip() for p in line.split(",")]
                try:
                    sample = (time.time(), int(parts[0]), int(parts[1]))
                except (ValueError, IndexError):
                    continue
                self.samples.append(sample)
                log.write("%.3f,%d,%d\n" % sample)
                log.flush()

    def window(self, start: float, end: float) -> dict[str, Any]:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if not inside:
            return {"samples": 0}
        util = sorted(s[1] for s in inside)
        return {
            "samples": len(inside),
            "util_median": statistics.median(util),
            "util_p10": util[len(util) // 10],
            "util_min": util[0],
            "util_busy_ge_90_fraction": round(sum(u >= 90 for u in util) / len(util), 3),
            "memory_used_max_mib": max(s[2] for s in inside),
        }

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# ------------------------------------------------------------------------------ the harness
def harness(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", HARNESS, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def run_args(
    model: str,
    log_dir: Path,
    engines: Path,
    duration_ms: int,
    background: bool,
    mode: str = "PerformanceOnly",
    accuracy: str = "99",
) -> list[str]:
    """The arguments heteromig_synthetic.yml renders for a main or a background."""
    args = [
        "run",
        "--model",
        model,
        "--scenario",
        "Offline",
        "--mode",
        mode,
        "--accuracy-target",
        accuracy,
        "--min-duration-ms",
        str(duration_ms),
    ]
    if background:
        args += ["--min-query-count", "1"]
    return [
        *args,
        "--allow-shared-gpu",
        "--print-timestamps",
        "--log-dir",
        str(log_dir),
        "--engine-dir",
        str(engines),
    ]


def main_result(log_dir: Path) -> dict[str, Any]:
    """samples/s, validity and the timed window from the harness's record of the main."""
    record = json.loads((log_dir / "heteromig_harness.json").read_text())
    loadgen = record.get("loadgen") or {}
    return {
        "samples_per_second": loadgen.get("samples_per_second"),
        "result_validity": loadgen.get("result_validity"),
        "test_started_at": record.get("test_started_at"),
        "test_ended_at": record.get("test_ended_at"),
        "compute": (record.get("compute") or {}).get("description"),
        "batch": (record.get("warmup") or {}).get("batch_size"),
        "log_dir": str(log_dir),
    }


def finish(proc: subprocess.Popen[bytes], what: str, timeout: float) -> str:
    try:
        output = proc.communicate(timeout=timeout)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0].decode(errors="replace")
        message = "%s did not finish in %.0f s:\n%s" % (what, timeout, output[-3000:])
        raise RuntimeError(message) from None
    if proc.returncode:
        raise RuntimeError("%s exited %d:\n%s" % (what, proc.returncode, output[-3000:]))
    return output


def wait_ready(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    seen = [b""] * len(procs)
    deadline = time.time() + timeout
    ready = [False] * len(procs)
    for proc in procs:
        os.set_blocking(proc.stdout.fileno(), False)  # type: ignore[union-attr]
    while not all(ready):
        if time.time() > deadline:
            raise RuntimeError("backgrounds not ready in %.0f s" % timeout)
        for index, proc in enumerate(procs):
            chunk = proc.stdout.read() or b""  # type: ignore[union-attr]
            seen[index] += chunk
            if MARKER.search(seen[index]):
                ready[index] = True
            elif proc.poll() is not None:
                raise RuntimeError(
                    "background %d exited early:\n%s"
                    % (index, seen[index][-2000:].decode(errors="replace"))
                )
        time.sleep(0.05)


# ------------------------------------------------------------------------------ A, C, B
class Bench:
    def __init__(self, opts: argparse.Namespace, gpu: dict[str, Any]) -> None:
        self.opts = opts
        self.out: Path = opts.out
        self.host_root = self.out / "host"
        self.engines = self.host_root / "engines"
        self.env = dict(
            os.environ,
            CUDA_VISIBLE_DEVICES=gpu["uuid"],
            HETEROMIG_GPU_BACKEND="nvml",
            PYTHONPATH=str(REPO / "collections"),
            PYTHONUNBUFFERED="1",
        )
        self.backgrounds: list[str] = opts.backgrounds

    def build(self, models: set[str], accuracy: str = "99") -> None:
        for model in sorted(models):
            args = ["build-engine", "--model", model, "--scenario", "Offline"]
            args += ["--accuracy-target", accuracy, "--engine-dir", str(self.engines)]
            finish(harness([*args, "--allow-shared-gpu"], self.env), "build " + model, 120)

    def accuracy(self, model: str, target: str) -> dict[str, Any]:
        self.build({model}, target)
        log_dir = self.out / ("accuracy-%s-%s" % (model, target))
        args = run_args(model, log_dir, self.engines, 1000, False, "AccuracyOnly", target)
        started = time.time()
        proc = harness(args, self.env)
        try:
            finish(proc, "AccuracyOnly %s %s" % (model, target), 300)
        except RuntimeError as exc:
            if proc.returncode != 3:  # 3: the check failed (recorded below)
                return {"model": model, "target": target, "error": str(exc)[-1500:]}
        record = json.loads((log_dir / "heteromig_harness.json").read_text())
        return {
            "model": model,
            "target": target,
            "seconds": round(time.time() - started, 1),
            "compute": (record.get("compute") or {}).get("description"),
            "accuracy": record.get("accuracy"),
        }

    def measure_a(self, rep: int) -> dict[str, Any]:
        log_dir = self.out / ("r%d-A" % rep)
        proc = harness(
            run_args(self.opts.main, log_dir, self.engines, self.opts.duration_ms, False), self.env
        )
        finish(proc, "A main", 300)
        return main_result(log_dir)

    def measure_c(self, rep: int) -> dict[str, Any]:
        bgs = [
            harness(
                run_args(
                    model,
                    self.out / ("r%d-C-bg-%d" % (rep, index + 1)),
                    self.engines,
                    self.opts.bg_duration_ms,
                    True,
                ),
                self.env,
            )
            for index, model in enumerate(self.backgrounds)
        ]
        try:
            wait_ready(bgs, 180)
            time.sleep(START_BUFFER_S)
            log_dir = self.out / ("r%d-C-main" % rep)
            proc = harness(
                run_args(self.opts.main, log_dir, self.engines, self.opts.duration_ms, False),
                self.env,
            )
            finish(proc, "C main", 300)
            alive = [bg.poll() is None for bg in bgs]
        finally:
            for bg in bgs:
                if bg.poll() is None:
                    bg.terminate()
            for bg in bgs:
                try:
                    bg.wait(30)
                except subprocess.TimeoutExpired:
                    bg.kill()
                    bg.wait()
        result = main_result(log_dir)
        result["backgrounds_alive_at_main_end"] = alive
        return result

    def measure_b(self, rep: int) -> dict[str, Any]:
        return self.runner_run(rep, "B", self.backgrounds)

    def measure_m(self, rep: int) -> dict[str, Any]:
        return self.runner_run(rep, "M", "none")

    def runner_run(self, rep: int, kind: str, backgrounds: Any) -> dict[str, Any]:
        """The main through playbooks/hetero_run.yml, with ``backgrounds`` (a list or 'none')."""
        run_id = "realgpu-%d-r%d-%s" % (int(time.time()), rep, kind)
        extra = {
            "heteromig_host_root": str(self.host_root),
            "heteromig_hetero_run_id": run_id,
            "heteromig_hetero_main_benchmark": self.opts.main,
            "heteromig_hetero_main_benchmark_duration": self.opts.duration_ms,
            "heteromig_hetero_background_benchmarks": backgrounds,
            "heteromig_hetero_background_benchmark_timeout": self.opts.bg_duration_ms,
            "ansible_python_interpreter": sys.executable,
        }
        env = dict(
            os.environ,
            HETEROMIG_REPORT_DIR=str(self.out / "reports"),
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        )
        playbook = subprocess.run(
            [
                os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
                "playbooks/hetero_run.yml",
                "-i",
                "tests/hardware/shared-gpu.yml",
                "-e",
                json.dumps(extra),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=400,
        )
        (self.out / ("r%d-%s-playbook.log" % (rep, kind))).write_text(
            playbook.stdout + playbook.stderr
        )
        if playbook.returncode:
            raise RuntimeError("hetero_run.yml exited %d" % playbook.returncode)
        records = glob.glob(
            str(REPO / "results" / run_id / "**" / "main" / "heteromig_harness.json"),
            recursive=True,
        )
        if len(records) != 1:
            raise RuntimeError("expected one fetched main record, found %s" % records)
        result = main_result(Path(records[0]).parent)
        result["run_id"] = run_id
        verdicts = re.findall(r"\b(VALID|INVALID)\b", playbook.stdout)
        result["run_verdicts_in_output"] = sorted(set(verdicts))
        host_result = Path(records[0]).parent.parent / "result.json"
        if host_result.is_file():
            shutil.copy(host_result, self.out / ("r%d-%s-result.json" % (rep, kind)))
            result["runner"] = runner_figures(json.loads(host_result.read_text()))
        return result


def runner_figures(host_result: dict[str, Any]) -> dict[str, Any]:
    """The runner's verdict and its own NVML figures of the main's timed window."""
    activity = host_result.get("gpu_activity") or {}
    during = {d.get("key"): d for d in activity.get("during_main") or []}
    series = []
    for raw in activity.get("series") or []:
        stats = during.get(raw.get("key")) or {}
        series.append(
            {
                "key": raw.get("key"),
                "scope": raw.get("scope"),
                "benchmarks": raw.get("benchmarks"),
                "samples_whole_run": len(raw.get("t") or []),
                "util_pct_main": stats.get("util_pct"),
                "mem_used_mib_main": stats.get("mem_used_mib"),
            }
        )
    return {
        "verdict": host_result.get("verdict"),
        "reasons": host_result.get("reasons"),
        "gpu_activity_state": activity.get("state"),
        "gpu_activity_backend": activity.get("backend"),
        "gpu_activity_interval_s": activity.get("interval_s"),
        "main_window": activity.get("main_window"),
        "series": series,
    }


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    median = statistics.median(values)
    return {
        "n": len(values),
        "median": round(median, 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "spread_pct_of_median": round((max(values) - min(values)) / median * 100, 2),
        "values": [round(v, 2) for v in values],
    }


def summarise(measurements: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind: dict[str, list[dict[str, Any]]] = {"A": [], "B": [], "C": [], "M": []}
    for item in measurements:
        if item.get("samples_per_second"):
            by_kind[item["kind"]].append(item)
    summary: dict[str, Any] = {}
    for kind, items in by_kind.items():
        summary[kind] = spread([i["samples_per_second"] for i in items])
        summary[kind]["validity"] = sorted({str(i.get("result_validity")) for i in items})
        utils = [i["gpu"]["util_median"] for i in items if i.get("gpu", {}).get("samples")]
        summary[kind]["gpu_util_median_of_medians"] = statistics.median(utils) if utils else None
        summary[kind]["gpu_util_min_of_medians"] = min(utils) if utils else None
        runner_utils = [
            s["util_pct_main"]["median"]
            for i in items
            for s in (i.get("runner") or {}).get("series") or []
            if (s.get("util_pct_main") or {}).get("median") is not None
        ]
        if runner_utils:  # the runner's own NVML samples (result.json gpu_activity)
            summary[kind]["runner_nvml_util_medians"] = runner_utils
    a, b, c = (summary[k].get("median") for k in "ABC")
    if a and c:
        summary["interference_C_over_A"] = round(c / a, 4)
        summary["interference_outside_A_noise"] = summary["C"]["max"] < summary["A"]["min"]
    if b and c:
        summary["runner_overhead_B_over_C"] = round(b / c, 4)
    return summary


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--main", default="synth-resnet50")
    parser.add_argument(
        "--backgrounds",
        default="synth-bert-large,synth-resnet50",
        type=lambda text: [part for part in text.split(",") if part],
    )
    parser.add_argument("--duration-ms", type=int, default=5000)
    parser.add_argument("--bg-duration-ms", type=int, default=300000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--kinds", default="ACB", help="which of A, C, B, M to measure")
    parser.add_argument(
        "--m-reps", type=int, default=0, help="measure M in the first N repetitions only (0: all)"
    )
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument(
        "--deadline-s", type=float, default=0, help="start no repetition after this many seconds"
    )
    opts = parser.parse_args()
    opts.out = opts.out.resolve()
    opts.out.mkdir(parents=True, exist_ok=True)
    began = time.time()
    gpu = gpu_facts()
    bench = Bench(opts, gpu)
    import torch

    figures: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": os.environ.get("HM_COMMIT", "unknown"),
        "gpu": gpu,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "uptime_before": uptime(),
        "main": opts.main,
        "backgrounds": bench.backgrounds,
        "duration_ms": opts.duration_ms,
        "bg_duration_ms": opts.bg_duration_ms,
        "accuracy": [],
        "measurements": [],
        "errors": [],
    }
    path = opts.out / "real_gpu.json"
    sampler = Sampler(opts.out / "gpu_samples.csv")

    def save() -> None:
        figures["summary"] = summarise(figures["measurements"])
        figures["uptime_after"] = uptime()
        path.write_text(json.dumps(figures, indent=1))

    try:
        if opts.accuracy:
            for model in sorted({opts.main, *bench.backgrounds}):
                for target in ("99", "99.9"):
                    figures["accuracy"].append(bench.accuracy(model, target))
                    print(json.dumps(figures["accuracy"][-1]), flush=True)
                    save()
        bench.build({opts.main, *bench.backgrounds})
        measure = {
            "A": bench.measure_a,
            "B": bench.measure_b,
            "C": bench.measure_c,
            "M": bench.measure_m,
        }
        for rep in range(1, opts.reps + 1):
            if opts.deadline_s and time.time() - began > opts.deadline_s:
                figures["errors"].append("deadline: stopped before repetition %d" % rep)
                break
            order = [k for k in ORDERS[(rep - 1) % len(ORDERS)] if k in opts.kinds]
            if opts.m_reps and rep > opts.m_reps:
                order = [k for k in order if k != "M"]
            for kind in order:
                started = time.time()
                try:
                    result = measure[kind](rep)
                except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
                    figures["errors"].append("rep %d %s: %s" % (rep, kind, str(exc)[-2000:]))
                    print("rep %d %s failed: %s" % (rep, kind, str(exc)[-800:]), flush=True)
                    save()
                    continue
                if result.get("test_started_at"):
                    result["gpu"] = sampler.window(
                        result["test_started_at"], result["test_ended_at"]
                    )
                result.update(kind=kind, rep=rep, wall_s=round(time.time() - started, 1))
                figures["measurements"].append(result)
                print(
                    "rep %d %s: %s samples/s %s, GPU %s"
                    % (
                        rep,
                        kind,
                        result.get("samples_per_second"),
                        result.get("result_validity"),
                        result.get("gpu"),
                    ),
                    flush=True,
                )
                save()
    finally:
        sampler.stop()
        save()
    print(json.dumps(figures["summary"], indent=1))
    reports = sorted(glob.glob(str(REPO / "results" / "realgpu-*")))
    if reports:  # keep the last runner report beside the figures
        shutil.copytree(reports[-1], opts.out / "last-runner-report", dirs_exist_ok=True)


if __name__ == "__main__":
    main()
