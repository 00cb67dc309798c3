# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state-changing half of the NVML simulator (``_nvml_sim``).

Everything that writes a simulator state file is here: creating one, the ``SimulatedNvml``
calls that change a host (MIG mode, creating and destroying GPU and compute instances, a GPU
reset, a reboot), and registering a process. Faults are injected by the tests (tests/sim_faults.py),
which write them into the state; the simulator honours them here.

Why a second module: AnsiballZ ships module_utils as sources, which the host compiles on every
run, and most runs only read (``gpu_facts``, a ``mig_layout`` run whose layout already
matches). ``SimulatedNvml`` keeps a one-line method for each change, which imports this module
on the first call; so a run that changes nothing compiles only the reading half.

A change takes an ``flock`` on ``<state file>.lock``, reads the state, and writes the new state
to a temporary file that then replaces the old one, so a reader (which takes no lock) always
opens one complete state.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Dict, Iterator, List

try:
    import pynvml
except ImportError:  # reported by open_backend, which imports pynvml before the simulator
    pynvml = None

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    compute_instance_starts,
    gpu_instance_id_for,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_state import (
    KIND_COMPUTE_INSTANCE,
    KIND_DEVICE,
    KIND_GPU_INSTANCE,
    STATE_FORMAT,
    STATE_VERSION,
    SimulatorError,
    StateFile,
    pid_alive,
    raise_nvml,
    slot_free,
)

if TYPE_CHECKING:  # the reading half imports this module on its first change
    from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim import (
        SimulatedNvml,
    )

# PCI buses of the eight GPUs of a DGX H100 / DGX A100, reused for simulated hosts; GPUs past
# the eighth take the other bus numbers in order, so no two GPUs of a host share a bus.
_DGX_BUSES = (0x1B, 0x43, 0x52, 0x61, 0x9D, 0xC3, 0xD1, 0xDF)
_BUSES = _DGX_BUSES + tuple(b for b in range(0x01, 0x100) if b not in _DGX_BUSES)


def _uuid_from(*parts: Any) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "heteromig-sim:" + ":".join(str(p) for p in parts)))


def new_state(gpus: List[Dict[str, Any]], seed: str) -> Dict[str, Any]:
    """A fresh state: MIG disabled on every GPU, no instances, no processes."""
    devices = []
    for index, gpu in enumerate(gpus):
        bus = _BUSES[index]
        devices.append(
            {
                "index": index,
                "model": gpu["model"],
                "uuid": "GPU-" + _uuid_from(seed, index),
                "serial": "16523%08d" % (uuid.UUID(_uuid_from(seed, "serial", index)).int % 10**8),
                "pci_bus_id": "00000000:%02X:00.0" % (bus & 0xFF),
                "pci_bus": bus & 0xFF,
                "reset_supported": gpu["reset_supported"],
                "mig_current": 0,
                "mig_pending": 0,
                "gpu_instances": [],
            }
        )
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "seed": seed,
        "spec": gpus,
        "gpus": devices,
        "processes": [],
        "faults": [],
    }


# ---------------------------------------------------------------------- the state file
@contextmanager
def _locked(state_file: StateFile) -> Iterator[None]:
    """The exclusive lock that serialises writers (readers need none: see StateFile.read)."""
    directory = os.path.dirname(state_file.path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(state_file.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise SimulatorError(
            "cannot open simulator lock file %s: %s" % (state_file.lock_path, exc.strerror)
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _store(state_file: StateFile, state: Dict[str, Any]) -> None:
    directory = os.path.dirname(state_file.path)
    fd, tmp = tempfile.mkstemp(prefix=".nvml-sim.", dir=directory)
    try:
        # Readable by every local user, like /dev/nvidia*: benchmarks need not run as root.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, state_file.path)
        state_file.forget()
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def create_state(state_file: StateFile, gpus: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Create the state file for ``gpus`` unless another process just did; return the state."""
    with _locked(state_file):
        if not state_file.exists():
            _store(state_file, new_state(gpus, seed=state_file.path))
        return state_file.load()


@contextmanager
def update(state_file: StateFile) -> Iterator[Dict[str, Any]]:
    """Read-modify-write under the exclusive lock; nothing is written if the body raises."""
    with _locked(state_file):
        state = state_file.load()
        completed = False
        try:
            yield state
            completed = True
        finally:
            if completed:
                _store(state_file, state)


@contextmanager
def _changing(sim: SimulatedNvml, function: str) -> Iterator[Dict[str, Any]]:
    """The state, for NVML call ``function`` to change: live processes only, faults applied."""
    sim._require_init()
    with update(sim._file) as state:
        state["processes"] = [p for p in state["processes"] if pid_alive(p["pid"])]
        _maybe_fault(sim._file, state, function)
        yield state


def _maybe_fault(state_file: StateFile, state: Dict[str, Any], function: str) -> None:
    for fault in state["faults"]:
        if fault.get("function") != function or fault.get("remaining", 0) <= 0:
            continue
        if fault.get("skip", 0) > 0:
            fault["skip"] -= 1
            continue
        fault["remaining"] -= 1
        code = int(fault.get("error", pynvml.NVML_ERROR_UNKNOWN))
        # The fault's bookkeeping must persist even though the call fails.
        _store(state_file, state)
        raise_nvml(code)


def _unwrapped(placement: Any) -> Any:
    """The placement structure, also when passed by reference (``ctypes.byref``)."""
    return placement._obj if hasattr(placement, "_obj") else placement


def _start_for(placement: Any, starts: Any, size: int, occupied: List[Any]) -> int:
    """Where a new GPU or compute instance of ``size`` goes, as NVML decides it.

    ``starts`` are the profile's valid starts and ``occupied`` the (lo, hi) ranges taken.
    Without a placement, the lowest free start; with one, that start if it is valid and free.
    """
    if placement is None:
        free = [start for start in starts if slot_free(occupied, start, size)]
        if not free:
            raise_nvml(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
        return free[0]
    start = int(placement.start)
    if start not in starts or int(placement.size) != size:
        raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    if not slot_free(occupied, start, size):
        raise_nvml(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
    return start


# ---------------------------------------------------------------------- SimulatedNvml's changes
def set_mig_mode(sim: SimulatedNvml, handle: Any, mode: int) -> int:
    _kind, index, _gi, _ci = sim._decode(handle, KIND_DEVICE)
    if mode not in (pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_ENABLE):
        raise_nvml(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    with _changing(sim, "nvmlDeviceSetMigMode") as state:
        gpu = sim._gpu(state, index)
        model = sim._model(gpu)
        if gpu["gpu_instances"] and mode == pynvml.NVML_DEVICE_MIG_DISABLE:
            raise_nvml(pynvml.NVML_ERROR_IN_USE)
        gpu["mig_pending"] = mode
        if mode == gpu["mig_current"]:
            return pynvml.NVML_SUCCESS
        if model.mode_change_needs_reset:
            return pynvml.NVML_ERROR_RESET_REQUIRED
        if sim._processes_on(state, sim._all_uuids(gpu)):
            return pynvml.NVML_ERROR_IN_USE
        gpu["mig_current"] = mode
        return pynvml.NVML_SUCCESS


def create_gpu_instance(
    sim: SimulatedNvml, handle: Any, profile_id: int, placement: Any, function: str
) -> Any:
    """A new GPU instance: at ``placement``, or (None) at the lowest free start, as NVML does."""
    placement = _unwrapped(placement)
    _kind, index, _gi, _ci = sim._decode(handle, KIND_DEVICE)
    with _changing(sim, function) as state:
        gpu = sim._gpu(state, index)
        if not gpu["mig_current"]:
            raise_nvml(pynvml.NVML_ERROR_NOT_SUPPORTED)
        model = sim._model(gpu)
        profile = sim._profile_for_id(gpu, profile_id)
        same = [gi for gi in gpu["gpu_instances"] if gi["profile_id"] == profile_id]
        if len(same) >= profile.instance_count:
            raise_nvml(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
        start = _start_for(
            placement, profile.placement_starts, profile.placement_size, sim._occupied(gpu)
        )
        gi_id = gpu_instance_id_for(model, start, profile.placement_size)
        gpu["gpu_instances"].append(
            {
                "id": gi_id,
                "profile_id": profile.id,
                "start": start,
                "size": profile.placement_size,
                "compute_instances": [],
            }
        )
        return sim._handle(KIND_GPU_INSTANCE, index, gi_id, 0, pynvml.c_nvmlGpuInstance_t)


def destroy_gpu_instance(sim: SimulatedNvml, gi_handle: Any) -> int:
    _kind, index, gi_id, _ci = sim._decode(gi_handle, KIND_GPU_INSTANCE)
    with _changing(sim, "nvmlGpuInstanceDestroy") as state:
        gpu = sim._gpu(state, index)
        gi = sim._gi(gpu, gi_id)
        if gi["compute_instances"]:
            raise_nvml(pynvml.NVML_ERROR_IN_USE)
        gpu["gpu_instances"].remove(gi)
        return pynvml.NVML_SUCCESS


def create_compute_instance(
    sim: SimulatedNvml, gi_handle: Any, profile_id: int, placement: Any, function: str
) -> Any:
    """A new compute instance in a GPU instance: at ``placement``, or the lowest free start."""
    placement = _unwrapped(placement)
    _kind, index, gi_id, _ci = sim._decode(gi_handle, KIND_GPU_INSTANCE)
    with _changing(sim, function) as state:
        gpu = sim._gpu(state, index)
        gi = sim._gi(gpu, gi_id)
        gi_slices, _gi_profile = sim._ci_sizes(gpu, gi)
        size = sim._ci_slices_for_id(gpu, gi, profile_id)
        occupied = [(c["start"], c["start"] + c["size"]) for c in gi["compute_instances"]]
        start = _start_for(placement, compute_instance_starts(gi_slices, size), size, occupied)
        used_ids = {c["id"] for c in gi["compute_instances"]}
        ci_id = next(i for i in range(64) if i not in used_ids)
        gi["compute_instances"].append(
            {
                "id": ci_id,
                "profile_id": profile_id,
                "start": start,
                "size": size,
                "uuid": "MIG-" + _uuid_from(gpu["uuid"], gi_id, ci_id, start, size),
            }
        )
        return sim._handle(
            KIND_COMPUTE_INSTANCE, index, gi_id, ci_id, pynvml.c_nvmlComputeInstance_t
        )


def destroy_compute_instance(sim: SimulatedNvml, ci_handle: Any) -> int:
    _kind, index, gi_id, ci_id = sim._decode(ci_handle, KIND_COMPUTE_INSTANCE)
    with _changing(sim, "nvmlComputeInstanceDestroy") as state:
        gpu = sim._gpu(state, index)
        gi = sim._gi(gpu, gi_id)
        ci = sim._ci(gi, ci_id)
        if sim._processes_on(state, [ci["uuid"]]):
            raise_nvml(pynvml.NVML_ERROR_IN_USE)
        gi["compute_instances"].remove(ci)
        return pynvml.NVML_SUCCESS


def reset_gpu(sim: SimulatedNvml, index: int) -> None:
    with _changing(sim, "sim_reset_gpu") as state:
        gpu = sim._gpu(state, index)
        if not gpu["reset_supported"]:
            raise_nvml(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if sim._processes_on(state, sim._all_uuids(gpu)):
            raise_nvml(pynvml.NVML_ERROR_IN_USE)
        gpu["gpu_instances"] = []
        gpu["mig_current"] = gpu["mig_pending"]


def reboot(sim: SimulatedNvml) -> None:
    """A host reboot: processes end, instances vanish, pending modes apply on Ampere."""
    with _changing(sim, "sim_reboot") as state:
        state["processes"] = []
        for gpu in state["gpus"]:
            gpu["gpu_instances"] = []
            if sim._model(gpu).mig_mode_persists:
                gpu["mig_current"] = gpu["mig_pending"]
            else:
                gpu["mig_current"] = gpu["mig_pending"] = 0


# ---------------------------------------------------------------------- what a CUDA context does
def register_process(
    state_path: str, pid: int, device_uuid: str, name: str, used_memory: int = 0
) -> None:
    """Record that ``pid`` runs on a simulated GPU or MIG device (what a CUDA context does)."""
    with update(StateFile(state_path)) as state:
        known = {gpu["uuid"] for gpu in state["gpus"]}
        for gpu in state["gpus"]:
            for gi in gpu["gpu_instances"]:
                known.update(ci["uuid"] for ci in gi["compute_instances"])
        if device_uuid not in known:
            raise SimulatorError(
                "no simulated GPU or MIG device with UUID %s in %s" % (device_uuid, state_path)
            )
        state["processes"] = [
            p for p in state["processes"] if p["pid"] != pid and pid_alive(p["pid"])
        ]
        state["processes"].append(
            {"pid": pid, "device_uuid": device_uuid, "name": name, "used_memory": used_memory}
        )
