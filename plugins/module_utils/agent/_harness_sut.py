# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The embedded harness's system under test: the compute back ends (numpy on the CPU, torch on
the CUDA device, the GPU models' torch plan) and how one is chosen, LoadGen's SUT (the issue
queue and its worker thread, batching the issued samples), the warm-up, and the Offline
calibration through LoadGen.

Part of the program ``_loadgen_harness``. numpy, torch and LoadGen are imported lazily (LoadGen
is handed in as ``lg``). Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _torch_models
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._engine_spec import (
    SliceTarget,
    precision_for,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._harness_base import (
    HarnessError,
    _import_numpy,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._harness_settings import (
    parse_summary,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._mlperf_terms import (
    compute_slices,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._synthetic_models import (
    MULTI_STREAM_SAMPLES,
    SyntheticModel,
    TorchForward,
    is_torch_model,
)

# Batches run before the warm-up measures (CUDA context, cuDNN autotuning, caches).
WARMUP_COLD_BATCHES = 2
# The calibration test issues at most this many samples, and lasts at least this many batches.
CALIBRATION_MIN_BATCHES = 30
CALIBRATION_MAX_SAMPLES = 500000


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
