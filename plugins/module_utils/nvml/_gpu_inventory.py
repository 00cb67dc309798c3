# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a host's GPUs, MIG profiles, instances and processes through NVML into plain data.

Takes any pynvml-compatible object (pynvml itself or the simulator) and returns dicts and
lists only, so results go straight into module returns and facts.
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    derived_profile_name,
    model_for_nvml_name,
)

_MIB = 1024 * 1024
_NO_INSTANCE = 0xFFFFFFFF
_ARCH_NAMES = {7: "ampere", 8: "ada", 9: "hopper", 10: "blackwell"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _mig_name(raw: Any) -> str:
    name = _text(raw).strip()
    return name[4:] if name.startswith("MIG ") else name


def placements_text(placements: List[Dict[str, int]]) -> str:
    """Placements as ``nvidia-smi mig -lgipp`` prints them, e.g. ``{0,2,4}:2``."""
    if not placements:
        return "{}:0"
    size = placements[0]["size"]
    return "{%s}:%d" % (",".join(str(p["start"]) for p in placements), size)


class GpuReader:
    """Reads one host through ``nvml``; each public method returns plain data."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml

    def _call(self, function: str, *args: Any) -> Any:
        return getattr(self.nvml, function)(*args)

    def _optional(self, function: str, *args: Any) -> Any:
        """Call an NVML function that some GPUs or drivers do not offer; None if they don't."""
        try:
            return self._call(function, *args)
        except self.nvml.NVMLError as exc:
            if exc.value in (
                self.nvml.NVML_ERROR_NOT_SUPPORTED,
                self.nvml.NVML_ERROR_FUNCTION_NOT_FOUND,
                self.nvml.NVML_ERROR_INVALID_ARGUMENT,
                self.nvml.NVML_ERROR_NOT_FOUND,
                self.nvml.NVML_ERROR_NO_PERMISSION,
            ):
                return None
            raise

    # ------------------------------------------------------------------ whole host
    def system(self) -> Dict[str, Any]:
        return {
            "driver_version": _text(self._call("nvmlSystemGetDriverVersion")),
            "nvml_version": _text(self._call("nvmlSystemGetNVMLVersion")),
            "cuda_driver_version": self._optional("nvmlSystemGetCudaDriverVersion"),
        }

    def gpus(self, details: bool = True) -> List[Dict[str, Any]]:
        return [self.gpu(i, details) for i in range(self._call("nvmlDeviceGetCount"))]

    # ------------------------------------------------------------------ one GPU
    def gpu(self, index: int, details: bool = True) -> Dict[str, Any]:
        handle = self._call("nvmlDeviceGetHandleByIndex", index)
        name = _text(self._call("nvmlDeviceGetName", handle))
        pci = self._call("nvmlDeviceGetPciInfo", handle)
        memory = self._call("nvmlDeviceGetMemoryInfo", handle)
        arch = self._optional("nvmlDeviceGetArchitecture", handle)
        capability = self._optional("nvmlDeviceGetCudaComputeCapability", handle)
        mig_mode = self._optional("nvmlDeviceGetMigMode", handle)
        model = model_for_nvml_name(name)
        gpu: Dict[str, Any] = {
            "index": index,
            "name": name,
            "model": model.key if model else None,
            "uuid": _text(self._call("nvmlDeviceGetUUID", handle)),
            "pci_bus_id": _text(pci.busId),
            "pci_device_id": "0x%08x" % pci.pciDeviceId,
            "memory_total_mib": memory.total // _MIB,
            "memory_used_mib": memory.used // _MIB,
            "architecture": _ARCH_NAMES.get(arch, "unknown") if arch is not None else "unknown",
            "cuda_capability": "%d.%d" % tuple(capability) if capability else None,
            "mig_capable": mig_mode is not None,
            "mig_mode": {
                "current": "enabled" if mig_mode and mig_mode[0] else "disabled",
                "pending": "enabled" if mig_mode and mig_mode[1] else "disabled",
            },
            "mig_change_pending": bool(mig_mode) and mig_mode[0] != mig_mode[1],
            "profiles": [],
            "gpu_instances": [],
            "mig_devices": [],
            "processes": [],
        }
        if gpu["mig_capable"] and details:
            gpu["profiles"] = self.profiles(handle, model)
        mig_enabled = bool(mig_mode and mig_mode[0])
        if mig_enabled and details:
            gpu["mig_devices"] = self.mig_devices(handle, gpu, gpu["profiles"])
            gpu["gpu_instances"] = self.gpu_instances(handle, gpu["profiles"], gpu["mig_devices"])
        if details:
            gpu["processes"] = self.processes(handle, gpu["mig_devices"])
        return gpu

    def profiles(self, handle: Any, model: Any) -> List[Dict[str, Any]]:
        nvml = self.nvml
        profiles = []
        for index in range(nvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
            info, name = self._profile_info(handle, index)
            if info is None:
                continue
            if not name:
                known = model.profile_by_id(info.id) if model else None
                name = (
                    known.name
                    if known
                    else derived_profile_name(info.sliceCount, info.memorySizeMB)
                )
            placements = self._gi_placements(handle, info.id)
            profiles.append(
                {
                    "name": name,
                    "id": info.id,
                    "index": index,
                    "slice_count": info.sliceCount,
                    "instance_count": info.instanceCount,
                    "remaining": self._optional(
                        "nvmlDeviceGetGpuInstanceRemainingCapacity", handle, info.id
                    ),
                    "memory_mib": info.memorySizeMB,
                    "multiprocessors": info.multiprocessorCount,
                    "copy_engines": info.copyEngineCount,
                    "decoders": info.decoderCount,
                    "encoders": info.encoderCount,
                    "jpegs": info.jpegCount,
                    "ofas": info.ofaCount,
                    "p2p_supported": bool(info.isP2pSupported),
                    "placements": placements,
                    "placements_text": placements_text(placements),
                }
            )
        profiles.sort(key=lambda p: (p["slice_count"], p["memory_mib"], p["index"]))
        return profiles

    def _profile_info(self, handle: Any, index: int) -> Tuple[Any, Optional[str]]:
        """Profile info by index; the v2 call carries the name, v1 is the fallback."""
        nvml = self.nvml
        try:
            info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index, 2)
            return info, _mig_name(info.name) or None
        except nvml.NVMLError as exc:
            if exc.value in (nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_INVALID_ARGUMENT):
                return None, None
            if exc.value not in (
                nvml.NVML_ERROR_FUNCTION_NOT_FOUND,
                nvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
            ):
                raise
        info = self._optional("nvmlDeviceGetGpuInstanceProfileInfo", handle, index, 1)
        return info, None

    def _gi_placements(self, handle: Any, profile_id: int) -> List[Dict[str, int]]:
        nvml = self.nvml
        count = ctypes.c_uint(0)
        nvml.nvmlDeviceGetGpuInstancePossiblePlacements(
            handle, profile_id, None, ctypes.byref(count)
        )
        array = (nvml.c_nvmlGpuInstancePlacement_t * max(count.value, 1))()
        nvml.nvmlDeviceGetGpuInstancePossiblePlacements(
            handle, profile_id, array, ctypes.byref(count)
        )
        return [{"start": array[i].start, "size": array[i].size} for i in range(count.value)]

    def mig_devices(
        self, handle: Any, gpu: Dict[str, Any], profiles: List[Dict[str, Any]]
    ) -> List[Dict[str, Any]]:
        """Every MIG device (one per compute instance) with its UUID and ids."""
        nvml = self.nvml
        by_id = {p["id"]: p for p in profiles}
        devices: List[Dict[str, Any]] = []
        gi_info: Dict[int, Any] = {}
        for mig_index in range(self._call("nvmlDeviceGetMaxMigDeviceCount", handle)):
            mig = self._optional("nvmlDeviceGetMigDeviceHandleByIndex", handle, mig_index)
            if mig is None:
                continue
            gi_id = self._call("nvmlDeviceGetGpuInstanceId", mig)
            ci_id = self._call("nvmlDeviceGetComputeInstanceId", mig)
            if gi_id not in gi_info:
                gi_handle = nvml.nvmlDeviceGetGpuInstanceById(handle, gi_id)
                gi_info[gi_id] = (gi_handle, nvml.nvmlGpuInstanceGetInfo(gi_handle))
            gi_handle, info = gi_info[gi_id]
            ci = nvml.nvmlComputeInstanceGetInfo(
                nvml.nvmlGpuInstanceGetComputeInstanceById(gi_handle, ci_id)
            )
            memory = self._call("nvmlDeviceGetMemoryInfo", mig)
            known = by_id.get(info.profileId, {})
            gi_profile = known.get("name", "profile-%d" % info.profileId)
            ci_slices = ci.placement.size
            gi_slices = known.get("slice_count", 0)
            profile = gi_profile if ci_slices == gi_slices else "%dc.%s" % (ci_slices, gi_profile)
            devices.append(
                {
                    "uuid": _text(self._call("nvmlDeviceGetUUID", mig)),
                    "mig_index": mig_index,
                    "gpu_index": gpu["index"],
                    "gpu_uuid": gpu["uuid"],
                    "gpu_model": gpu["model"],
                    "gpu_name": gpu["name"],
                    "gpu_instance_id": gi_id,
                    "compute_instance_id": ci_id,
                    "gpu_instance_profile": gi_profile,
                    "gpu_instance_profile_id": info.profileId,
                    "profile": profile,
                    "compute_instance_profile_id": ci.profileId,
                    "placement": {"start": info.placement.start, "size": info.placement.size},
                    "compute_placement": {"start": ci.placement.start, "size": ci.placement.size},
                    "memory_total_mib": memory.total // _MIB,
                }
            )
        devices.sort(key=lambda d: (d["placement"]["start"], d["compute_placement"]["start"]))
        return devices

    def gpu_instances(
        self, handle: Any, profiles: List[Dict[str, Any]], mig_devices: List[Dict[str, Any]]
    ) -> List[Dict[str, Any]]:
        """GPU instances by profile, each with its compute instances and their MIG UUIDs."""
        nvml = self.nvml
        by_ids = {(d["gpu_instance_id"], d["compute_instance_id"]): d for d in mig_devices}
        instances = []
        for profile in profiles:
            count = ctypes.c_uint(profile["instance_count"])
            array = (nvml.c_nvmlGpuInstance_t * max(profile["instance_count"], 1))()
            nvml.nvmlDeviceGetGpuInstances(handle, profile["id"], array, ctypes.byref(count))
            for i in range(count.value):
                info = nvml.nvmlGpuInstanceGetInfo(array[i])
                instances.append(
                    {
                        "id": info.id,
                        "profile": profile["name"],
                        "profile_id": info.profileId,
                        "placement": {"start": info.placement.start, "size": info.placement.size},
                        "compute_instances": self._compute_instances(array[i], info.id, by_ids),
                    }
                )
        instances.sort(key=lambda gi: (gi["placement"]["start"], gi["id"]))
        return instances

    def _compute_instances(
        self, gi_handle: Any, gi_id: int, by_ids: Dict[Tuple[int, int], Dict[str, Any]]
    ) -> List[Dict[str, Any]]:
        nvml = self.nvml
        result = []
        for ci_index in range(nvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            info = self._optional(
                "nvmlGpuInstanceGetComputeInstanceProfileInfo",
                gi_handle,
                ci_index,
                nvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
            )
            if info is None:
                continue
            count = ctypes.c_uint(info.instanceCount)
            array = (nvml.c_nvmlComputeInstance_t * max(info.instanceCount, 1))()
            nvml.nvmlGpuInstanceGetComputeInstances(gi_handle, info.id, array, ctypes.byref(count))
            for i in range(count.value):
                ci = nvml.nvmlComputeInstanceGetInfo(array[i])
                device = by_ids.get((gi_id, ci.id), {})
                result.append(
                    {
                        "id": ci.id,
                        "profile_id": ci.profileId,
                        "profile": device.get("profile"),
                        "slice_count": info.sliceCount,
                        "placement": {"start": ci.placement.start, "size": ci.placement.size},
                        "mig_uuid": device.get("uuid"),
                    }
                )
        result.sort(key=lambda ci: (ci["placement"]["start"], ci["id"]))
        return result

    def processes(self, handle: Any, mig_devices: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Compute processes on the GPU, with the MIG device each one runs on."""
        by_ids = {(d["gpu_instance_id"], d["compute_instance_id"]): d for d in mig_devices}
        seen: Dict[int, Dict[str, Any]] = {}
        raw = self._optional("nvmlDeviceGetComputeRunningProcesses", handle) or []
        for proc in raw:
            gi_id = getattr(proc, "gpuInstanceId", _NO_INSTANCE)
            ci_id = getattr(proc, "computeInstanceId", _NO_INSTANCE)
            device = by_ids.get((gi_id, ci_id))
            name = self._optional("nvmlSystemGetProcessName", proc.pid)
            used = proc.usedGpuMemory
            seen[proc.pid] = {
                "pid": proc.pid,
                "name": _text(name) if name is not None else None,
                "used_memory_mib": used // _MIB if used is not None else None,
                "gpu_instance_id": None if gi_id == _NO_INSTANCE else gi_id,
                "compute_instance_id": None if ci_id == _NO_INSTANCE else ci_id,
                "mig_uuid": device["uuid"] if device else None,
            }
        return sorted(seen.values(), key=lambda p: p["pid"])


def read_host(nvml: Any, details: bool = True) -> Dict[str, Any]:
    """Everything ``gpu_facts`` reports for one host."""
    reader = GpuReader(nvml)
    gpus = reader.gpus(details)
    return {
        "system": reader.system(),
        "gpus": gpus,
        "mig_devices": [device for gpu in gpus for device in gpu["mig_devices"]],
    }
