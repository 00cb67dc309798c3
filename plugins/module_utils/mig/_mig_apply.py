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

Reading the GPUs, planning the host, the busy check and the drain (steps 1 and 2) are
``_mig_host``'s; this module runs the steps, changes each GPU, rolls back and builds the result.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_commands import (
    nvidia_smi_commands,
    plan_text,
    planned_slices,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_host import (
    GpuRecord,
    HostMig,
    HostRun,
    MigApplyError,
    _process_text,
    _record,
    check_busy,
    plan_host,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    Geometry,
    LayoutError,
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
    target_text,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    CurrentGpu,
    CurrentInstance,
    GpuEntry,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_state import (
    OPERATIONS,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    BackendError,
    GpuBackend,
    nvml_error_text,
)


class _VerifyError(Exception):
    """What NVML shows after a change differs from the plan."""


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
