"""Invariants of the GPU catalog, for every model it knows."""

from __future__ import annotations

import itertools
import re

import pynvml
import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    ARCH_AMPERE,
    ARCH_HOPPER,
    CI_PROFILE_INDEX_BY_SLICES,
    DRIVER_GI_PROFILE_INDEX_BOUND,
    GI_1_SLICE_REV1,
    GI_2_SLICE_REV1,
    MODELS,
    GpuModel,
    compute_instance_name,
    compute_instance_slice_options,
    compute_instance_starts,
    derived_profile_name,
    find_model,
    gpu_instance_id_for,
    known_model_names,
    model_for_nvml_name,
)

BY_KEY = {model.key: model for model in MODELS}
PROFILE_NAME = re.compile(r"^(\d)g\.(\d+)gb(\+me)?$")


@pytest.fixture(params=MODELS, ids=lambda model: model.key)
def model(request: pytest.FixtureRequest) -> GpuModel:
    model: GpuModel = request.param
    return model


def _duplicates(values: list[object]) -> list[object]:
    return sorted({v for v in values if values.count(v) > 1}, key=str)


def test_profile_ids_indices_and_names_are_unique(model: GpuModel) -> None:
    for field in ("id", "index", "name"):
        values: list[object] = [getattr(p, field) for p in model.profiles]
        assert not _duplicates(values), "%s: duplicate profile %ss %s" % (
            model.key,
            field,
            _duplicates(values),
        )


def test_profile_indices_are_nvml_indices(model: GpuModel) -> None:
    for profile in model.profiles:
        assert 0 <= profile.index < DRIVER_GI_PROFILE_INDEX_BOUND, profile.name
        assert profile.index < pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT, profile.name


def test_placements_fit_the_memory_slices(model: GpuModel) -> None:
    for profile in model.profiles:
        assert profile.placement_starts, "%s %s has no placement" % (model.key, profile.name)
        assert list(profile.placement_starts) == sorted(set(profile.placement_starts))
        for start, size in profile.placements:
            assert start >= 0 and size >= 1, (model.key, profile.name, start, size)
            assert start + size <= model.memory_slices, "%s %s placement %d:%d past %d slices" % (
                model.key,
                profile.name,
                start,
                size,
                model.memory_slices,
            )
            # Aligned placements are what makes GPU-instance ids a binary tree of slices.
            assert start % size == 0, "%s %s placement %d:%d is not aligned" % (
                model.key,
                profile.name,
                start,
                size,
            )
        assert profile.slice_count <= model.compute_slices
        assert profile.placement_size >= profile.slice_count, (model.key, profile.name)


def test_instance_count_does_not_exceed_placements(model: GpuModel) -> None:
    for profile in model.profiles:
        assert 1 <= profile.instance_count <= len(profile.placements), (
            "%s %s: %d instances but %d placements"
            % (model.key, profile.name, profile.instance_count, len(profile.placements))
        )
        # Non-overlapping placements bound the count too (1g.10gb+me is limited to 1 by media
        # engines, not by space; the other way round must never happen).
        assert profile.instance_count <= model.memory_slices // profile.placement_size


def test_whole_gpu_profile(model: GpuModel) -> None:
    whole = [p for p in model.profiles if p.slice_count == model.compute_slices]
    assert len(whole) == 1, "%s: exactly one whole-GPU profile" % model.key
    assert whole[0].placements == ((0, model.memory_slices),)
    assert whole[0].id == 0 and whole[0].instance_count == 1
    assert whole[0].memory_mib * 1024 * 1024 <= model.memory_total_bytes
    for profile in model.profiles:
        assert profile.memory_mib <= whole[0].memory_mib, profile.name
        assert profile.multiprocessors <= whole[0].multiprocessors, profile.name


def test_profile_names_match_slices_and_media_engines(model: GpuModel) -> None:
    for profile in model.profiles:
        match = PROFILE_NAME.match(profile.name)
        assert match, "%s: %r is not an NVIDIA profile name" % (model.key, profile.name)
        assert int(match[1]) == profile.slice_count, profile.name
        media = bool(match[3])
        assert media == (profile.index in (GI_1_SLICE_REV1, GI_2_SLICE_REV1)), profile.name
        if media:
            twin = model.profile_by_name(profile.name[: -len("+me")])
            assert twin is not None, "%s has no plain twin" % profile.name
            assert (twin.slice_count, twin.memory_mib, twin.placements) == (
                profile.slice_count,
                profile.memory_mib,
                profile.placements,
            ), profile.name
            assert profile.ofas >= 1 and profile.jpegs >= 1 and profile.instance_count == 1


def test_model_identity(model: GpuModel) -> None:
    assert (model.architecture, model.arch_code) in (
        ("ampere", ARCH_AMPERE),
        ("hopper", ARCH_HOPPER),
    )
    assert model.cuda_capability == ((8, 0) if model.architecture == "ampere" else (9, 0))
    # Ampere: reset to apply a mode change, mode kept across reboots; Hopper: neither.
    assert (
        model.mode_change_needs_reset == model.mig_mode_persists == (model.architecture == "ampere")
    )
    assert model.pci_device_id & 0xFFFF == 0x10DE, "vendor id is NVIDIA's"
    assert model.pci_subsystem_id & 0xFFFF == 0x10DE
    assert model.nvml_name.startswith("NVIDIA ")
    assert model.sms_per_compute_slice == model.profile_by_index(0).multiprocessors  # type: ignore[union-attr]


@pytest.mark.parametrize("transform", [str, str.lower, str.upper, lambda s: "  %s\t" % s])
def test_find_model_by_key_alias_and_nvml_name(model: GpuModel, transform: object) -> None:
    for name in (model.key, model.nvml_name, *model.aliases):
        found = find_model(transform(name))  # type: ignore[operator]
        assert found is model, "find_model(%r) gave %s, not %s" % (
            name,
            found.key if found else None,
            model.key,
        )
    assert model_for_nvml_name(model.nvml_name) is model


def test_lookups_of_unknown_names() -> None:
    assert find_model("B200") is None
    assert find_model("") is None
    assert model_for_nvml_name("nvidia h100 80gb hbm3") is None, "NVML names match exactly"
    assert known_model_names() == tuple(model.key for model in MODELS)
    assert len(set(known_model_names())) == len(MODELS)


def test_gpu_instance_ids_are_distinct_for_non_overlapping_placements(model: GpuModel) -> None:
    places = sorted({place for profile in model.profiles for place in profile.placements})
    ids = {place: gpu_instance_id_for(model, *place) for place in places}
    for (a, ida), (b, idb) in itertools.combinations(ids.items(), 2):
        overlap = a[0] < b[0] + b[1] and b[0] < a[0] + a[1]
        if not overlap:
            assert ida != idb, "%s: placements %s and %s share GI id %d" % (model.key, a, b, ida)
    assert all(0 <= i < 2 * model.memory_slices - 1 for i in ids.values()), ids


def test_gpu_instance_ids_of_published_listings() -> None:
    """nvidia-smi mig -lgi on 8-slice GPUs: 7g is 0, 3g are 1 and 2, 2g 3..5, 1g 7..13."""
    h100 = BY_KEY["H100-SXM5-80GB"]
    assert gpu_instance_id_for(h100, 0, 8) == 0
    assert [gpu_instance_id_for(h100, s, 4) for s in (0, 4)] == [1, 2]
    assert [gpu_instance_id_for(h100, s, 2) for s in (0, 2, 4)] == [3, 4, 5]
    assert [gpu_instance_id_for(h100, s, 1) for s in range(7)] == list(range(7, 14))


def test_compute_instance_geometry() -> None:
    assert compute_instance_slice_options(7) == (1, 2, 3, 4, 7)
    assert compute_instance_slice_options(3) == (1, 2, 3)
    assert compute_instance_slice_options(1) == (1,)
    assert compute_instance_starts(3, 1) == (0, 1, 2)
    assert compute_instance_starts(4, 2) == (0, 2)
    assert compute_instance_starts(4, 4) == (0,)
    # Starts align to the power of two at or above the size, like GI placements: a 3c in a
    # 7g sits at 0 or 4 (-lcipp '{0,4}:3'), so 4c + 3c can fill a 7g.
    assert compute_instance_starts(7, 3) == (0, 4)
    assert compute_instance_starts(7, 2) == (0, 2, 4)
    assert compute_instance_starts(7, 4) == (0,)
    assert compute_instance_starts(4, 3) == (0,)
    for gi_slices in (1, 2, 3, 4, 7):
        for ci_slices in compute_instance_slice_options(gi_slices):
            starts = compute_instance_starts(gi_slices, ci_slices)
            assert all(s + ci_slices <= gi_slices for s in starts), (gi_slices, ci_slices)
            assert (
                CI_PROFILE_INDEX_BY_SLICES[ci_slices] < pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT
            )
    h100 = BY_KEY["H100-SXM5-80GB"]
    three = h100.profile_by_name("3g.40gb")
    assert three is not None
    assert compute_instance_name(three, 1) == "1c.3g.40gb"
    assert compute_instance_name(three, 3) == "3g.40gb"


@pytest.mark.parametrize("key", ["H100-SXM5-80GB", "A100-SXM4-40GB"])
def test_derived_profile_names_reproduce_captured_names(key: str) -> None:
    for profile in BY_KEY[key].profiles:
        if profile.name.endswith("+me"):
            continue  # slices and memory cannot tell a media-engine twin apart
        assert derived_profile_name(profile.slice_count, profile.memory_mib) == profile.name


def test_profile_lookups(model: GpuModel) -> None:
    for profile in model.profiles:
        assert model.profile_by_name(profile.name) is profile
        assert model.profile_by_id(profile.id) is profile
        assert model.profile_by_index(profile.index) is profile
    assert model.profile_by_name("9g.1gb") is None
    assert model.profile_by_id(99) is None
    assert model.profile_by_index(16) is None
