"""The nvidia-smi commands and planned slices shown in check mode and --diff (_mig_commands).

The expected commands are written out by hand from nvidia-smi's documented syntax (NVIDIA MIG
user guide, ``nvidia-smi mig --help``: ``nvidia-smi -i <gpu> -mig 1``, ``nvidia-smi mig -i <gpu>
-gi <ids> -dci`` then ``-dgi``, ``-cgi <profile id>:<start>,...`` with ``-C`` for the default
compute instance, ``-cci <CI profile id>:<start>`` on a GPU instance; GPU instances are created
in placement order, as the module creates them) and from the published
profile ids and placements (H100 80GB: 1g.10gb 19, 2g.20gb 14, 3g.40gb 9, 7g.80gb 0; A30:
1g.6gb 14; /work/shared/notes/FIELD_NOTES.md section 4), not from the code under test.
"""

from __future__ import annotations

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_commands import (
    nvidia_smi_commands,
    plan_text,
    planned_slices,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    geometry_from_model,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_plan import GpuPlan, plan_gpu
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    CurrentGpu,
    CurrentInstance,
    GpuIdentity,
    parse_gpu_entries,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    A30_24GB,
    H100_SXM5_80GB,
)

H100 = geometry_from_model(H100_SXM5_80GB)
A30 = geometry_from_model(A30_24GB)
H100_GPU = GpuIdentity(2, "GPU-0000", "00000000:1B:00.0", "NVIDIA H100 80GB HBM3", "H100-SXM5-80GB")
A30_GPU = GpuIdentity(1, "GPU-0001", "00000000:3B:00.0", "NVIDIA A30", "A30-24GB")
# 7 x 1g.10gb at starts 0..6, GPU-instance ids 7..13 (as NVML numbers them on an H100)
SEVEN_1G = tuple(CurrentInstance(7 + s, 19, "1g.10gb", s, 1, ((0, 1),)) for s in range(7))


def _plan(gpu: CurrentGpu, layout: object, geometry: object = H100) -> GpuPlan:
    return plan_gpu(gpu, geometry, parse_gpu_entries(layout)[0])  # type: ignore[arg-type]


def test_enable_and_create_balanced_on_an_empty_h100() -> None:
    plan = _plan(CurrentGpu(H100_GPU, False, False), "all-balanced")
    assert nvidia_smi_commands(plan) == [
        "nvidia-smi -i 2 -mig 1",
        "nvidia-smi mig -i 2 -cgi 14:0,19:2,19:3,9:4 -C",
    ]


def test_rebuild_keeps_the_slices_that_stay() -> None:
    plan = _plan(CurrentGpu(H100_GPU, True, True, SEVEN_1G), "all-balanced")
    assert nvidia_smi_commands(plan) == [
        "nvidia-smi mig -i 2 -gi 7,8,11,12,13 -dci",
        "nvidia-smi mig -i 2 -gi 7,8,11,12,13 -dgi",
        "nvidia-smi mig -i 2 -cgi 14:0,9:4 -C",
    ]
    assert planned_slices(plan) == [
        {
            "profile": "2g.20gb",
            "profile_id": 14,
            "placement": {"start": 0, "size": 2},
            "compute_instances": [{"start": 0, "size": 2}],
            "kept": False,
        },
        {
            "profile": "1g.10gb",
            "profile_id": 19,
            "placement": {"start": 2, "size": 1},
            "compute_instances": [{"start": 0, "size": 1}],
            "kept": True,
        },
        {
            "profile": "1g.10gb",
            "profile_id": 19,
            "placement": {"start": 3, "size": 1},
            "compute_instances": [{"start": 0, "size": 1}],
            "kept": True,
        },
        {
            "profile": "3g.40gb",
            "profile_id": 9,
            "placement": {"start": 4, "size": 4},
            "compute_instances": [{"start": 0, "size": 3}],
            "kept": False,
        },
    ]


def test_disable_destroys_compute_then_gpu_instances_then_the_mode() -> None:
    two = (
        CurrentInstance(1, 9, "3g.40gb", 0, 4, ((0, 3),)),
        CurrentInstance(2, 9, "3g.40gb", 4, 4, ((0, 1), (1, 1), (2, 1))),
    )
    plan = _plan(CurrentGpu(H100_GPU, True, True, two), "all-disabled")
    assert nvidia_smi_commands(plan) == [
        "nvidia-smi mig -i 2 -gi 1,2 -dci",
        "nvidia-smi mig -i 2 -gi 1,2 -dgi",
        "nvidia-smi -i 2 -mig 0",
    ]
    assert planned_slices(plan) == []
    assert plan_text(plan).splitlines()[0] == (
        "GPU 2 (H100-SXM5-80GB, 00000000:1B:00.0): planned: MIG disabled"
    )


def test_a_split_gpu_instance_gets_its_compute_instances_by_profile_id_and_start() -> None:
    layout = [{"profile": "3g.40gb", "placement": 0, "compute_instances": [1, 1, 1]}]
    plan = _plan(CurrentGpu(H100_GPU, True, True), layout)
    assert nvidia_smi_commands(plan) == [
        "nvidia-smi mig -i 2 -cgi 9:0",
        "nvidia-smi mig -i 2 -gi <GPU instance ID printed for 3g.40gb@0> -cci 0:0,0:1,0:2",
    ]


def test_whole_gpu_and_a30_profile_ids() -> None:
    plan = _plan(CurrentGpu(H100_GPU, True, True, SEVEN_1G), "all-7g")
    assert nvidia_smi_commands(plan)[-1] == "nvidia-smi mig -i 2 -cgi 0:0 -C"
    a30 = _plan(CurrentGpu(A30_GPU, False, False), "all-1g", A30)
    assert nvidia_smi_commands(a30) == [
        "nvidia-smi -i 1 -mig 1",
        "nvidia-smi mig -i 1 -cgi 14:0,14:1,14:2,14:3 -C",
    ]


def test_a_gpu_that_matches_gets_no_command() -> None:
    plan = _plan(CurrentGpu(H100_GPU, True, True, SEVEN_1G), "all-1g")
    assert not plan.changed
    assert nvidia_smi_commands(plan) == []


def test_plan_text_lists_slices_by_placement_then_the_commands() -> None:
    plan = _plan(CurrentGpu(H100_GPU, True, True, SEVEN_1G), "all-balanced")
    assert plan_text(plan) == (
        "GPU 2 (H100-SXM5-80GB, 00000000:1B:00.0): planned slices (profile, GPU instance profile"
        " id, placement start:size):\n"
        "  2g.20gb  id 14  placement 0:2  memory slices 0-1\n"
        "  1g.10gb  id 19  placement 2:1  memory slice 2 (kept)\n"
        "  1g.10gb  id 19  placement 3:1  memory slice 3 (kept)\n"
        "  3g.40gb  id 9   placement 4:4  memory slices 4-7\n"
        "  equivalent nvidia-smi commands:\n"
        "    nvidia-smi mig -i 2 -gi 7,8,11,12,13 -dci\n"
        "    nvidia-smi mig -i 2 -gi 7,8,11,12,13 -dgi\n"
        "    nvidia-smi mig -i 2 -cgi 14:0,9:4 -C\n"
    )
