# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan MIG layouts before touching a GPU: pure functions over plain data, no NVML.

What a layout is, and how it is checked and placed:

- A GPU's desired state is MIG disabled, or a list of GPU instances. Each instance names a
  GPU-instance profile (``3g.40gb``, ``1g.10gb+me``), optionally an explicit placement start,
  and a compute-instance split (by default one compute instance over the whole GPU instance).
- Named layouts (``all-1g``, ``all-balanced``, ``all-disabled``, ``all-3g.40gb`` ...) are
  resolved per GPU from its profile table, so one name works across models.
- ``pack_instances`` is an exact packing check over the placements NVML reports (not a memory
  sum): it finds an arrangement of non-overlapping placements if one exists, chooses it
  deterministically (largest instances first, each at the lowest start that still lets the rest
  fit; explicit placements are kept), and otherwise says precisely why none exists.
- GPUs are selected by index, UUID, PCI bus id or model name; ``assign_layouts`` detects
  selectors that match nothing and GPUs claimed by two different layouts.
- ``plan_gpu`` compares a GPU's current instances with the planned ones (how strictly placement
  must match is configurable) and lists what to destroy and create.
- NVIDIA mig-parted ``version: v1`` configs are parsed into the same entries and the current
  state is exported in that format.

Errors in the input raise ``LayoutError`` with a message that names the problem; nothing here
changes any state. Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_state import (
    PLACEMENT_MATCH_MODES,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    GI_1_SLICE,
    GI_2_SLICE,
    GI_3_SLICE,
    GI_4_SLICE,
    GI_7_SLICE,
    MODELS,
    GpuModel,
    compute_instance_slice_options,
    compute_instance_starts,
    find_model,
    known_model_names,
)

# NVML profile index of the standard (non-"+me", single-memory) profile of N compute slices.
_STANDARD_INDEX_BY_SLICES = {
    1: GI_1_SLICE,
    2: GI_2_SLICE,
    3: GI_3_SLICE,
    4: GI_4_SLICE,
    7: GI_7_SLICE,
}

NAMED_LAYOUTS = (
    "all-disabled",
    "all-enabled",
    "all-1g",
    "all-2g",
    "all-3g",
    "all-4g",
    "all-7g",
    "all-max",
    "all-balanced",
)
_NAMED_ALIASES = {"disabled": "all-disabled", "all-full": "all-max", "enabled": "all-enabled"}


class LayoutError(ValueError):
    """The requested layout, selector or config is invalid or cannot be placed; nothing changed."""


# ---------------------------------------------------------------------------------- geometry
class Profile(NamedTuple):
    """One GPU-instance profile as a GPU reports it (name, ids, count, placements)."""

    name: str
    id: int
    index: int  # type: ignore[assignment]  # NVML profile index (shadows tuple.index)
    slice_count: int
    instance_count: int
    memory_mib: int
    starts: Tuple[int, ...]
    size: int

    def slices_text(self, start: int) -> str:
        """``memory slices 4-7`` for an instance of this profile placed at ``start``."""
        if self.size == 1:
            return "memory slice %d" % start
        return "memory slices %d-%d" % (start, start + self.size - 1)

    @property
    def placements_text(self) -> str:
        """Placements as ``nvidia-smi mig -lgipp`` prints them, e.g. ``{0,2,4}:2``."""
        return "{%s}:%d" % (",".join(str(s) for s in self.starts), self.size)


class Geometry(NamedTuple):
    """A GPU's MIG geometry: its profiles and slice counts (from NVML or from the catalog)."""

    name: str  # device name as NVML reports it
    model: Optional[str]  # catalog key, None for a model missing from the catalog
    compute_slices: int
    memory_slices: int
    profiles: Tuple[Profile, ...]
    mode_change_needs_reset: Optional[bool] = None  # None: unknown (not in the catalog)

    @property
    def label(self) -> str:
        return self.model or self.name

    def profile(self, name: str) -> Optional[Profile]:
        wanted = _normalise_profile_name(name)
        for profile in self.profiles:
            if profile.name.lower() == wanted:
                return profile
        return None

    def profile_by_id(self, profile_id: int) -> Optional[Profile]:
        for profile in self.profiles:
            if profile.id == profile_id:
                return profile
        return None

    def profile_by_index(self, index: int) -> Optional[Profile]:
        for profile in self.profiles:
            if profile.index == index:
                return profile
        return None

    def standard_profile(self, slices: int) -> Optional[Profile]:
        index = _STANDARD_INDEX_BY_SLICES.get(slices)
        return self.profile_by_index(index) if index is not None else None

    @property
    def profile_names(self) -> str:
        return ", ".join(p.name for p in self.profiles)


def _normalise_profile_name(name: str) -> str:
    """Profile names compare case-insensitively; mig-parted's ``.me`` suffix means ``+me``."""
    text = str(name).strip().lower()
    if text.endswith(".me"):
        text = text[:-3] + "+me"
    return text


def geometry_from_model(model: GpuModel) -> Geometry:
    """The geometry of a catalog model (what the simulator serves for it)."""
    return Geometry(
        name=model.nvml_name,
        model=model.key,
        compute_slices=model.compute_slices,
        memory_slices=model.memory_slices,
        profiles=tuple(
            Profile(
                name=p.name,
                id=p.id,
                index=p.index,
                slice_count=p.slice_count,
                instance_count=p.instance_count,
                memory_mib=p.memory_mib,
                starts=tuple(p.placement_starts),
                size=p.placement_size,
            )
            for p in model.profiles
        ),
        mode_change_needs_reset=model.mode_change_needs_reset,
    )


def geometry_from_profiles(
    name: str, model: Optional[GpuModel], profiles: Sequence[Mapping[str, Any]]
) -> Geometry:
    """The geometry of a GPU from the profiles NVML reports (``GpuReader.profiles`` shape).

    Placements are NVML's (``nvmlDeviceGetGpuInstancePossiblePlacements``); the catalog model,
    when known, only adds the slice totals and whether a mode change needs a reset.
    """
    parsed = []
    for raw in profiles:
        placements = list(raw.get("placements") or [])
        starts = tuple(int(p["start"]) for p in placements)
        size = int(placements[0]["size"]) if placements else 0
        parsed.append(
            Profile(
                name=str(raw["name"]),
                id=int(raw["id"]),
                index=int(raw["index"]),
                slice_count=int(raw["slice_count"]),
                instance_count=int(raw["instance_count"]),
                memory_mib=int(raw.get("memory_mib") or 0),
                starts=starts,
                size=size,
            )
        )
    memory_slices = max([s + p.size for p in parsed for s in p.starts] or [0])
    compute_slices = max([p.slice_count for p in parsed] or [0])
    if model is not None:
        memory_slices, compute_slices = model.memory_slices, model.compute_slices
    return Geometry(
        name=name,
        model=model.key if model is not None else None,
        compute_slices=compute_slices,
        memory_slices=memory_slices,
        profiles=tuple(parsed),
        mode_change_needs_reset=model.mode_change_needs_reset if model is not None else None,
    )


# ------------------------------------------------------------------------------ layout specs
class InstanceSpec(NamedTuple):
    """One requested GPU instance, as written (profile not yet checked against a GPU)."""

    profile: str
    placement: Optional[int] = None
    compute: Tuple[int, ...] = ()  # compute-instance sizes in compute slices; () = one full CI


class LayoutSpec(NamedTuple):
    """A GPU's requested state: MIG disabled, a named layout, or a list of GPU instances."""

    mig_enabled: bool
    instances: Tuple[InstanceSpec, ...] = ()
    named: Optional[str] = None


DISABLED = LayoutSpec(mig_enabled=False, named="all-disabled")

_PROFILE_PATTERN = r"[0-9]+g\.[0-9]+gb(?:[+.-][a-z]+)*"
_PROFILE_RE = re.compile("^" + _PROFILE_PATTERN + "$", re.IGNORECASE)
_TOKEN_RE = re.compile(
    r"^(?:(?P<count>\d+)\s*[x*]\s*)?(?P<profile>"
    + _PROFILE_PATTERN
    + r")(?:\s*@\s*(?P<start>\d+))?$",
    re.IGNORECASE,
)
_CI_RE = re.compile(r"^(?P<slices>\d+)c(?:\.(?P<profile>.+))?$", re.IGNORECASE)
_PROFILE_SLICES_RE = re.compile(r"^(\d+)g\.", re.IGNORECASE)


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise LayoutError("%s must be a whole number, not %r" % (where, value))
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value < minimum:
        raise LayoutError("%s must be a whole number >= %d, not %r" % (where, minimum, value))
    return value


def _parse_compute(value: Any, profile: str, where: str) -> Tuple[int, ...]:
    """A compute-instance split: a list of sizes (``1``, ``"1c"``, ``"1c.3g.40gb"``)."""
    if value is None:
        return ()
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise LayoutError(
            "%s must be a non-empty list of compute-instance sizes such as [1, 2] or "
            "['1c', '2c'], not %r" % (where, value)
        )
    sizes = []
    for position, item in enumerate(value):
        here = "%s[%d]" % (where, position)
        if isinstance(item, str) and not item.strip().isdigit():
            text = item.strip()
            match = _CI_RE.match(text)
            if match:
                named = match.group("profile")
                if named and _normalise_profile_name(named) != _normalise_profile_name(profile):
                    raise LayoutError(
                        "%s: compute instance %r belongs to GPU-instance profile %s, not to %s"
                        % (here, item, named, profile)
                    )
                sizes.append(_int(match.group("slices"), here, 1))
                continue
            if _normalise_profile_name(text) == _normalise_profile_name(profile):
                slices = _PROFILE_SLICES_RE.match(profile)
                if slices:
                    sizes.append(int(slices.group(1)))
                    continue
            raise LayoutError(
                "%s: cannot read compute instance %r; write its size in compute slices, e.g. 1, "
                "'1c' or '1c.%s'" % (here, item, profile)
            )
        sizes.append(_int(item, here, 1))
    return tuple(sizes)


def _parse_item(item: Any, where: str) -> List[InstanceSpec]:
    if isinstance(item, str):
        match = _TOKEN_RE.match(item.strip())
        if not match:
            if _CI_RE.match(item.strip().split("@")[0]):
                raise LayoutError(
                    "%s: %r names a compute instance; give the GPU instance and its split, e.g. "
                    "{profile: 3g.40gb, compute_instances: [1, 1, 1]}" % (where, item)
                )
            raise LayoutError(
                "%s: cannot read %r as a GPU-instance profile; write e.g. '3g.40gb', "
                "'3g.40gb@4' (explicit placement start) or '2x1g.10gb'" % (where, item)
            )
        count = int(match.group("count") or 1)
        start = match.group("start")
        if count < 1:
            raise LayoutError("%s: count in %r must be at least 1" % (where, item))
        if start is not None and count > 1:
            raise LayoutError(
                "%s: %r gives one placement to %d instances; give each its own placement"
                % (where, item, count)
            )
        placement = int(start) if start is not None else None
        return [InstanceSpec(match.group("profile"), placement)] * count
    if isinstance(item, dict):
        unknown = set(item) - {"profile", "placement", "count", "compute_instances"}
        if unknown:
            raise LayoutError(
                "%s: unknown key(s) %s; allowed: profile, placement, count, compute_instances"
                % (where, ", ".join(sorted(map(str, unknown))))
            )
        profile = item.get("profile")
        if not isinstance(profile, str) or not profile.strip():
            raise LayoutError("%s: 'profile' is required and must be a profile name" % where)
        if not _PROFILE_RE.match(profile.strip()):
            raise LayoutError(
                "%s: cannot read profile %r; write a GPU-instance profile name such as "
                "'3g.40gb' or '1g.10gb+me'" % (where, profile)
            )
        profile = profile.strip()
        placement = item.get("placement")
        if placement is not None:
            placement = _int(placement, where + ".placement")
        count = _int(item.get("count", 1), where + ".count", 1)
        if placement is not None and count > 1:
            raise LayoutError(
                "%s: placement %d is given to %d instances; give each its own placement"
                % (where, placement, count)
            )
        compute = _parse_compute(
            item.get("compute_instances"), profile, where + ".compute_instances"
        )
        return [InstanceSpec(profile, placement, compute)] * count
    raise LayoutError(
        "%s must be a profile name such as '3g.40gb' or a mapping with 'profile', not %s"
        % (where, _type_name(item))
    )


def parse_layout(value: Any, where: str = "layout") -> LayoutSpec:
    """Read a layout as a user writes it; profile names are checked later, per GPU.

    - ``all-disabled`` (or ``disabled``, ``false``): MIG disabled;
    - a named layout: ``all-enabled``, ``all-1g``, ``all-2g``, ``all-3g``, ``all-4g``,
      ``all-7g``, ``all-max``, ``all-balanced``, or ``all-<profile>`` (``all-3g.40gb``);
    - a list of instances, each ``'3g.40gb'``, ``'3g.40gb@4'``, ``'2x1g.10gb'`` or a mapping
      ``{profile, placement, count, compute_instances}``; a comma-separated string of the same;
      an empty list is MIG enabled with no instances;
    - a mapping ``{mig_enabled: bool, instances: [...]}``.
    """
    if value is None:
        raise LayoutError(
            "%s is missing: give a named layout such as all-1g or a list of profiles" % where
        )
    if isinstance(value, bool):
        if value:
            raise LayoutError(
                "%s: true is not a layout; use all-enabled, a named layout or a list of profiles"
                % where
            )
        return DISABLED
    if isinstance(value, dict):
        unknown = set(value) - {"mig_enabled", "instances"}
        if unknown:
            raise LayoutError(
                "%s: unknown key(s) %s; a layout mapping has mig_enabled and instances"
                % (where, ", ".join(sorted(map(str, unknown))))
            )
        enabled = value.get("mig_enabled", True)
        if not isinstance(enabled, bool):
            raise LayoutError("%s.mig_enabled must be true or false, not %r" % (where, enabled))
        instances = value.get("instances", [])
        if not enabled:
            if instances:
                raise LayoutError("%s: instances are given but mig_enabled is false" % where)
            return DISABLED
        spec = parse_layout(instances if instances else [], where + ".instances")
        if not spec.mig_enabled or spec.named:
            raise LayoutError("%s.instances must be a list of profiles" % where)
        return spec
    if isinstance(value, str):
        text = value.strip()
        lowered = text.lower()
        if lowered in ("false", "no", "off"):
            return DISABLED
        named = _NAMED_ALIASES.get(lowered, lowered)
        if named == "all-disabled":
            return DISABLED
        if named in NAMED_LAYOUTS:
            return LayoutSpec(mig_enabled=True, named=named)
        if named.startswith("all-"):
            profile = named[4:]
            if not _PROFILE_RE.match(profile):
                raise LayoutError(
                    "%s: unknown named layout %r; named layouts: %s, or all-<profile> such as "
                    "all-3g.40gb" % (where, text, ", ".join(NAMED_LAYOUTS))
                )
            return LayoutSpec(mig_enabled=True, named="all-" + _normalise_profile_name(profile))
        items: List[Any] = [part for part in text.split(",") if part.strip()]
        if not items:
            raise LayoutError("%s is empty; use all-enabled for MIG with no instances" % where)
        value = items
    if isinstance(value, list):
        parsed: List[InstanceSpec] = []
        for position, item in enumerate(value):
            parsed.extend(_parse_item(item, "%s[%d]" % (where, position)))
        return LayoutSpec(mig_enabled=True, instances=tuple(parsed))
    raise LayoutError(
        "%s must be a named layout, a list of profiles or a mapping, not %s"
        % (where, _type_name(value))
    )


def layout_spec_text(spec: LayoutSpec) -> str:
    """A short text for a requested layout (for messages and summaries)."""
    if not spec.mig_enabled:
        return "all-disabled"
    if spec.named:
        return spec.named
    if not spec.instances:
        return "all-enabled"
    return ", ".join(_instance_spec_text(i) for i in spec.instances)


def _instance_spec_text(spec: InstanceSpec) -> str:
    text = spec.profile
    if spec.placement is not None:
        text += "@%d" % spec.placement
    if spec.compute:
        text += "(%s)" % "+".join("%dc" % s for s in spec.compute)
    return text


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


# --------------------------------------------------------------------------- current state
class CurrentInstance(NamedTuple):
    """An existing GPU instance and its compute instances, as read through NVML."""

    gi_id: int
    profile_id: int
    profile: str
    start: int
    size: int
    compute: Tuple[Tuple[int, int], ...]  # (start, size) of each CI, sorted
    ci_ids: Tuple[int, ...] = ()

    @property
    def key(self) -> Tuple[int, int, Tuple[Tuple[int, int], ...]]:
        return (self.profile_id, self.start, self.compute)


class GpuIdentity(NamedTuple):
    """What selectors match on."""

    index: int  # type: ignore[assignment]  # NVML GPU index (shadows tuple.index)
    uuid: str
    pci_bus_id: str
    name: str
    model: Optional[str]
    pci_device_id: int = 0
    mig_capable: bool = True

    @property
    def label(self) -> str:
        return "GPU %d (%s, %s)" % (self.index, self.model or self.name, self.pci_bus_id)


class CurrentGpu(NamedTuple):
    identity: GpuIdentity
    mig_current: bool
    mig_pending: bool
    instances: Tuple[CurrentInstance, ...] = ()


# ------------------------------------------------------------------------------- selectors
_PCI_RE = re.compile(
    r"^(?:(?P<domain>[0-9a-f]{4,8}):)?(?P<bus>[0-9a-f]{2}):(?P<device>[0-9a-f]{2})\.(?P<function>[0-7])$",
    re.IGNORECASE,
)
_UUID_RE = re.compile(r"^GPU-[0-9a-f-]{8,}$", re.IGNORECASE)


def normalise_pci_bus_id(text: str) -> Optional[str]:
    """``1b:00.0`` or ``0000:1B:00.0`` -> ``00000000:1B:00.0`` (NVML's form); None if not one."""
    match = _PCI_RE.match(text.strip())
    if not match:
        return None
    domain = int(match.group("domain") or "0", 16)
    return "%08X:%s:%s.%s" % (
        domain,
        match.group("bus").upper(),
        match.group("device").upper(),
        match.group("function"),
    )


class Selector(NamedTuple):
    kind: str  # index | uuid | pci_bus_id | model
    value: Any
    text: str

    def matches(self, gpu: GpuIdentity) -> bool:
        if self.kind == "index":
            return gpu.index == self.value
        if self.kind == "uuid":
            return gpu.uuid.lower() == self.value
        if self.kind == "pci_bus_id":
            return normalise_pci_bus_id(gpu.pci_bus_id) == self.value
        return model_matches(self.value, gpu)


def model_matches(value: str, gpu: GpuIdentity) -> bool:
    """A model selector: a catalog key/alias, an NVML name, or a PCI device id (0x20B010DE)."""
    if value.startswith("0x"):
        return gpu.pci_device_id == int(value, 16)
    model = find_model(value)
    if model is not None:
        return gpu.model == model.key or gpu.name.lower() == model.nvml_name.lower()
    return gpu.name.lower() == value


def parse_selector(value: Any, where: str) -> Selector:
    """One GPU selector: an index, a GPU UUID, a PCI bus id or a model name (or a mapping)."""
    if isinstance(value, dict):
        if len(value) != 1:
            raise LayoutError(
                "%s: a selector mapping has exactly one of index, uuid, pci_bus_id, model; got %r"
                % (where, value)
            )
        kind, raw = next(iter(value.items()))
        if kind == "index":
            return Selector("index", _int(raw, where + ".index"), str(raw))
        if not isinstance(raw, str) or not raw.strip():
            raise LayoutError("%s.%s must be a non-empty string, not %r" % (where, kind, raw))
        if kind == "uuid":
            if not _UUID_RE.match(raw.strip()):
                raise LayoutError("%s.uuid %r is not a GPU UUID (GPU-...)" % (where, raw))
            return Selector("uuid", raw.strip().lower(), raw)
        if kind == "pci_bus_id":
            bus = normalise_pci_bus_id(raw)
            if bus is None:
                raise LayoutError(
                    "%s.pci_bus_id %r is not a PCI bus id such as 00000000:1B:00.0" % (where, raw)
                )
            return Selector("pci_bus_id", bus, raw)
        if kind == "model":
            return Selector("model", _model_value(raw, where + ".model"), raw)
        raise LayoutError(
            "%s: unknown selector key %r; use index, uuid, pci_bus_id or model" % (where, kind)
        )
    if isinstance(value, bool):
        raise LayoutError("%s: %r is not a GPU selector" % (where, value))
    if isinstance(value, int):
        return Selector("index", _int(value, where), str(value))
    if not isinstance(value, str) or not value.strip():
        raise LayoutError(
            "%s must be a GPU index, UUID, PCI bus id or model name, not %r" % (where, value)
        )
    text = value.strip()
    if text.isdigit():
        return Selector("index", int(text), text)
    if text.upper().startswith("MIG-"):
        raise LayoutError(
            "%s: %s is a MIG device UUID; select the GPU by its GPU-... UUID, index, PCI bus id "
            "or model" % (where, text)
        )
    if _UUID_RE.match(text):
        return Selector("uuid", text.lower(), text)
    bus = normalise_pci_bus_id(text)
    if bus is not None:
        return Selector("pci_bus_id", bus, text)
    return Selector("model", _model_value(text, where), text)


def _model_value(text: str, where: str) -> str:
    text = text.strip()
    if re.match(r"^0x[0-9a-f]{8}$", text, re.IGNORECASE):
        return text.lower()
    model = find_model(text)
    if model is not None:
        return model.key.lower()
    if text.upper().startswith("NVIDIA "):
        return text.lower()  # an NVML device name of a model missing from the catalog
    raise LayoutError(
        "%s: %r is not a GPU index, UUID (GPU-...), PCI bus id (00000000:1B:00.0), PCI device "
        "id (0x233010DE) or known model name (%s, their aliases, or an NVML name such as "
        "'NVIDIA H100 80GB HBM3')" % (where, text, ", ".join(known_model_names()))
    )


class GpuEntry(NamedTuple):
    """One entry of the module's ``gpus`` option: which GPUs, and their layout."""

    where: str
    devices: Optional[Tuple[Selector, ...]]  # None: all GPUs
    models: Tuple[str, ...]  # model filter, ANDed with devices; () = any model
    layout: LayoutSpec
    optional: bool = False

    @property
    def selector_text(self) -> str:
        parts = [
            "devices: all"
            if self.devices is None
            else "devices: [%s]" % ", ".join(s.text for s in self.devices)
        ]
        if self.models:
            parts.append("model: %s" % ", ".join(self.models))
        return ", ".join(parts)

    def matches(self, gpu: GpuIdentity) -> bool:
        if self.models and not any(model_matches(m, gpu) for m in self.models):
            return False
        return self.devices is None or any(s.matches(gpu) for s in self.devices)


def _as_list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else [value]


def parse_gpu_entries(layout: Any = None, gpus: Any = None) -> List[GpuEntry]:
    """The module's ``layout`` (every GPU) or ``gpus`` (per-selector) options as entries."""
    if layout is not None and gpus is not None:
        raise LayoutError("give either layout (every GPU) or gpus (per GPU), not both")
    if layout is not None:
        return [GpuEntry("layout", None, (), parse_layout(layout, "layout"))]
    if gpus is None:
        raise LayoutError("no layout given: set layout, gpus or a mig-parted config")
    if not isinstance(gpus, list) or not gpus:
        raise LayoutError("gpus must be a non-empty list of {devices, model, layout} entries")
    entries = []
    for position, raw in enumerate(gpus):
        where = "gpus[%d]" % position
        if not isinstance(raw, dict):
            raise LayoutError(
                "%s must be a mapping with devices and layout, not %s" % (where, _type_name(raw))
            )
        unknown = set(raw) - {"devices", "model", "layout", "optional"}
        if unknown:
            raise LayoutError(
                "%s: unknown key(s) %s; allowed: devices, model, layout, optional"
                % (where, ", ".join(sorted(map(str, unknown))))
            )
        if "layout" not in raw:
            raise LayoutError("%s: layout is required" % where)
        devices_raw = raw.get("devices", "all")
        devices: Optional[Tuple[Selector, ...]]
        if isinstance(devices_raw, str) and devices_raw.strip().lower() == "all":
            devices = None
        else:
            items = _as_list(devices_raw)
            if not items:
                raise LayoutError("%s.devices is empty; use 'all' or list GPUs" % where)
            devices = tuple(
                parse_selector(item, "%s.devices[%d]" % (where, i)) for i, item in enumerate(items)
            )
        models_raw = raw.get("model")
        models: Tuple[str, ...] = ()
        if models_raw is not None:
            models = tuple(_model_value(str(m), "%s.model" % where) for m in _as_list(models_raw))
        optional = raw.get("optional", False)
        if not isinstance(optional, bool):
            raise LayoutError("%s.optional must be true or false, not %r" % (where, optional))
        entries.append(
            GpuEntry(
                where, devices, models, parse_layout(raw["layout"], where + ".layout"), optional
            )
        )
    return entries


def assign_layouts(entries: Sequence[GpuEntry], gpus: Sequence[GpuIdentity]) -> Dict[int, GpuEntry]:
    """Which entry manages which GPU (by index). GPUs no entry selects are left alone.

    Errors: a selector that matches no GPU (unless the entry is optional), and a GPU that two
    entries claim with different layouts.
    """
    assigned: Dict[int, GpuEntry] = {}
    problems: List[str] = []
    for entry in entries:
        reported = False
        if entry.devices is not None:
            for selector in entry.devices:
                if not any(selector.matches(gpu) for gpu in gpus) and not entry.optional:
                    reported = True
                    problems.append(
                        "%s: selector %r matches no GPU on this host (GPUs: %s)"
                        % (entry.where, selector.text, _gpu_list(gpus))
                    )
        matched = [gpu for gpu in gpus if entry.matches(gpu)]
        if entry.devices is None:
            # 'all' skips GPUs without MIG; explicit selectors keep them (and fail in planning)
            matched = [gpu for gpu in matched if gpu.mig_capable]
        if not matched and not entry.optional and not reported:
            problems.append(
                "%s (%s) matches no GPU on this host (GPUs: %s); set optional: true to allow that"
                % (entry.where, entry.selector_text, _gpu_list(gpus))
            )
        for gpu in matched:
            previous = assigned.get(gpu.index)
            if previous is not None and previous.layout != entry.layout:
                problems.append(
                    "%s is claimed by %s (%s) with layout %s and by %s (%s) with layout %s; a GPU "
                    "gets one layout"
                    % (
                        gpu.label,
                        previous.where,
                        previous.selector_text,
                        layout_spec_text(previous.layout),
                        entry.where,
                        entry.selector_text,
                        layout_spec_text(entry.layout),
                    )
                )
                continue
            assigned.setdefault(gpu.index, entry)
    if problems:
        raise LayoutError("; ".join(_unique(problems)))
    return assigned


def _gpu_list(gpus: Sequence[GpuIdentity]) -> str:
    if not gpus:
        return "none"
    return ", ".join(
        "%d %s %s %s" % (g.index, g.model or g.name, g.uuid, g.pci_bus_id) for g in gpus
    )


def _unique(items: Iterable[str]) -> List[str]:
    seen: List[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


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


# ------------------------------------------------------------------------------- mig-parted
def load_mig_parted_text(text: str, where: str) -> Any:
    """Parse mig-parted YAML (or JSON) text; a clear error with line and column if malformed."""
    try:
        import yaml
    except ImportError:
        import json

        try:
            return json.loads(text)
        except ValueError as exc:
            raise LayoutError(
                "%s: cannot parse the mig-parted config: PyYAML is not installed for this "
                "Python, and the text is not JSON either (%s). Install PyYAML on the target, or "
                "pass the config as data (mig_parted_config: \"{{ lookup('file', 'config.yaml') "
                '| from_yaml }}")' % (where, exc)
            ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = " at line %d, column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise LayoutError(
            "%s: malformed mig-parted config: YAML syntax error%s: %s" % (where, position, problem)
        ) from exc


def _mig_devices_layout(devices: Any, where: str) -> LayoutSpec:
    """mig-parted ``mig-devices`` ({profile: count}) as a layout.

    ``<C>c.<profile>: N`` means N compute instances of C slices, packed into as few GPU
    instances of the profile as hold them (as mig-parted reuses a GPU instance while its compute
    instances fit).
    """
    if devices is None:
        raise LayoutError("%s: 'mig-devices' is required when 'mig-enabled' is true" % where)
    if not isinstance(devices, dict):
        raise LayoutError(
            "%s: 'mig-devices' must be a mapping of profile to count, not %s"
            % (where, _type_name(devices))
        )
    instances: List[InstanceSpec] = []
    for key, count in devices.items():
        here = "%s.mig-devices[%r]" % (where, key)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise LayoutError("%s: count must be a whole number >= 0, not %r" % (here, count))
        name = str(key).strip()
        ci = re.match(r"^(\d+)c\.(.+)$", name, re.IGNORECASE)
        profile = ci.group(2) if ci else name
        if not _PROFILE_RE.match(profile):
            raise LayoutError(
                "%s: %r is not a MIG profile name such as 1g.10gb or 1c.3g.40gb" % (here, key)
            )
        profile = _normalise_profile_name(profile)
        if not ci:
            instances.extend([InstanceSpec(profile)] * count)
            continue
        ci_slices = int(ci.group(1))
        gi_slices = int(_PROFILE_SLICES_RE.match(profile).group(1))  # type: ignore[union-attr]
        if ci_slices < 1 or ci_slices > gi_slices:
            raise LayoutError(
                "%s: a %d-slice compute instance does not fit %s" % (here, ci_slices, profile)
            )
        per_gi = max(len(compute_instance_starts(gi_slices, ci_slices)), 1)
        left = count
        while left > 0:
            take = min(per_gi, left)
            instances.append(InstanceSpec(profile, None, (ci_slices,) * take))
            left -= take
    return LayoutSpec(True, tuple(instances))


def parse_mig_parted(
    config: Any, label: Optional[str], where: str = "mig_parted_config"
) -> List[GpuEntry]:
    """The entries of one label of a mig-parted ``version: v1`` config."""
    if isinstance(config, str):
        config = load_mig_parted_text(config, where)
    if not isinstance(config, dict):
        raise LayoutError(
            "%s: malformed mig-parted config: expected a mapping with 'version: v1' "
            "and 'mig-configs', got %s" % (where, _type_name(config))
        )
    if "version" not in config:
        raise LayoutError(
            "%s: malformed mig-parted config: 'version' is missing (expected v1)" % where
        )
    if config["version"] != "v1":
        raise LayoutError(
            "%s: unsupported mig-parted config version %r; this module reads v1"
            % (where, config["version"])
        )
    unknown = set(config) - {"version", "mig-configs"}
    if unknown:
        raise LayoutError(
            "%s: malformed mig-parted config: unexpected field(s) %s"
            % (where, ", ".join(sorted(map(str, unknown))))
        )
    configs = config.get("mig-configs")
    if not isinstance(configs, dict) or not configs:
        raise LayoutError(
            "%s: malformed mig-parted config: 'mig-configs' must be a non-empty "
            "mapping of label to a list of entries" % where
        )
    if label is None:
        if len(configs) != 1:
            raise LayoutError(
                "%s: the config has several labels (%s); choose one with "
                "mig_parted_label" % (where, ", ".join(map(str, configs)))
            )
        label = str(next(iter(configs)))
    if label not in configs:
        raise LayoutError(
            "%s: no label %r in mig-configs; labels: %s"
            % (where, label, ", ".join(map(str, configs)))
        )
    items = configs[label]
    if not isinstance(items, list) or not items:
        raise LayoutError("%s: mig-configs.%s must be a non-empty list of entries" % (where, label))
    entries = []
    for position, item in enumerate(items):
        here = "%s: mig-configs.%s[%d]" % (where, label, position)
        if not isinstance(item, dict):
            raise LayoutError("%s must be a mapping, not %s" % (here, _type_name(item)))
        unknown = set(item) - {"devices", "mig-enabled", "mig-devices", "device-filter"}
        if unknown:
            raise LayoutError(
                "%s: unexpected field(s) %s" % (here, ", ".join(sorted(map(str, unknown))))
            )
        for required in ("devices", "mig-enabled"):
            if required not in item:
                raise LayoutError("%s: missing required field %r" % (here, required))
        devices_raw = item["devices"]
        devices: Optional[Tuple[Selector, ...]]
        if devices_raw == "all":
            devices = None
        elif (
            isinstance(devices_raw, list)
            and devices_raw
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices_raw)
        ):
            devices = tuple(Selector("index", d, str(d)) for d in devices_raw)
        else:
            raise LayoutError(
                "%s: 'devices' must be 'all' or a list of GPU indices, not %r" % (here, devices_raw)
            )
        enabled = item["mig-enabled"]
        if not isinstance(enabled, bool):
            raise LayoutError("%s: 'mig-enabled' must be true or false, not %r" % (here, enabled))
        if not enabled:
            if item.get("mig-devices"):
                raise LayoutError("%s: MIG devices are listed but 'mig-enabled' is false" % here)
            layout = DISABLED
        else:
            layout = _mig_devices_layout(item.get("mig-devices"), here)
        filters_raw = item.get("device-filter")
        models: Tuple[str, ...] = ()
        if filters_raw is not None:
            filters = _as_list(filters_raw)
            if not all(isinstance(f, str) and f.strip() for f in filters):
                raise LayoutError("%s: 'device-filter' must be a string or list of strings" % here)
            models = tuple(_model_value(f, here + ".device-filter") for f in filters)
        # a device-filter that matches no GPU here is normal in a fleet-wide config
        entries.append(GpuEntry(here, devices, models, layout, optional=bool(models)))
    return entries


def mig_parted_devices(gpu: CurrentGpu, geometry: Optional[Geometry]) -> Dict[str, int]:
    """A GPU's instances as mig-parted ``mig-devices`` counts."""
    counts: Dict[str, int] = {}
    for inst in gpu.instances:
        prof = geometry.profile_by_id(inst.profile_id) if geometry else None
        gi_slices = prof.slice_count if prof else None
        for _start, size in inst.compute:
            key = inst.profile if size == gi_slices else "%dc.%s" % (size, inst.profile)
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def export_mig_parted(
    gpus: Sequence[CurrentGpu], geometries: Mapping[int, Geometry], label: str = "current"
) -> Dict[str, Any]:
    """The current state as a mig-parted v1 config with one label.

    GPUs in the same state share an entry; placements are not part of the format.
    """
    groups: List[Tuple[Dict[str, Any], List[int]]] = []
    for gpu in sorted(gpus, key=lambda g: g.identity.index):
        if not gpu.identity.mig_capable:
            continue
        body: Dict[str, Any] = {"mig-enabled": bool(gpu.mig_current)}
        if gpu.mig_current:
            body["mig-devices"] = mig_parted_devices(gpu, geometries.get(gpu.identity.index))
        for existing, indices in groups:
            if existing == body:
                indices.append(gpu.identity.index)
                break
        else:
            groups.append((body, [gpu.identity.index]))
    every = [g.identity.index for g in gpus if g.identity.mig_capable]
    entries = []
    for body, indices in groups:
        entry: Dict[str, Any] = {
            "devices": "all" if len(groups) == 1 and indices == every else indices
        }
        entry.update(body)
        entries.append(entry)
    return {"version": "v1", "mig-configs": {label: entries}}
