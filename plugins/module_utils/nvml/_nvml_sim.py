# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A simulated NVML with pynvml's interface, for hosts whose GPUs are simulated.

``SimulatedNvml`` offers the pynvml functions heteromig uses, under the same names, taking and
returning the same ctypes structures and opaque handle types, and raising the same
``pynvml.NVMLError_*`` classes. The collection's NVML code cannot tell it from pynvml, so the
same code path runs on real GPUs and on simulated ones.

State lives in a JSON file on the host. A change takes an ``flock`` on a lock file beside it,
reads the state and writes it back atomically (a new file replaces the old one); a read takes
no lock, since the file it opens is always one complete state. So several processes (a facts
module, a benchmark registering itself, a test) see one consistent set of GPUs.

This module reads; every change (and creating a state file, registering a process) is in
``_nvml_sim_changes``, which ``SimulatedNvml`` imports on its first change, so that a run that
only reads compiles half as much on the host. The state file, its format and the shared terms
are in ``_nvml_sim_state``. Faults are written into the state by the tests (tests/sim_faults.py,
never shipped to hosts) and honoured on the changing calls.

The simulator models what the collection has to survive on real hardware:
- profile tables and placements from ``_gpu_catalog`` (the H100 equals a real capture);
- MIG mode: Hopper applies a change at once, Ampere keeps it pending until a GPU reset, and a
  host may be unable to reset (``reset_supported: false``), which leaves a reboot;
- creation with and without placement (lowest free start first, as NVML does), with
  ``Insufficient Resources`` when a placement is taken and ``In use`` when processes exist;
- compute processes registered by pid, forgotten once the pid is gone;
- injected faults, so tests can make a chosen call fail midway.
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, List, Tuple

try:
    import pynvml
except ImportError:  # reported by open_backend, which imports pynvml before this module
    pynvml = None

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    CI_PROFILE_INDEX_BY_SLICES,
    DRIVER_GI_PROFILE_INDEX_BOUND,
    GpuModel,
    compute_instance_name,
    compute_instance_slice_options,
    compute_instance_starts,
    find_model,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_state import (
    CUDA_DRIVER_VERSION,
    DRIVER_VERSION,
    HANDLE_TAG,
    KIND_COMPUTE_INSTANCE,
    KIND_DEVICE,
    KIND_GPU_INSTANCE,
    KIND_MIG_DEVICE,
    NVML_VERSION,
    SimulatorError,
    StateFile,
    describe_spec,
    parse_gpu_spec,
    pid_alive,
    raise_nvml,
    slot_free,
)


def state_created_if_missing(state_file: StateFile, gpus: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Create the state for ``gpus`` unless it exists; either way check it matches."""
    if state_file.exists():
        # the usual case, on every nvmlInit: no lock, and the parsed state is kept for the
        # reads that follow (see read)
        state = state_file.read()
    else:
        from ansible_collections.heteromig.fleet.plugins.module_utils.nvml import (
            _nvml_sim_changes,
        )

        state = _nvml_sim_changes.create_state(state_file, gpus)
    if state["spec"] != gpus:
        raise SimulatorError(
            "simulator state file %s describes %s, but this host is now configured with %s; "
            "remove the state file to re-create the simulated GPUs"
            % (state_file.path, describe_spec(state["spec"]), describe_spec(gpus))
        )
    return state


class SimulatedNvml:
    """pynvml-compatible NVML over a simulator state file.

    Constants, structures and error classes are pynvml's own (attribute access falls through
    to the pynvml module), so callers use this object exactly as they use ``pynvml``.
    """

    def __init__(self, state_path: str, gpus: Any = None) -> None:
        self._file = StateFile(state_path)
        self._gpu_spec = parse_gpu_spec(gpus) if gpus is not None else None
        self._initialised = 0
        # utilisation periods and GPM samples of this NVML (see _nvml_sim_activity)
        self._activity_memory: Dict[Any, Any] = {}

    def __getattr__(self, name: str) -> Any:
        # Constants (NVML_*), error classes (NVMLError*), structures (c_nvml*) come from pynvml.
        return getattr(pynvml, name)

    # ------------------------------------------------------------------ handles
    @staticmethod
    def _handle(kind: int, gpu: int, gi: int = 0, ci: int = 0, ptr_type: Any = None) -> Any:
        value = HANDLE_TAG | kind << 44 | (gpu & 0xFF) << 32 | (gi & 0xFFFF) << 16 | (ci & 0xFFFF)
        return ctypes.cast(ctypes.c_void_p(value), ptr_type or pynvml.c_nvmlDevice_t)

    @staticmethod
    def _decode(handle: Any, *kinds: int) -> Tuple[int, int, int, int]:
        try:
            value = ctypes.cast(handle, ctypes.c_void_p).value or 0
        except (TypeError, ctypes.ArgumentError):
            value = 0
        if value & (0xFFF << 52) != HANDLE_TAG:
            raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        kind = value >> 44 & 0xFF
        if kind not in kinds:
            raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return kind, value >> 32 & 0xFF, value >> 16 & 0xFFFF, value & 0xFFFF

    # ------------------------------------------------------------------ state helpers
    def _require_init(self) -> None:
        if not self._initialised:
            raise_nvml(pynvml.NVML_ERROR_UNINITIALIZED)

    def _read(self) -> Dict[str, Any]:
        self._require_init()
        state = dict(self._file.read())  # shallow: the file's cached state stays as read
        state["processes"] = [p for p in state["processes"] if pid_alive(p["pid"])]
        return state

    @staticmethod
    def _gpu(state: Dict[str, Any], index: int) -> Dict[str, Any]:
        # NVML takes an unsigned index: a negative one must not pick a GPU from the end.
        if index < 0 or index >= len(state["gpus"]):
            raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return state["gpus"][index]

    @staticmethod
    def _model(gpu: Dict[str, Any]) -> GpuModel:
        model = find_model(gpu["model"])
        if model is None:
            raise SimulatorError("state names unknown GPU model %r" % gpu["model"])
        return model

    @staticmethod
    def _gi(gpu: Dict[str, Any], gi_id: int) -> Dict[str, Any]:
        for gi in gpu["gpu_instances"]:
            if gi["id"] == gi_id:
                return gi
        raise_nvml(pynvml.NVML_ERROR_NOT_FOUND)

    @staticmethod
    def _ci(gi: Dict[str, Any], ci_id: int) -> Dict[str, Any]:
        for ci in gi["compute_instances"]:
            if ci["id"] == ci_id:
                return ci
        raise_nvml(pynvml.NVML_ERROR_NOT_FOUND)

    @staticmethod
    def _mig_devices(gpu: Dict[str, Any]) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
        pairs = []
        for gi in sorted(gpu["gpu_instances"], key=lambda g: (g["start"], g["id"])):
            for ci in sorted(gi["compute_instances"], key=lambda c: (c["start"], c["id"])):
                pairs.append((gi, ci))
        return pairs

    @staticmethod
    def _processes_on(state: Dict[str, Any], uuids: List[str]) -> List[Dict[str, Any]]:
        return [p for p in state["processes"] if p["device_uuid"] in uuids]

    def _all_uuids(self, gpu: Dict[str, Any]) -> List[str]:
        return [gpu["uuid"]] + [ci["uuid"] for _gi, ci in self._mig_devices(gpu)]

    # ------------------------------------------------------------------ init and system
    def nvmlInit(self) -> None:
        if self._gpu_spec is not None:
            state_created_if_missing(self._file, self._gpu_spec)
        else:
            self._file.read()
        self._initialised += 1

    def nvmlInitWithFlags(self, flags: int) -> None:
        self.nvmlInit()

    def nvmlShutdown(self) -> None:
        self._require_init()
        self._initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._require_init()
        return DRIVER_VERSION

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._require_init()
        return NVML_VERSION

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._require_init()
        return CUDA_DRIVER_VERSION

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        state = self._read()
        for proc in state["processes"]:
            if proc["pid"] == pid:
                return proc["name"]
        raise_nvml(pynvml.NVML_ERROR_NOT_FOUND)

    # ------------------------------------------------------------------ devices
    def nvmlDeviceGetCount(self) -> int:
        return len(self._read()["gpus"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        state = self._read()
        self._gpu(state, index)
        return self._handle(KIND_DEVICE, index)

    def nvmlDeviceGetHandleByUUID(self, device_uuid: Any) -> Any:
        if isinstance(device_uuid, bytes):
            device_uuid = device_uuid.decode()
        state = self._read()
        for gpu in state["gpus"]:
            if gpu["uuid"] == device_uuid:
                return self._handle(KIND_DEVICE, gpu["index"])
            for gi, ci in self._mig_devices(gpu):
                if ci["uuid"] == device_uuid:
                    return self._handle(KIND_MIG_DEVICE, gpu["index"], gi["id"], ci["id"])
        raise_nvml(pynvml.NVML_ERROR_NOT_FOUND)

    def _device_or_mig(self, handle: Any) -> Tuple[Dict[str, Any], Dict[str, Any], Any]:
        """(state, gpu, (gi, ci) or None) for a device or MIG device handle.

        A MIG device handle names its GPU instance and compute instance ids, not a position, so
        it keeps naming the same MIG device while others come and go (as NVML's handles do); once
        its compute instance is gone the handle is invalid.
        """
        kind, index, gi_id, ci_id = self._decode(handle, KIND_DEVICE, KIND_MIG_DEVICE)
        state = self._read()
        gpu = self._gpu(state, index)
        if kind == KIND_DEVICE:
            return state, gpu, None
        for gi, ci in self._mig_devices(gpu):
            if gi["id"] == gi_id and ci["id"] == ci_id:
                return state, gpu, (gi, ci)
        raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        _state, gpu, mig = self._device_or_mig(handle)
        model = self._model(gpu)
        if mig is None:
            return model.nvml_name
        gi_profile = model.profile_by_id(mig[0]["profile_id"])
        return "%s MIG %s" % (model.nvml_name, gi_profile.name if gi_profile else "?")

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        _state, gpu, mig = self._device_or_mig(handle)
        return gpu["uuid"] if mig is None else mig[1]["uuid"]

    def nvmlDeviceGetSerial(self, handle: Any) -> str:
        _state, gpu, _mig = self._device_or_mig(handle)
        return gpu["serial"]

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        _state, gpu, mig = self._device_or_mig(handle)
        if mig is not None:
            raise_nvml(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu["index"]

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        _state, gpu, _mig = self._device_or_mig(handle)
        model = self._model(gpu)
        info = pynvml.nvmlPciInfo_t()
        bus_id = gpu["pci_bus_id"].encode()
        info.busId = bus_id
        info.busIdLegacy = bus_id[4:]
        info.domain = 0
        info.bus = gpu["pci_bus"]
        info.device = 0
        info.pciDeviceId = model.pci_device_id
        info.pciSubSystemId = model.pci_subsystem_id
        return info

    nvmlDeviceGetPciInfo_v3 = nvmlDeviceGetPciInfo

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        state, gpu, mig = self._device_or_mig(handle)
        model = self._model(gpu)
        memory = pynvml.c_nvmlMemory_t()
        if mig is None:
            total = model.memory_total_bytes
            used_by = self._all_uuids(gpu)
        else:
            profile = model.profile_by_id(mig[0]["profile_id"])
            total = (profile.memory_mib if profile else 0) * 1024 * 1024
            used_by = [mig[1]["uuid"]]
        used = sum(p["used_memory"] for p in self._processes_on(state, used_by))
        # A driver reserves some memory even when idle (480 MiB on the H100 capture, 615 on H200).
        reserved = model.idle_reserved_bytes if mig is None else 0
        memory.total = total
        memory.used = min(total, used + reserved)
        memory.free = total - memory.used
        return memory

    def nvmlDeviceGetArchitecture(self, handle: Any) -> int:
        _state, gpu, _mig = self._device_or_mig(handle)
        return self._model(gpu).arch_code

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> Tuple[int, int]:
        _state, gpu, _mig = self._device_or_mig(handle)
        return self._model(gpu).cuda_capability

    def nvmlDeviceIsMigDeviceHandle(self, handle: Any) -> int:
        kind, _index, _gi, _ci = self._decode(handle, KIND_DEVICE, KIND_MIG_DEVICE)
        return 1 if kind == KIND_MIG_DEVICE else 0

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> List[Any]:
        state, gpu, mig = self._device_or_mig(handle)
        uuids = self._all_uuids(gpu) if mig is None else [mig[1]["uuid"]]
        ids: Dict[str, Tuple[int, int]] = {}
        for gi, ci in self._mig_devices(gpu):
            ids[ci["uuid"]] = (gi["id"], ci["id"])
        result = []
        for proc in self._processes_on(state, uuids):
            info = pynvml.c_nvmlProcessInfo_v3_t()
            info.pid = proc["pid"]
            info.usedGpuMemory = proc["used_memory"]
            gi_id, ci_id = ids.get(proc["device_uuid"], (0xFFFFFFFF, 0xFFFFFFFF))
            info.gpuInstanceId = gi_id
            info.computeInstanceId = ci_id
            result.append(pynvml.nvmlStructToFriendlyObject(info))
        return result

    nvmlDeviceGetComputeRunningProcesses_v3 = nvmlDeviceGetComputeRunningProcesses

    # ------------------------------------------------------------------ MIG mode
    def nvmlDeviceGetMigMode(self, handle: Any) -> List[int]:
        _state, gpu, mig = self._device_or_mig(handle)
        if mig is not None:
            raise_nvml(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [gpu["mig_current"], gpu["mig_pending"]]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        _state, gpu, mig = self._device_or_mig(handle)
        if mig is not None:
            raise_nvml(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self._model(gpu).compute_slices if gpu["mig_current"] else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any:
        _state, gpu, mig = self._device_or_mig(handle)
        if mig is not None:
            raise_nvml(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if not gpu["mig_current"]:
            # a real H200 with MIG disabled answers Not Found
            # (tests/fixtures/real-h200/gpu_activity_capture.json)
            raise_nvml(pynvml.NVML_ERROR_NOT_FOUND)
        devices = self._mig_devices(gpu)
        if index < 0 or index >= len(devices):
            raise_nvml(pynvml.NVML_ERROR_NOT_FOUND)
        gi, ci = devices[index]
        return self._handle(KIND_MIG_DEVICE, gpu["index"], gi["id"], ci["id"])

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any) -> Any:
        _kind, index, _gi, _ci = self._decode(handle, KIND_MIG_DEVICE)
        return self._handle(KIND_DEVICE, index)

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        _state, _gpu, mig = self._device_or_mig(handle)
        if mig is None:
            raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return mig[0]["id"]

    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        _state, _gpu, mig = self._device_or_mig(handle)
        if mig is None:
            raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return mig[1]["id"]

    # ------------------------------------------------------------------ GPU-instance profiles
    def _profile_info_fill(self, info: Any, model: GpuModel, index: int) -> Any:
        profile = model.profile_by_index(index)
        if profile is None:
            if index >= DRIVER_GI_PROFILE_INDEX_BOUND or index < 0:
                raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            raise_nvml(pynvml.NVML_ERROR_NOT_SUPPORTED)
        info.id = profile.id
        info.isP2pSupported = 0
        info.sliceCount = profile.slice_count
        info.instanceCount = profile.instance_count
        info.multiprocessorCount = profile.multiprocessors
        info.copyEngineCount = profile.copy_engines
        info.decoderCount = profile.decoders
        info.encoderCount = profile.encoders
        info.jpegCount = profile.jpegs
        info.ofaCount = profile.ofas
        info.memorySizeMB = profile.memory_mib
        return info

    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, handle: Any, profile: int, version: int = 2
    ) -> Any:
        _state, gpu, mig = self._device_or_mig(handle)
        if mig is not None:
            raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        model = self._model(gpu)
        if version == 2:
            info = self._profile_info_fill(
                pynvml.c_nvmlGpuInstanceProfileInfo_v2_t(), model, profile
            )
            gi_profile = model.profile_by_index(profile)
            info.name = ("MIG " + (gi_profile.name if gi_profile else "")).encode()
            return info
        if version == 1:
            return self._profile_info_fill(pynvml.c_nvmlGpuInstanceProfileInfo_t(), model, profile)
        raise_nvml(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    nvmlDeviceGetGpuInstanceProfileInfoV = nvmlDeviceGetGpuInstanceProfileInfo

    def _profile_for_id(self, gpu: Dict[str, Any], profile_id: int) -> Any:
        profile = self._model(gpu).profile_by_id(profile_id)
        if profile is None:
            raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return profile

    @staticmethod
    def _occupied(gpu: Dict[str, Any]) -> List[Tuple[int, int]]:
        return [(gi["start"], gi["start"] + gi["size"]) for gi in gpu["gpu_instances"]]

    def nvmlDeviceGetGpuInstanceRemainingCapacity(self, handle: Any, profile_id: int) -> int:
        _state, gpu, mig = self._device_or_mig(handle)
        if mig is not None:
            raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        profile = self._profile_for_id(gpu, profile_id)
        same = [gi for gi in gpu["gpu_instances"] if gi["profile_id"] == profile_id]
        if len(same) >= profile.instance_count:
            return 0
        # Greedy count of instances that still fit, lowest start first (as NVML places them).
        occupied = self._occupied(gpu)
        fits = 0
        for start in profile.placement_starts:
            if fits + len(same) >= profile.instance_count:
                break
            if slot_free(occupied, start, profile.placement_size):
                occupied.append((start, start + profile.placement_size))
                fits += 1
        return fits

    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self, handle: Any, profile_id: int, placements_ref: Any, count_ref: Any
    ) -> int:
        _state, gpu, mig = self._device_or_mig(handle)
        if mig is not None:
            raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        profile = self._profile_for_id(gpu, profile_id)
        count = count_ref._obj if hasattr(count_ref, "_obj") else count_ref
        placements = profile.placements
        if placements_ref is None:
            count.value = len(placements)
            return pynvml.NVML_SUCCESS
        if count.value < len(placements):
            count.value = len(placements)
            raise_nvml(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
        for position, (start, size) in enumerate(placements):
            placements_ref[position].start = start
            placements_ref[position].size = size
        count.value = len(placements)
        return pynvml.NVML_SUCCESS

    nvmlDeviceGetGpuInstancePossiblePlacements_v2 = nvmlDeviceGetGpuInstancePossiblePlacements

    # ------------------------------------------------------------------ GPU instances
    def nvmlDeviceGetGpuInstances(
        self, handle: Any, profile_id: int, instances_ref: Any, count_ref: Any
    ) -> int:
        _state, gpu, mig = self._device_or_mig(handle)
        if mig is not None:
            raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        # With MIG disabled a real H100 answers success and a count of 0 (tests/fixtures/real-h100).
        self._profile_for_id(gpu, profile_id)
        matching = sorted(
            (gi for gi in gpu["gpu_instances"] if gi["profile_id"] == profile_id),
            key=lambda gi: gi["id"],
        )
        count = count_ref._obj if hasattr(count_ref, "_obj") else count_ref
        if instances_ref is not None and count.value < len(matching):
            count.value = len(matching)
            raise_nvml(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
        if instances_ref is not None:
            for position, gi in enumerate(matching):
                instances_ref[position] = self._handle(
                    KIND_GPU_INSTANCE, gpu["index"], gi["id"], 0, pynvml.c_nvmlGpuInstance_t
                )
        count.value = len(matching)
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetGpuInstanceById(self, handle: Any, gi_id: int) -> Any:
        _state, gpu, mig = self._device_or_mig(handle)
        if mig is not None:
            raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if not gpu["mig_current"]:
            raise_nvml(pynvml.NVML_ERROR_NOT_SUPPORTED)
        self._gi(gpu, gi_id)
        return self._handle(KIND_GPU_INSTANCE, gpu["index"], gi_id, 0, pynvml.c_nvmlGpuInstance_t)

    def _gi_from_handle(
        self, gi_handle: Any
    ) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
        _kind, index, gi_id, _ci = self._decode(gi_handle, KIND_GPU_INSTANCE)
        state = self._read()
        gpu = self._gpu(state, index)
        return state, gpu, self._gi(gpu, gi_id)

    def nvmlGpuInstanceGetInfo(self, gi_handle: Any) -> Any:
        _state, _gpu, gi = self._gi_from_handle(gi_handle)
        info = pynvml.c_nvmlGpuInstanceInfo_t()
        info.id = gi["id"]
        info.profileId = gi["profile_id"]
        info.placement.start = gi["start"]
        info.placement.size = gi["size"]
        return info

    # ------------------------------------------------------------------ compute instances
    def _ci_sizes(self, gpu: Dict[str, Any], gi: Dict[str, Any]) -> Tuple[int, Any]:
        gi_profile = self._model(gpu).profile_by_id(gi["profile_id"])
        if gi_profile is None:
            raise SimulatorError("state names unknown GPU-instance profile %r" % gi["profile_id"])
        return gi_profile.slice_count, gi_profile

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, gi_handle: Any, profile: int, eng_profile: int, version: int = 2
    ) -> Any:
        _state, gpu, gi = self._gi_from_handle(gi_handle)
        gi_slices, gi_profile = self._ci_sizes(gpu, gi)
        model = self._model(gpu)
        sizes = {
            CI_PROFILE_INDEX_BY_SLICES[s]: s for s in compute_instance_slice_options(gi_slices)
        }
        if eng_profile != pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED:
            raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if profile not in sizes:
            raise_nvml(pynvml.NVML_ERROR_NOT_SUPPORTED)
        ci_slices = sizes[profile]
        if version == 2:
            info = pynvml.c_nvmlComputeInstanceProfileInfo_v2_t()
        elif version == 1:
            info = pynvml.c_nvmlComputeInstanceProfileInfo_t()
        else:
            raise_nvml(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        info.id = profile
        info.sliceCount = ci_slices
        info.instanceCount = len(compute_instance_starts(gi_slices, ci_slices))
        info.multiprocessorCount = (
            gi_profile.multiprocessors
            if ci_slices == gi_slices
            else ci_slices * model.sms_per_compute_slice
        )
        info.sharedCopyEngineCount = gi_profile.copy_engines
        info.sharedDecoderCount = gi_profile.decoders
        info.sharedEncoderCount = gi_profile.encoders
        info.sharedJpegCount = gi_profile.jpegs
        info.sharedOfaCount = gi_profile.ofas
        if version == 2:
            info.name = ("MIG " + compute_instance_name(gi_profile, ci_slices)).encode()
        return info

    nvmlGpuInstanceGetComputeInstanceProfileInfoV = nvmlGpuInstanceGetComputeInstanceProfileInfo

    def _ci_slices_for_id(self, gpu: Dict[str, Any], gi: Dict[str, Any], profile_id: int) -> int:
        gi_slices, _gi_profile = self._ci_sizes(gpu, gi)
        for size in compute_instance_slice_options(gi_slices):
            if CI_PROFILE_INDEX_BY_SLICES[size] == profile_id:
                return size
        raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlGpuInstanceGetComputeInstanceRemainingCapacity(
        self, gi_handle: Any, profile_id: int
    ) -> int:
        _state, gpu, gi = self._gi_from_handle(gi_handle)
        gi_slices, _gi_profile = self._ci_sizes(gpu, gi)
        size = self._ci_slices_for_id(gpu, gi, profile_id)
        occupied = [(c["start"], c["start"] + c["size"]) for c in gi["compute_instances"]]
        fits = 0
        for start in compute_instance_starts(gi_slices, size):
            if slot_free(occupied, start, size):
                occupied.append((start, start + size))
                fits += 1
        return fits

    def nvmlGpuInstanceGetComputeInstancePossiblePlacements(
        self, gi_handle: Any, profile_id: int, placements_ref: Any, count_ref: Any
    ) -> int:
        _state, gpu, gi = self._gi_from_handle(gi_handle)
        gi_slices, _gi_profile = self._ci_sizes(gpu, gi)
        size = self._ci_slices_for_id(gpu, gi, profile_id)
        starts = compute_instance_starts(gi_slices, size)
        count = count_ref._obj if hasattr(count_ref, "_obj") else count_ref
        if placements_ref is None:
            count.value = len(starts)
            return pynvml.NVML_SUCCESS
        if count.value < len(starts):
            count.value = len(starts)
            raise_nvml(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
        for position, start in enumerate(starts):
            placements_ref[position].start = start
            placements_ref[position].size = size
        count.value = len(starts)
        return pynvml.NVML_SUCCESS

    def nvmlGpuInstanceGetComputeInstances(
        self, gi_handle: Any, profile_id: int, instances_ref: Any, count_ref: Any
    ) -> int:
        _state, gpu, gi = self._gi_from_handle(gi_handle)
        self._ci_slices_for_id(gpu, gi, profile_id)
        matching = sorted(
            (c for c in gi["compute_instances"] if c["profile_id"] == profile_id),
            key=lambda c: c["id"],
        )
        count = count_ref._obj if hasattr(count_ref, "_obj") else count_ref
        if instances_ref is not None and count.value < len(matching):
            count.value = len(matching)
            raise_nvml(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
        if instances_ref is not None:
            for position, ci in enumerate(matching):
                instances_ref[position] = self._handle(
                    KIND_COMPUTE_INSTANCE,
                    gpu["index"],
                    gi["id"],
                    ci["id"],
                    pynvml.c_nvmlComputeInstance_t,
                )
        count.value = len(matching)
        return pynvml.NVML_SUCCESS

    def nvmlGpuInstanceGetComputeInstanceById(self, gi_handle: Any, ci_id: int) -> Any:
        _state, gpu, gi = self._gi_from_handle(gi_handle)
        self._ci(gi, ci_id)
        return self._handle(
            KIND_COMPUTE_INSTANCE, gpu["index"], gi["id"], ci_id, pynvml.c_nvmlComputeInstance_t
        )

    def nvmlComputeInstanceGetInfo(self, ci_handle: Any) -> Any:
        _kind, index, gi_id, ci_id = self._decode(ci_handle, KIND_COMPUTE_INSTANCE)
        state = self._read()
        gpu = self._gpu(state, index)
        gi = self._gi(gpu, gi_id)
        ci = self._ci(gi, ci_id)
        info = pynvml.c_nvmlComputeInstanceInfo_t()
        info.gpuInstance = self._handle(
            KIND_GPU_INSTANCE, index, gi_id, 0, pynvml.c_nvmlGpuInstance_t
        )
        info.device = self._handle(KIND_DEVICE, index)
        info.id = ci["id"]
        info.profileId = ci["profile_id"]
        info.placement.start = ci["start"]
        info.placement.size = ci["size"]
        return info

    nvmlComputeInstanceGetInfo_v2 = nvmlComputeInstanceGetInfo

    # ------------------------------------------------------------------ utilisation
    # Derived from the CPU time of the processes registered on a GPU or GPU instance; in
    # _nvml_sim_activity, imported on the first call (as _nvml_sim_changes is).
    @staticmethod
    def _activity() -> Any:
        from ansible_collections.heteromig.fleet.plugins.module_utils.nvml import _nvml_sim_activity

        return _nvml_sim_activity

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        return self._activity().utilization_rates(self, handle)

    def nvmlGpmQueryDeviceSupport(self, handle: Any) -> Any:
        return self._activity().gpm_query_device_support(self, handle)

    def nvmlGpmSampleAlloc(self) -> Any:
        return self._activity().gpm_sample_alloc(self)

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        self._activity().gpm_sample_free(self, sample)

    def nvmlGpmSampleGet(self, handle: Any, sample: Any) -> Any:
        return self._activity().gpm_sample_get(self, handle, sample)

    def nvmlGpmMigSampleGet(self, handle: Any, gi_id: int, sample: Any) -> Any:
        return self._activity().gpm_mig_sample_get(self, handle, gi_id, sample)

    def nvmlGpmMetricsGet(self, request: Any) -> Any:
        return self._activity().gpm_metrics_get(self, request)

    # ------------------------------------------------------------------ changes
    # Every call that changes the host is in _nvml_sim_changes, imported on the first one, so
    # that a run that only reads does not compile it (see that module).
    @staticmethod
    def _changes() -> Any:
        from ansible_collections.heteromig.fleet.plugins.module_utils.nvml import _nvml_sim_changes

        return _nvml_sim_changes

    def nvmlDeviceSetMigMode(self, handle: Any, mode: int) -> int:
        return self._changes().set_mig_mode(self, handle, mode)

    def nvmlDeviceCreateGpuInstance(self, handle: Any, profile_id: int) -> Any:
        return self._changes().create_gpu_instance(
            self, handle, profile_id, None, "nvmlDeviceCreateGpuInstance"
        )

    def nvmlDeviceCreateGpuInstanceWithPlacement(
        self, handle: Any, profile_id: int, placement: Any
    ) -> Any:
        return self._changes().create_gpu_instance(
            self, handle, profile_id, placement, "nvmlDeviceCreateGpuInstanceWithPlacement"
        )

    def nvmlGpuInstanceDestroy(self, gi_handle: Any) -> int:
        return self._changes().destroy_gpu_instance(self, gi_handle)

    def nvmlGpuInstanceCreateComputeInstance(self, gi_handle: Any, profile_id: int) -> Any:
        return self._changes().create_compute_instance(
            self, gi_handle, profile_id, None, "nvmlGpuInstanceCreateComputeInstance"
        )

    def nvmlGpuInstanceCreateComputeInstanceWithPlacement(
        self, gi_handle: Any, profile_id: int, placement: Any
    ) -> Any:
        return self._changes().create_compute_instance(
            self,
            gi_handle,
            profile_id,
            placement,
            "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
        )

    def nvmlComputeInstanceDestroy(self, ci_handle: Any) -> int:
        return self._changes().destroy_compute_instance(self, ci_handle)

    # A GPU reset and a reboot are not NVML calls (nvidia-smi -r, a host reboot); the backend
    # layer maps them to these for simulated hosts.
    def sim_reset_gpu(self, index: int) -> None:
        self._changes().reset_gpu(self, index)

    def sim_reboot(self) -> None:
        """A host reboot: processes end, instances vanish, pending modes apply on Ampere."""
        self._changes().reboot(self)
