# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One host's MIG through NVML: its GPUs as read, their plans, the busy check and the drain.

``HostMig`` reads a host's GPUs (through ``_mig_state``), holds the NVML calls that change them
(destroy and create instances, set the MIG mode) and drains processes; ``plan_host`` plans every
selected GPU (``_mig_plan``) into a ``HostRun`` before any change, and ``check_busy`` finds the
processes a change would hit. Applying the plans, the rollback and the module's result are
``_mig_apply``'s.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    Geometry,
    LayoutError,
    geometry_from_profiles,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_plan import (
    GpuPlan,
    plan_gpu,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    CurrentGpu,
    CurrentInstance,
    GpuEntry,
    GpuIdentity,
    assign_layouts,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_state import (
    MigStateReader,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    GpuBackend,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    CI_PROFILE_INDEX_BY_SLICES,
    model_for_nvml_name,
)

# After SIGKILL, how long to wait for the driver (NVML) to let go of a drained process.
KILL_WAIT_SECONDS = 10.0
_POLL_SECONDS = 0.1


class MigApplyError(Exception):
    """The run failed (busy GPU, NVML failure, failed verification); ``result`` has details."""

    def __init__(self, msg: str, result: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(msg)
        self.result = result or {}


class GpuRecord(NamedTuple):
    """One GPU as read at the start of a run."""

    identity: GpuIdentity
    handle: Any
    mig_current: bool
    mig_pending: bool


def _gpu_record(gpu: Dict[str, Any], handle: Any) -> GpuRecord:
    """A GPU entry of a host state (``MigStateReader``) as the planner's record."""
    identity = GpuIdentity(**{field: gpu[field] for field in GpuIdentity._fields})
    return GpuRecord(identity, handle, gpu["mig_current"], gpu["mig_pending"])


class HostMig:
    """MIG state and changes of one host, through one opened ``GpuBackend``."""

    def __init__(
        self,
        backend: GpuBackend,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        kill: Callable[[int, int], None] = os.kill,
        state: Optional[MigStateReader] = None,
    ) -> None:
        self.backend = backend
        self.nvml = backend.nvml
        self.state = state or MigStateReader(backend.nvml)
        self.reader = self.state.reader
        self._sleep = sleep
        self._clock = clock
        self._kill = kill
        self._geometries: Dict[str, Geometry] = {}

    # ------------------------------------------------------------------------------ reading
    def records(self, host_state: Optional[Dict[str, Any]] = None) -> List[GpuRecord]:
        """Every GPU, from ``host_state`` (a ``MigStateReader.host_state()``) or read now."""
        gpus = (host_state or self.state.host_state())["gpus"]
        return [_gpu_record(gpu, self.state.handle(gpu["index"])) for gpu in gpus]

    def geometry(self, record: GpuRecord) -> Geometry:
        """The GPU's profiles and placements as NVML reports them (read once per model)."""
        name = record.identity.name
        if name not in self._geometries:
            self._geometries[name] = geometry_from_profiles(
                name, model_for_nvml_name(name), self.state.profiles(record.handle, name)
            )
        return self._geometries[name]

    def read_mig_mode(self, record: GpuRecord) -> Tuple[bool, bool]:
        return self.state.mig_mode(record.handle)

    def current(self, record: GpuRecord, gpu: Dict[str, Any]) -> CurrentGpu:
        """The ``CurrentGpu`` of one GPU entry of a host state."""
        instances = tuple(
            CurrentInstance(
                gi_id=i["gi_id"],
                profile_id=i["profile_id"],
                profile=i["profile"],
                start=i["start"],
                size=i["size"],
                compute=tuple((start, size) for start, size in i["compute"]),
                ci_ids=tuple(i["ci_ids"]),
            )
            for i in gpu["instances"]
        )
        return CurrentGpu(record.identity, gpu["mig_current"], gpu["mig_pending"], instances)

    def read_state(
        self, record: GpuRecord, with_devices: bool = False
    ) -> Tuple[CurrentGpu, List[Dict[str, Any]]]:
        """The GPU's MIG mode and GPU instances with their compute instances, read now.

        With ``with_devices``, also its MIG devices (UUIDs) in the ``gpu_facts`` shape; that
        costs several NVML calls per device, so planning alone does without.
        """
        if not record.identity.mig_capable:
            return CurrentGpu(record.identity, False, False, ()), []
        current, pending = self.read_mig_mode(record)
        instances = self.state.instances(record.handle, record.identity.name) if current else []
        gpu = {"mig_current": current, "mig_pending": pending, "instances": instances}
        state = self.current(record, gpu)
        return state, self.read_devices(record) if with_devices and current else []

    def read_devices(self, record: GpuRecord) -> List[Dict[str, Any]]:
        """The GPU's MIG devices (one per compute instance), as ``gpu_facts`` reports them."""
        if not record.identity.mig_capable:
            return []
        current, _pending = self.read_mig_mode(record)
        if not current:
            return []
        return self.state.mig_devices(record.handle, record.identity._asdict())

    def processes(self, record: GpuRecord, devices: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        return self.reader.processes(record.handle, devices)

    # --------------------------------------------------------------------------- changing
    def _gi_handle(self, record: GpuRecord, gi_id: int) -> Any:
        return self.nvml.nvmlDeviceGetGpuInstanceById(record.handle, gi_id)

    def destroy_instance(self, record: GpuRecord, instance: CurrentInstance) -> None:
        nvml = self.nvml
        gi = self._gi_handle(record, instance.gi_id)
        for ci_id in instance.ci_ids:
            nvml.nvmlComputeInstanceDestroy(nvml.nvmlGpuInstanceGetComputeInstanceById(gi, ci_id))
        nvml.nvmlGpuInstanceDestroy(gi)

    def destroy_all(self, record: GpuRecord) -> None:
        state, _devices = self.read_state(record)
        for instance in state.instances:
            self.destroy_instance(record, instance)

    def create_instance(
        self,
        record: GpuRecord,
        profile_id: int,
        start: int,
        size: int,
        compute: Sequence[Tuple[int, int]],
    ) -> int:
        """Create a GPU instance at an explicit placement and its compute instances."""
        nvml = self.nvml
        placement = nvml.c_nvmlGpuInstancePlacement_t()
        placement.start = start
        placement.size = size
        gi = nvml.nvmlDeviceCreateGpuInstanceWithPlacement(
            record.handle, profile_id, ctypes.byref(placement)
        )
        gi_id = int(nvml.nvmlGpuInstanceGetInfo(gi).id)
        for ci_start, ci_size in compute:
            info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                gi,
                CI_PROFILE_INDEX_BY_SLICES[ci_size],
                nvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
            )
            ci_placement = nvml.c_nvmlComputeInstancePlacement_t()
            ci_placement.start = ci_start
            ci_placement.size = ci_size
            nvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement(
                gi, info.id, ctypes.byref(ci_placement)
            )
        return gi_id

    def set_mig_mode(self, record: GpuRecord, enabled: bool) -> bool:
        """Request a MIG mode; True if it is in effect now, False if it waits for a reset."""
        nvml = self.nvml
        mode = nvml.NVML_DEVICE_MIG_ENABLE if enabled else nvml.NVML_DEVICE_MIG_DISABLE
        nvml.nvmlDeviceSetMigMode(record.handle, mode)
        current, _pending = self.read_mig_mode(record)
        return current == enabled

    # ------------------------------------------------------------------------------ drain
    def drain(
        self, victims: Dict[int, Tuple[GpuRecord, List[Dict[str, Any]]]], grace: float
    ) -> List[Dict[str, Any]]:
        """Terminate processes (SIGTERM, then SIGKILL after ``grace`` s) until NVML drops them."""
        pids = {p["pid"]: p for _rec, procs in victims.values() for p in procs}
        for pid in sorted(pids):
            self._signal(pid, signal.SIGTERM, pids[pid])
        left = self._wait_gone(victims, set(pids), grace)
        if left:
            for pid in sorted(left):
                self._signal(pid, signal.SIGKILL, pids[pid])
            left = self._wait_gone(victims, left, KILL_WAIT_SECONDS)
        if left:
            raise MigApplyError(
                "drain failed: still on the GPU after SIGTERM, %gs of grace and SIGKILL: %s; "
                "nothing was changed"
                % (grace, "; ".join(_process_text(pids[p]) for p in sorted(left))),
                {"busy": [pids[p] for p in sorted(left)]},
            )
        return [pids[p] for p in sorted(pids)]

    def _signal(self, pid: int, sig: int, proc: Dict[str, Any]) -> None:
        try:
            self._kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise MigApplyError(
                "drain failed: no permission to signal %s (run the task as root)"
                % _process_text(proc),
                {"busy": [proc]},
            ) from exc

    def _wait_gone(
        self,
        victims: Dict[int, Tuple[GpuRecord, List[Dict[str, Any]]]],
        pids: Set[int],
        timeout: float,
    ) -> Set[int]:
        deadline = self._clock() + timeout
        while True:
            present = set()
            for record, _procs in victims.values():
                for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(record.handle):
                    present.add(int(proc.pid))
            left = pids & present
            if not left or self._clock() >= deadline:
                return left
            self._sleep(_POLL_SECONDS)


def _process_text(proc: Dict[str, Any]) -> str:
    where = []
    if proc.get("gpu_instance_id") is not None:
        where.append("GPU instance %s" % proc["gpu_instance_id"])
    if proc.get("compute_instance_id") is not None:
        where.append("compute instance %s" % proc["compute_instance_id"])
    if proc.get("mig_uuid"):
        where.append(proc["mig_uuid"])
    text = "pid %s (%s)" % (proc["pid"], proc.get("name") or "unknown process")
    if proc.get("gpu_index") is not None:
        text += " on GPU %s" % proc["gpu_index"]
    if where:
        text += " " + ", ".join(where)
    return text


def _affected_processes(plan: GpuPlan, processes: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Processes the plan would kill the ground under: all of them if the mode flips."""
    if not plan.changed:
        return []
    if plan.mode_change:
        return list(processes)
    doomed = {inst.gi_id for inst in plan.destroy}
    return [p for p in processes if p.get("gpu_instance_id") in doomed]


def _group_errors(errors: List[Tuple[GpuIdentity, str]]) -> str:
    grouped: Dict[str, List[GpuIdentity]] = {}
    for identity, message in errors:
        grouped.setdefault(message, []).append(identity)
    parts = []
    for message, identities in grouped.items():
        if len(identities) == 1:
            who = identities[0].label
        else:
            who = "GPUs %s (%s)" % (
                ", ".join(str(i.index) for i in identities),
                ", ".join(sorted({i.model or i.name for i in identities})),
            )
        parts.append("%s: %s" % (who, message))
    return "; ".join(parts)


class HostRun(NamedTuple):
    """A planned run over one host: every GPU's record, state and (if selected) plan."""

    mig: HostMig
    records: List[GpuRecord]
    states: Dict[int, CurrentGpu]
    devices: Dict[int, List[Dict[str, Any]]]
    plans: Dict[int, GpuPlan]
    with_devices: bool = True


def plan_host(
    mig: HostMig,
    entries: Sequence[GpuEntry],
    match: str = "exact",
    with_devices: bool = True,
    host_state: Optional[Dict[str, Any]] = None,
) -> HostRun:
    """Plan every selected GPU from ``host_state`` (read now if not given).

    Raises LayoutError, before any change, if the layout is invalid for any GPU.
    """
    if host_state is None:
        host_state = mig.state.host_state()
    records = mig.records(host_state)
    identities = [r.identity for r in records]
    assigned = assign_layouts(entries, identities) if entries else {}
    states: Dict[int, CurrentGpu] = {}
    devices: Dict[int, List[Dict[str, Any]]] = {}
    plans: Dict[int, GpuPlan] = {}
    errors: List[Tuple[GpuIdentity, str]] = []
    for record, gpu in zip(records, host_state["gpus"]):
        index = record.identity.index
        states[index] = mig.current(record, gpu)
        devices[index] = mig.read_devices(record) if with_devices and gpu["mig_current"] else []
        entry = assigned.get(index)
        if entry is None:
            continue
        if not record.identity.mig_capable:
            if entry.layout.mig_enabled:
                errors.append(
                    (
                        record.identity,
                        "%s selects it, but the GPU does not support MIG" % entry.where,
                    )
                )
            continue
        try:
            plans[index] = plan_gpu(states[index], mig.geometry(record), entry, match)
        except LayoutError as exc:
            errors.append((record.identity, "%s: %s" % (entry.where, exc)))
    if errors:
        raise LayoutError(_group_errors(errors))
    return HostRun(mig, records, states, devices, plans, with_devices)


def _record(run: HostRun, index: int) -> GpuRecord:
    return run.records[index]


def check_busy(run: HostRun, drain: bool) -> Dict[int, Tuple[GpuRecord, List[Dict[str, Any]]]]:
    """Processes on what would be destroyed, per GPU; MigApplyError naming them unless drain."""
    victims: Dict[int, Tuple[GpuRecord, List[Dict[str, Any]]]] = {}
    for index, plan in sorted(run.plans.items()):
        if not plan.changed:
            continue
        record = _record(run, index)
        devices = run.devices[index] or run.mig.read_devices(record)
        procs = _affected_processes(plan, run.mig.processes(record, devices))
        if procs:
            victims[index] = (record, [dict(p, gpu_index=index) for p in procs])
    if victims and not drain:
        busy = [p for _rec, procs in victims.values() for p in procs]
        raise MigApplyError(
            "refusing to change busy GPUs: %s; nothing was changed. Stop these processes, or "
            "set drain: true to terminate them (SIGTERM, then SIGKILL after drain_timeout)"
            % "; ".join(_process_text(p) for p in busy),
            {"busy": busy},
        )
    return victims
