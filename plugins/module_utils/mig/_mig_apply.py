# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply MIG layouts through NVML: read, plan every GPU, then change only what must change.

Everything goes through ``backend.nvml`` (real pynvml or the simulator, one code path); the
only operations NVML has no call for (a GPU reset) go through the ``GpuBackend``.

Order of work, so that bad input or a busy GPU never leaves anything half-applied:

1. read every GPU (identity, MIG mode, instances) and plan every selected GPU
   (``_mig_plan``); any input error stops here, before a single change;
2. find compute processes on what would be destroyed; refuse, naming them, unless asked to
   drain (SIGTERM, a grace period, then SIGKILL, until NVML no longer lists them);
3. per GPU that changes, in index order: set the MIG mode if it must change (Hopper applies it
   at once; Ampere needs a reset of that GPU only; a GPU that cannot be reset is reported as
   needing a reboot), destroy the instances that go, create the new ones with explicit
   placements chosen by the planner, and verify the result against the plan;
4. if anything fails on a GPU, its previous layout is re-created (same placements, hence the
   same GPU-instance ids), or, failing that, the GPU is left cleanly empty; then the run fails
   with the cause. GPUs already done stay done (and verified); GPUs not yet reached are
   untouched.

GPUs that need no change are never written to: no mode call, no reset, no destroy.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_commands import (
    nvidia_smi_commands,
    plan_text,
    planned_slices,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    Geometry,
    LayoutError,
    geometry_from_profiles,
    layout_spec_text,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_parted import (
    export_mig_parted,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_plan import (
    GpuPlan,
    current_text,
    layout_list,
    placed_text,
    plan_gpu,
    target_text,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    CurrentGpu,
    CurrentInstance,
    GpuEntry,
    GpuIdentity,
    assign_layouts,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_state import (
    OPERATIONS,
    MigStateReader,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    BackendError,
    GpuBackend,
    nvml_error_text,
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


class _VerifyError(Exception):
    """What NVML shows after a change differs from the plan."""


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


class GpuOutcome:
    """What happened to one managed GPU (module return ``gpus[]``)."""

    def __init__(self, plan: GpuPlan) -> None:
        self.plan = plan
        self.actions: List[str] = []
        self.reset = False
        self.reboot_required = False
        self.reboot_reason: Optional[str] = None
        self.drained: List[Dict[str, Any]] = []
        self.after: Optional[CurrentGpu] = None
        self.status = "unchanged"

    def mig_device_count(self) -> int:
        """MIG devices (compute instances) of the GPU afterwards; in check mode, of the plan."""
        if self.after is not None:
            return sum(len(i.compute) for i in self.after.instances)
        if self.plan.changed:
            return sum(len(t.compute) for t in self.plan.target)
        return sum(len(i.compute) for i in self.plan.gpu.instances)

    def as_dict(self) -> Dict[str, Any]:
        plan = self.plan
        gpu = plan.gpu
        result: Dict[str, Any] = {
            "index": gpu.identity.index,
            "uuid": gpu.identity.uuid,
            "pci_bus_id": gpu.identity.pci_bus_id,
            "model": gpu.identity.model,
            "name": gpu.identity.name,
            "selected_by": plan.entry.where,
            "layout": layout_spec_text(plan.entry.layout),
            "changed": plan.changed,
            "status": self.status,
            "actions": list(self.actions),
            "reset": self.reset,
            "reboot_required": self.reboot_required,
            "drained": list(self.drained),
            "mig_device_count": self.mig_device_count(),
            "planned_slices": planned_slices(plan) if plan.changed else [],
            "nvidia_smi_commands": nvidia_smi_commands(plan),
            "before": _state_dict(gpu),
            "after": _state_dict(self.after) if self.after is not None else _planned_dict(plan),
        }
        if self.reboot_reason:
            result["reboot_reason"] = self.reboot_reason
        return result


def _state_dict(gpu: CurrentGpu) -> Dict[str, Any]:
    return {
        "mig_enabled": gpu.mig_current,
        "mig_pending": gpu.mig_pending,
        "instances": layout_list(gpu.instances),
    }


def _planned_dict(plan: GpuPlan) -> Dict[str, Any]:
    return {
        "mig_enabled": plan.mig_enabled,
        "mig_pending": plan.mig_enabled,
        "instances": layout_list(plan.target),
    }


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


def _verify(mig: HostMig, record: GpuRecord, plan: GpuPlan) -> CurrentGpu:
    state, devices = mig.read_state(record, with_devices=True)
    if state.mig_current != plan.mig_enabled or state.mig_pending != plan.mig_enabled:
        raise _VerifyError(
            "MIG mode is %s (pending %s), expected %s"
            % (state.mig_current, state.mig_pending, plan.mig_enabled)
        )
    have = sorted(i.key for i in state.instances)
    want = sorted(t.key for t in plan.target)
    if have != want:
        missing = [t for t in plan.target if t.key not in have]
        extra = [i for i in state.instances if i.key not in want]
        raise _VerifyError(
            "after applying, NVML shows %s; missing: %s; unexpected: %s"
            % (
                current_text(state, plan.geometry),
                ", ".join(
                    placed_text(t.profile.name, t.start, t.profile.slice_count, t.compute)
                    for t in missing
                )
                or "none",
                ", ".join(_instance_text(i, plan.geometry) for i in extra) or "none",
            )
        )
    usable = {(d["gpu_instance_id"], d["compute_instance_id"]) for d in devices if d.get("uuid")}
    lacking = [
        "%s compute instance %d" % (_instance_text(i, plan.geometry), ci_id)
        for i in state.instances
        for ci_id in i.ci_ids
        if (i.gi_id, ci_id) not in usable
    ]
    if lacking:
        raise _VerifyError("after applying, NVML lists no MIG device for %s" % ", ".join(lacking))
    return state


def _apply_gpu(mig: HostMig, record: GpuRecord, plan: GpuPlan, outcome: GpuOutcome) -> None:
    """Change one GPU as planned; raises (after rolling back) on failure."""
    nvml = mig.nvml
    snapshot, _devices = mig.read_state(record)
    label = record.identity.label
    mode_touched = False
    try:
        if not plan.mig_enabled:
            for inst in snapshot.instances:
                mig.destroy_instance(record, inst)
                outcome.actions.append(_destroyed_text(inst, plan.geometry))
            if plan.set_mode is not None:
                mode_touched = True
                if mig.set_mig_mode(record, False):
                    outcome.actions.append(
                        "disabled MIG"
                        if plan.mode_change
                        else "cancelled the pending MIG mode change"
                    )
                elif not _reset(mig, record, outcome, False):
                    return
        else:
            if plan.set_mode is not None:
                mode_touched = True
                if mig.set_mig_mode(record, True):
                    outcome.actions.append(
                        "enabled MIG"
                        if plan.mode_change
                        else "cancelled the pending MIG mode change"
                    )
                elif not _reset(mig, record, outcome, True):
                    return
            state, _devices = mig.read_state(record)
            wanted = {t.key for t in plan.target}
            for inst in state.instances:
                if inst.key not in wanted:
                    mig.destroy_instance(record, inst)
                    outcome.actions.append(_destroyed_text(inst, plan.geometry))
            have = {i.key for i in state.instances}
            for target in plan.target:
                if target.key in have:
                    continue
                gi_id = mig.create_instance(
                    record, target.profile.id, target.start, target.profile.size, target.compute
                )
                outcome.actions.append(
                    "created %s (GPU instance %d)"
                    % (
                        placed_text(
                            target.profile.name,
                            target.start,
                            target.profile.slice_count,
                            target.compute,
                        ),
                        gi_id,
                    )
                )
        outcome.after = _verify(mig, record, plan)
        outcome.status = "changed"
    except (nvml.NVMLError, BackendError, _VerifyError) as exc:
        cause = nvml_error_text(exc) if isinstance(exc, nvml.NVMLError) else str(exc)
        step = outcome.actions[-1] if outcome.actions else "before the first change"
        rollback = _rollback(mig, record, snapshot, plan, mode_touched)
        outcome.status = "failed"
        raise MigApplyError(
            "changing %s failed: %s (last completed step: %s). %s"
            % (label, cause, step, rollback["message"]),
            {"failed_gpu": record.identity.index, "rollback": rollback},
        ) from exc


def _instance_text(inst: CurrentInstance, geometry: Geometry) -> str:
    prof = geometry.profile_by_id(inst.profile_id)
    slices = prof.slice_count if prof else sum(size for _start, size in inst.compute)
    return placed_text(inst.profile, inst.start, slices, inst.compute)


def _destroyed_text(inst: CurrentInstance, geometry: Geometry) -> str:
    return "destroyed %s (GPU instance %d)" % (_instance_text(inst, geometry), inst.gi_id)


def _reset(mig: HostMig, record: GpuRecord, outcome: GpuOutcome, enable: bool) -> bool:
    """Reset one GPU so that a pending mode applies; False (reboot required) if impossible."""
    nvml = mig.nvml
    why = "enable MIG" if enable else "disable MIG"
    try:
        mig.backend.reset_gpu(record.identity.index)
    except (nvml.NVMLError, BackendError) as exc:
        reason = nvml_error_text(exc) if isinstance(exc, nvml.NVMLError) else str(exc)
        outcome.reboot_required = True
        outcome.reboot_reason = "a GPU reset to %s failed: %s" % (why, reason)
        outcome.status = "reboot_required"
        outcome.actions.append("requested: %s (pending until reboot)" % why)
        state, _devices = mig.read_state(record)
        outcome.after = state
        return False
    outcome.reset = True
    current, _pending = mig.read_mig_mode(record)
    outcome.actions.append("reset the GPU to %s" % why)
    if current != enable:
        outcome.reboot_required = True
        outcome.reboot_reason = "the MIG mode is still pending after a GPU reset"
        outcome.status = "reboot_required"
        outcome.after, _devices = mig.read_state(record)
        return False
    return True


def _rollback(
    mig: HostMig, record: GpuRecord, snapshot: CurrentGpu, plan: GpuPlan, mode_touched: bool
) -> Dict[str, Any]:
    """Put the GPU back as it was, or leave it cleanly empty; say which."""
    nvml = mig.nvml
    geometry = plan.geometry
    try:
        mig.destroy_all(record)
        current, _pending = mig.read_mig_mode(record)
        if mode_touched and current != snapshot.mig_current:
            if geometry.mode_change_needs_reset is False:
                mig.set_mig_mode(record, snapshot.mig_current)
            else:
                state, _devices = mig.read_state(record)
                return {
                    "outcome": "emptied",
                    "message": "The GPU was left cleanly empty with MIG %s: restoring MIG %s "
                    "needs another GPU reset"
                    % (
                        "enabled" if current else "disabled",
                        "enabled" if snapshot.mig_current else "disabled",
                    ),
                    "state": current_text(state, geometry),
                }
        for inst in snapshot.instances:
            mig.create_instance(record, inst.profile_id, inst.start, inst.size, inst.compute)
        state, _devices = mig.read_state(record)
        if sorted(i.key for i in state.instances) == sorted(i.key for i in snapshot.instances):
            return {
                "outcome": "restored",
                "message": "Its previous layout was restored (%s)." % current_text(state, geometry),
                "state": current_text(state, geometry),
            }
        raise _VerifyError("restored layout differs: %s" % current_text(state, geometry))
    except (nvml.NVMLError, BackendError, _VerifyError) as exc:
        first = nvml_error_text(exc) if isinstance(exc, nvml.NVMLError) else str(exc)
        try:
            mig.destroy_all(record)
            state, _devices = mig.read_state(record)
            return {
                "outcome": "emptied",
                "message": "Restoring its previous layout failed (%s); the GPU was left "
                "cleanly empty." % first,
                "state": current_text(state, geometry),
            }
        except (nvml.NVMLError, BackendError) as again:
            second = nvml_error_text(again) if isinstance(again, nvml.NVMLError) else str(again)
            return {
                "outcome": "failed",
                "message": "Rollback failed too (%s; then %s): check the GPU by hand "
                "(nvidia-smi mig -lgi)." % (first, second),
                "state": "unknown",
            }


def run_host(
    backend: GpuBackend,
    entries: Sequence[GpuEntry],
    *,
    match: str = "exact",
    drain: bool = False,
    drain_timeout: float = 30.0,
    check_mode: bool = False,
    operation: str = "apply",
    export_label: str = "current",
    mig: Optional[HostMig] = None,
    with_devices: bool = True,
    host_state: Optional[Dict[str, Any]] = None,
    prepare: Optional[Callable[[HostRun, bool], None]] = None,
) -> Dict[str, Any]:
    """Plan, check and (unless check mode / plan / assert / export) apply; the module's result.

    ``prepare(run, check_mode)`` is called for an apply that changes something, before the busy
    check (``_mig_change``: hooks, GPU clients); its MigApplyError stops it, nothing changed.

    ``operation="plan"`` is a check-mode apply that reports ``changed: false`` (it changes
    nothing, whatever the mode); every operation returns ``would_change``, whether an apply
    would change (or changed) the host.

    Raises LayoutError for invalid input (nothing changed) and MigApplyError for a refused or
    failed run (``.result`` carries the per-GPU details gathered so far).
    """
    if operation not in OPERATIONS:
        raise LayoutError(
            "operation must be one of %s, not %r" % (", ".join(OPERATIONS), operation)
        )
    mig = mig or HostMig(backend)
    run = plan_host(mig, entries, match, with_devices, host_state)
    outcomes = {index: GpuOutcome(plan) for index, plan in run.plans.items()}
    check_mode = check_mode or operation == "plan"
    for outcome in outcomes.values():
        if outcome.plan.changed:
            outcome.status = "would_change" if (check_mode or operation != "apply") else "pending"

    if operation == "assert":
        differing = [plan for plan in run.plans.values() if plan.changed]
        if differing:
            raise MigApplyError(
                "MIG layout differs on %d GPU%s: %s"
                % (
                    len(differing),
                    "" if len(differing) == 1 else "s",
                    "; ".join(
                        "%s is %s, wanted %s"
                        % (
                            p.gpu.identity.label,
                            current_text(p.gpu, p.geometry).split(": ", 1)[1],
                            target_text(p).split(": ", 1)[1],
                        )
                        for p in differing
                    ),
                ),
                _result(run, outcomes, export_label, changed=False),
            )
        return _result(run, outcomes, export_label, changed=False)
    if operation == "export":
        return _result(run, outcomes, export_label, changed=False)

    partial = _result(run, outcomes, export_label, changed=False)
    try:
        if (
            prepare is not None
            and operation == "apply"
            and any(p.changed for p in run.plans.values())
        ):
            prepare(run, check_mode)
        victims = check_busy(run, drain)
    except MigApplyError as exc:
        exc.result = dict(partial, **exc.result)
        raise
    if check_mode:
        for index, (_rec, procs) in victims.items():
            outcomes[index].drained = procs
            outcomes[index].actions.append(
                "would drain %s" % ", ".join(_process_text(p) for p in procs)
            )
        return _result(
            run,
            outcomes,
            export_label,
            changed=operation == "apply" and any(p.changed for p in run.plans.values()),
        )
    if victims:
        try:
            mig.drain(victims, drain_timeout)
        except MigApplyError as exc:
            exc.result = dict(partial, **exc.result)
            raise
        for index, (_rec, procs) in victims.items():
            outcomes[index].drained = procs
            outcomes[index].actions.append(
                "drained %s" % ", ".join(_process_text(p) for p in procs)
            )

    for index in sorted(run.plans):
        plan = run.plans[index]
        if not plan.changed:
            continue
        record = _record(run, index)
        try:
            _apply_gpu(mig, record, plan, outcomes[index])
        except MigApplyError as exc:
            _refresh(run, sorted(run.plans))
            exc.result = dict(_result(run, outcomes, export_label, changed=True), **exc.result)
            raise
    _refresh(run, [i for i, p in run.plans.items() if p.changed])
    return _result(run, outcomes, export_label, changed=any(p.changed for p in run.plans.values()))


def _refresh(run: HostRun, indices: Sequence[int]) -> None:
    for index in indices:
        run.states[index], run.devices[index] = run.mig.read_state(
            _record(run, index), run.with_devices
        )


def _result(
    run: HostRun, outcomes: Dict[int, GpuOutcome], export_label: str, changed: bool
) -> Dict[str, Any]:
    geometries = {}
    for record in run.records:
        if record.identity.mig_capable:
            geometries[record.identity.index] = run.mig.geometry(record)
    gpus = [outcomes[i].as_dict() for i in sorted(outcomes)]
    reboot = [g["index"] for g in gpus if g["reboot_required"]]
    before = "\n".join(
        current_text(outcomes[i].plan.gpu, outcomes[i].plan.geometry) for i in sorted(outcomes)
    )
    after_lines = []
    for index in sorted(outcomes):
        outcome = outcomes[index]
        if outcome.after is not None:
            after_lines.append(current_text(outcome.after, outcome.plan.geometry))
        elif outcome.plan.changed:
            after_lines.append(target_text(outcome.plan))
        else:
            after_lines.append(current_text(outcome.plan.gpu, outcome.plan.geometry))
    result: Dict[str, Any] = {
        "changed": changed,
        "would_change": any(outcome.plan.changed for outcome in outcomes.values()),
        "reboot_required": bool(reboot),
        "reboot_required_gpus": reboot,
        "gpus": gpus,
        "unmanaged_gpus": [
            r.identity.index for r in run.records if r.identity.index not in outcomes
        ],
        "mig_parted_config": export_mig_parted(
            [run.states[i] for i in sorted(run.states)], geometries, export_label
        ),
        "diff": {
            "before": before + "\n" if before else "",
            "after": "\n".join(after_lines) + "\n" if after_lines else "",
        },
    }
    prepared = "".join(
        plan_text(outcomes[i].plan) for i in sorted(outcomes) if outcomes[i].plan.changed
    )
    if prepared:
        result["diff"]["prepared"] = prepared
    if run.with_devices:
        result["mig_devices"] = [d for i in sorted(run.devices) for d in run.devices[i]]
    return result
