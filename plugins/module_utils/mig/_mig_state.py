# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MIG state of a host as plain data, read through NVML: what ``mig_layout`` plans from.

``MigStateReader.host_state()`` returns every GPU's identity, MIG mode and GPU instances
(with their compute instances), and each model's profiles with the placements NVML reports,
as JSON-able dicts. The planner (``_mig_plan`` through ``_mig_host.HostMig``) builds its
structures from exactly this read, and ``_mig_stamp`` digests it, so the state a plan was made
from and the state a stamp remembers are one and the same read.

This module imports no planning code: a run that finds its stamp valid needs nothing more.
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    model_for_nvml_name,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import (
    GpuReader,
    _text,
)

# The vocabulary of a mig_layout request, here (not in the planner) so that the module's
# argument spec and a run that reuses its stamp need no planning code.
PLACEMENT_MATCH_MODES = ("exact", "explicit", "none")
OPERATIONS = ("apply", "plan", "assert", "export")

# The profile fields the planner uses (GpuReader.profiles also returns the free capacity and
# engine counts, which change with the state or do not matter for placement).
_PROFILE_FIELDS = (
    "name",
    "id",
    "index",
    "slice_count",
    "instance_count",
    "memory_mib",
    "placements",
)


class MigStateReader:
    """Reads GPUs, profiles and instances of one host; profiles are read once per model."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.reader = GpuReader(nvml)
        self._profiles: Dict[str, List[Dict[str, Any]]] = {}
        self._ci_profiles: Dict[Tuple[str, int], List[Tuple[int, int]]] = {}

    def handle(self, index: int) -> Any:
        return self.nvml.nvmlDeviceGetHandleByIndex(index)

    def gpu(self, index: int, handle: Optional[Any] = None) -> Dict[str, Any]:
        """Identity and MIG mode of one GPU."""
        nvml = self.nvml
        handle = handle if handle is not None else self.handle(index)
        name = _text(nvml.nvmlDeviceGetName(handle))
        pci = nvml.nvmlDeviceGetPciInfo(handle)
        model = model_for_nvml_name(name)
        try:
            current, pending = nvml.nvmlDeviceGetMigMode(handle)
            capable = True
        except nvml.NVMLError as exc:
            if exc.value not in (nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_FUNCTION_NOT_FOUND):
                raise
            current = pending = 0
            capable = False
        return {
            "index": index,
            "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
            "pci_bus_id": _text(pci.busId),
            "name": name,
            "model": model.key if model else None,
            "pci_device_id": int(pci.pciDeviceId),
            "mig_capable": capable,
            "mig_current": bool(current),
            "mig_pending": bool(pending),
        }

    def mig_mode(self, handle: Any) -> Tuple[bool, bool]:
        current, pending = self.nvml.nvmlDeviceGetMigMode(handle)
        return bool(current), bool(pending)

    def profiles(self, handle: Any, name: str) -> List[Dict[str, Any]]:
        """The GPU-instance profiles of a model with NVML's placements (read once per model)."""
        if name not in self._profiles:
            raw = self.reader.profiles(handle, model_for_nvml_name(name))
            self._profiles[name] = [{key: p[key] for key in _PROFILE_FIELDS} for p in raw]
        return self._profiles[name]

    def instances(self, handle: Any, name: str) -> List[Dict[str, Any]]:
        """The GPU's GPU instances, each with its compute instances, sorted by placement."""
        nvml = self.nvml
        found = []
        for profile in self.profiles(handle, name):
            count = ctypes.c_uint(profile["instance_count"])
            array = (nvml.c_nvmlGpuInstance_t * max(profile["instance_count"], 1))()
            nvml.nvmlDeviceGetGpuInstances(handle, profile["id"], array, ctypes.byref(count))
            for position in range(count.value):
                gi = array[position]
                info = nvml.nvmlGpuInstanceGetInfo(gi)
                cis = self._compute_instances(gi, name, int(info.profileId))
                found.append(
                    {
                        "gi_id": int(info.id),
                        "profile_id": int(info.profileId),
                        "profile": profile["name"],
                        "start": int(info.placement.start),
                        "size": int(info.placement.size),
                        "compute": [[start, size] for start, size, _ci_id in cis],
                        "ci_ids": [ci_id for _start, _size, ci_id in cis],
                    }
                )
        found.sort(key=lambda i: (i["start"], i["gi_id"]))
        return found

    def mig_devices(self, handle: Any, gpu: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The MIG devices (one per compute instance) of a GPU with MIG on, as ``gpu_facts``
        reports them; ``gpu`` is its entry in a host state (or a ``gpu()`` read)."""
        identity = {key: gpu[key] for key in ("index", "uuid", "model", "name")}
        profiles = [
            {"id": p["id"], "name": p["name"], "slice_count": p["slice_count"]}
            for p in self.profiles(handle, gpu["name"])
        ]
        return self.reader.mig_devices(handle, identity, profiles)

    def host_state(self) -> Dict[str, Any]:
        """Every GPU (identity, mode and, with MIG on, instances) and each model's profiles."""
        gpus = []
        profiles: Dict[str, List[Dict[str, Any]]] = {}
        for index in range(self.nvml.nvmlDeviceGetCount()):
            handle = self.handle(index)
            gpu = self.gpu(index, handle)
            gpu["instances"] = []
            if gpu["mig_capable"]:
                profiles[gpu["name"]] = self.profiles(handle, gpu["name"])
                if gpu["mig_current"]:
                    gpu["instances"] = self.instances(handle, gpu["name"])
            gpus.append(gpu)
        return {"gpus": gpus, "profiles": profiles}

    def _compute_instance_profiles(
        self, gi: Any, name: str, gi_profile_id: int
    ) -> List[Tuple[int, int]]:
        """(compute-instance profile id, instance count) offered by a GPU-instance profile.

        Asked once per model and GPU-instance profile (the answer is the same for every GPU
        instance of that profile).
        """
        key = (name, gi_profile_id)
        if key not in self._ci_profiles:
            nvml = self.nvml
            found = []
            for index in range(nvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
                try:
                    info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                        gi, index, nvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                    )
                except nvml.NVMLError as exc:
                    if exc.value in (
                        nvml.NVML_ERROR_NOT_SUPPORTED,
                        nvml.NVML_ERROR_INVALID_ARGUMENT,
                        nvml.NVML_ERROR_NOT_FOUND,
                    ):
                        continue
                    raise
                found.append((int(info.id), int(info.instanceCount)))
            self._ci_profiles[key] = found
        return self._ci_profiles[key]

    def _compute_instances(
        self, gi: Any, name: str, gi_profile_id: int
    ) -> List[Tuple[int, int, int]]:
        """(start, size, id) of a GPU instance's compute instances, sorted by start."""
        nvml = self.nvml
        found = []
        for profile_id, instance_count in self._compute_instance_profiles(gi, name, gi_profile_id):
            count = ctypes.c_uint(instance_count)
            array = (nvml.c_nvmlComputeInstance_t * max(instance_count, 1))()
            nvml.nvmlGpuInstanceGetComputeInstances(gi, profile_id, array, ctypes.byref(count))
            for position in range(count.value):
                info = nvml.nvmlComputeInstanceGetInfo(array[position])
                found.append((int(info.placement.start), int(info.placement.size), int(info.id)))
        found.sort()
        return found
