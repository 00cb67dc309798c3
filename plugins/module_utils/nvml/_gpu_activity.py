# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU activity of a hetero run: NVML utilisation and memory, sampled while the run lasts.

The host runner (``_hetero_runner``) asks an :class:`ActivitySampler` for a sample whenever
:attr:`ActivitySampler.next_due` has passed; between samples it costs nothing (no thread, no
timer of its own: the runner's ``select`` wakes for it). All NVML goes through
``_gpu_backend.open_backend``, so a simulated host answers through the simulator, which derives
utilisation from the benchmark processes registered on each of its GPUs and MIG devices.

What is sampled, per *target* (what the plan's benchmarks run on):

- a whole GPU (shared-GPU mode, MIG disabled): ``nvmlDeviceGetUtilizationRates(gpu).gpu``, the
  percent of the driver's last sample period in which a kernel ran, and
  ``nvmlDeviceGetMemoryInfo(gpu).used``. Scope ``gpu``.
- a MIG GPU instance: NVML answers ``Not Supported`` to ``nvmlDeviceGetUtilizationRates`` for
  MIG devices and for a GPU with MIG enabled. What it offers per GPU instance is GPM (Hopper and
  newer, ``nvmlGpmQueryDeviceSupport``): two ``nvmlGpmMigSampleGet`` samples give
  ``NVML_GPM_METRIC_GRAPHICS_UTIL`` over the time between them. On a GPU without GPM (A100,
  A30) utilisation is recorded as not supported, with NVML's answer; memory is still sampled,
  per MIG device (``nvmlDeviceGetMemoryInfo(mig device)``). Scope ``gpu_instance``.

Nothing falls back silently: a target whose utilisation NVML does not offer says so
(``util_supported: false`` and ``util_why``), a sample that fails counts its NVML error in the
series' ``errors``, and a backend that cannot be opened leaves ``state: failed`` and the error.

The record (``result.json``'s ``gpu_activity``; docs/hetero_result_contract.md) is columnar:
``t`` (epoch seconds), ``util_pct`` and ``mem_used_mib`` per series, ``null`` where a sample
has no value. A long run keeps at most :data:`MAX_POINTS` samples per series: past that every
other sample is dropped and the interval doubles.

The pure functions (:func:`targets_from_plan`, :func:`window_stats`, :func:`percentile`,
:func:`main_window_summary`) are used by the runner and by the controller's report.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

DEFAULT_INTERVAL_S = 0.5
MIN_INTERVAL_S = 0.2  # GPM needs more than 100 ms between two samples
MAX_INTERVAL_S = 60.0
MAX_POINTS = 2400
PLAN_KEY = "gpu_sample_interval_s"

SCOPE_GPU = "gpu"
SCOPE_GPU_INSTANCE = "gpu_instance"
METRIC_UTILIZATION_RATES = "nvmlDeviceGetUtilizationRates.gpu"
METRIC_GPM_GRAPHICS_UTIL = "GPM GRAPHICS_UTIL"

STATE_OFF = "off"
STATE_SAMPLED = "sampled"
STATE_FAILED = "failed"

_MIB = 1024 * 1024


# ----------------------------------------------------------------------------- plan -> targets
def interval_from_plan(plan: Mapping[str, Any]) -> Tuple[float, Optional[str]]:
    """(interval seconds, problem or None) from the plan's ``gpu_sample_interval_s``.

    Absent: :data:`DEFAULT_INTERVAL_S`. ``0``: sampling off.
    """
    value = plan.get(PLAN_KEY, DEFAULT_INTERVAL_S)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return DEFAULT_INTERVAL_S, "%s must be a number of seconds, got %r" % (PLAN_KEY, value)
    if value == 0:
        return 0.0, None
    if value < MIN_INTERVAL_S or value > MAX_INTERVAL_S:
        return DEFAULT_INTERVAL_S, "%s must be 0 (off) or from %g to %g seconds, got %r" % (
            PLAN_KEY,
            MIN_INTERVAL_S,
            MAX_INTERVAL_S,
            value,
        )
    return float(value), None


def _int_or_none(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def targets_from_plan(plan: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """What to sample: one target per whole GPU or MIG GPU instance the benchmarks run on.

    Each target: ``key`` (``gpu0``, ``gpu0-gi3``), ``scope``, ``gpu_index``,
    ``gpu_instance_id``, ``profile``, ``uuid`` (the device NVML is asked about: the GPU, or the
    first MIG device of the instance), ``benchmarks`` (names, in plan order). Pure.
    """
    targets: Dict[str, Dict[str, Any]] = {}
    for bench in plan.get("benchmarks") or []:
        sl = bench.get("slice") or {}
        uuid = sl.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            continue
        mig = sl.get("mig")
        if not isinstance(mig, bool):
            mig = uuid.startswith("MIG-")
        gpu_index = _int_or_none(sl.get("gpu_index"))
        gi_id = _int_or_none(sl.get("gpu_instance_id"))
        if mig:
            scope = SCOPE_GPU_INSTANCE
            key = "gpu%s-gi%s" % (
                "?" if gpu_index is None else gpu_index,
                "?" if gi_id is None else gi_id,
            )
            if gpu_index is None or gi_id is None:
                key = "mig-" + uuid[4:12]  # an old plan without ids: one target per device
        else:
            scope = SCOPE_GPU
            key = "gpu%d" % gpu_index if gpu_index is not None else "gpu-" + uuid[4:12]
        target = targets.get(key)
        if target is None:
            target = targets[key] = {
                "key": key,
                "scope": scope,
                "gpu_index": gpu_index,
                "gpu_instance_id": gi_id if mig else None,
                "profile": sl.get("profile") if mig else None,
                "uuid": uuid,
                "benchmarks": [],
            }
        target["benchmarks"].append(str(bench.get("name")))
    return list(targets.values())


def target_label(series: Mapping[str, Any]) -> str:
    """'GPU 0, whole GPU' / 'GPU 0, GPU instance 3 (1g.18gb)'."""
    gpu = series.get("gpu_index")
    head = "GPU %s" % ("?" if gpu is None else gpu)
    if series.get("scope") == SCOPE_GPU_INSTANCE:
        text = "%s, GPU instance %s" % (head, series.get("gpu_instance_id"))
        if series.get("profile"):
            text += " (%s)" % series["profile"]
        return text
    return head + ", whole GPU"


# ----------------------------------------------------------------------------- statistics
def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The ``q`` percentile (0..100) by linear interpolation between closest ranks (numpy's
    default); None for no values."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return float(data[0])
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))


def _in_window(t: Sequence[Any], values: Sequence[Any], begin: float, end: float) -> List[float]:
    return [
        float(v)
        for ts, v in zip(t, values)
        if v is not None and isinstance(ts, (int, float)) and begin <= ts <= end
    ]


def window_stats(
    t: Sequence[Any], values: Sequence[Any], begin: float, end: float
) -> Optional[Dict[str, Any]]:
    """Samples of ``values`` whose time lies in [begin, end]: count, median, p10, p90, min,
    max; None when there is none. Pure."""
    inside = _in_window(t, values, begin, end)
    if not inside:
        return None
    return {
        "samples": len(inside),
        "median": percentile(inside, 50),
        "p10": percentile(inside, 10),
        "p90": percentile(inside, 90),
        "min": min(inside),
        "max": max(inside),
    }


def main_window_summary(
    activity: Mapping[str, Any], window: Optional[Mapping[str, Any]]
) -> List[Dict[str, Any]]:
    """Per series, utilisation and memory statistics over the main's timed window. Pure.

    A GPM value covers the interval that ends at its time stamp, and a utilisation-rates value
    the driver's last sample period (at most 1 s) before it: both are taken by their time stamp.
    """
    out: List[Dict[str, Any]] = []
    if not window:
        return out
    begin, end = window.get("begin"), window.get("end")
    if not isinstance(begin, (int, float)) or not isinstance(end, (int, float)):
        return out
    for series in activity.get("series") or []:
        t = series.get("t") or []
        out.append(
            {
                "key": series.get("key"),
                "label": target_label(series),
                "benchmarks": list(series.get("benchmarks") or []),
                "util_supported": series.get("util_supported"),
                "util_pct": window_stats(t, series.get("util_pct") or [], begin, end),
                "mem_used_mib": window_stats(t, series.get("mem_used_mib") or [], begin, end),
            }
        )
    return out


# ----------------------------------------------------------------------------- the sampler
def _error_text(nvml: Any, exc: BaseException) -> str:
    from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
        nvml_error_text,
    )

    if isinstance(exc, nvml.NVMLError):
        return nvml_error_text(exc)
    return "%s: %s" % (type(exc).__name__, exc)


class _Series:
    """One target's samples and how they are read."""

    def __init__(self, target: Mapping[str, Any]) -> None:
        self.target = dict(target)
        self.handle: Any = None  # the GPU, or the MIG device (memory)
        self.parent: Any = None  # GPM: the MIG device's GPU
        self.gi_id: Optional[int] = None
        self.util_metric: Optional[str] = None
        self.util_supported = False
        self.util_why: Optional[str] = None
        self.memory_total_mib: Optional[int] = None
        self.gpm_samples: List[Any] = []  # [previous, current]
        self.gpm_primed = False
        self.t: List[float] = []
        self.util: List[Optional[float]] = []
        self.mem: List[Optional[int]] = []
        self.errors: Dict[str, int] = {}

    def record(self) -> Dict[str, Any]:
        out = dict(self.target)
        out.update(
            {
                "util_metric": self.util_metric,
                "util_supported": self.util_supported,
                "util_why": self.util_why,
                "memory_total_mib": self.memory_total_mib,
                "t": self.t,
                "util_pct": self.util,
                "mem_used_mib": self.mem,
                "errors": self.errors,
            }
        )
        return out


class ActivitySampler:
    """Samples every target of a plan through one opened NVML backend.

    ``open`` resolves handles and what each target supports (errors are recorded, never
    raised); ``sample`` takes one sample of every target; ``close`` frees NVML's buffers and the
    backend; ``record`` is the JSON-able result.
    """

    def __init__(
        self,
        plan: Mapping[str, Any],
        clock: Callable[[], float] = time.time,
        opener: Optional[Callable[..., Any]] = None,
    ) -> None:
        self.plan = plan
        self.clock = clock
        self.opener = opener
        self.interval, problem = interval_from_plan(plan)
        backend = plan.get("backend") or {}
        self.backend_name = str(backend.get("name") or "nvml")
        self.state = STATE_OFF if self.interval == 0 else STATE_SAMPLED
        self.error: Optional[str] = problem
        self.backend: Any = None
        self.nvml: Any = None
        self.series: List[_Series] = []
        self.next_due = math.inf
        self.started_at: Optional[float] = None
        self.stopped_at: Optional[float] = None
        self.decimation = 1
        self._metrics_get: Any = None

    # ------------------------------------------------------------------ open / close
    def open(self) -> None:
        if self.state == STATE_OFF:
            return
        targets = targets_from_plan(self.plan)
        if not targets:
            self.state = STATE_FAILED
            self.error = "no benchmark of the plan names a GPU or MIG device (slice uuid)"
            return
        try:
            if self.opener is None:
                from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
                    open_backend,
                )

                self.opener = open_backend
            backend_conf = self.plan.get("backend") or {}
            self.backend = self.opener(
                self.backend_name, backend_conf.get("sim_state"), backend_conf.get("sim_gpus")
            )
        except Exception as exc:  # BackendError, or anything NVML's loader raises
            self.state = STATE_FAILED
            self.error = "cannot open NVML (%s backend): %s" % (self.backend_name, exc)
            return
        self.nvml = self.backend.nvml
        for target in targets:
            series = _Series(target)
            self._resolve(series)
            self.series.append(series)
        self.started_at = self.clock()
        self.next_due = self.started_at

    def _resolve(self, series: _Series) -> None:
        nvml = self.nvml
        target = series.target
        try:
            series.handle = nvml.nvmlDeviceGetHandleByUUID(target["uuid"])
        except Exception as exc:
            why = "no NVML device with UUID %s: %s" % (target["uuid"], _error_text(nvml, exc))
            series.util_why = why
            series.errors[why] = 1
            return
        try:
            memory = nvml.nvmlDeviceGetMemoryInfo(series.handle)
            series.memory_total_mib = int(memory.total // _MIB)
        except Exception as exc:
            series.errors["nvmlDeviceGetMemoryInfo: " + _error_text(nvml, exc)] = 1
        if target["scope"] == SCOPE_GPU:
            series.util_metric = METRIC_UTILIZATION_RATES
            try:
                nvml.nvmlDeviceGetUtilizationRates(series.handle)
            except Exception as exc:
                series.util_why = "nvmlDeviceGetUtilizationRates: %s" % _error_text(nvml, exc)
            else:
                series.util_supported = True
            return
        series.util_metric = METRIC_GPM_GRAPHICS_UTIL
        try:
            series.parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(series.handle)
            series.gi_id = int(nvml.nvmlDeviceGetGpuInstanceId(series.handle))
            support = nvml.nvmlGpmQueryDeviceSupport(series.parent)
        except Exception as exc:
            series.util_why = "GPM support query: %s" % _error_text(nvml, exc)
            return
        if not support.isSupportedDevice:
            series.util_why = (
                "NVML offers no utilisation per MIG instance on this GPU: GPM "
                "(nvmlGpmQueryDeviceSupport) is not supported (Hopper or newer), and "
                "nvmlDeviceGetUtilizationRates is Not Supported on MIG devices"
            )
            return
        try:
            series.gpm_samples = [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()]
        except Exception as exc:
            series.util_why = "nvmlGpmSampleAlloc: %s" % _error_text(nvml, exc)
            self._free(series)
            return
        series.util_supported = True

    def _free(self, series: _Series) -> None:
        for sample in series.gpm_samples:
            # nothing left to do with a buffer NVML will not take back
            with contextlib.suppress(Exception):
                self.nvml.nvmlGpmSampleFree(sample)
        series.gpm_samples = []

    def close(self) -> None:
        if self.nvml is None:
            return
        if self.stopped_at is None:
            self.stopped_at = self.clock()
        for series in self.series:
            self._free(series)
        self.next_due = math.inf
        try:
            self.backend.close()
        finally:
            self.nvml = None

    # ------------------------------------------------------------------ sampling
    def due(self, now: float) -> bool:
        return now >= self.next_due

    def sample(self, now: Optional[float] = None) -> None:
        """One sample of every target; schedules the next one.

        NVML errors are counted per series; anything else stops the sampling, and the record
        says why (the run goes on: its verdict does not depend on the samples).
        """
        if self.nvml is None:
            return
        try:
            self._sample(self.clock() if now is None else now)
        except Exception as exc:
            self.state = STATE_FAILED
            self.error = "sampling stopped at %.3f: %s: %s" % (
                self.clock(),
                type(exc).__name__,
                exc,
            )
            self.close()

    def _sample(self, t: float) -> None:
        for series in self.series:
            util, mem = self._read(series)
            series.t.append(round(t, 3))
            series.util.append(util)
            series.mem.append(mem)
        self.next_due = max(self.next_due + self.interval, t + self.interval / 2)
        if self.series and len(self.series[0].t) >= MAX_POINTS:
            self._decimate()

    def _count(self, series: _Series, what: str, exc: BaseException) -> None:
        text = "%s: %s" % (what, _error_text(self.nvml, exc))
        series.errors[text] = series.errors.get(text, 0) + 1

    def _read(self, series: _Series) -> Tuple[Optional[float], Optional[int]]:
        nvml = self.nvml
        if series.handle is None:
            return None, None
        mem: Optional[int] = None
        try:
            mem = int(nvml.nvmlDeviceGetMemoryInfo(series.handle).used // _MIB)
        except Exception as exc:
            self._count(series, "nvmlDeviceGetMemoryInfo", exc)
        if not series.util_supported:
            return None, mem
        if series.target["scope"] == SCOPE_GPU:
            try:
                return float(nvml.nvmlDeviceGetUtilizationRates(series.handle).gpu), mem
            except Exception as exc:
                self._count(series, "nvmlDeviceGetUtilizationRates", exc)
                return None, mem
        return self._gpm(series), mem

    def _gpm(self, series: _Series) -> Optional[float]:
        nvml = self.nvml
        previous, current = series.gpm_samples
        try:
            nvml.nvmlGpmMigSampleGet(series.parent, series.gi_id, current)
        except Exception as exc:
            self._count(series, "nvmlGpmMigSampleGet", exc)
            series.gpm_primed = False
            return None
        series.gpm_samples = [current, previous]
        if not series.gpm_primed:  # the first sample only starts the interval
            series.gpm_primed = True
            return None
        if self._metrics_get is None:
            self._metrics_get = nvml.c_nvmlGpmMetricsGet_t()
        request = self._metrics_get
        request.version = nvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = 1
        request.sample1 = previous
        request.sample2 = current
        request.metrics[0].metricId = nvml.NVML_GPM_METRIC_GRAPHICS_UTIL
        try:
            nvml.nvmlGpmMetricsGet(request)
        except Exception as exc:
            self._count(series, "nvmlGpmMetricsGet", exc)
            return None
        metric = request.metrics[0]
        if metric.nvmlReturn != nvml.NVML_SUCCESS:
            self._count(series, "GPM GRAPHICS_UTIL", nvml.NVMLError(metric.nvmlReturn))
            return None
        return round(float(metric.value), 1)

    def _decimate(self) -> None:
        """Keep every other sample of every series; the interval doubles."""
        for series in self.series:
            series.t = series.t[::2]
            series.util = series.util[::2]
            series.mem = series.mem[::2]
        self.decimation *= 2
        self.interval *= 2

    # ------------------------------------------------------------------ the record
    def record(self) -> Dict[str, Any]:
        return {
            "state": self.state,
            "error": self.error,
            "backend": self.backend_name,
            "interval_s": self.interval,
            "decimation": self.decimation,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "series": [s.record() for s in self.series],
        }


def activity_result(
    sampler: ActivitySampler, main_window: Optional[Mapping[str, Any]]
) -> Dict[str, Any]:
    """The ``gpu_activity`` of ``result.json``: the record plus the main's timed window
    (``main_window``) and each series' statistics over it (``during_main``)."""
    record = sampler.record()
    record["main_window"] = dict(main_window) if main_window else None
    record["during_main"] = main_window_summary(record, main_window)
    return record
