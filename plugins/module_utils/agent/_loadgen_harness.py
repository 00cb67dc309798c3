# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The embedded benchmark harness: synthetic models driven by the real MLPerf LoadGen.

Run on a host (installed there by the role heteromig.fleet.host_runtime) as::

    PYTHONPATH=<host root>/lib python3 -m \\
        ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_harness run \\
        --model synth-mlp-small --scenario Offline --engine-dir <host root>/engines \\
        --log-dir /tmp/logs --min-duration-ms 10000

Subcommands: ``run`` (a LoadGen test), ``build-engine`` (an engine for the slice named by
CUDA_VISIBLE_DEVICES), ``models`` (what the harness offers), ``inspect-engine``.

Like NVIDIA's harnesses it warms up, then prints a line ending in ``running actual test.``
right before LoadGen's StartTest. The device comes from CUDA_VISIBLE_DEVICES, looked up through
NVML (HETEROMIG_GPU_BACKEND = nvml or sim, HETEROMIG_SIM_STATE for the simulator); the engine
must have been built for that device's GPU model and MIG profile. A run writes LoadGen's logs
and ``heteromig_harness.json`` into --log-dir.

Exit codes: 0 the test completed (whatever its LoadGen validity: read it from the logs);
1 the run failed; 2 bad input (arguments, device, engine, log directory); 3 an AccuracyOnly
run's outputs failed the accuracy check.

Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import queue
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import HARNESS_PROG
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import (
    _harness_accuracy as _accuracy,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _torch_models
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._engine_store import (
    ENV_SIM_STATE,
    HARNESS_VERSION,
    EngineError,
    SliceTarget,
    TargetError,
    batch_size,
    build_engine,
    compute_slices,
    load_tensors,
    locate_engine,
    precision_for,
    read_engine,
    resolve_target,
    shared_gpu_banner,
    spec_for_target,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._synthetic_models import (
    ACCURACY_TARGETS,
    ALL_MODELS,
    MULTI_STREAM_SAMPLES,
    ModelError,
    SyntheticModel,
    TorchForward,
    check_combination,
    is_torch_model,
    normalize_scenario,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    register_process,
)

PROG = HARNESS_PROG
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ACCURACY = 3

MODES = ("PerformanceOnly", "AccuracyOnly")
# The readiness marker. NVIDIA's C++ harnesses print a line ending in "running actual test."
# right before LoadGen's StartTest, after warm-up; launch_heterogeneous_mig.py waits for it.
MARKER = "[I] [%s] Starting running actual test." % PROG
RESULT_FILE = "heteromig_harness.json"
ACCURACY_FILE = _accuracy.ACCURACY_FILE
LOADGEN_FILES = (
    "mlperf_log_summary.txt",
    "mlperf_log_detail.txt",
    "mlperf_log_accuracy.json",
    "mlperf_log_trace.json",
)

# Defaults where LoadGen's own would not suit short synthetic runs.
DEFAULT_MIN_DURATION_MS = 10000
# LoadGen's early-stopping check needs enough queries to bound the tail latency: at least 64 for
# SingleStream (90th percentile), 662 for MultiStream (99th), about 460 for Server (99th, when no
# query is late). Fewer queries make a run INVALID however fast it is.
DEFAULT_MIN_QUERY_COUNT = {"Offline": 1, "Server": 500, "SingleStream": 100, "MultiStream": 662}
DEFAULT_SERVER_TARGET_QPS = 1000.0
DEFAULT_SERVER_TARGET_LATENCY_NS = 100 * 1000 * 1000
DEFAULT_WARMUP_MS = 300
# Offline: LoadGen issues expected_qps x min_duration x 1.1 samples in one query. The harness
# measures the throughput through LoadGen (calibrate_offline) and asks for this much more, which
# keeps the run past min_duration when the load around it changes. At 1.5 the H100's runs
# reached 1.27-1.4x the calibrated rate (little margin left), and a simulated main on a loaded
# 2-core machine ran past 1.5x when its neighbours ended (INVALID: min duration not satisfied).
OFFLINE_QPS_HEADROOM = 2.0
# Batches run before the warm-up measures (CUDA context, cuDNN autotuning, caches).
WARMUP_COLD_BATCHES = 2
# The calibration test issues at most this many samples, and lasts at least this many batches.
CALIBRATION_MIN_BATCHES = 30
CALIBRATION_MAX_SAMPLES = 500000
# SingleStream/MultiStream: LoadGen stops issuing once min_duration and min_query_count are met,
# and pre-generates queries from the expected latency: under-estimate it.
STREAM_LATENCY_FACTOR = 0.5
MAX_PREGENERATED_QUERIES = 2000000
# LoadGen keeps about this much memory per issued sample (measured with 6.0.17, trace off).
LOADGEN_BYTES_PER_SAMPLE = 220
# TEST01/TEST04-style audit settings (the settings only; no compliance verification here).
AUDIT_TESTS = ("TEST01", "TEST04")


class HarnessError(Exception):
    """A failure with a one-line message and the exit code it maps to."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def info(message: str) -> None:
    sys.stdout.write("[I] [%s] %s\n" % (PROG, message))
    sys.stdout.flush()


def warn(message: str) -> None:
    sys.stdout.write("[W] [%s] %s\n" % (PROG, message))
    sys.stdout.flush()
    sys.stderr.write("%s: warning: %s\n" % (PROG, message))
    sys.stderr.flush()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage goes to --help, not to every error)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, "%s: error: %s (see --help)\n" % (PROG, message))


def _names(name: str) -> List[str]:
    """Both spellings of an option: --min-duration-ms and --min_duration_ms."""
    names = ["--" + name]
    if "-" in name:
        names.append("--" + name.replace("-", "_"))
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("%s must be greater than zero" % text)
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("%s must not be negative" % text)
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise argparse.ArgumentTypeError("%s must be a finite number greater than zero" % text)
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("%s must be between 0 and 1" % text)
    return value


def _mode(text: str) -> str:
    lowered = text.lower()
    for mode in MODES:
        if lowered in (mode.lower(), mode.lower().replace("only", "")):
            return mode
    raise argparse.ArgumentTypeError(
        "unknown mode %r: choose PerformanceOnly or AccuracyOnly" % text
    )


def _add_benchmark_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        "--benchmark",
        dest="model",
        required=True,
        help="synthetic model (see the 'models' command)",
    )
    parser.add_argument(
        "--scenario",
        required=True,
        type=normalize_scenario,
        help="Offline, Server, SingleStream or MultiStream (case-insensitive)",
    )
    parser.add_argument(
        *_names("accuracy-target"),
        dest="accuracy_target",
        default="99",
        help="99 (float16-rounded weights) or 99.9 (float32); default 99",
    )
    parser.add_argument(
        *_names("allow-shared-gpu"),
        dest="allow_shared_gpu",
        action="store_true",
        help="accept a whole GPU (no MIG) in CUDA_VISIBLE_DEVICES: the explicit "
        "'shared GPU, no MIG isolation' mode (engine profile full-gpu)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="heteromig's embedded benchmark harness: synthetic models under MLPerf "
        "LoadGen, one MIG slice per process (CUDA_VISIBLE_DEVICES).",
    )
    parser.add_argument("--version", action="version", version="%s %s" % (PROG, HARNESS_VERSION))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    run = commands.add_parser("run", help="run a LoadGen test on this process's slice")
    _add_benchmark_options(run)
    run.add_argument(
        "--mode",
        type=_mode,
        default="PerformanceOnly",
        help="PerformanceOnly (default) or AccuracyOnly",
    )
    run.add_argument(
        *_names("log-dir"),
        dest="log_dir",
        required=True,
        help="directory for LoadGen's logs and heteromig_harness.json",
    )
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--engine", help="engine file to run")
    where.add_argument(
        *_names("engine-dir"),
        dest="engine_dir",
        help="engine store: the engine for this slice's profile is found there",
    )
    run.add_argument(
        *_names("min-duration-ms"),
        dest="min_duration_ms",
        type=_positive_int,
        default=DEFAULT_MIN_DURATION_MS,
        help="LoadGen min_duration_ms (default %d)" % DEFAULT_MIN_DURATION_MS,
    )
    run.add_argument(
        *_names("max-duration-ms"),
        dest="max_duration_ms",
        type=_non_negative_int,
        default=0,
        help="LoadGen max_duration_ms (default 0: none)",
    )
    run.add_argument(
        *_names("min-query-count"),
        dest="min_query_count",
        type=_positive_int,
        help="LoadGen min_query_count (default: Offline 1, Server 500, "
        "SingleStream 100, MultiStream 662)",
    )
    run.add_argument(
        *_names("server-target-qps"),
        dest="server_target_qps",
        type=_positive_float,
        help="Server target QPS (default %g)" % DEFAULT_SERVER_TARGET_QPS,
    )
    run.add_argument(
        *_names("server-target-latency-ns"),
        dest="server_target_latency_ns",
        type=_positive_int,
        help="Server latency bound at the 99th percentile (default %d ns)"
        % DEFAULT_SERVER_TARGET_LATENCY_NS,
    )
    run.add_argument(
        *_names("offline-expected-qps"),
        dest="offline_expected_qps",
        type=_positive_float,
        help="Offline expected QPS (default: the throughput of a short LoadGen calibration "
        "run, else of the warm-up, x %g)" % OFFLINE_QPS_HEADROOM,
    )
    run.add_argument(
        *_names("single-stream-expected-latency-ns"),
        dest="single_stream_expected_latency_ns",
        type=_positive_int,
        help="SingleStream expected latency (default: from the warm-up)",
    )
    run.add_argument(
        *_names("multi-stream-expected-latency-ns"),
        dest="multi_stream_expected_latency_ns",
        type=_positive_int,
        help="MultiStream expected latency (default: from the warm-up)",
    )
    run.add_argument(
        *_names("print-timestamps"),
        dest="print_timestamps",
        action="store_true",
        help="LoadGen print_timestamps: it prints 'Loadgen :: Perf mode start' at "
        "the start of the timed phase",
    )
    run.add_argument(
        *_names("enable-trace"),
        dest="enable_trace",
        action="store_true",
        help="write LoadGen's mlperf_log_trace.json (large: ~270 bytes per sample)",
    )
    run.add_argument(
        *_names("audit-test"),
        dest="audit_test",
        choices=AUDIT_TESTS,
        help="apply TEST01- or TEST04-style LoadGen settings (no verification)",
    )
    run.add_argument(
        *_names("warmup-ms"),
        dest="warmup_ms",
        type=_non_negative_int,
        default=DEFAULT_WARMUP_MS,
        help="warm-up before the timed phase (default %d ms)" % DEFAULT_WARMUP_MS,
    )
    run.add_argument(
        "--compute",
        choices=_torch_models.COMPUTE_CHOICES,
        default="auto",
        help="auto (default): torch on the CUDA device if torch with CUDA is "
        "present and the device is real, else numpy on the CPU (the GPU models "
        "synth-resnet50 and synth-bert-large need torch with CUDA); torch-cpu: "
        "a GPU model on the CPU (float32, slow)",
    )
    run.add_argument(
        "--threads",
        type=_positive_int,
        help="BLAS/OpenMP threads (default: $OMP_NUM_THREADS, else 1)",
    )
    run.add_argument(
        "--nice",
        type=_non_negative_int,
        default=0,
        help="raise this process's nice value (e.g. for background benchmarks)",
    )
    run.add_argument(
        *_names("inject-output-errors"),
        dest="inject_output_errors",
        type=_fraction,
        default=0.0,
        help="testing aid: corrupt this fraction of the outputs (AccuracyOnly then fails)",
    )
    run.set_defaults(func=cmd_run)

    build = commands.add_parser(
        "build-engine", help="build the engine for this process's slice (CUDA_VISIBLE_DEVICES)"
    )
    _add_benchmark_options(build)
    place = build.add_mutually_exclusive_group(required=True)
    place.add_argument(*_names("engine-dir"), dest="engine_dir", help="engine store")
    place.add_argument("--output", help="engine file to write")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.add_argument("--json", action="store_true", help="print the result as one JSON line")
    build.set_defaults(func=cmd_build)

    models = commands.add_parser("models", help="list the synthetic models")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    inspect = commands.add_parser("inspect-engine", help="print an engine's header")
    inspect.add_argument("engine")
    inspect.set_defaults(func=cmd_inspect)
    return parser


# ---------------------------------------------------------------------------------------------
# Shared steps
# ---------------------------------------------------------------------------------------------
def _check_combination(args: argparse.Namespace) -> Any:
    """The SyntheticModel, or the TorchModel (GPU models: see _plan_torch)."""
    try:
        return check_combination(args.model, args.scenario, args.accuracy_target)
    except ModelError as exc:
        raise HarnessError(str(exc)) from None


def _import_numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise HarnessError(
            "numpy is not installed for %s; the role heteromig.fleet.host_runtime installs it"
            % sys.executable,
            EXIT_FAILED,
        ) from None
    return numpy


def _import_loadgen() -> Any:
    try:
        import mlperf_loadgen
    except ImportError:
        raise HarnessError(
            "MLPerf LoadGen (PyPI mlcommons-loadgen, module mlperf_loadgen) is not installed for "
            "%s; the role heteromig.fleet.host_runtime installs it" % sys.executable,
            EXIT_FAILED,
        ) from None
    return mlperf_loadgen


def prepare_log_dir(path: str) -> str:
    """Create the log directory and prove it is writable; HarnessError otherwise."""
    path = os.path.abspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise HarnessError(
            "log directory %s cannot be created: %s" % (path, exc.strerror or exc)
        ) from None
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".%s-write-test." % PROG):
            pass
    except OSError as exc:
        raise HarnessError(
            "log directory %s is not writable: %s" % (path, exc.strerror or exc)
        ) from None
    return path


def _resolve(args: argparse.Namespace) -> SliceTarget:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        target = resolve_target(visible, allow_shared_gpu=args.allow_shared_gpu)
    except TargetError as exc:
        raise HarnessError(str(exc)) from None
    for message in target.warnings:
        warn(message)
    if target.shared_gpu:
        sys.stdout.write(shared_gpu_banner(target) + "\n")
        sys.stdout.flush()
        sys.stderr.write("%s: warning: SHARED GPU, NO MIG ISOLATION on %s\n" % (PROG, target.uuid))
        sys.stderr.flush()
    return target


def _register_on_simulator(target: SliceTarget, used_memory: int) -> bool:
    """On a simulated host, show this process on its device in NVML, as a CUDA context does."""
    if target.backend != "sim" or not target.uuid:
        return False
    state = os.environ.get(ENV_SIM_STATE)
    if not state:
        raise HarnessError("HETEROMIG_SIM_STATE is not set, but the GPU backend is 'sim'")
    try:
        register_process("sim", state, os.getpid(), target.uuid, sys.executable, used_memory)
    except Exception as exc:  # SimulatorError and OSError alike end the run
        raise HarnessError(
            "cannot register this process on simulated device %s: %s" % (target.uuid, exc)
        ) from None
    return True


def _set_threads(threads: Optional[int]) -> None:
    """Pin BLAS/OpenMP threads before numpy is imported (many harnesses share few cores)."""
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if threads:
            os.environ[variable] = str(threads)
        else:
            os.environ.setdefault(variable, os.environ.get("OMP_NUM_THREADS", "1"))


def _write_json(path: str, data: Dict[str, Any]) -> None:
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % PROG, dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# Compute
# ---------------------------------------------------------------------------------------------
class Compute:
    """Runs a batch of sample indices through the model; returns float32 (n, outputs)."""

    name = "numpy"

    def __init__(self, model: SyntheticModel, weights: Dict[str, Any], data: Any) -> None:
        self.model = model
        self.weights = weights
        self.data = data
        self.np = _import_numpy()

    def __call__(self, indices: Any) -> Any:
        out = self.model.forward(self.weights, self.data[indices])
        return self.np.ascontiguousarray(out, dtype=self.np.float32)

    def describe(self) -> str:
        return "numpy on the CPU"


class TorchCompute(Compute):
    name = "torch"

    def __init__(self, model: SyntheticModel, weights: Dict[str, Any], data: Any) -> None:
        super().__init__(model, weights, data)
        self.forward = TorchForward(model, weights, "cuda")
        self.device_data = self.forward.to_device(data)
        self.torch = self.forward.torch

    def __call__(self, indices: Any) -> Any:
        index = self.torch.as_tensor(indices, device=self.forward.device)
        out = self.forward(self.device_data.index_select(0, index))
        return self.np.ascontiguousarray(out, dtype=self.np.float32)

    def describe(self) -> str:
        torch = self.torch
        return "torch %s on %s (%s)" % (
            torch.__version__,
            self.forward.device,
            torch.cuda.get_device_name(0),
        )


def _plan_torch(
    model: Any, choice: str, target: SliceTarget, scenario: str, mode: str, args: Any
) -> Optional[_torch_models.TorchPlan]:
    """A GPU model's plan (None for the numpy models); choice 'build' checks the memory only."""
    if not is_torch_model(model):
        return None
    precision = precision_for(args.accuracy_target)
    try:
        if choice == "build":
            if target.kind != "cpu" and target.memory_total_mib:
                _torch_models.memory_plan(
                    model,
                    precision,
                    scenario,
                    mode,
                    int(target.memory_total_mib),
                    compute_slices(target.profile),
                    target.shared_gpu,
                    target.describe(),
                )
            return None
        return _torch_models.plan_run(model, choice, target, scenario, mode, precision)
    except _torch_models.GpuModelError as exc:
        raise HarnessError(str(exc)) from None


def make_compute(
    choice: str, model: SyntheticModel, weights: Dict[str, Any], data: Any, target: SliceTarget
) -> Compute:
    """numpy, or torch on the CUDA device when asked for or (auto) when it is really there."""
    if choice == "numpy" or target.kind == "cpu":
        if choice == "torch":
            raise HarnessError("--compute torch needs a device in CUDA_VISIBLE_DEVICES")
        return Compute(model, weights, data)
    if choice == "auto" and target.backend == "sim":
        return Compute(model, weights, data)  # a simulated slice has no CUDA device behind it
    try:
        import torch

        available = bool(torch.cuda.is_available())
    except ImportError:
        available = False
    if not available:
        if choice == "torch":
            raise HarnessError(
                "--compute torch: PyTorch with CUDA is not available to %s for "
                "CUDA_VISIBLE_DEVICES=%s" % (sys.executable, target.visible_devices)
            )
        return Compute(model, weights, data)
    return TorchCompute(model, weights, data)


# ---------------------------------------------------------------------------------------------
# The system under test
# ---------------------------------------------------------------------------------------------
class SystemUnderTest:
    """LoadGen's SUT: a worker thread that batches issued samples and completes them."""

    def __init__(
        self, lg: Any, compute: Compute, max_batch: int, outputs: int, corrupt: float = 0.0
    ) -> None:
        self.lg = lg
        self.np = _import_numpy()
        self.compute = compute
        self.max_batch = max(1, max_batch)
        self.outputs = outputs
        self.corrupt = corrupt
        self.queue: queue.Queue[Optional[List[Any]]] = queue.Queue()
        self.error: Optional[BaseException] = None
        self.completed = 0
        self.thread = threading.Thread(target=self._loop, name="sut-worker", daemon=True)

    # LoadGen callbacks (called on LoadGen's threads)
    def issue(self, samples: Any) -> None:
        self.queue.put(list(samples))

    def flush(self) -> None:
        """Nothing is held back: every batch is completed as soon as it is computed."""

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            batch = item
            stop = False
            # Server: take the queries that queued up meanwhile into the same batch.
            while len(batch) < self.max_batch:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.extend(more)
            for start in range(0, len(batch), self.max_batch):
                self._process(batch[start : start + self.max_batch])
            if stop:
                return

    def _process(self, samples: List[Any]) -> None:
        np = self.np
        indices = np.fromiter((s.index for s in samples), dtype=np.int64, count=len(samples))
        try:
            out = self.compute(indices)
            if self.corrupt > 0:
                out = self._corrupt(indices, out)
        except BaseException as exc:  # LoadGen must still get every response
            if self.error is None:
                self.error = exc
            out = np.zeros((len(samples), self.outputs), dtype=np.float32)
        base = out.ctypes.data
        stride = out.strides[0]
        size = out.shape[1] * out.itemsize
        responses = [
            self.lg.QuerySampleResponse(sample.id, base + row * stride, size)
            for row, sample in enumerate(samples)
        ]
        self.lg.QuerySamplesComplete(responses)
        self.completed += len(samples)

    def _corrupt(self, indices: Any, out: Any) -> Any:
        np = self.np
        hit = (indices % 1000) < round(self.corrupt * 1000)
        if hit.any():
            out = out.copy()
            out[hit] += np.float32(10.0) * (np.abs(out[hit]).max() + 1)
        return out

    def warmup(self, scenario: str, samples: int, milliseconds: int) -> Dict[str, Any]:
        """Run scenario-shaped batches for ``milliseconds`` (at least 3 after 2 cold ones).

        The first batches pay for one-time set-up (CUDA context, cuDNN autotuning, caches), so
        they are run but not measured, and the figures come from the median batch.
        """
        np = self.np
        if scenario == "MultiStream":
            size = MULTI_STREAM_SAMPLES
        elif scenario == "Offline":
            size = self.max_batch
        else:
            size = 1  # SingleStream and Server queries hold one sample
        size = max(1, min(size, samples))
        durations: List[float] = []
        start = time.perf_counter()
        deadline = start + milliseconds / 1000.0
        position = 0
        cold = WARMUP_COLD_BATCHES
        while cold > 0 or len(durations) < 3 or time.perf_counter() < deadline:
            indices = (np.arange(size, dtype=np.int64) + position) % samples
            position += size
            began = time.perf_counter()
            out = self.compute(indices)
            # The responses are part of the per-sample cost (they are not sent: no test runs).
            base, stride = out.ctypes.data, out.strides[0]
            [self.lg.QuerySampleResponse(0, base + row * stride, stride) for row in range(size)]
            if cold > 0:
                cold -= 1
            else:
                durations.append(time.perf_counter() - began)
        elapsed = time.perf_counter() - start
        durations.sort()
        median = durations[len(durations) // 2]
        return {
            "batch_size": size,
            "batches": len(durations) + WARMUP_COLD_BATCHES,
            "seconds": round(elapsed, 6),
            "samples_per_second": round(size / median, 3) if median > 0 else None,
            "batch_latency_ns": int(median * 1e9),
        }


def calibrate_offline(
    lg: Any, sut: Any, qsl: Any, warm: Dict[str, Any], milliseconds: int, log_dir: str
) -> Optional[float]:
    """Offline throughput through LoadGen itself, from a short untimed test before the real one.

    The warm-up times the model alone; LoadGen and the responses add a per-sample cost that
    dominates when the model is fast (a GPU). A short Offline test (print_timestamps off, logs
    in a temporary directory that is removed) measures the whole path under the load around it.
    """
    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.Offline
    settings.mode = lg.TestMode.PerformanceOnly
    # A GPU model's batch takes tens of ms: the test spans enough batches that the first
    # response's latency and the last partial batch do not set the figure.
    batch_ms = float(warm.get("batch_latency_ns") or 0) / 1e6
    settings.min_duration_ms = max(50, milliseconds, int(CALIBRATION_MIN_BATCHES * batch_ms))
    settings.min_query_count = 1
    qps = warm.get("samples_per_second") or 1.0
    qps = min(qps, CALIBRATION_MAX_SAMPLES / (settings.min_duration_ms / 1000.0 * 1.1))
    settings.offline_expected_qps = max(1.0, qps)
    settings.print_timestamps = False
    outdir = tempfile.mkdtemp(prefix=".calibration.", dir=log_dir)
    try:
        log_settings = lg.LogSettings()
        log_settings.log_output.outdir = outdir
        log_settings.log_output.copy_summary_to_stdout = False
        log_settings.enable_trace = False
        lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
        measured = parse_summary(os.path.join(outdir, "mlperf_log_summary.txt"))
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    value = measured.get("samples_per_second")
    return float(value) if value else None


# ---------------------------------------------------------------------------------------------
# LoadGen settings and results
# ---------------------------------------------------------------------------------------------
def loadgen_settings(args: argparse.Namespace, warm: Dict[str, Any]) -> Dict[str, Any]:
    """The TestSettings values of this run (explicit ones, else derived from the warm-up)."""
    scenario = args.scenario
    settings: Dict[str, Any] = {
        "scenario": scenario,
        "mode": args.mode,
        "min_duration_ms": args.min_duration_ms,
        "min_query_count": args.min_query_count or DEFAULT_MIN_QUERY_COUNT[scenario],
        "print_timestamps": bool(args.print_timestamps),
    }
    if args.max_duration_ms:
        settings["max_duration_ms"] = args.max_duration_ms
    floor_ns = max(1000, int(args.min_duration_ms * 1e6 / MAX_PREGENERATED_QUERIES))
    if scenario == "Offline":
        measured = warm.get("loadgen_samples_per_second") or warm.get("samples_per_second")
        settings["offline_expected_qps"] = args.offline_expected_qps or max(
            1.0, round((measured or 1.0) * OFFLINE_QPS_HEADROOM, 3)
        )
    elif scenario == "Server":
        settings["server_target_qps"] = args.server_target_qps or DEFAULT_SERVER_TARGET_QPS
        settings["server_target_latency_ns"] = (
            args.server_target_latency_ns or DEFAULT_SERVER_TARGET_LATENCY_NS
        )
    elif scenario == "SingleStream":
        settings["single_stream_expected_latency_ns"] = args.single_stream_expected_latency_ns or (
            max(floor_ns, int(warm["batch_latency_ns"] * STREAM_LATENCY_FACTOR))
        )
    else:
        settings["multi_stream_expected_latency_ns"] = args.multi_stream_expected_latency_ns or (
            max(floor_ns, int(warm["batch_latency_ns"] * STREAM_LATENCY_FACTOR))
        )
    if args.audit_test == "TEST01":
        settings.update(accuracy_log_probability=0.1, accuracy_log_rng_seed=720381539243781796)
    elif args.audit_test == "TEST04":
        settings.update(performance_issue_same=True, performance_issue_same_index=3)
    return settings


def apply_settings(lg: Any, values: Dict[str, Any]) -> Any:
    settings = lg.TestSettings()
    for key, value in values.items():
        if key == "scenario":
            settings.scenario = getattr(lg.TestScenario, value)
        elif key == "mode":
            settings.mode = getattr(lg.TestMode, value)
        else:
            setattr(settings, key, value)
    return settings


# Headline metric per scenario, as mlperf_log_summary.txt labels it (older LoadGen releases
# printed "Scheduled samples per second" for Server).
_HEADLINE = {
    "Samples per second": "samples_per_second",
    "Completed samples per second": "completed_samples_per_second",
    "Scheduled samples per second": "scheduled_samples_per_second",
    "90.0th percentile latency (ns)": "p90_latency_ns",
    "99.0th percentile latency (ns)": "p99_latency_ns",
}
_PERCENTILE = re.compile(r"^(\d+\.\d+) percentile latency \(ns\)$")


def parse_summary(path: str) -> Dict[str, Any]:
    """Validity, headline metric and latency percentiles from mlperf_log_summary.txt."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    result: Dict[str, Any] = {}
    percentiles: Dict[str, float] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Result is":
            result["result_validity"] = value
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        match = _PERCENTILE.match(key)
        if match:
            percentiles["p%g" % float(match.group(1))] = number
        elif key in _HEADLINE and _HEADLINE[key] not in result:
            result[_HEADLINE[key]] = number
    if percentiles:
        result["latency_ns"] = percentiles
    return result


def check_accuracy(
    model: Any, log_dir: str, data: Any, accuracy_target: str, reference: Any = None
) -> Dict[str, Any]:
    """The accuracy check of _harness_accuracy (LoadGen's outputs against float64)."""
    try:
        return _accuracy.check_accuracy(model, log_dir, data, accuracy_target, reference)
    except _accuracy.AccuracyLogError as exc:
        raise HarnessError(str(exc), EXIT_FAILED) from None


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    model = _check_combination(args)
    log_dir = prepare_log_dir(args.log_dir)
    record_path = os.path.join(log_dir, RESULT_FILE)
    target = _resolve(args)
    torch_plan = _plan_torch(model, args.compute, target, args.scenario, args.mode, args)
    try:
        engine_path, header, payload = locate_engine(
            args.engine_dir, args.engine, args.model, args.scenario, args.accuracy_target, target
        )
    except EngineError as exc:
        raise HarnessError(str(exc)) from None
    registered = _register_on_simulator(target, len(payload) + (256 << 20))
    if args.nice:
        os.nice(args.nice)
    _import_numpy()
    lg = _import_loadgen()
    tensors = load_tensors(header, payload, engine_path)
    data = None if torch_plan else model.inputs()
    if torch_plan:
        compute: Any = _torch_models.TorchModelCompute(model, torch_plan)
    else:
        compute = make_compute(args.compute, model, tensors, data, target)
    record: Dict[str, Any] = {
        "harness": "heteromig_synthetic",
        "harness_version": HARNESS_VERSION,
        "status": "running",
        "pid": os.getpid(),
        "argv": [sys.executable, "-m", __spec__.name if __spec__ else __name__, *sys.argv[1:]],
        "started_at": _now(),
        "model": args.model,
        "scenario": args.scenario,
        "mode": args.mode,
        "accuracy_target": args.accuracy_target,
        "audit_test": args.audit_test,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device": target.as_dict(),
        "shared_gpu": target.shared_gpu,
        "registered_on_simulator": registered,
        "compute": {"kind": compute.name, "description": compute.describe()},
        "engine": {
            "path": engine_path,
            "content_key": header["content_key"],
            "built_for": header["built_for"],
            "precision": header.get("precision"),
            "batch_size": header.get("batch_size"),
        },
        "log_dir": log_dir,
    }
    _write_json(record_path, record)
    info(
        "%s %s: model %s, scenario %s, mode %s, accuracy target %s"
        % (PROG, HARNESS_VERSION, args.model, args.scenario, args.mode, args.accuracy_target)
    )
    info("device: %s (CUDA_VISIBLE_DEVICES=%s)" % (target.describe(), target.visible_devices or ""))
    info(
        "engine: %s (key %s, %s weights, batch %s)"
        % (
            engine_path,
            header["content_key"][:12],
            header.get("precision"),
            header.get("batch_size"),
        )
    )
    info("compute: %s" % compute.describe())

    sut = SystemUnderTest(
        lg,
        compute,
        getattr(compute, "max_batch", None)
        or int(header.get("batch_size") or batch_size(args.scenario, target.profile)),
        model.outputs,
        args.inject_output_errors,
    )

    def load(_indices: Any) -> None:
        """The inputs are generated up front; LoadGen's load and unload have nothing to do."""

    qsl = lg.ConstructQSL(model.qsl_total, model.qsl_performance, load, load)
    handle = lg.ConstructSUT(sut.issue, sut.flush)
    sut.start()
    try:
        return _run_test(args, model, log_dir, record_path, record, lg, sut, qsl, handle, data)
    finally:
        sut.stop()
        lg.DestroySUT(handle)
        lg.DestroyQSL(qsl)


def _run_test(
    args: argparse.Namespace,
    model: SyntheticModel,
    log_dir: str,
    record_path: str,
    record: Dict[str, Any],
    lg: Any,
    sut: SystemUnderTest,
    qsl: Any,
    handle: Any,
    data: Any,
) -> int:
    """Warm up, calibrate, print the marker, run LoadGen's test, check and record the result."""
    warm = sut.warmup(args.scenario, model.qsl_performance, args.warmup_ms)
    info(
        "warm-up: %d batches of %d in %.3f s: %.1f samples/s, %.3f ms per batch"
        % (
            warm["batches"],
            warm["batch_size"],
            warm["seconds"],
            warm["samples_per_second"] or 0,
            warm["batch_latency_ns"] / 1e6,
        )
    )
    if sut.error is not None:
        raise HarnessError("the model failed during warm-up: %s" % sut.error, EXIT_FAILED)
    calibrate = (
        args.scenario == "Offline"
        and args.mode == "PerformanceOnly"
        and not args.offline_expected_qps
        and args.warmup_ms > 0
    )
    if calibrate:
        before = sut.completed
        measured = calibrate_offline(lg, handle, qsl, warm, args.warmup_ms, log_dir)
        warm["loadgen_samples_per_second"] = measured
        warm["loadgen_calibration_samples"] = sut.completed - before
        sut.completed = before
        info(
            "calibration through LoadGen: %s samples/s"
            % ("%.1f" % measured if measured else "unknown")
        )
        if sut.error is not None:
            raise HarnessError("the model failed during calibration: %s" % sut.error, EXIT_FAILED)
    values = loadgen_settings(args, warm)
    settings = apply_settings(lg, values)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = log_dir
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = bool(args.enable_trace)
    record.update(warmup=warm, settings=values)
    info("LoadGen settings: %s" % ", ".join("%s=%s" % item for item in sorted(values.items())))
    if args.scenario == "Offline" and args.mode == "PerformanceOnly":
        samples = int(values["offline_expected_qps"] * args.min_duration_ms / 1000.0 * 1.1)
        megabytes = samples * LOADGEN_BYTES_PER_SAMPLE / 1e6
        message = (
            "Offline: LoadGen issues about %d samples in one query (~%.0f MB of LoadGen memory)"
        )
        if megabytes > 2000:
            warn(
                message % (samples, megabytes) + ": shorten min_duration or lower the expected QPS"
            )
        else:
            info(message % (samples, megabytes))

    record["marker"] = {"line": MARKER, "time": time.time()}
    _write_json(record_path, record)
    sys.stdout.write(MARKER + "\n")
    sys.stdout.flush()
    started = time.time()
    lg.StartTestWithLogSettings(handle, qsl, settings, log_settings)
    ended = time.time()
    sys.stdout.flush()
    info("Finished running actual test (%.3f s, %d samples)." % (ended - started, sut.completed))
    record.update(
        test_started_at=started,
        test_ended_at=ended,
        samples_completed=sut.completed,
        log_files={
            name: os.path.join(log_dir, name)
            for name in LOADGEN_FILES
            if os.path.exists(os.path.join(log_dir, name))
        },
        loadgen=parse_summary(os.path.join(log_dir, "mlperf_log_summary.txt")),
    )
    if sut.error is not None:
        record.update(status="failed", error="model failed during the test: %s" % sut.error)
        _write_json(record_path, record)
        raise HarnessError(record["error"], EXIT_FAILED)
    code = EXIT_OK
    if args.mode == "AccuracyOnly":
        accuracy = check_accuracy(
            model,
            log_dir,
            data,
            args.accuracy_target,
            getattr(sut.compute, "accuracy_reference", None),
        )
        record["accuracy"] = accuracy
        record["log_files"]["accuracy.txt"] = os.path.join(log_dir, ACCURACY_FILE)
        info(accuracy["summary"])
        if not accuracy["passed"]:
            sys.stderr.write("%s: error: accuracy check FAILED: %s\n" % (PROG, accuracy["summary"]))
            code = EXIT_ACCURACY
    else:
        metrics = record["loadgen"]
        headline = ", ".join(
            "%s=%s" % (key, value)
            for key, value in sorted(metrics.items())
            if key not in ("result_validity", "latency_ns")
        )
        info("result: %s (%s)" % (metrics.get("result_validity", "unknown"), headline))
    record.update(status="completed", exit_code=code, ended_at=_now())
    _write_json(record_path, record)
    return code


def cmd_build(args: argparse.Namespace) -> int:
    _check_combination(args)
    target = _resolve(args)
    started = time.time()
    spec = spec_for_target(args.model, args.scenario, args.accuracy_target, target)
    _plan_torch(_check_combination(args), "build", target, args.scenario, "PerformanceOnly", args)
    registered = _register_on_simulator(target, 256 << 20)
    _import_numpy()
    try:
        result = build_engine(spec, args.engine_dir, args.output, target, args.force)
    except EngineError as exc:
        raise HarnessError(str(exc)) from None
    result.update(
        harness_version=HARNESS_VERSION,
        device=target.as_dict(),
        shared_gpu=target.shared_gpu,
        registered_on_simulator=registered,
        pid=os.getpid(),
        started_at=started,
        finished_at=time.time(),
    )
    if args.json:
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    else:
        info("engine %s: %s (%s)" % (result["action"], result["path"], result["reason"]))
        info("content key %s, built for %s" % (result["content_key"], result["built_for"]))
    sys.stdout.flush()
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    described = [ALL_MODELS[name].describe() for name in sorted(ALL_MODELS)]
    if args.json:
        sys.stdout.write(json.dumps(described, indent=1, sort_keys=True) + "\n")
        return EXIT_OK
    for model in described:
        sys.stdout.write(
            "%-16s %-30s %s\n    %s\n"
            % (
                model["name"],
                ",".join(model["scenarios"]),
                ",".join(model["categories"]),
                model["description"],
            )
        )
    sys.stdout.write("accuracy targets: %s\n" % ", ".join(ACCURACY_TARGETS))
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        header, _payload = read_engine(args.engine, verify=True)
    except EngineError as exc:
        raise HarnessError(str(exc)) from None
    sys.stdout.write(json.dumps(header, indent=1, sort_keys=True) + "\n")
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # Ctrl-C ends the process at once, also while LoadGen's C++ code holds the main thread.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _set_threads(getattr(args, "threads", None))
    try:
        return int(args.func(args))
    except HarnessError as exc:
        sys.stdout.flush()
        sys.stderr.write("%s: error: %s\n" % (PROG, exc))
        return exc.code
    except Exception as exc:  # one clear line instead of a traceback
        sys.stdout.flush()
        sys.stderr.write(
            "%s: error: unexpected failure: %s: %s\n" % (PROG, type(exc).__name__, exc)
        )
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
