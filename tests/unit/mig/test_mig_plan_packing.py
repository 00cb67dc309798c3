"""The packing planner against an oracle that owes nothing to the catalog or the planner.

The oracle enumerates, by brute force, every set of pairwise non-overlapping GPU-instance
placements of a real GPU's own placement table (tests/unit/real_gpu_tables.py: the real H100 and
H200 captures, the field notes' published tables for the other models), respecting per-profile
instance counts and the compute-slice total; a multiset of profiles fits exactly when one of
those sets holds it. The planner is given the geometry it sees in production (the catalog's for
simulated GPUs, ``geometry_from_profiles`` over real ``gpu_facts`` output for real ones) and must
agree with the oracle on every multiset within the instance-count bounds; its placements must be
valid in the *real* table, canonical and independent of the order the profiles are listed in.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from real_gpu_tables import (
    CAPTURED,
    NOTED,
    NOTES,
    RealGpu,
    RealProfile,
    best,
    captured,
    noted,
)

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    Geometry,
    LayoutError,
    geometry_from_model,
    geometry_from_profiles,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_packing import (
    ResolvedInstance,
    pack_instances,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    MODELS,
    find_model,
    model_for_nvml_name,
)

Multiset = tuple[tuple[str, int], ...]


def _key(counts: Counter[str]) -> Multiset:
    return tuple(sorted((name, n) for name, n in counts.items() if n))


def _mask(start: int, size: int) -> int:
    return ((1 << size) - 1) << start


# ------------------------------------------------------------------------------ the oracle
def feasible_multisets(real: RealGpu) -> set[Multiset]:
    """Every multiset of profiles that some set of disjoint real placements realises."""
    slots = [(p, _mask(start, p.size)) for p in real.profiles for start in p.starts]
    found: set[Multiset] = set()

    def walk(position: int, occupied: int, counts: Counter[str], compute: int) -> None:
        found.add(_key(counts))
        for index in range(position, len(slots)):
            profile, mask = slots[index]
            if occupied & mask or counts[profile.name] >= profile.instance_count:
                continue
            if compute + profile.slice_count > real.compute_slices:
                continue
            counts[profile.name] += 1
            walk(index + 1, occupied | mask, counts, compute + profile.slice_count)
            counts[profile.name] -= 1

    walk(0, 0, Counter(), 0)
    return found


def all_multisets(real: RealGpu) -> Iterator[Counter[str]]:
    """Every multiset with 0..instance_count of each real profile (fitting or not)."""
    ranges = [range(p.instance_count + 1) for p in real.profiles]
    for counts in itertools.product(*ranges):
        yield Counter({p.name: n for p, n in zip(real.profiles, counts, strict=True) if n})


def brute_fit(real: RealGpu, items: list[tuple[RealProfile, int | None]]) -> bool:
    """Whether some assignment of real starts (explicit ones fixed) is disjoint and in limits."""
    counts = Counter(p.name for p, _start in items)
    if any(counts[p.name] > p.instance_count for p, _start in items):
        return False
    if sum(p.slice_count for p, _start in items) > real.compute_slices:
        return False
    choices = [[s] if s is not None else list(p.starts) for p, s in items]
    for starts in itertools.product(*choices):
        occupied = 0
        for (profile, _given), start in zip(items, starts, strict=True):
            mask = _mask(start, profile.size)
            if occupied & mask:
                break
            occupied |= mask
        else:
            return True
    return False


# ------------------------------------------------------------------------------ the planner
def catalog_geometry(key: str) -> Geometry:
    model = find_model(key)
    assert model is not None, key
    return geometry_from_model(model)


def real_nvml_geometry(key: str) -> Geometry:
    """What HostMig builds on the real GPU: its gpu_facts profiles plus the catalog's totals."""
    facts = captured(key).facts
    assert facts is not None
    return geometry_from_profiles(
        facts["name"], model_for_nvml_name(facts["name"]), facts["profiles"]
    )


def _request(
    geometry: Geometry, items: list[tuple[RealProfile, int | None]]
) -> list[ResolvedInstance]:
    request = []
    for real, start in items:
        profile = geometry.profile(real.name)
        assert profile is not None, "%s: the planner does not know %s" % (geometry.label, real.name)
        request.append(ResolvedInstance(profile, start, (profile.slice_count,)))
    return request


def _check_valid(real: RealGpu, request: list[ResolvedInstance], placed: Any) -> None:
    """The placements exist in the real table, do not overlap and fit the real GPU."""
    assert Counter(p.profile.name for p in placed) == Counter(i.profile.name for i in request)
    occupied = compute = 0
    for inst in placed:
        truth = real.profile(inst.profile.name)
        assert inst.start in truth.starts, (inst.profile.name, inst.start, truth.starts)
        assert inst.profile.size == truth.size, inst.profile.name
        mask = _mask(inst.start, truth.size)
        assert not occupied & mask, placed
        assert mask < 1 << real.memory_slices, placed
        occupied |= mask
        compute += truth.slice_count
    assert compute <= real.compute_slices
    for item in request:
        if item.placement is not None:
            assert any(
                p.profile.name == item.profile.name and p.start == item.placement for p in placed
            ), ("explicit placement not kept", item, placed)


def _agrees_on_every_multiset(real: RealGpu, geometry: Geometry) -> None:
    feasible = feasible_multisets(real)
    fits = 0
    rng = random.Random(real.key)
    for counts in all_multisets(real):
        items: list[tuple[RealProfile, int | None]] = [
            (real.profile(name), None) for name in sorted(counts) for _copy in range(counts[name])
        ]
        request = _request(geometry, items)
        expected = _key(counts) in feasible
        try:
            placed = pack_instances(geometry, request)
        except LayoutError as exc:
            assert not expected, (
                f"{real.key}: planner refused a fitting layout {dict(counts)}: {exc}"
            )
            assert str(exc).startswith("layout does not fit"), str(exc)
        else:
            assert expected, f"{real.key}: planner placed an impossible layout {dict(counts)}"
            _check_valid(real, request, placed)
            shuffled = list(request)
            rng.shuffle(shuffled)
            assert pack_instances(geometry, shuffled) == placed  # order-independent, canonical
            fits += 1
    assert fits == len(feasible)  # every multiset the oracle realises was met and placed


@pytest.mark.parametrize("key", [m.key for m in MODELS])
def test_planner_on_the_catalog_agrees_with_the_real_table(key: str) -> None:
    """Simulated GPUs: the planner works from the catalog; the oracle from the real table."""
    _agrees_on_every_multiset(best(key), catalog_geometry(key))


@pytest.mark.parametrize("key", CAPTURED)
def test_planner_on_real_nvml_profiles_agrees_with_the_real_table(key: str) -> None:
    """Real GPUs: the planner works from what real NVML reported (gpu_facts on the real GPU)."""
    _agrees_on_every_multiset(captured(key), real_nvml_geometry(key))


# ----------------------------------------------------------------- known layouts, by hand
# Each case is worked out by hand from the H100 capture's placement table (nvml_placements.txt:
# 1g {0..6}:1, 1g.20gb {0,2,4,6}:2, 2g {0,2,4}:2, 3g {0,4}:4, 4g {0}:4, 7g {0}:8) and checked
# against both the oracle and the planner: the cases a planner that counted compute slices
# only, ignored the memory size of 1g.20gb, or placed in creation order would get wrong.
KNOWN_H100 = [
    ({"1g.10gb": 7}, True),
    ({"1g.10gb": 8}, False),  # at most 7 instances
    ({"1g.10gb+me": 2}, False),  # one +me instance per GPU
    ({"7g.80gb": 1}, True),
    ({"7g.80gb": 1, "1g.10gb": 1}, False),  # 7g holds all 8 memory slices
    ({"3g.40gb": 2}, True),
    ({"3g.40gb": 2, "1g.10gb": 1}, False),  # 7 compute slices, but memory 0-7 is full
    ({"4g.40gb": 1, "3g.40gb": 1}, True),
    ({"4g.40gb": 1, "2g.20gb": 1, "1g.10gb": 1}, True),  # 4g@0, 2g@4, 1g@6
    ({"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}, True),  # only with 3g at 4: creation order fails
    ({"2g.20gb": 3, "1g.10gb": 1}, True),  # 1g at 6
    ({"2g.20gb": 3, "1g.20gb": 1}, True),  # 1g.20gb at 6 takes slices 6-7
    ({"1g.20gb": 4}, True),  # 4 compute slices, all 8 memory slices
    ({"1g.20gb": 4, "1g.10gb": 1}, False),  # 5 compute slices, but no memory left
    # 1g.20gb at 0, 2, 4 leaves 6-7, and 7 is no 1g start: the 1g.20gb must leave 0-1, 2-3
    # or 4-5 free instead (a planner that only tries the lowest starts refuses this)
    ({"1g.20gb": 3, "1g.10gb": 2}, True),
    ({"3g.40gb": 1, "1g.20gb": 2}, True),
    ({"4g.40gb": 1, "1g.20gb": 2}, True),
    ({"4g.40gb": 1, "1g.20gb": 2, "1g.10gb": 1}, False),  # memory full
    ({"1g.10gb": 6, "1g.10gb+me": 1}, True),
    ({"1g.10gb": 7, "1g.10gb+me": 1}, False),  # 8 compute slices
]


@pytest.mark.parametrize(("counts", "fits"), KNOWN_H100, ids=str)
def test_known_layouts_of_the_real_h100(counts: dict[str, int], fits: bool) -> None:
    real = captured("H100-SXM5-80GB")
    assert (_key(Counter(counts)) in feasible_multisets(real)) is fits  # the oracle itself
    items: list[tuple[RealProfile, int | None]] = [
        (real.profile(name), None) for name, n in counts.items() for _copy in range(n)
    ]
    for geometry in (catalog_geometry(real.key), real_nvml_geometry(real.key)):
        request = _request(geometry, items)
        if fits:
            _check_valid(real, request, pack_instances(geometry, request))
        else:
            with pytest.raises(LayoutError, match="layout does not fit"):
                pack_instances(geometry, request)


def test_uneven_layout_is_placed_as_the_real_table_allows() -> None:
    """3g + 2g + 1g + 1g: 3g must take slices 4-7 (at 0 it would leave no room for the rest)."""
    real = captured("H100-SXM5-80GB")
    names = ["1g.10gb", "3g.40gb", "1g.10gb", "2g.20gb"]
    geometry = real_nvml_geometry(real.key)
    placed = pack_instances(geometry, _request(geometry, [(real.profile(n), None) for n in names]))
    assert [(p.profile.name, p.start) for p in placed if p.profile.name == "3g.40gb"] == [
        ("3g.40gb", 4)
    ]


# ------------------------------------------------------------------- explicit placements
def _explicit_cases(real: RealGpu) -> st.SearchStrategy[list[tuple[RealProfile, int | None]]]:
    slot = st.sampled_from(real.profiles).flatmap(
        lambda p: st.tuples(st.just(p), st.one_of(st.none(), st.sampled_from(p.starts)))
    )
    return st.lists(slot, min_size=1, max_size=7)


@pytest.mark.parametrize("key", [m.key for m in MODELS])
def test_explicit_placements_against_brute_force(key: str) -> None:
    real = best(key)
    geometry = catalog_geometry(key)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(_explicit_cases(real))
    def check(items: list[tuple[RealProfile, int | None]]) -> None:
        request = _request(geometry, items)
        try:
            placed = pack_instances(geometry, request)
        except LayoutError:
            assert not brute_fit(real, items), items
        else:
            assert brute_fit(real, items), items
            _check_valid(real, request, placed)

    check()


# --------------------------------------------------------------------- the oracle's input
def test_field_notes_transcription_matches_the_notes() -> None:
    """real_gpu_tables.py transcribes FIELD_NOTES.md section 4 by hand: it must still say so."""
    text = NOTES.read_text(encoding="utf-8")
    section = text[text.index("## 4.") : text.index("## 5.")]
    for key in NOTED:
        if key == "A100-PCIE-80GB":
            continue  # the notes' "A100 80GB" row, checked under A100-SXM4-80GB
        for profile in noted(key).profiles:
            token = "+me(%d,%d)" if profile.name.endswith("+me") else profile.name + "(%d,%d"
            assert token % (profile.id, profile.instance_count) in section, (key, profile)
    assert "1g {0..6}:1, 1g+me {0..6}:1,\n1g.20gb-class {0,2,4,6}:2, 2g {0,2,4}:2" in section
    assert "3g {0,4}:4, 4g {0}:4, 7g {0}:8" in section
    assert "placements 14,21:{0,1,2,3}:1 5,6:{0,2}:2 0:{0}:4" in section
