"""Pure planning (plugins/module_utils/mig/: _mig_layout_spec, _mig_packing, _mig_select,
_mig_parted, _mig_plan): layouts, named layouts, selectors, precise errors, idempotency matching
and the mig-parted format. No NVML, no Ansible."""

from __future__ import annotations

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    DISABLED,
    InstanceSpec,
    LayoutError,
    LayoutSpec,
    geometry_from_model,
    geometry_from_profiles,
    parse_layout,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_packing import (
    pack_compute,
    plan_layout,
    resolve_layout,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_parted import (
    export_mig_parted,
    parse_mig_parted,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_plan import (
    instances_match,
    plan_gpu,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    CurrentGpu,
    CurrentInstance,
    GpuIdentity,
    assign_layouts,
    normalise_pci_bus_id,
    parse_gpu_entries,
    parse_selector,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    A30_24GB,
    A100_SXM4_40GB,
    H100_SXM5_80GB,
    MODELS,
    find_model,
)

H100 = geometry_from_model(H100_SXM5_80GB)
A30 = geometry_from_model(A30_24GB)
A100 = geometry_from_model(A100_SXM4_40GB)


def placed(layout: object, geometry=H100) -> list[tuple[str, int]]:
    _desired, instances = plan_layout(parse_layout(layout), geometry)
    return [(p.profile.name, p.start) for p in instances]


def error(layout: object, geometry=H100) -> str:
    with pytest.raises(LayoutError) as info:
        plan_layout(parse_layout(layout), geometry)
    return str(info.value)


# ------------------------------------------------------------------------- layout forms
def test_layout_forms_are_equivalent() -> None:
    as_list = parse_layout(["3g.40gb", "2x1g.10gb", {"profile": "2g.20gb"}])
    as_text = parse_layout("3g.40gb, 2x1g.10gb, 2g.20gb")
    assert as_list == as_text
    assert [i.profile for i in as_list.instances] == ["3g.40gb", "1g.10gb", "1g.10gb", "2g.20gb"]
    assert parse_layout({"mig_enabled": True, "instances": ["1g.10gb"]}) == parse_layout(
        ["1g.10gb"]
    )
    for disabled in ("all-disabled", "disabled", False, {"mig_enabled": False}, "DISABLED"):
        assert parse_layout(disabled) == DISABLED
    assert parse_layout([]) == LayoutSpec(mig_enabled=True)
    assert parse_layout("all-enabled") == LayoutSpec(mig_enabled=True, named="all-enabled")
    assert parse_layout("all-full").named == "all-max"
    assert parse_layout("all-1g.10gb.me").named == "all-1g.10gb+me"  # mig-parted's name


def test_explicit_placement_and_compute_split_forms() -> None:
    spec = parse_layout(
        [
            "3g.40gb@4",
            {"profile": "2g.20gb", "placement": 0, "compute_instances": ["1c", "1c.2g.20gb"]},
            {"profile": "1g.10gb", "count": 2},
        ]
    )
    assert spec.instances == (
        InstanceSpec("3g.40gb", 4),
        InstanceSpec("2g.20gb", 0, (1, 1)),
        InstanceSpec("1g.10gb"),
        InstanceSpec("1g.10gb"),
    )
    assert placed(["3g.40gb@4", "2g.20gb@0", "1g.10gb", "1g.10gb"]) == [
        ("2g.20gb", 0),
        ("1g.10gb", 2),
        ("1g.10gb", 3),
        ("3g.40gb", 4),
    ]


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("foo", "cannot read 'foo' as a GPU-instance profile"),
        (["2x3g.40gb@0"], "gives one placement to 2 instances"),
        ([{"profile": "3g.40gb", "colour": "red"}], "unknown key(s) colour"),
        ([{"placement": 0}], "'profile' is required"),
        ([{"profile": "3g.40gb", "placement": -1}], "placement must be a whole number >= 0"),
        ([{"profile": "3g.40gb", "count": 0}], "count must be a whole number >= 1"),
        ([{"profile": "3g.40gb", "compute_instances": []}], "non-empty list of compute-instance"),
        (
            [{"profile": "3g.40gb", "compute_instances": ["1c.2g.20gb"]}],
            "belongs to GPU-instance profile 2g.20gb",
        ),
        (["1c.3g.40gb"], "names a compute instance"),
        ("all-bogus", "unknown named layout 'all-bogus'"),
        (True, "true is not a layout"),
        (42, "must be a named layout, a list of profiles or a mapping"),
        (
            {"mig_enabled": False, "instances": ["1g.10gb"]},
            "instances are given but mig_enabled is false",
        ),
        (None, "layout is missing"),
    ],
)
def test_malformed_layouts_name_the_problem(layout: object, expected: str) -> None:
    with pytest.raises(LayoutError) as info:
        parse_layout(layout)
    assert expected in str(info.value)


# ------------------------------------------------------------------------- named layouts
def test_all_1g_is_resolved_per_model() -> None:
    assert placed("all-1g", H100) == [("1g.10gb", s) for s in range(7)]
    assert placed("all-1g", A30) == [("1g.6gb", s) for s in range(4)]
    assert placed("all-1g", A100) == [("1g.5gb", s) for s in range(7)]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.key)
def test_named_layouts_resolve_and_fit_on_every_model(model) -> None:
    geometry = geometry_from_model(model)
    seven = model.compute_slices == 7
    for name in ("all-enabled", "all-1g", "all-2g", "all-4g", "all-max", "all-balanced"):
        _desired, instances = plan_layout(parse_layout(name), geometry)
        assert sum(p.profile.slice_count for p in instances) <= model.compute_slices
    balanced = sorted(
        p.profile.slice_count for p in plan_layout(parse_layout("all-balanced"), geometry)[1]
    )
    assert balanced == ([1, 1, 2, 3] if seven else [1, 1, 2])  # mig-parted's all-balanced
    maximum = plan_layout(parse_layout("all-max"), geometry)[1]
    assert [p.profile.slice_count for p in maximum] == [model.compute_slices]
    for profile in model.profiles:
        instances = plan_layout(parse_layout("all-" + profile.name), geometry)[1]
        assert len(instances) == profile.instance_count
        assert {p.profile.name for p in instances} == {profile.name}


def test_named_layout_missing_on_a_model_says_so() -> None:
    message = error("all-3g", A30)
    assert "needs a 3-slice GPU-instance profile, which A30-24GB does not offer" in message
    assert "1g.6gb" in message
    assert "not offered by A30-24GB" in error("all-3g.40gb", A30)


# ------------------------------------------------------------------- precise fit errors
def test_profile_from_another_model() -> None:
    message = error(["1g.6gb"], H100)
    assert "profile 1g.6gb is not offered by H100-SXM5-80GB: it is a profile of A30-24GB" in message
    assert "H100-SXM5-80GB offers: 1g.10gb, 1g.10gb+me, 1g.20gb" in message


def test_unknown_profile() -> None:
    assert "unknown profile 5g.50gb: H100-SXM5-80GB offers" in error(["5g.50gb"])


def test_too_many_instances_of_a_profile() -> None:
    assert "3 x 3g.40gb requested, but the GPU holds at most 2 instances of 3g.40gb" in error(
        "3x3g.40gb"
    )
    assert "at most 1 instance of 1g.10gb+me" in error("2x1g.10gb+me")


def test_too_many_compute_slices() -> None:
    message = error("4g.40gb, 3g.40gb, 1g.10gb")
    assert (
        "need 8 compute slices (4g.40gb = 4 + 3g.40gb = 3 + 1g.10gb = 1), the GPU has 7" in message
    )


def test_too_many_memory_slices() -> None:
    message = error("3g.40gb, 3g.40gb, 1g.10gb")
    assert "need 9 memory slices (2 x 3g.40gb = 8 + 1g.10gb = 1), the GPU has 8" in message


def test_placements_that_cannot_be_combined() -> None:
    message = error("1g.10gb@3, 4g.40gb")
    assert "no combination of the placements it offers holds all 2 GPU instances" in message
    assert "1g.10gb at 3 (memory slice 3, explicit)" in message
    assert "leaves no valid placement for 4g.40gb (placements {0}:4)" in message
    message = error("1g.10gb@1, 3x2g.20gb")
    assert "2g.20gb (placements {0,2,4}:2)" in message


def test_invalid_and_overlapping_explicit_placements() -> None:
    assert (
        "placement 1 is not valid for 3g.40gb on H100-SXM5-80GB: it can start at 0, 4 "
        "(4 memory slices each)"
    ) in error("3g.40gb@1")
    assert "placement 7 is not valid for 1g.10gb" in error("1g.10gb@7")
    message = error("3g.40gb@0, 2g.20gb@2")
    assert "explicit placements overlap" in message
    assert "memory slices 0-3" in message and "memory slices 2-3" in message


def test_compute_instance_splits() -> None:
    profile = H100.profile("3g.40gb")
    assert profile is not None
    assert pack_compute(profile, [1, 1, 1]) == ((0, 1), (1, 1), (2, 1))
    assert pack_compute(profile, [1, 2]) == ((0, 2), (2, 1))
    with pytest.raises(LayoutError, match="needs 4 compute slices, the GPU instance has 3"):
        pack_compute(profile, [2, 2])
    with pytest.raises(LayoutError, match="a 4-slice compute instance is not offered"):
        pack_compute(profile, [4])
    seven = H100.profile("7g.80gb")
    assert seven is not None
    assert pack_compute(seven, [4, 3]) == ((0, 4), (4, 3))
    message = error([{"profile": "3g.40gb", "compute_instances": [2, 2]}])
    assert "compute-instance split 2c+2c does not fit 3g.40gb" in message


def test_uneven_layout_is_placed_where_every_instance_fits() -> None:
    # creating 3g, 2g, 1g, 1g at the lowest free start (NVML without placement) fails at the
    # last 1g; the planner puts the 3g at the top half
    assert placed("3g.40gb, 2g.20gb, 1g.10gb, 1g.10gb") == [
        ("2g.20gb", 0),
        ("1g.10gb", 2),
        ("1g.10gb", 3),
        ("3g.40gb", 4),
    ]
    # the order of the list never matters
    assert placed("1g.10gb, 3g.40gb, 1g.10gb, 2g.20gb") == placed(
        "3g.40gb, 2g.20gb, 1g.10gb, 1g.10gb"
    )


# ------------------------------------------------------------------------------ selectors
GPUS = [
    GpuIdentity(
        0,
        "GPU-aaaaaaaa-0000-0000-0000-000000000000",
        "00000000:1B:00.0",
        "NVIDIA H100 80GB HBM3",
        "H100-SXM5-80GB",
        0x233010DE,
    ),
    GpuIdentity(
        1,
        "GPU-bbbbbbbb-0000-0000-0000-000000000000",
        "00000000:43:00.0",
        "NVIDIA H100 80GB HBM3",
        "H100-SXM5-80GB",
        0x233010DE,
    ),
    GpuIdentity(
        2,
        "GPU-cccccccc-0000-0000-0000-000000000000",
        "00000000:52:00.0",
        "NVIDIA A30",
        "A30-24GB",
        0x20B710DE,
    ),
]


def test_selector_kinds() -> None:
    assert parse_selector(3, "s").kind == "index"
    assert parse_selector("3", "s").kind == "index"
    assert parse_selector("GPU-AAAAAAAA-0000-0000-0000-000000000000", "s").matches(GPUS[0])
    assert parse_selector("1b:00.0", "s").matches(GPUS[0])
    assert parse_selector("0000:43:00.0", "s").matches(GPUS[1])
    assert parse_selector("A30", "s").matches(GPUS[2])
    assert parse_selector("NVIDIA A30", "s").matches(GPUS[2])
    assert parse_selector({"model": "H100"}, "s").matches(GPUS[1])
    assert parse_selector({"pci_bus_id": "00000000:52:00.0"}, "s").matches(GPUS[2])
    assert normalise_pci_bus_id("1b:00.0") == "00000000:1B:00.0"
    with pytest.raises(LayoutError, match="is a MIG device UUID"):
        parse_selector("MIG-b4b2228d-6933-5839-bc0e-41ab9edb61c6", "s")
    with pytest.raises(LayoutError, match="is not a GPU index, UUID"):
        parse_selector("V100", "gpus[0].devices[0]")


def test_different_layouts_per_gpu() -> None:
    entries = parse_gpu_entries(
        gpus=[
            {"devices": [0], "layout": "all-balanced"},
            {"devices": "GPU-bbbbbbbb-0000-0000-0000-000000000000", "layout": "all-1g"},
            {"devices": "all", "model": "A30", "layout": "all-disabled"},
        ]
    )
    assigned = assign_layouts(entries, GPUS)
    assert {i: e.layout.named for i, e in assigned.items()} == {
        0: "all-balanced",
        1: "all-1g",
        2: "all-disabled",
    }


def test_selector_matching_no_gpu() -> None:
    entries = parse_gpu_entries(gpus=[{"devices": [7], "layout": "all-1g"}])
    with pytest.raises(LayoutError) as info:
        assign_layouts(entries, GPUS)
    assert "gpus[0]: selector '7' matches no GPU on this host" in str(info.value)
    assert "0 H100-SXM5-80GB GPU-aaaaaaaa" in str(info.value)
    entries = parse_gpu_entries(gpus=[{"devices": "all", "model": "H200", "layout": "all-1g"}])
    with pytest.raises(LayoutError, match="matches no GPU on this host"):
        assign_layouts(entries, GPUS)
    optional = parse_gpu_entries(gpus=[{"model": "H200", "layout": "all-1g", "optional": True}])
    assert assign_layouts(optional, GPUS) == {}


def test_two_selectors_claiming_one_gpu() -> None:
    entries = parse_gpu_entries(
        gpus=[
            {"devices": "all", "layout": "all-1g"},
            {"devices": ["00000000:43:00.0"], "layout": "all-balanced"},
        ]
    )
    with pytest.raises(LayoutError) as info:
        assign_layouts(entries, GPUS)
    message = str(info.value)
    assert (
        "GPU 1 (H100-SXM5-80GB, 00000000:43:00.0) is claimed by gpus[0] (devices: all) with "
        "layout all-1g and by gpus[1] (devices: [00000000:43:00.0]) with layout all-balanced"
        in message
    )
    # the same layout twice is no conflict
    same = parse_gpu_entries(gpus=[{"layout": "all-1g"}, {"devices": [1], "layout": "all-1g"}])
    assert sorted(assign_layouts(same, GPUS)) == [0, 1, 2]


def test_layout_and_gpus_are_exclusive() -> None:
    with pytest.raises(LayoutError, match="not both"):
        parse_gpu_entries(layout="all-1g", gpus=[{"layout": "all-1g"}])
    with pytest.raises(LayoutError, match="unknown key"):
        parse_gpu_entries(gpus=[{"layout": "all-1g", "device": 0}])


# ------------------------------------------------------------------------------ matching
def _identity(model=H100_SXM5_80GB) -> GpuIdentity:
    return GpuIdentity(0, "GPU-x", "00000000:1B:00.0", model.nvml_name, model.key)


def _current(instances: list[tuple[str, int]], geometry=H100, enabled=True) -> CurrentGpu:
    result = []
    for name, start in instances:
        profile = geometry.profile(name)
        assert profile is not None
        result.append(
            CurrentInstance(
                start,
                profile.id,
                profile.name,
                start,
                profile.size,
                ((0, profile.slice_count),),
                (0,),
            )
        )
    return CurrentGpu(_identity(), enabled, enabled, tuple(result))


def test_match_modes() -> None:
    spec = parse_layout("3g.40gb, 2g.20gb, 1g.10gb, 1g.10gb")
    desired, target = plan_layout(spec, H100)
    canonical = _current([("2g.20gb", 0), ("1g.10gb", 2), ("1g.10gb", 3), ("3g.40gb", 4)])
    elsewhere = _current([("3g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6), ("1g.10gb", 5)])
    assert instances_match(canonical.instances, target, desired, "exact")
    assert not instances_match(elsewhere.instances, target, desired, "exact")
    assert instances_match(elsewhere.instances, target, desired, "explicit")
    assert instances_match(elsewhere.instances, target, desired, "none")
    pinned = parse_layout("3g.40gb@4, 2g.20gb, 1g.10gb, 1g.10gb")
    desired, target = plan_layout(pinned, H100)
    assert not instances_match(elsewhere.instances, target, desired, "explicit")
    assert instances_match(elsewhere.instances, target, desired, "none")
    fewer = _current([("3g.40gb", 0)])
    assert not instances_match(fewer.instances, target, desired, "none")


def test_plan_keeps_what_already_sits_at_the_planned_placement() -> None:
    entry = parse_gpu_entries(layout="all-balanced")[0]
    gpu = _current([("1g.10gb", s) for s in range(7)])
    plan = plan_gpu(gpu, H100, entry)
    assert plan.changed and plan.set_mode is None and not plan.mode_change
    assert sorted(i.start for i in plan.keep) == [2, 3]
    assert sorted(i.start for i in plan.destroy) == [0, 1, 4, 5, 6]
    assert sorted((c.profile.name, c.start) for c in plan.create) == [
        ("2g.20gb", 0),
        ("3g.40gb", 4),
    ]
    again = plan_gpu(
        _current([("2g.20gb", 0), ("1g.10gb", 2), ("1g.10gb", 3), ("3g.40gb", 4)]), H100, entry
    )
    assert not again.changed


def test_plan_mode_changes() -> None:
    entry = parse_gpu_entries(layout="all-1g")[0]
    disabled = CurrentGpu(_identity(), False, False, ())
    plan = plan_gpu(disabled, H100, entry)
    assert plan.changed and plan.set_mode is True and plan.mode_change
    stuck = CurrentGpu(_identity(), False, True, ())  # pending enable (Ampere before a reset)
    assert plan_gpu(stuck, H100, entry).set_mode is True
    off = parse_gpu_entries(layout="all-disabled")[0]
    assert not plan_gpu(disabled, H100, off).changed
    cancel = CurrentGpu(_identity(), False, True, ())
    plan = plan_gpu(cancel, H100, off)
    assert plan.changed and plan.set_mode is False and not plan.mode_change


def test_geometry_from_reported_profiles_equals_catalog() -> None:
    reported = [
        {
            "name": p.name,
            "id": p.id,
            "index": p.index,
            "slice_count": p.slice_count,
            "instance_count": p.instance_count,
            "memory_mib": p.memory_mib,
            "placements": [{"start": s, "size": p.placement_size} for s in p.placement_starts],
        }
        for p in A30_24GB.profiles
    ]
    assert geometry_from_profiles(A30_24GB.nvml_name, A30_24GB, reported) == A30
    unknown = geometry_from_profiles("NVIDIA Future GPU", None, reported)
    assert (unknown.model, unknown.compute_slices, unknown.memory_slices) == (None, 4, 4)
    assert (
        resolve_layout(parse_layout("all-1g"), unknown).instances
        == resolve_layout(parse_layout("all-1g"), A30).instances
    )


# ----------------------------------------------------------------------------- mig-parted
CONFIG = """
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  custom:
    - devices: [0]
      mig-enabled: true
      mig-devices:
        "3g.40gb": 1
        "1c.3g.40gb": 4
    - devices: all
      device-filter: ["0x20B710DE"]
      mig-enabled: true
      mig-devices:
        "1g.6gb": 4
"""


def test_parse_mig_parted_config() -> None:
    entries = parse_mig_parted(CONFIG, "custom")
    assert len(entries) == 2
    first, second = entries
    assert [s.value for s in first.devices or ()] == [0]
    # four 1c compute instances go into as few 3g.40gb GPU instances as hold them: 3 + 1
    assert first.layout.instances == (
        InstanceSpec("3g.40gb"),
        InstanceSpec("3g.40gb", None, (1, 1, 1)),
        InstanceSpec("3g.40gb", None, (1,)),
    )
    assert second.devices is None and second.models == ("0x20b710de",) and second.optional
    assigned = assign_layouts(entries, GPUS)
    assert sorted(assigned) == [0, 2]
    assert parse_mig_parted(CONFIG, "all-disabled")[0].layout == DISABLED


@pytest.mark.parametrize(
    ("config", "label", "expected"),
    [
        ("version: v1\nmig-configs: {a: [", None, "YAML syntax error at line"),
        ("[1, 2]", None, "expected a mapping with 'version: v1'"),
        ("mig-configs: {}", None, "'version' is missing"),
        ("version: v2\nmig-configs: {a: []}", None, "unsupported mig-parted config version 'v2'"),
        ("version: v1", None, "'mig-configs' must be a non-empty mapping"),
        ("version: v1\nmig-configs: {a: [], b: []}", None, "several labels (a, b)"),
        (
            "version: v1\nmig-configs: {a: [{devices: all, mig-enabled: false}]}",
            "b",
            "no label 'b'",
        ),
        ("version: v1\nmig-configs: {a: []}", None, "must be a non-empty list"),
        (
            "version: v1\nmig-configs: {a: [{devices: all}]}",
            None,
            "missing required field 'mig-enabled'",
        ),
        (
            "version: v1\nmig-configs: {a: [{devices: some, mig-enabled: false}]}",
            None,
            "'devices' must be 'all' or a list of GPU indices",
        ),
        (
            "version: v1\nmig-configs: {a: [{devices: all, mig-enabled: yes please}]}",
            None,
            "'mig-enabled' must be true or false",
        ),
        (
            "version: v1\nmig-configs: {a: [{devices: all, mig-enabled: true}]}",
            None,
            "'mig-devices' is required when 'mig-enabled' is true",
        ),
        (
            "version: v1\nmig-configs: {a: [{devices: all, mig-enabled: false, mig-devices: {1g.10gb: 1}}]}",
            None,
            "MIG devices are listed but 'mig-enabled' is false",
        ),
        (
            "version: v1\nmig-configs: {a: [{devices: all, mig-enabled: true, mig-devices: {1g.10gb: -1}}]}",
            None,
            "count must be a whole number >= 0",
        ),
        (
            "version: v1\nmig-configs: {a: [{devices: all, mig-enabled: true, mig-devices: {big: 1}}]}",
            None,
            "'big' is not a MIG profile name",
        ),
        (
            "version: v1\nmig-configs: {a: [{devices: all, mig-enabled: true, mig-devices: {}, color: 1}]}",
            None,
            "unexpected field(s) color",
        ),
        (
            "version: v1\nextra: 1\nmig-configs: {a: [{devices: all, mig-enabled: false}]}",
            None,
            "unexpected field(s) extra",
        ),
    ],
)
def test_malformed_mig_parted_configs(config: str, label: str | None, expected: str) -> None:
    with pytest.raises(LayoutError) as info:
        parse_mig_parted(config, label)
    assert expected in str(info.value)
    assert "mig_parted_config" in str(info.value)


def test_export_mig_parted_groups_equal_gpus_and_round_trips() -> None:
    h100 = geometry_from_model(find_model("H100"))  # type: ignore[arg-type]
    balanced = _current([("2g.20gb", 0), ("1g.10gb", 2), ("1g.10gb", 3), ("3g.40gb", 4)])
    split = CurrentGpu(
        GpuIdentity(1, "GPU-y", "00000000:43:00.0", H100_SXM5_80GB.nvml_name, H100_SXM5_80GB.key),
        True,
        True,
        (CurrentInstance(2, 9, "3g.40gb", 4, 4, ((0, 1), (1, 1), (2, 1)), (0, 1, 2)),),
    )
    off = CurrentGpu(
        GpuIdentity(2, "GPU-z", "00000000:52:00.0", H100_SXM5_80GB.nvml_name, H100_SXM5_80GB.key),
        False,
        False,
        (),
    )
    config = export_mig_parted([balanced, split, off], {0: h100, 1: h100, 2: h100}, "now")
    assert config == {
        "version": "v1",
        "mig-configs": {
            "now": [
                {
                    "devices": [0],
                    "mig-enabled": True,
                    "mig-devices": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
                },
                {"devices": [1], "mig-enabled": True, "mig-devices": {"1c.3g.40gb": 3}},
                {"devices": [2], "mig-enabled": False},
            ]
        },
    }
    entries = parse_mig_parted(config, "now")
    assert [plan_layout(e.layout, h100)[1] for e in entries][1][0].compute == (
        (0, 1),
        (1, 1),
        (2, 1),
    )
    same = export_mig_parted([balanced], {0: h100})
    assert same["mig-configs"]["current"][0]["devices"] == "all"
