"""Realistic hetero_run results for report tests, built from REAL MLPerf LoadGen runs.

:func:`run_hetero` does on this machine what the hetero runner does on a GPU host, with the tiny
CPU SUT (tiny_sut.py) standing in for the benchmarks: it launches the background benchmarks,
waits for each one's readiness marker, launches the main benchmark, waits for it, then stops the
backgrounds that are still running (SIGTERM). Every time stamp is measured; the LoadGen results,
the timed window (``power_begin``/``power_end`` of mlperf_log_detail.txt) and the log files are
real. The result follows docs/hetero_result_contract.md; verdict and reasons follow the rules
the contract describes (exit codes, LoadGen validity, background coverage).

:func:`build_samples` makes the standard set once per directory (cached on disk) and returns
``{name: result}``; tests get it through a session fixture, so unit and integration tests of one
pytest session share one set. Nothing here imports the code under test.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TINY_SUT = Path(__file__).resolve().parent / "tiny_sut.py"
READY_MARKER = "running actual test."
LOG_FILES = (
    "mlperf_log_summary.txt",
    "mlperf_log_detail.txt",
    "mlperf_log_accuracy.json",
    "mlperf_log_trace.json",
)

H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "model": "H100-SXM5-80GB"}
A100 = {"index": 1, "name": "NVIDIA A100-SXM4-80GB", "model": "A100-SXM4-80GB"}


@dataclass
class Bench:
    """One benchmark of a run: what the hetero runner launches on one slice."""

    name: str  # main | bg-1 | bg-2 ...
    benchmark: str
    scenario: str = "Offline"
    profile: str = "1g.10gb"
    action: str = "run_harness"
    args: Sequence[str] = ()  # extra tiny_sut.py arguments
    natural_end: bool = False  # background: let it finish by itself instead of stopping it

    @property
    def role(self) -> str:
        return "main" if self.name == "main" else "background"


@dataclass
class _Proc:
    bench: Bench
    popen: subprocess.Popen[str]
    outdir: Path
    launched_at: float
    ready_at: float | None = None
    perf_start_line_at: float | None = None
    ended_at: float | None = None
    eof_at: float | None = None
    killed_at: float | None = None
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None


def _read(proc: _Proc) -> None:
    assert proc.popen.stdout is not None
    for line in proc.popen.stdout:
        now = time.time()
        proc.lines.append(line.rstrip("\n"))
        if proc.ready_at is None and line.rstrip().endswith(READY_MARKER):
            proc.ready_at = now
        if proc.perf_start_line_at is None and "Perf mode start" in line:
            proc.perf_start_line_at = now
    proc.eof_at = time.time()  # stdout closes when the process exits


def _launch(bench: Bench, rundir: Path) -> _Proc:
    outdir = rundir / bench.name
    outdir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-u",
        str(TINY_SUT),
        "--scenario",
        bench.scenario,
        "--outdir",
        str(outdir),
        *bench.args,
    ]
    popen = subprocess.Popen(
        argv,
        cwd=outdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    proc = _Proc(bench, popen, outdir, launched_at=time.time())
    proc.reader = threading.Thread(target=_read, args=(proc,), daemon=True)
    proc.reader.start()
    return proc


def _finish(proc: _Proc, timeout: float) -> None:
    try:
        proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        proc.popen.wait()
    if proc.reader is not None:
        proc.reader.join(timeout=5)
    if proc.ended_at is None:
        proc.ended_at = proc.eof_at or time.time()


# ------------------------------------------------------------------------------ LoadGen logs


def read_mllog(path: Path) -> dict[str, Any]:
    """``{key: value}`` of the ``:::MLLOG`` lines of a LoadGen detail log (last value wins)."""
    values: dict[str, Any] = {}
    errors = 0
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return values
    for line in text.splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG ") :])
        except ValueError:
            continue  # a line torn by a kill
        values[entry["key"]] = entry.get("value")
        if entry.get("metadata", {}).get("is_error"):
            errors += 1
    values["_error_lines"] = errors
    return values


def power_time(text: str) -> float:
    """LoadGen's power_begin/power_end (``MM-DD-YYYY HH:MM:SS.mmm``, UTC) as epoch seconds."""
    dt = datetime.datetime.strptime(text, "%m-%d-%Y %H:%M:%S.%f")
    return dt.replace(tzinfo=datetime.UTC).timestamp()


def loadgen_of(outdir: Path, scenario: str) -> dict[str, Any]:
    log = read_mllog(outdir / "mlperf_log_detail.txt")
    metric = None
    if scenario == "Offline" and "result_samples_per_second" in log:
        metric = {
            "name": "samples_per_second",
            "value": float(log["result_samples_per_second"]),
            "unit": "samples/s",
        }
    elif scenario == "Server" and "result_completed_samples_per_sec" in log:
        metric = {
            "name": "completed_samples_per_second",
            "value": float(log["result_completed_samples_per_sec"]),
            "unit": "samples/s",
        }
    elif scenario == "SingleStream" and "result_90.00_percentile_latency_ns" in log:
        metric = {
            "name": "p90_latency_ns",
            "value": float(log["result_90.00_percentile_latency_ns"]),
            "unit": "ns",
        }
    latency = {
        key: log.get("result_%s_percentile_latency_ns" % pct)
        for key, pct in (("p50", "50.00"), ("p90", "90.00"), ("p99", "99.00"))
        if log.get("result_%s_percentile_latency_ns" % pct) is not None
    }
    return {
        "result_validity": log.get("result_validity"),
        "metric": metric,
        "latency_ns": latency,
        "min_duration_satisfied": log.get("result_min_duration_met"),
        "min_queries_satisfied": log.get("result_min_queries_met"),
        "early_stopping_met": log.get("early_stopping_met"),
        "log_files": [n for n in LOG_FILES if (outdir / n).exists()],
        "_power": (log.get("power_begin"), log.get("power_end")),
        "_invalid_reason": log.get("result_invalid_reason"),
        "_mode": log.get("effective_test_mode"),
    }


# ------------------------------------------------------------------------------ one run


def _slice(host: str, gpu: Mapping[str, Any], bench: Bench, n: int) -> dict[str, Any]:
    sizes = {"1g.10gb": 1, "1g.20gb": 2, "2g.20gb": 2, "3g.40gb": 4}
    return {
        "uuid": "MIG-%s" % uuid.uuid5(uuid.NAMESPACE_URL, "%s/%s/%d" % (host, gpu["model"], n)),
        "profile": bench.profile,
        "gpu_index": gpu["index"],
        "gpu_instance_id": 7 + n,
        "compute_instance_id": 0,
        "placement": {"start": n, "size": sizes.get(bench.profile, 1)},
    }


def run_hetero(
    rundir: Path,
    *,
    host: str,
    run_id: str,
    gpu: Mapping[str, Any],
    main: Bench,
    backgrounds: Sequence[Bench] = (),
    end_buffer_s: float = 0.15,
) -> dict[str, Any]:
    """Run main + backgrounds for real; return the contract-shaped result (see module doc)."""
    rundir.mkdir(parents=True, exist_ok=True)
    gpu = {**gpu, "uuid": "GPU-%s" % uuid.uuid5(uuid.NAMESPACE_URL, "%s/%s" % (host, gpu["model"]))}
    events: list[dict[str, Any]] = []
    bgs = [_launch(b, rundir) for b in backgrounds]
    deadline = time.time() + 30
    while (
        any(p.ready_at is None and p.popen.poll() is None for p in bgs) and time.time() < deadline
    ):
        time.sleep(0.005)
    if bgs:
        events.append(
            {"t": time.time(), "event": "phase", "benchmark": None, "detail": "backgrounds ready"}
        )
    main_proc = _launch(main, rundir)
    _finish(main_proc, timeout=60)
    events.append(
        {
            "t": main_proc.ended_at,
            "event": "phase",
            "benchmark": None,
            "detail": "main benchmark ended",
        }
    )
    time.sleep(end_buffer_s)
    for proc in bgs:
        if proc.bench.natural_end:
            _finish(proc, timeout=30)
    for proc in bgs:
        if proc.popen.poll() is None:
            proc.killed_at = time.time()
            os.killpg(proc.popen.pid, signal.SIGTERM)
    for proc in bgs:
        _finish(proc, timeout=10)
        if proc.killed_at is not None:
            proc.ended_at = proc.killed_at

    modes: dict[str, Any] = {}

    def bench_result(proc: _Proc, n: int) -> dict[str, Any]:
        lg = loadgen_of(proc.outdir, proc.bench.scenario)
        begin, end = lg.pop("_power")
        lg.pop("_invalid_reason")
        modes[proc.bench.name] = lg.pop("_mode")
        window = None
        if begin and end:
            window = {
                "begin": power_time(begin),
                "end": power_time(end),
                "source": "power_begin/power_end",
            }
        rc = proc.popen.returncode
        killed = proc.killed_at is not None
        name = proc.bench.name
        events.append(
            {
                "t": proc.launched_at,
                "event": "launch",
                "benchmark": name,
                "detail": proc.bench.benchmark,
            }
        )
        if proc.ready_at is not None:
            events.append(
                {"t": proc.ready_at, "event": "ready", "benchmark": name, "detail": READY_MARKER}
            )
        if window:
            events.append(
                {
                    "t": window["begin"],
                    "event": "timed_begin",
                    "benchmark": name,
                    "detail": "power_begin",
                }
            )
            events.append(
                {"t": window["end"], "event": "timed_end", "benchmark": name, "detail": "power_end"}
            )
        if killed:
            events.append(
                {
                    "t": proc.killed_at,
                    "event": "kill",
                    "benchmark": name,
                    "detail": "SIGTERM after main ended",
                }
            )
        else:
            events.append(
                {
                    "t": proc.ended_at,
                    "event": "exit",
                    "benchmark": name,
                    "detail": "exit code %s" % rc,
                }
            )
        return {
            "name": name,
            "role": proc.bench.role,
            "benchmark": proc.bench.benchmark,
            "scenario": proc.bench.scenario,
            "action": proc.bench.action,
            "slice": _slice(host, gpu, proc.bench, n),
            "command": list(proc.popen.args),  # type: ignore[arg-type]
            "exit_code": None if killed else rc,
            "signal": "SIGTERM" if killed else None,
            "launched_at": proc.launched_at,
            "ready_at": proc.ready_at,
            "ended_at": proc.ended_at,
            "timed_window": window,
            "loadgen": lg,
            "log_dir": str(proc.outdir),
            "fetched_dir": str(proc.outdir),
        }

    main_result = bench_result(main_proc, 0)
    bg_results = [bench_result(p, i + 1) for i, p in enumerate(bgs)]
    events.sort(key=lambda e: e["t"])

    reasons = []
    if main_result["exit_code"] != 0:
        reasons.append("main benchmark exited %s" % main_result["exit_code"])
    validity = main_result["loadgen"]["result_validity"]
    accuracy_run = modes.get("main") == "AccuracyOnly"  # LoadGen judges no validity there
    if accuracy_run and "accuracy.txt" not in os.listdir(main_proc.outdir):
        reasons.append("accuracy run wrote no accuracy.txt")
    if validity != "VALID" and not (accuracy_run and main_result["exit_code"] == 0):
        detail = []
        lg = main_result["loadgen"]
        for key, text in (
            ("min_duration_satisfied", "min duration"),
            ("min_queries_satisfied", "min queries"),
            ("early_stopping_met", "early stopping"),
        ):
            if lg.get(key) is False:
                detail.append("%s not satisfied" % text)
        reasons.append(
            "main benchmark LoadGen result %s%s"
            % (validity or "missing", " (%s)" % ", ".join(detail) if detail else "")
        )
    window = main_result["timed_window"]
    for bg in bg_results:
        if window is None:
            break
        if bg["ready_at"] is None or bg["ready_at"] > window["begin"]:
            reasons.append(
                "%s (%s) was not ready when the main timed phase began"
                % (bg["name"], bg["benchmark"])
            )
        elif bg["ended_at"] < window["end"]:
            reasons.append(
                "%s (%s) ended %.2f s before the main timed phase ended"
                % (bg["name"], bg["benchmark"], window["end"] - bg["ended_at"])
            )
    hostdir = rundir
    result = {
        "changed": True,
        "run_id": run_id,
        "host": host,
        "verdict": "VALID" if not reasons else "INVALID",
        "reasons": reasons,
        "shared_gpu": False,
        "harness": "heteromig_synthetic",
        "gpu": gpu,
        "results_dir": str(hostdir),
        "main": main_result,
        "backgrounds": bg_results,
        "timeline": events,
        "expected_duration_s": round(
            (main_proc.ended_at or 0) - min(p.launched_at for p in [main_proc, *bgs]), 3
        ),
    }
    (rundir / "result.json").write_text(json.dumps(result, indent=1))
    return result


# ------------------------------------------------------------------------------ standard set

_OFF = ("--min-duration-ms", "500", "--expected-qps", "2000", "--rate", "2000")
_BG_LONG = (
    "--min-duration-ms",
    "20000",
    "--expected-qps",
    "800",
    "--rate",
    "800",
    "--min-query-count",
    "1",
)
_BG_NATURAL = (
    "--min-duration-ms",
    "1000",
    "--expected-qps",
    "800",
    "--rate",
    "800",
    "--min-query-count",
    "1",
)
_BG_SHORT = (
    "--min-duration-ms",
    "50",
    "--expected-qps",
    "800",
    "--rate",
    "800",
    "--min-query-count",
    "1",
    "--warmup-s",
    "0",
)

SAMPLE_RUN_ID = "20261122T051500Z-ab12cd"
ISOLATED_RUN_ID = "20261122T050000Z-iso001"

# name: (host, gpu, run_id, main, backgrounds)
SAMPLES: dict[str, tuple[str, Mapping[str, Any], str, Bench, tuple[Bench, ...]]] = {
    # VALID: two backgrounds cover the main timed phase (one killed after main, one ends later)
    "valid": (
        "dgx-h100-01",
        H100,
        SAMPLE_RUN_ID,
        Bench("main", "synth-resnet50", "Offline", "1g.10gb", args=_OFF),
        (
            Bench("bg-1", "synth-bert", "Offline", "1g.10gb", args=_BG_LONG),
            Bench("bg-2", "synth-dlrm", "Offline", "2g.20gb", args=_BG_NATURAL, natural_end=True),
        ),
    ),
    # the same benchmark alone on the same slice profile: the isolated reference
    "isolated": (
        "dgx-h100-01",
        H100,
        ISOLATED_RUN_ID,
        Bench("main", "synth-resnet50", "Offline", "1g.10gb", args=_OFF),
        (),
    ),
    # INVALID: LoadGen says min duration not met (expected QPS far too low), and the background
    # ends before the main timed phase does
    "invalid": (
        "dgx-h100-02",
        H100,
        SAMPLE_RUN_ID,
        Bench(
            "main",
            "synth-resnet50",
            "Offline",
            "1g.10gb",
            args=(
                "--min-duration-ms",
                "400",
                "--expected-qps",
                "100",
                "--rate",
                "4000",
                "--warmup-s",
                "0.3",
            ),
        ),
        (Bench("bg-1", "synth-bert", "Offline", "1g.10gb", args=_BG_SHORT),),
    ),
    # VALID Server run on an A100
    "server": (
        "dgx-a100-01",
        A100,
        SAMPLE_RUN_ID,
        Bench(
            "main",
            "synth-bert",
            "Server",
            "1g.10gb",
            args=(
                *("--min-duration-ms", "1300", "--min-query-count", "100"),
                *("--target-qps", "400", "--target-latency-ms", "200"),
            ),
        ),
        (Bench("bg-1", "synth-resnet50", "Offline", "1g.10gb", args=_BG_LONG),),
    ),
    # INVALID: the main benchmark crashes (exit 1) mid-run, no LoadGen result
    "crash": (
        "dgx-h100-03",
        H100,
        SAMPLE_RUN_ID,
        Bench(
            "main", "synth-resnet50", "Offline", "1g.10gb", args=(*_OFF, "--crash-after", "0.25")
        ),
        (Bench("bg-1", "synth-bert", "Offline", "1g.10gb", args=_BG_LONG),),
    ),
    # for the submission export: accuracy run and the compliance audits of the "valid" benchmark
    "accuracy": (
        "dgx-h100-01",
        H100,
        SAMPLE_RUN_ID,
        Bench(
            "main",
            "synth-resnet50",
            "Offline",
            "1g.10gb",
            args=(*_OFF, "--mode", "AccuracyOnly", "--accuracy-txt"),
        ),
        (Bench("bg-1", "synth-bert", "Offline", "1g.10gb", args=_BG_LONG),),
    ),
    "test01": (
        "dgx-h100-01",
        H100,
        SAMPLE_RUN_ID,
        Bench(
            "main",
            "synth-resnet50",
            "Offline",
            "1g.10gb",
            "run_audit_test01",
            args=(*_OFF, "--audit", "TEST01"),
        ),
        (Bench("bg-1", "synth-bert", "Offline", "1g.10gb", args=_BG_LONG),),
    ),
    "test04": (
        "dgx-h100-01",
        H100,
        SAMPLE_RUN_ID,
        Bench(
            "main",
            "synth-resnet50",
            "Offline",
            "1g.10gb",
            "run_audit_test04",
            args=(*_OFF, "--audit", "TEST04"),
        ),
        (Bench("bg-1", "synth-bert", "Offline", "1g.10gb", args=_BG_LONG),),
    ),
}


# The verdict each sample is made for. Real runs on a busy machine can miss it (a Server run
# that cannot keep its latency, a background that ends early): such a sample is run again.
INTENDED = {"invalid": "INVALID", "crash": "INVALID"}
ATTEMPTS = 3


def build_samples(basedir: Path) -> dict[str, dict[str, Any]]:
    """Run every sample of :data:`SAMPLES` once (cached in ``basedir``); ``{name: result}``."""
    basedir.mkdir(parents=True, exist_ok=True)
    done = basedir / "samples.json"
    with (basedir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return json.loads(done.read_text())
        results = {}
        for name, (host, gpu, run_id, main, backgrounds) in SAMPLES.items():
            for attempt in range(1, ATTEMPTS + 1):
                rundir = basedir / name / ("try%d" % attempt) / host
                result = run_hetero(
                    rundir, host=host, run_id=run_id, gpu=gpu, main=main, backgrounds=backgrounds
                )
                if result["verdict"] == INTENDED.get(name, "VALID"):
                    break
            else:
                raise RuntimeError(
                    "sample %r came out %s after %d runs (machine too busy?): %s"
                    % (name, result["verdict"], ATTEMPTS, result["reasons"])
                )
            results[name] = result
        done.write_text(json.dumps(results, indent=1))
        return results


def as_host(result: Mapping[str, Any], host: str) -> dict[str, Any]:
    """A copy of ``result`` attributed to inventory host ``host`` (for replays in the lab)."""
    copy = json.loads(json.dumps(result))
    copy["host"] = host
    return copy
