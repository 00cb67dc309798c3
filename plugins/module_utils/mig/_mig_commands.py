# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a GPU's plan means to an admin: its planned slices and the ``nvidia-smi`` commands.

The commands are the ones an admin would type by hand for the same change, in the order the
module makes it (``_mig_apply._apply_gpu``): MIG mode first, then the compute instances and GPU
instances that go (``-dci`` before ``-dgi``, as nvidia-smi refuses to destroy a GPU instance that
still has compute instances), then the GPU instances that are created, each with its profile id
and placement start (``-cgi <profile id>:<start>``), and the default compute instance of each
(``-C``, nvidia-smi's "create the default compute instance" flag for ``-cgi``). A GPU instance
split into several compute instances gets them with ``-cci <CI profile id>:<start>`` on the
GPU instance nvidia-smi printed for it. Syntax: ``nvidia-smi mig --help`` and the NVIDIA MIG
user guide (``nvidia-smi mig -cgi 14:0,14:2``, ``nvidia-smi mig -dci``, ``nvidia-smi mig -dgi``,
``nvidia-smi -i 0 -mig 1``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_packing import PlacedInstance
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_plan import GpuPlan
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import CurrentInstance

# nvidia-smi's -cci takes compute-instance profile ids: NVML's COMPUTE_INSTANCE_PROFILE_* enum,
# by size in compute slices (what `nvidia-smi mig -lcip` prints in its ID column)
CI_PROFILE_ID_BY_SLICES: Dict[int, int] = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}


def _is_default_split(inst: PlacedInstance) -> bool:
    return list(inst.compute) == [(0, inst.profile.slice_count)]


def _ids(instances: Sequence[CurrentInstance]) -> str:
    return ",".join(str(i.gi_id) for i in sorted(instances, key=lambda i: i.gi_id))


def nvidia_smi_commands(plan: GpuPlan) -> List[str]:
    """The nvidia-smi commands that make the same change as ``plan`` (none if it changes nothing)."""
    if not plan.changed:
        return []
    gpu = plan.gpu.identity.index
    mig = "nvidia-smi mig -i %d" % gpu
    commands: List[str] = []
    if not plan.mig_enabled:
        destroy: Sequence[CurrentInstance] = plan.gpu.instances
        if destroy:
            commands += [
                "%s -gi %s -dci" % (mig, _ids(destroy)),
                "%s -gi %s -dgi" % (mig, _ids(destroy)),
            ]
        if plan.set_mode is not None:
            commands.append("nvidia-smi -i %d -mig 0" % gpu)
        return commands
    if plan.set_mode is not None:
        commands.append("nvidia-smi -i %d -mig 1" % gpu)
    if plan.destroy:
        commands += [
            "%s -gi %s -dci" % (mig, _ids(plan.destroy)),
            "%s -gi %s -dgi" % (mig, _ids(plan.destroy)),
        ]
    default = [t for t in plan.create if _is_default_split(t)]
    split = [t for t in plan.create if not _is_default_split(t)]
    if default:
        commands.append(
            "%s -cgi %s -C" % (mig, ",".join("%d:%d" % (t.profile.id, t.start) for t in default))
        )
    for target in split:
        commands.append("%s -cgi %d:%d" % (mig, target.profile.id, target.start))
        commands.append(
            "%s -gi <GPU instance ID printed for %s@%d> -cci %s"
            % (
                mig,
                target.profile.name,
                target.start,
                ",".join(
                    "%d:%d" % (CI_PROFILE_ID_BY_SLICES[size], start)
                    for start, size in target.compute
                ),
            )
        )
    return commands


def _slice_row(target: PlacedInstance, kept: bool) -> Tuple[str, ...]:
    profile = target.profile
    compute = (
        ""
        if _is_default_split(target)
        else " %s" % "+".join("%dc@%d" % (size, start) for start, size in target.compute)
    )
    return (
        profile.name,
        "id %d" % profile.id,
        "placement %d:%d" % (target.start, profile.size),
        profile.slices_text(target.start) + compute + (" (kept)" if kept else ""),
    )


def planned_slices(plan: GpuPlan) -> List[Dict[str, Any]]:
    """The planned GPU instances, by placement start: profile, ids, placement, compute split."""
    kept = {c.key for c in plan.keep}
    return (
        [
            {
                "profile": t.profile.name,
                "profile_id": t.profile.id,
                "placement": {"start": t.start, "size": t.profile.size},
                "compute_instances": [{"start": start, "size": size} for start, size in t.compute],
                "kept": t.key in kept,
            }
            for t in sorted(plan.target, key=lambda t: t.start)
        ]
        if plan.mig_enabled
        else []
    )


def plan_text(plan: GpuPlan) -> str:
    """The part of ``--diff`` an admin reads for one GPU that changes: slices, then commands."""
    label = plan.gpu.identity.label
    lines = []
    if not plan.mig_enabled:
        lines.append("%s: planned: MIG disabled" % label)
    else:
        kept = {c.key for c in plan.keep}
        lines.append(
            "%s: planned slices (profile, GPU instance profile id, placement start:size):" % label
        )
        rows = [_slice_row(t, t.key in kept) for t in sorted(plan.target, key=lambda t: t.start)]
        widths = [max(len(row[i]) for row in rows) for i in range(3)] if rows else []
        for row in rows:
            lines.append(
                "  "
                + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3]))
                + "  "
                + row[3]
            )
        if not rows:
            lines.append("  no instances")
    commands = nvidia_smi_commands(plan)
    if commands:
        lines.append("  equivalent nvidia-smi commands:")
        lines += ["    " + command for command in commands]
    return "\n".join(lines) + "\n"
