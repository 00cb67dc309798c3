"""The packing planner against brute force, for every GPU model in the catalog.

Brute force: enumerate every set of pairwise non-overlapping GPU-instance placements the model
offers (respecting per-profile instance counts and the compute-slice total); a multiset of
profiles fits exactly when one of those sets has it. The planner must agree on every multiset
within the instance-count bounds, and its chosen placements must be valid, canonical and
independent of the order the profiles are listed in.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.heteromig.fleet.plugins.module_utils._gpu_catalog import MODELS, GpuModel
from ansible_collections.heteromig.fleet.plugins.module_utils._mig_plan import (
    Geometry,
    LayoutError,
    Profile,
    ResolvedInstance,
    geometry_from_model,
    pack_instances,
)

Multiset = tuple[tuple[str, int], ...]


def _key(counts: Counter[str]) -> Multiset:
    return tuple(sorted((name, n) for name, n in counts.items() if n))


def feasible_multisets(geometry: Geometry) -> set[Multiset]:
    """Every multiset of profiles that some set of disjoint placements realises (brute force)."""
    slots = [
        (profile, start, ((1 << profile.size) - 1) << start)
        for profile in geometry.profiles
        for start in profile.starts
    ]
    found: set[Multiset] = set()

    def walk(position: int, occupied: int, counts: Counter[str], compute: int) -> None:
        found.add(_key(counts))
        for index in range(position, len(slots)):
            profile, _start, mask = slots[index]
            if occupied & mask or counts[profile.name] >= profile.instance_count:
                continue
            if compute + profile.slice_count > geometry.compute_slices:
                continue
            counts[profile.name] += 1
            walk(index + 1, occupied | mask, counts, compute + profile.slice_count)
            counts[profile.name] -= 1

    walk(0, 0, Counter(), 0)
    return found


def all_multisets(geometry: Geometry) -> Iterator[Counter[str]]:
    """Every multiset with 0..instance_count of each profile (fitting or not)."""
    ranges = [range(p.instance_count + 1) for p in geometry.profiles]
    for counts in itertools.product(*ranges):
        yield Counter({p.name: n for p, n in zip(geometry.profiles, counts, strict=True) if n})


def _request(geometry: Geometry, counts: Counter[str]) -> list[ResolvedInstance]:
    by_name = {p.name: p for p in geometry.profiles}
    return [
        ResolvedInstance(by_name[name], None, (by_name[name].slice_count,))
        for name in sorted(counts)
        for _copy in range(counts[name])
    ]


def _check_valid(geometry: Geometry, request: list[ResolvedInstance], placed: tuple) -> None:
    assert Counter(p.profile.name for p in placed) == Counter(i.profile.name for i in request)
    occupied = 0
    for inst in placed:
        assert inst.start in inst.profile.starts
        mask = ((1 << inst.profile.size) - 1) << inst.start
        assert not occupied & mask, placed
        occupied |= mask
    assert sum(p.profile.slice_count for p in placed) <= geometry.compute_slices


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.key)
def test_planner_agrees_with_brute_force_on_every_multiset(model: GpuModel) -> None:
    geometry = geometry_from_model(model)
    feasible = feasible_multisets(geometry)
    checked = fits = 0
    rng = random.Random(model.key)
    for counts in all_multisets(geometry):
        request = _request(geometry, counts)
        expected = _key(counts) in feasible
        try:
            placed = pack_instances(geometry, request)
        except LayoutError as exc:
            assert not expected, f"{model.key}: planner refused a fitting layout {dict(counts)}: {exc}"
            assert str(exc).startswith("layout does not fit"), str(exc)
        else:
            assert expected, f"{model.key}: planner placed an impossible layout {dict(counts)}"
            _check_valid(geometry, request, placed)
            shuffled = list(request)
            rng.shuffle(shuffled)
            assert pack_instances(geometry, shuffled) == placed  # order-independent, canonical
            fits += 1
        checked += 1
    assert checked == len(list(all_multisets(geometry)))
    assert fits == len(feasible)  # every realisable multiset was met and placed


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.key)
def test_brute_force_sanity(model: GpuModel) -> None:
    geometry = geometry_from_model(model)
    feasible = feasible_multisets(geometry)
    one = geometry.standard_profile(1)
    assert one is not None
    # the documented maximum of 1-slice instances always fits; one more never does
    assert ((one.name, one.instance_count),) in feasible
    assert ((one.name, one.instance_count + 1),) not in feasible


def _explicit_cases(geometry: Geometry) -> st.SearchStrategy[list[tuple[Profile, int | None]]]:
    slot = st.sampled_from(geometry.profiles).flatmap(
        lambda p: st.tuples(st.just(p), st.one_of(st.none(), st.sampled_from(p.starts)))
    )
    return st.lists(slot, min_size=1, max_size=7)


def _brute_fit(geometry: Geometry, items: list[tuple[Profile, int | None]]) -> bool:
    """Whether some assignment of starts (explicit ones fixed) is disjoint and within limits."""
    counts = Counter(p.name for p, _start in items)
    if any(counts[p.name] > p.instance_count for p, _start in items):
        return False
    if sum(p.slice_count for p, _start in items) > geometry.compute_slices:
        return False
    choices = [[s] if s is not None else list(p.starts) for p, s in items]
    for starts in itertools.product(*choices):
        occupied = 0
        for (profile, _given), start in zip(items, starts, strict=True):
            mask = ((1 << profile.size) - 1) << start
            if occupied & mask:
                break
            occupied |= mask
        else:
            return True
    return False


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.key)
def test_explicit_placements_against_brute_force(model: GpuModel) -> None:
    geometry = geometry_from_model(model)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(_explicit_cases(geometry))
    def check(items: list[tuple[Profile, int | None]]) -> None:
        request = [ResolvedInstance(p, s, (p.slice_count,)) for p, s in items]
        try:
            placed = pack_instances(geometry, request)
        except LayoutError:
            assert not _brute_fit(geometry, items), items
        else:
            assert _brute_fit(geometry, items), items
            _check_valid(geometry, request, placed)
            for profile, start in items:
                if start is not None:
                    assert any(p.profile == profile and p.start == start for p in placed)

    check()
