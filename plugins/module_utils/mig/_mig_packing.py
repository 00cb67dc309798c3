# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resolve a layout against one GPU and place its instances: an exact packing, no NVML.

- ``resolve_layout`` checks a layout's profiles against a GPU and expands named layouts for it
  (``all-1g`` is as many 1-slice instances as the GPU holds at once, found by packing).
- ``pack_instances`` is an exact packing check over the placements NVML reports (not a memory
  sum): it finds an arrangement of non-overlapping placements if one exists, chooses it
  deterministically (largest instances first, each at the lowest start that still lets the rest
  fit; explicit placements are kept), and otherwise says precisely why none exists.
- ``pack_compute`` places a compute-instance split inside one GPU instance;
  ``plan_layout`` resolves and places a layout for one GPU.

Errors raise ``LayoutError``; nothing here changes any state. Private module (leading
underscore): not a public API of the collection.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    Geometry,
    LayoutError,
    LayoutSpec,
    Profile,
    _normalise_profile_name,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    MODELS,
    compute_instance_slice_options,
    compute_instance_starts,
)


# ------------------------------------------------------------------------ resolved layouts
class ResolvedInstance(NamedTuple):
    """A requested GPU instance whose profile exists on the GPU."""

    profile: Profile
    placement: Optional[int]
    compute: Tuple[int, ...]  # CI sizes; never empty once resolved


class DesiredLayout(NamedTuple):
    mig_enabled: bool
    instances: Tuple[ResolvedInstance, ...] = ()


def _other_models_with_profile(name: str, exclude: Optional[str]) -> List[str]:
    wanted = _normalise_profile_name(name)
    return [
        model.key
        for model in MODELS
        if model.key != exclude and any(p.name.lower() == wanted for p in model.profiles)
    ]


def _unknown_profile(name: str, geometry: Geometry) -> LayoutError:
    others = _other_models_with_profile(name, geometry.model)
    if others:
        return LayoutError(
            "profile %s is not offered by %s: it is a profile of %s. %s offers: %s"
            % (name, geometry.label, ", ".join(others), geometry.label, geometry.profile_names)
        )
    return LayoutError(
        "unknown profile %s: %s offers %s" % (name, geometry.label, geometry.profile_names)
    )


def _filled(geometry: Geometry, profile: Profile) -> Tuple[ResolvedInstance, ...]:
    """As many instances of ``profile`` as the GPU can hold at once."""
    for count in range(profile.instance_count, 0, -1):
        instances = tuple(
            ResolvedInstance(profile, None, (profile.slice_count,)) for _copy in range(count)
        )
        if _search(_free_items(instances), 0) is not None:
            return instances
    return ()


def _resolve_named(named: str, geometry: Geometry) -> Tuple[ResolvedInstance, ...]:
    def full(profile: Profile) -> ResolvedInstance:
        return ResolvedInstance(profile, None, (profile.slice_count,))

    if named == "all-enabled":
        return ()
    match = re.match(r"^all-(\d)g$", named)
    if match:
        slices = int(match.group(1))
        profile = geometry.standard_profile(slices)
        if profile is None:
            raise LayoutError(
                "named layout %s needs a %d-slice GPU-instance profile, which %s does not "
                "offer (it has %d compute slices; its profiles: %s)"
                % (named, slices, geometry.label, geometry.compute_slices, geometry.profile_names)
            )
        return _filled(geometry, profile)
    if named == "all-max":
        largest = max(
            geometry.profiles, key=lambda p: (p.slice_count, p.size, -p.index), default=None
        )
        if largest is None:
            raise LayoutError("%s reports no GPU-instance profiles" % geometry.label)
        return (full(largest),)
    if named == "all-balanced":
        half = geometry.standard_profile(geometry.compute_slices // 2)
        one = geometry.standard_profile(1)
        if half is None or one is None:
            raise LayoutError(
                "named layout all-balanced needs the %d-slice and 1-slice profiles, which %s "
                "does not both offer (its profiles: %s)"
                % (geometry.compute_slices // 2, geometry.label, geometry.profile_names)
            )
        chosen = [half]
        smaller = [
            p
            for p in (geometry.standard_profile(s) for s in (4, 3, 2, 1))
            if p is not None and p.slice_count < half.slice_count
        ]
        if smaller:
            chosen.append(smaller[0])
        used = sum(p.slice_count for p in chosen)
        chosen.extend([one] * max(geometry.compute_slices - used, 0))
        return tuple(full(p) for p in chosen)
    # all-<profile>
    profile = geometry.profile(named[4:])
    if profile is None:
        raise _unknown_profile(named[4:], geometry)
    return _filled(geometry, profile)


def resolve_layout(spec: LayoutSpec, geometry: Geometry) -> DesiredLayout:
    """Check a layout's profiles against one GPU and expand named layouts for it."""
    if not spec.mig_enabled:
        return DesiredLayout(False)
    if spec.named:
        return DesiredLayout(True, _resolve_named(spec.named, geometry))
    resolved = []
    for item in spec.instances:
        profile = geometry.profile(item.profile)
        if profile is None:
            raise _unknown_profile(item.profile, geometry)
        resolved.append(
            ResolvedInstance(profile, item.placement, item.compute or (profile.slice_count,))
        )
    return DesiredLayout(True, tuple(resolved))


# ---------------------------------------------------------------------------------- packing
class PlacedInstance(NamedTuple):
    """A GPU instance with its placement chosen, and its compute instances placed inside it."""

    profile: Profile
    start: int
    compute: Tuple[Tuple[int, int], ...]  # (start, size) of each CI, in compute slices
    explicit: bool = False

    @property
    def key(self) -> Tuple[int, int, Tuple[Tuple[int, int], ...]]:
        return (self.profile.id, self.start, self.compute)


def _mask(start: int, size: int) -> int:
    return ((1 << size) - 1) << start


def _span(start: int, size: int) -> str:
    return "%d" % start if size == 1 else "%d-%d" % (start, start + size - 1)


def _free_items(instances: Sequence[ResolvedInstance]) -> List[ResolvedInstance]:
    """Free (not explicitly placed) instances in the planner's canonical order."""
    free = [i for i in instances if i.placement is None]
    free.sort(
        key=lambda i: (
            -i.profile.size,
            -i.profile.slice_count,
            i.profile.index,
            i.profile.name,
            tuple(-s for s in i.compute),
        )
    )
    return free


def _search(items: Sequence[ResolvedInstance], occupied: int) -> Optional[List[int]]:
    """Starts for ``items`` (in order) that avoid ``occupied`` and each other; None if none.

    Depth-first over each item's starts in ascending order, so the first solution is the
    canonical one. Equal consecutive items take increasing starts (no permuted duplicates).
    """
    starts: List[int] = []

    def place(position: int, occupied: int) -> bool:
        if position == len(items):
            return True
        item = items[position]
        low = -1
        if position and items[position - 1] == item:
            low = starts[position - 1]
        for start in item.profile.starts:
            if start <= low:
                continue
            mask = _mask(start, item.profile.size)
            if occupied & mask:
                continue
            starts.append(start)
            if place(position + 1, occupied | mask):
                return True
            starts.pop()
        return False

    return starts if place(0, occupied) else None


def _best_partial(
    items: Sequence[ResolvedInstance], occupied: int
) -> Tuple[List[Tuple[ResolvedInstance, int]], List[ResolvedInstance], int]:
    """The arrangement that places the most of ``items`` (first found in canonical order)."""
    best: List[Tuple[ResolvedInstance, int]] = []
    best_left: List[ResolvedInstance] = list(items)
    best_occupied = occupied
    current: List[Tuple[ResolvedInstance, int]] = []
    left: List[ResolvedInstance] = []

    def visit(position: int, occupied: int) -> None:
        nonlocal best, best_left, best_occupied
        if len(current) + (len(items) - position) <= len(best):
            return
        if position == len(items):
            best, best_left, best_occupied = list(current), list(left), occupied
            return
        item = items[position]
        for start in item.profile.starts:
            mask = _mask(start, item.profile.size)
            if not occupied & mask:
                current.append((item, start))
                visit(position + 1, occupied | mask)
                current.pop()
        left.append(item)
        visit(position + 1, occupied)
        left.pop()

    visit(0, occupied)
    return best, best_left, best_occupied


def pack_compute(profile: Profile, sizes: Sequence[int]) -> Tuple[Tuple[int, int], ...]:
    """Place compute instances of ``sizes`` inside one GPU instance of ``profile``.

    Sizes and starts come from the catalog's compute-instance rules (NVML has no way to list
    them before the GPU instance exists). Largest first, each at the lowest start that lets the
    rest fit. Raises LayoutError if the split is not offered or does not fit.
    """
    slices = profile.slice_count
    offered = compute_instance_slice_options(slices)
    for size in sizes:
        if size not in offered:
            raise LayoutError(
                "compute-instance split %s does not fit %s: a %d-slice compute instance is not "
                "offered; %s offers compute instances of %s slices"
                % (
                    _split_text(sizes),
                    profile.name,
                    size,
                    profile.name,
                    ", ".join(str(s) for s in offered),
                )
            )
    if sum(sizes) > slices:
        raise LayoutError(
            "compute-instance split %s does not fit %s: it needs %d compute slices, the GPU "
            "instance has %d" % (_split_text(sizes), profile.name, sum(sizes), slices)
        )
    order = sorted(sizes, reverse=True)
    placed: List[Tuple[int, int]] = []

    def place(position: int, occupied: int) -> bool:
        if position == len(order):
            return True
        size = order[position]
        low = placed[-1][0] if position and order[position - 1] == size else -1
        for start in compute_instance_starts(slices, size):
            mask = _mask(start, size)
            if start <= low or occupied & mask:
                continue
            placed.append((start, size))
            if place(position + 1, occupied | mask):
                return True
            placed.pop()
        return False

    if not place(0, 0):
        rules = "; ".join(
            "%dc can start at compute slice %s"
            % (size, ", ".join(str(s) for s in compute_instance_starts(slices, size)))
            for size in sorted(set(sizes), reverse=True)
        )
        raise LayoutError(
            "compute-instance split %s does not fit %s: the compute-instance placements "
            "cannot be combined (%s)" % (_split_text(sizes), profile.name, rules)
        )
    return tuple(sorted(placed))


def _split_text(sizes: Iterable[int]) -> str:
    return "+".join("%dc" % s for s in sizes)


def pack_instances(
    geometry: Geometry, instances: Sequence[ResolvedInstance]
) -> Tuple[PlacedInstance, ...]:
    """Choose a placement for every instance, exactly, over the GPU's reported placements.

    Explicit placements are kept; the rest are placed largest first, each at the lowest start
    that still lets all the others fit (a depth-first search over every combination, so a
    layout that fits in any creation order is found). The result is sorted by start and does
    not depend on the order the instances were listed in.
    """
    computes: Dict[ResolvedInstance, Tuple[Tuple[int, int], ...]] = {}
    for item in instances:
        if item not in computes:
            computes[item] = pack_compute(item.profile, item.compute)
    explicit = [i for i in instances if i.placement is not None]
    occupied = 0
    holders: Dict[int, ResolvedInstance] = {}
    for item in explicit:
        profile, start = item.profile, item.placement or 0
        if start not in profile.starts:
            raise LayoutError(
                "placement %d is not valid for %s on %s: it can start at %s (%d memory slices "
                "each)"
                % (
                    start,
                    profile.name,
                    geometry.label,
                    ", ".join(str(s) for s in profile.starts),
                    profile.size,
                )
            )
        mask = _mask(start, profile.size)
        for bit in range(geometry.memory_slices):
            if mask & (1 << bit) and bit in holders:
                other = holders[bit]
                other_start = other.placement or 0
                raise LayoutError(
                    "explicit placements overlap: %s at %d (%s) and %s at %d (%s) share memory "
                    "slice %d"
                    % (
                        profile.name,
                        start,
                        profile.slices_text(start),
                        other.profile.name,
                        other_start,
                        other.profile.slices_text(other_start),
                        bit,
                    )
                )
        for bit in range(geometry.memory_slices):
            if mask & (1 << bit):
                holders[bit] = item
        occupied |= mask

    counts: Dict[str, int] = {}
    for item in instances:
        counts[item.profile.name] = counts.get(item.profile.name, 0) + 1
    for item in instances:
        limit = item.profile.instance_count
        if counts[item.profile.name] > limit:
            raise LayoutError(
                "layout does not fit %s: %d x %s requested, but the GPU holds at most %d "
                "instance%s of %s"
                % (
                    geometry.label,
                    counts[item.profile.name],
                    item.profile.name,
                    limit,
                    "" if limit == 1 else "s",
                    item.profile.name,
                )
            )
    compute = sum(i.profile.slice_count for i in instances)
    if compute > geometry.compute_slices:
        raise LayoutError(
            "layout does not fit %s: its GPU instances need %d compute slices (%s), the GPU has "
            "%d"
            % (
                geometry.label,
                compute,
                _sum_text(instances, lambda p: p.slice_count),
                geometry.compute_slices,
            )
        )
    memory = sum(i.profile.size for i in instances)
    if memory > geometry.memory_slices:
        raise LayoutError(
            "layout does not fit %s: its GPU instances need %d memory slices (%s), the GPU has "
            "%d"
            % (
                geometry.label,
                memory,
                _sum_text(instances, lambda p: p.size),
                geometry.memory_slices,
            )
        )

    free = _free_items(instances)
    starts = _search(free, occupied)
    if starts is None:
        raise LayoutError(_no_fit_message(geometry, explicit, free, occupied))
    placed = [PlacedInstance(i.profile, i.placement or 0, computes[i], True) for i in explicit]
    placed.extend(PlacedInstance(i.profile, s, computes[i]) for i, s in zip(free, starts))
    placed.sort(key=lambda p: (p.start, p.profile.index))
    return tuple(placed)


def _sum_text(instances: Sequence[ResolvedInstance], measure: Any) -> str:
    counts: Dict[str, int] = {}
    values: Dict[str, int] = {}
    for item in instances:
        counts[item.profile.name] = counts.get(item.profile.name, 0) + 1
        values[item.profile.name] = measure(item.profile)
    return " + ".join(
        "%d x %s = %d" % (counts[name], name, counts[name] * values[name])
        if counts[name] > 1
        else "%s = %d" % (name, values[name])
        for name in counts
    )


def _no_fit_message(
    geometry: Geometry,
    explicit: Sequence[ResolvedInstance],
    free: Sequence[ResolvedInstance],
    occupied: int,
) -> str:
    placed, left, final = _best_partial(free, occupied)
    placed_text = [
        "%s at %d (%s, explicit)"
        % (i.profile.name, i.placement, i.profile.slices_text(i.placement))
        for i in explicit
        if i.placement is not None
    ] + ["%s at %d (%s)" % (i.profile.name, s, i.profile.slices_text(s)) for i, s in placed]
    free_slices = [str(b) for b in range(geometry.memory_slices) if not final & (1 << b)]
    left_text = ", ".join(
        "%s (placements %s)" % (i.profile.name, i.profile.placements_text) for i in left
    )
    return (
        "layout does not fit %s: no combination of the placements it offers holds all %d GPU "
        "instances. The best arrangement places %s and leaves no valid placement for %s; free "
        "memory slices then: %s"
        % (
            geometry.label,
            len(explicit) + len(free),
            "; ".join(placed_text) if placed_text else "nothing",
            left_text,
            ", ".join(free_slices) if free_slices else "none",
        )
    )


def plan_layout(
    spec: LayoutSpec, geometry: Geometry
) -> Tuple[DesiredLayout, Tuple[PlacedInstance, ...]]:
    """Resolve and place a layout for one GPU: (desired, placed instances)."""
    desired = resolve_layout(spec, geometry)
    if not desired.mig_enabled:
        return desired, ()
    return desired, pack_instances(geometry, desired.instances)
