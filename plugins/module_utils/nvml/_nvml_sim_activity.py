# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The NVML simulator's utilisation answers: ``nvmlDeviceGetUtilizationRates`` and GPM.

``SimulatedNvml`` keeps a one-line method for each call here (imported on first use, as
``_nvml_sim_changes`` is). A simulated GPU has no kernels; what runs "on" it are the processes
registered on it (``_nvml_sim_changes.register_process``: the runner registers each benchmark on
its slice, the embedded harness registers itself). So a simulated GPU or GPU instance is busy
when those processes are: its utilisation is the CPU time (``/proc/<pid>/stat`` utime + stime)
its registered processes used over the period, as a percentage of that period, at most 100.
Only the registered processes count, not their children.

The period: GPM metrics are computed from two samples, so their period is the time between
them, as on real GPUs. ``nvmlDeviceGetUtilizationRates`` covers the driver's last sample period
on real GPUs (1/6 s to 1 s); the simulator covers the time since the previous call for the same
GPU through the same ``SimulatedNvml``, and on the first call each process's average over its
lifetime. A process first seen within a period is counted for the part of the period it lived
(its average over its lifetime, prorated).

What the simulator answers where real NVML says "not supported", from a real H200
(``tests/fixtures/real-h200/gpu_activity_capture.json``, driver 580.159.04, MIG disabled) and
NVML's documentation:

- ``nvmlDeviceGetUtilizationRates``: ``Not Supported`` for a MIG device and for a GPU with MIG
  enabled (NVML's documentation: not supported on MIG-enabled GPUs); ``memory`` (memory
  bandwidth) is not modelled and is always 0.
- ``nvmlGpmQueryDeviceSupport``: ``isSupportedDevice`` 1 on Hopper and newer (1 on the real
  H200), 0 before.
- ``nvmlGpmMigSampleGet``: ``Invalid Argument`` on a GPU with MIG disabled (the real H200);
  ``Not Supported`` before Hopper; ``Not Found`` for a GPU instance id that does not exist
  (unconfirmed).
- A MIG device handle given to the GPM calls: ``Invalid Argument`` (unconfirmed).
- ``nvmlGpmSampleGet`` (whole GPU) answers on a GPU with MIG enabled too, for all its processes
  (unconfirmed; the runner does not use it there).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

try:
    import pynvml
except ImportError:  # reported by open_backend, which imports pynvml before the simulator
    pynvml = None

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import ARCH_HOPPER
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_state import (
    KIND_DEVICE,
    KIND_MIG_DEVICE,
    raise_nvml,
)

if TYPE_CHECKING:  # the reading half imports this module on its first change
    from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim import (
        SimulatedNvml,
    )

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_GPM_TAG = 0x5B << 52
_GPM_METRICS = ("NVML_GPM_METRIC_GRAPHICS_UTIL", "NVML_GPM_METRIC_SM_UTIL")
_ARGUMENT_VERSION_MISMATCH = 25  # NVML_ERROR_ARGUMENT_VERSION_MISMATCH
_NUMBERS = itertools.count(1)  # GPM sample numbers, unique within the process

# pid -> (cpu seconds, seconds alive) read at one instant
Reading = Dict[int, Tuple[float, float]]


def _uptime() -> float:
    with open("/proc/uptime", encoding="ascii") as handle:
        return float(handle.read().split()[0])


def process_cpu(pid: int, uptime: Optional[float] = None) -> Optional[Tuple[float, float]]:
    """(cpu seconds used, seconds alive) of ``pid`` from /proc; None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        now = _uptime() if uptime is None else uptime
    except (OSError, IndexError, ValueError):
        return None
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    alive = max(now - int(fields[19]) / _TICKS, 1e-3)
    return cpu, alive


def reading(processes: List[Dict[str, Any]]) -> Reading:
    """CPU readings of the given registered processes (those still alive)."""
    out: Reading = {}
    uptime = _uptime()
    for proc in processes:
        value = process_cpu(int(proc["pid"]), uptime)
        if value is not None:
            out[int(proc["pid"])] = value
    return out


def busy_fraction(before: Optional[Reading], after: Reading, period: float) -> float:
    """How busy the processes of ``after`` were over ``period`` seconds, 0..1. Pure.

    A process also in ``before`` counts the CPU time it used between the readings; one that is
    not counts its lifetime average for the part of the period it lived. Without ``before``
    (no previous reading) every process counts its lifetime average.
    """
    if period <= 0:
        return 0.0
    busy = 0.0
    for pid, (cpu, alive) in after.items():
        if before is not None and pid in before:
            busy += max(0.0, cpu - before[pid][0])
        elif before is None:
            busy += cpu / alive * period
        else:
            busy += cpu / alive * min(alive, period)
    return max(0.0, min(1.0, busy / period))


def _processes(sim: SimulatedNvml, state: Dict[str, Any], uuids: List[str]) -> Reading:
    return reading(sim._processes_on(state, uuids))


def _memory(sim: SimulatedNvml) -> Dict[Any, Any]:
    return sim._activity_memory


# ----------------------------------------------------------------------------- utilisation rates
def utilization_rates(sim: SimulatedNvml, handle: Any) -> Any:
    state, gpu, mig = sim._device_or_mig(handle)
    if mig is not None or gpu["mig_current"]:
        raise_nvml(pynvml.NVML_ERROR_NOT_SUPPORTED)
    now = time.monotonic()
    after = _processes(sim, state, sim._all_uuids(gpu))
    key = ("util", gpu["index"])
    previous = _memory(sim).get(key)
    if previous is None:
        fraction = busy_fraction(None, after, 1.0)
    else:
        fraction = busy_fraction(previous[1], after, now - previous[0])
    _memory(sim)[key] = (now, after)
    rates = pynvml.c_nvmlUtilization_t()
    rates.gpu = round(100.0 * fraction)
    rates.memory = 0
    return rates


# ----------------------------------------------------------------------------- GPM
def _parent(sim: SimulatedNvml, handle: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(state, gpu) of a GPU handle; a MIG device handle is an invalid argument here."""
    kind, _index, _gi, _ci = sim._decode(handle, KIND_DEVICE, KIND_MIG_DEVICE)
    if kind != KIND_DEVICE:
        raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    state, gpu, _mig = sim._device_or_mig(handle)
    return state, gpu


def gpm_query_device_support(sim: SimulatedNvml, handle: Any) -> Any:
    _state, gpu = _parent(sim, handle)
    support = pynvml.c_nvmlGpmSupport_t()
    support.version = pynvml.NVML_GPM_SUPPORT_VERSION
    support.isSupportedDevice = 1 if sim._model(gpu).arch_code >= ARCH_HOPPER else 0
    return support


def _samples(sim: SimulatedNvml) -> Dict[int, Any]:
    return _memory(sim).setdefault("gpm", {})


def _sample_id(sim: SimulatedNvml, sample: Any) -> int:
    """The number of a sample this simulator allocated; Invalid Argument for anything else."""
    try:
        value = ctypes.cast(sample, ctypes.c_void_p).value or 0
    except (TypeError, ctypes.ArgumentError):
        value = 0
    number = value & 0xFFFFFFFF
    if value & (0xFFF << 52) != _GPM_TAG or number not in _samples(sim):
        raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    return number


def gpm_sample_alloc(sim: SimulatedNvml) -> Any:
    sim._require_init()
    number = next(_NUMBERS)
    _samples(sim)[number] = None  # allocated, not yet filled
    return ctypes.cast(ctypes.c_void_p(_GPM_TAG | number), pynvml.c_nvmlGpmSample_t)


def gpm_sample_free(sim: SimulatedNvml, sample: Any) -> None:
    del _samples(sim)[_sample_id(sim, sample)]


def _fill(
    sim: SimulatedNvml, sample: Any, source: Tuple[int, Optional[int]], after: Reading
) -> Any:
    _samples(sim)[_sample_id(sim, sample)] = {
        "t": time.monotonic(),
        "source": source,
        "reading": after,
    }
    return sample


def gpm_sample_get(sim: SimulatedNvml, handle: Any, sample: Any) -> Any:
    state, gpu = _parent(sim, handle)
    if sim._model(gpu).arch_code < ARCH_HOPPER:
        raise_nvml(pynvml.NVML_ERROR_NOT_SUPPORTED)
    return _fill(sim, sample, (gpu["index"], None), _processes(sim, state, sim._all_uuids(gpu)))


def gpm_mig_sample_get(sim: SimulatedNvml, handle: Any, gi_id: int, sample: Any) -> Any:
    state, gpu = _parent(sim, handle)
    if sim._model(gpu).arch_code < ARCH_HOPPER:
        raise_nvml(pynvml.NVML_ERROR_NOT_SUPPORTED)
    if not gpu["mig_current"]:
        raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)  # as the real H200 answers
    gi = sim._gi(gpu, gi_id)
    uuids = [ci["uuid"] for ci in gi["compute_instances"]]
    return _fill(sim, sample, (gpu["index"], gi_id), _processes(sim, state, uuids))


def gpm_metrics_get(sim: SimulatedNvml, request: Any) -> Any:
    sim._require_init()
    if request.version != pynvml.NVML_GPM_METRICS_GET_VERSION:
        raise_nvml(_ARGUMENT_VERSION_MISMATCH)
    first = _samples(sim)[_sample_id(sim, request.sample1)]
    second = _samples(sim)[_sample_id(sim, request.sample2)]
    if not first or not second or first["source"] != second["source"]:
        raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    if request.numMetrics > pynvml.NVML_GPM_METRIC_MAX:
        raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    period = second["t"] - first["t"]
    fraction = busy_fraction(first["reading"], second["reading"], period)
    supported = {getattr(pynvml, name) for name in _GPM_METRICS}
    for position in range(request.numMetrics):
        metric = request.metrics[position]
        if metric.metricId in supported:
            metric.nvmlReturn = pynvml.NVML_SUCCESS
            metric.value = 100.0 * fraction
        else:
            metric.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            metric.value = 0.0
    return request
