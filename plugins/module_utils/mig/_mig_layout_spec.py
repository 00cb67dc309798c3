# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MIG geometry and layouts as written: what a GPU offers, and what a user asks of it.

- A GPU's geometry is its GPU-instance profiles (names, ids, counts, placements) and slice
  counts, from what NVML reports (``geometry_from_profiles``) or from the catalog
  (``geometry_from_model``).
- A GPU's desired state is MIG disabled, or a list of GPU instances. Each instance names a
  GPU-instance profile (``3g.40gb``, ``1g.10gb+me``), optionally an explicit placement start,
  and a compute-instance split (by default one compute instance over the whole GPU instance).
- Named layouts (``all-1g``, ``all-balanced``, ``all-disabled``, ``all-3g.40gb`` ...) are
  read here and resolved per GPU from its profile table (``_mig_packing.resolve_layout``), so
  one name works across models.

Errors in the input raise ``LayoutError`` with a message that names the problem; nothing here
changes any state. Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

import re
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    GI_1_SLICE,
    GI_2_SLICE,
    GI_3_SLICE,
    GI_4_SLICE,
    GI_7_SLICE,
    GpuModel,
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
