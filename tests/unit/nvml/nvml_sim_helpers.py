"""Constants and helpers shared by the NVML simulator tests (test_nvml_sim_*.py).

Profile ids are those of an H100 80GB; the fixtures ``h100`` and ``live_child`` live in this
directory's conftest.py.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynvml

SimFactory = Callable[..., Any]  # the make_sim fixture (tests/unit/conftest.py)

ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE
DISABLE = pynvml.NVML_DEVICE_MIG_DISABLE
SHARED = pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED

# H100 80GB GPU-instance profile ids (nvidia-smi mig -lgip).
P_1G10, P_1G10ME, P_1G20, P_2G20, P_3G40, P_4G40, P_7G80 = 19, 20, 15, 14, 9, 5, 0
# Compute-instance profile ids (NVML_COMPUTE_INSTANCE_PROFILE_*): 1, 2, 3, 4, 7 slices.
CI_1, CI_2, CI_3, CI_4, CI_7 = 0, 1, 2, 3, 4

MIG_UUID = re.compile(r"MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# ---------------------------------------------------------------------- helpers
def gi_placement(start: int, size: int) -> Any:
    placement = pynvml.c_nvmlGpuInstancePlacement_t()
    placement.start, placement.size = start, size
    return placement


def ci_placement(start: int, size: int) -> Any:
    placement = pynvml.c_nvmlComputeInstancePlacement_t()
    placement.start, placement.size = start, size
    return placement


def create_gi(nvml: Any, handle: Any, profile_id: int, start: int | None = None) -> Any:
    if start is None:
        return nvml.nvmlDeviceCreateGpuInstance(handle, profile_id)
    size = _gi_size(nvml, handle, profile_id)
    return nvml.nvmlDeviceCreateGpuInstanceWithPlacement(
        handle, profile_id, ctypes.byref(gi_placement(start, size))
    )


def _gi_size(nvml: Any, handle: Any, profile_id: int) -> int:
    count = ctypes.c_uint(0)
    nvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, None, ctypes.byref(count))
    array = (pynvml.c_nvmlGpuInstancePlacement_t * count.value)()
    nvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, array, ctypes.byref(count))
    return int(array[0].size)


def gi_summary(nvml: Any, gi: Any) -> tuple[int, int, int, int]:
    """(GI id, profile id, placement start, placement size)."""
    info = nvml.nvmlGpuInstanceGetInfo(gi)
    return info.id, info.profileId, info.placement.start, info.placement.size


def ci_summary(nvml: Any, ci: Any) -> tuple[int, int, int, int]:
    """(CI id, CI profile id, placement start, placement size)."""
    info = nvml.nvmlComputeInstanceGetInfo(ci)
    return info.id, info.profileId, info.placement.start, info.placement.size


def list_gis(nvml: Any, handle: Any, profile_id: int) -> list[tuple[int, int, int, int]]:
    count = ctypes.c_uint(8)
    array = (pynvml.c_nvmlGpuInstance_t * 8)()
    nvml.nvmlDeviceGetGpuInstances(handle, profile_id, array, ctypes.byref(count))
    return [gi_summary(nvml, array[i]) for i in range(count.value)]


def all_gis(nvml: Any, handle: Any, profile_ids: tuple[int, ...]) -> list[tuple[int, ...]]:
    return sorted(gi for pid in profile_ids for gi in list_gis(nvml, handle, pid))


def mode(nvml: Any, index: int = 0) -> list[int]:
    return list(nvml.nvmlDeviceGetMigMode(nvml.nvmlDeviceGetHandleByIndex(index)))


def file_snapshot(path: str) -> tuple[bytes, int]:
    return Path(path).read_bytes(), os.stat(path).st_mtime_ns


def end(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()  # reaped: the pid no longer exists
