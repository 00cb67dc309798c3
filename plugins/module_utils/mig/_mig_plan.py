# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan MIG layouts before touching a GPU: pure functions over plain data, no NVML.

- ``plan_gpu`` resolves and places a GPU's layout (``_mig_packing``), compares the GPU's
  current instances with the planned ones (how strictly placement must match is configurable:
  ``instances_match``) and lists what to destroy and create.
- One-line texts of a GPU's current and planned state, and plain data for module results.

The rest of the planner: geometry and layouts as written (``_mig_layout_spec``), resolving and
exact packing (``_mig_packing``), GPU selection (``_mig_select``) and NVIDIA mig-parted v1
configs (``_mig_parted``).

Errors in the input raise ``LayoutError`` with a message that names the problem; nothing here
changes any state. Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    Geometry,
    LayoutError,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_packing import (
    DesiredLayout,
    PlacedInstance,
    plan_layout,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    CurrentGpu,
    CurrentInstance,
    GpuEntry,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_state import (
    PLACEMENT_MATCH_MODES,
)


# -------------------------------------------------------------------------------- planning
class GpuPlan(NamedTuple):
    """What to do to one GPU; ``changed`` False means it is left exactly as it is."""

    gpu: CurrentGpu
    geometry: Geometry
    entry: GpuEntry
    mig_enabled: bool
    target: Tuple[PlacedInstance, ...]
    changed: bool
    set_mode: Optional[bool]  # MIG mode to request, None to leave the mode alone
    mode_change: bool  # the current mode flips (whole-GPU operation; may need a reset)
    keep: Tuple[CurrentInstance, ...]
    destroy: Tuple[CurrentInstance, ...]
    create: Tuple[PlacedInstance, ...]


def _split_sizes(compute: Sequence[Tuple[int, int]]) -> Tuple[int, ...]:
    return tuple(sorted((size for _start, size in compute), reverse=True))


def instances_match(
    current: Sequence[CurrentInstance],
    target: Sequence[PlacedInstance],
    desired: DesiredLayout,
    match: str = "exact",
) -> bool:
    """Whether the current instances already satisfy the layout.

    - ``exact``: same profiles at the planned placements, same compute-instance placements;
    - ``explicit``: same profiles and compute splits; only explicitly given placements must
      match;
    - ``none``: same profiles and compute splits, placements ignored (mig-parted's rule).
    """
    if match not in PLACEMENT_MATCH_MODES:
        raise LayoutError(
            "placement_match must be one of %s, not %r" % (", ".join(PLACEMENT_MATCH_MODES), match)
        )
    if len(current) != len(target):
        return False
    if match == "exact":
        return sorted(c.key for c in current) == sorted(t.key for t in target)
    have = sorted((c.profile_id, _split_sizes(c.compute)) for c in current)
    want = sorted((t.profile.id, _split_sizes(t.compute)) for t in target)
    if have != want:
        return False
    if match == "explicit":
        starts = {(c.profile_id, c.start) for c in current}
        return all(
            (i.profile.id, i.placement) in starts
            for i in desired.instances
            if i.placement is not None
        )
    return True


def plan_gpu(
    gpu: CurrentGpu,
    geometry: Geometry,
    entry: GpuEntry,
    match: str = "exact",
) -> GpuPlan:
    """Plan one GPU: resolve and place its layout, compare with what exists, list the work."""
    desired, target = plan_layout(entry.layout, geometry)
    enabled = desired.mig_enabled
    mode_ok = gpu.mig_current == enabled and gpu.mig_pending == enabled
    if not enabled:
        changed = not mode_ok or bool(gpu.instances)
        return GpuPlan(
            gpu,
            geometry,
            entry,
            False,
            (),
            changed,
            None if mode_ok else False,
            gpu.mig_current != enabled,
            (),
            tuple(gpu.instances),
            (),
        )
    if mode_ok and instances_match(gpu.instances, target, desired, match):
        return GpuPlan(
            gpu, geometry, entry, True, target, False, None, False, tuple(gpu.instances), (), ()
        )
    wanted = {t.key: t for t in target}
    keep = tuple(c for c in gpu.instances if c.key in wanted)
    kept = {c.key for c in keep}
    destroy = tuple(c for c in gpu.instances if c.key not in wanted)
    create = tuple(t for t in target if t.key not in kept)
    return GpuPlan(
        gpu,
        geometry,
        entry,
        True,
        target,
        True,
        None if mode_ok else True,
        gpu.mig_current != enabled,
        keep,
        destroy,
        create,
    )


# ------------------------------------------------------------------------- text for humans
def placed_text(
    profile: str, start: int, size_slices: int, compute: Sequence[Tuple[int, int]]
) -> str:
    """``3g.40gb@4`` or ``3g.40gb@4(1c+1c+1c)`` for a split one."""
    text = "%s@%d" % (profile, start)
    if [s for _st, s in compute] != [size_slices]:
        text += "(%s)" % "+".join("%dc" % s for _st, s in sorted(compute))
    return text


def current_text(gpu: CurrentGpu, geometry: Optional[Geometry] = None) -> str:
    """One line describing a GPU's current MIG state."""
    mode = "enabled" if gpu.mig_current else "disabled"
    if gpu.mig_pending != gpu.mig_current:
        mode += " (pending %s)" % ("enabled" if gpu.mig_pending else "disabled")
    parts = []
    for inst in sorted(gpu.instances, key=lambda i: (i.start, i.gi_id)):
        prof = geometry.profile_by_id(inst.profile_id) if geometry else None
        slices = prof.slice_count if prof else sum(s for _st, s in inst.compute)
        parts.append(placed_text(inst.profile, inst.start, slices, inst.compute))
    text = "%s: MIG %s" % (gpu.identity.label, mode)
    if gpu.mig_current:
        text += "; " + (", ".join(parts) if parts else "no instances")
    return text


def target_text(plan: GpuPlan) -> str:
    """One line describing the state a plan leads to."""
    label = plan.gpu.identity.label
    if not plan.mig_enabled:
        return "%s: MIG disabled" % label
    parts = [
        placed_text(t.profile.name, t.start, t.profile.slice_count, t.compute) for t in plan.target
    ]
    return "%s: MIG enabled; %s" % (label, ", ".join(parts) if parts else "no instances")


def layout_list(instances: Iterable[Any]) -> List[Dict[str, Any]]:
    """Plain data for a list of Current/PlacedInstance (module return values)."""
    result = []
    for inst in instances:
        if isinstance(inst, PlacedInstance):
            profile, start, size = inst.profile.name, inst.start, inst.profile.size
            gi_id = None
        else:
            profile, start, size, gi_id = inst.profile, inst.start, inst.size, inst.gi_id
        item: Dict[str, Any] = {
            "profile": profile,
            "placement": {"start": start, "size": size},
            "compute_instances": [{"start": s, "size": z} for s, z in inst.compute],
        }
        if gi_id is not None:
            item["gpu_instance_id"] = gi_id
        result.append(item)
    result.sort(key=lambda i: i["placement"]["start"])
    return result
