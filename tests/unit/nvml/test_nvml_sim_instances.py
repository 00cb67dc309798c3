"""NVML simulator: GPU instances, compute instances and MIG device handles.

Covers creating and destroying GPU instances (with and without placement, overlaps,
capacity, ids, listing), compute instances (profiles, placements, in-use by a live process)
and the MIG device handles they yield (UUIDs, names, memory, handles staying with their device).

The simulator is driven through its pynvml-compatible functions only, plus what it documents as
its outside doors: ``register_process`` (what a CUDA context does), ``inject_fault``,
``sim_reset_gpu`` / ``GpuBackend.reset_gpu`` (``nvidia-smi -r``) and ``sim_reboot``. Shared
constants and helpers: nvml_sim_helpers.py; the ``h100`` and ``live_child`` fixtures:
conftest.py (both in this directory).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from typing import Any

import pynvml
import pytest
from nvml_sim_helpers import (
    CI_1,
    CI_2,
    CI_3,
    CI_4,
    CI_7,
    MIG_UUID,
    P_1G10,
    P_1G10ME,
    P_1G20,
    P_2G20,
    P_3G40,
    P_4G40,
    P_7G80,
    SHARED,
    SimFactory,
    all_gis,
    ci_placement,
    ci_summary,
    create_gi,
    end,
    file_snapshot,
    gi_placement,
    gi_summary,
    list_gis,
)

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_changes import (
    register_process,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_state import (
    SimulatorError,
)


# ---------------------------------------------------------------------- GPU instances
def test_create_without_placement_takes_the_lowest_free_start(h100: Any) -> None:
    nvml, handle = h100
    starts = [gi_summary(nvml, create_gi(nvml, handle, P_1G10))[2] for _unused0 in range(3)]
    assert starts == [0, 1, 2]
    create_gi(nvml, handle, P_1G10, start=5)
    assert gi_summary(nvml, create_gi(nvml, handle, P_1G10))[2] == 3
    assert gi_summary(nvml, create_gi(nvml, handle, P_1G10))[2] == 4
    assert gi_summary(nvml, create_gi(nvml, handle, P_1G10))[2] == 6
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        create_gi(nvml, handle, P_1G10)
    assert [gi[2] for gi in list_gis(nvml, handle, P_1G10)] == [0, 1, 2, 3, 4, 5, 6]


def test_create_with_placement_uses_that_start(h100: Any) -> None:
    nvml, handle = h100
    gi = create_gi(nvml, handle, P_2G20, start=4)
    assert gi_summary(nvml, gi) == (5, P_2G20, 4, 2)
    assert nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, P_2G20) == 2
    assert nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, P_4G40) == 1
    assert nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, P_3G40) == 1
    assert nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, P_7G80) == 0


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((P_3G40, 0), (P_2G20, 2)),  # overlap inside the first instance
        ((P_1G20, 6), (P_1G10, 6)),  # 1g.20gb at 6 holds memory slices 6 and 7
        ((P_4G40, 0), (P_1G10, 3)),
        ((P_2G20, 0), (P_7G80, 0)),
    ],
)
def test_overlapping_placement_is_insufficient_resources(
    h100: Any, first: tuple[int, int], second: tuple[int, int]
) -> None:
    nvml, handle = h100
    create_gi(nvml, handle, *first)
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        create_gi(nvml, handle, *second)
    assert len(all_gis(nvml, handle, (P_1G10, P_1G20, P_2G20, P_3G40, P_4G40, P_7G80))) == 1


def test_exhausted_instance_count_is_insufficient_resources(h100: Any) -> None:
    nvml, handle = h100
    create_gi(nvml, handle, P_1G10ME, start=0)
    assert nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, P_1G10ME) == 0
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        create_gi(nvml, handle, P_1G10ME, start=3)  # the place is free, the count is not
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        create_gi(nvml, handle, P_1G10ME)


@pytest.mark.parametrize(
    ("profile_id", "start", "size"),
    [(P_2G20, 1, 2), (P_3G40, 2, 4), (P_3G40, 0, 2), (P_1G10, 7, 1), (P_7G80, 0, 7)],
)
def test_invalid_placement_is_invalid_argument(
    h100: Any, profile_id: int, start: int, size: int
) -> None:
    nvml, handle = h100
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceCreateGpuInstanceWithPlacement(
            handle, profile_id, ctypes.byref(gi_placement(start, size))
        )


def test_unknown_profile_id_is_invalid_argument(h100: Any) -> None:
    nvml, handle = h100
    for call in (
        lambda: nvml.nvmlDeviceCreateGpuInstance(handle, 1),
        lambda: nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, 21),
        lambda: list_gis(nvml, handle, 6),
    ):
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            call()


def test_creation_order_matters_without_placement(h100: Any, make_sim: SimFactory) -> None:
    """3g.40gb then 4g.40gb fails (the 3g takes start 0); 4g then 3g fits."""
    nvml, handle = h100
    create_gi(nvml, handle, P_3G40)
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        create_gi(nvml, handle, P_4G40)
    nvml.nvmlGpuInstanceDestroy(nvml.nvmlDeviceGetGpuInstanceById(handle, 1))
    four = create_gi(nvml, handle, P_4G40)
    three = create_gi(nvml, handle, P_3G40)
    assert (gi_summary(nvml, four), gi_summary(nvml, three)) == (
        (1, P_4G40, 0, 4),
        (2, P_3G40, 4, 4),
    )
    # With a placement, the 3g-first order works too.
    nvml.nvmlGpuInstanceDestroy(four)
    nvml.nvmlGpuInstanceDestroy(three)
    create_gi(nvml, handle, P_3G40, start=4)
    assert gi_summary(nvml, create_gi(nvml, handle, P_4G40))[2:] == (0, 4)


@pytest.mark.parametrize(
    ("profile_id", "start", "gi_id"),
    [
        (P_7G80, 0, 0),
        (P_4G40, 0, 1),
        (P_3G40, 0, 1),
        (P_3G40, 4, 2),
        (P_2G20, 0, 3),
        (P_2G20, 2, 4),
        (P_2G20, 4, 5),
        (P_1G20, 6, 6),
        (P_1G10, 0, 7),
        (P_1G10, 6, 13),
        (P_1G10ME, 3, 10),
    ],
)
def test_gpu_instance_ids_follow_the_placement(
    h100: Any, profile_id: int, start: int, gi_id: int
) -> None:
    nvml, handle = h100
    gi = create_gi(nvml, handle, profile_id, start)
    assert gi_summary(nvml, gi)[0] == gi_id
    assert gi_summary(nvml, nvml.nvmlDeviceGetGpuInstanceById(handle, gi_id))[2] == start


def test_gpu_instance_listing_and_lookup(h100: Any) -> None:
    nvml, handle = h100
    for _unused0 in range(3):
        create_gi(nvml, handle, P_1G10)
    count = ctypes.c_uint(0)
    nvml.nvmlDeviceGetGpuInstances(handle, P_1G10, None, ctypes.byref(count))
    assert count.value == 3, "a NULL array asks for the count"
    small = ctypes.c_uint(2)
    array = (pynvml.c_nvmlGpuInstance_t * 2)()
    with pytest.raises(pynvml.NVMLError_InsufficientSize):
        nvml.nvmlDeviceGetGpuInstances(handle, P_1G10, array, ctypes.byref(small))
    assert small.value == 3, "InsufficientSize reports the needed count"
    assert list_gis(nvml, handle, P_1G10) == [(7, 19, 0, 1), (8, 19, 1, 1), (9, 19, 2, 1)]
    assert list_gis(nvml, handle, P_2G20) == []
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetGpuInstanceById(handle, 12)


def test_destroy_gpu_instance_frees_its_place(h100: Any) -> None:
    nvml, handle = h100
    gi = create_gi(nvml, handle, P_7G80)
    assert nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, P_1G10) == 0
    assert nvml.nvmlGpuInstanceDestroy(gi) == pynvml.NVML_SUCCESS
    assert nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, P_1G10) == 7
    with pytest.raises(pynvml.NVMLError):
        nvml.nvmlGpuInstanceGetInfo(gi)  # the handle is stale


# ---------------------------------------------------------------------- compute instances
def test_compute_instance_profiles_of_a_gpu_instance(h100: Any) -> None:
    nvml, handle = h100
    gi = create_gi(nvml, handle, P_3G40)
    got = {}
    for index in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
        try:
            info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, index, SHARED)
        except pynvml.NVMLError_NotSupported:
            continue
        got[index] = (info.id, info.sliceCount, info.instanceCount, info.name)
    assert got == {
        CI_1: (CI_1, 1, 3, "MIG 1c.3g.40gb"),
        CI_2: (CI_2, 2, 1, "MIG 2c.3g.40gb"),
        CI_3: (CI_3, 3, 1, "MIG 3g.40gb"),
    }
    full = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, CI_3, SHARED)
    assert full.multiprocessorCount == 60, "a full CI has the GI's SMs"
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, CI_1, 1)  # engine profile


def test_create_and_destroy_compute_instances(h100: Any) -> None:
    nvml, handle = h100
    gi = create_gi(nvml, handle, P_3G40)
    cis = [nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_1) for _unused0 in range(3)]
    assert [ci_summary(nvml, ci) for ci in cis] == [(0, 0, 0, 1), (1, 0, 1, 1), (2, 0, 2, 1)]
    assert nvml.nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gi, CI_1) == 0
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_1)
    with pytest.raises(pynvml.NVMLError_InUse):
        nvml.nvmlGpuInstanceDestroy(gi)  # compute instances remain
    assert nvml.nvmlComputeInstanceDestroy(cis[1]) == pynvml.NVML_SUCCESS
    again = nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_1)
    assert ci_summary(nvml, again) == (1, 0, 1, 1), "the freed id and start are reused"
    for ci in (cis[0], cis[2], again):
        nvml.nvmlComputeInstanceDestroy(ci)
    assert nvml.nvmlGpuInstanceDestroy(gi) == pynvml.NVML_SUCCESS


def test_compute_instance_placements(h100: Any) -> None:
    nvml, handle = h100
    gi = create_gi(nvml, handle, P_4G40)
    count = ctypes.c_uint(0)
    nvml.nvmlGpuInstanceGetComputeInstancePossiblePlacements(gi, CI_2, None, ctypes.byref(count))
    array = (pynvml.c_nvmlComputeInstancePlacement_t * count.value)()
    nvml.nvmlGpuInstanceGetComputeInstancePossiblePlacements(gi, CI_2, array, ctypes.byref(count))
    assert [(array[i].start, array[i].size) for i in range(count.value)] == [(0, 2), (2, 2)]
    placed = nvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement(
        gi, CI_2, ctypes.byref(ci_placement(2, 2))
    )
    assert ci_summary(nvml, placed) == (0, CI_2, 2, 2)
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        nvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement(
            gi, CI_1, ctypes.byref(ci_placement(3, 1))
        )
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement(
            gi, CI_2, ctypes.byref(ci_placement(1, 2))
        )
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_7)  # larger than the GPU instance
    assert ci_summary(nvml, nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_2)) == (1, 1, 0, 2)
    assert nvml.nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gi, CI_1) == 0


def test_four_and_three_slice_compute_instances_fill_a_whole_gpu(h100: Any) -> None:
    """A documented real layout: a 7g split into 4c + 3c (the 3c sits at 4)."""
    nvml, handle = h100
    gi = create_gi(nvml, handle, P_7G80)
    four = nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_4)
    three = nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_3)
    assert (ci_summary(nvml, four)[2:], ci_summary(nvml, three)[2:]) == ((0, 4), (4, 3))
    info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, CI_3, SHARED)
    assert (info.instanceCount, info.name) == (2, "MIG 3c.7g.80gb")
    nvml.nvmlComputeInstanceDestroy(four)
    nvml.nvmlComputeInstanceDestroy(three)
    # 3c first takes the lowest start (0), which leaves no room for a 4c: order matters, as
    # for GPU instances; with the placement 4 the 3c-first order works.
    three = nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_3)
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_4)
    nvml.nvmlComputeInstanceDestroy(three)
    nvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement(
        gi, CI_3, ctypes.byref(ci_placement(4, 3))
    )
    assert ci_summary(nvml, nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_4))[2:] == (0, 4)


def test_compute_instance_with_a_live_process_is_in_use(
    h100: Any, state_path: str, live_child: subprocess.Popen[bytes]
) -> None:
    nvml, handle = h100
    gi = create_gi(nvml, handle, P_2G20)
    ci = nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_2)
    mig_uuid = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, 0))
    register_process(state_path, live_child.pid, mig_uuid, "bench", 3 << 30)
    procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    assert [(p.pid, p.usedGpuMemory, p.gpuInstanceId, p.computeInstanceId) for p in procs] == [
        (live_child.pid, 3 << 30, 3, 0)
    ]
    assert nvml.nvmlSystemGetProcessName(live_child.pid) == "bench"
    with pytest.raises(pynvml.NVMLError_InUse):
        nvml.nvmlComputeInstanceDestroy(ci)
    end(live_child)  # dead pids are forgotten
    assert nvml.nvmlDeviceGetComputeRunningProcesses(handle) == []
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlSystemGetProcessName(live_child.pid)
    assert nvml.nvmlComputeInstanceDestroy(ci) == pynvml.NVML_SUCCESS


def test_register_process_checks_the_uuid(h100: Any, state_path: str) -> None:
    before = file_snapshot(state_path)
    with pytest.raises(SimulatorError, match="no simulated GPU or MIG device with UUID MIG-nope"):
        register_process(state_path, os.getpid(), "MIG-nope", "x")
    assert file_snapshot(state_path) == before


# ---------------------------------------------------------------------- MIG device handles
def test_mig_device_handles(h100: Any, state_path: str) -> None:
    nvml, handle = h100
    gpu_uuid = nvml.nvmlDeviceGetUUID(handle)
    big = create_gi(nvml, handle, P_3G40, start=4)
    nvml.nvmlGpuInstanceCreateComputeInstance(big, CI_1)
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        nvml.nvmlGpuInstanceCreateComputeInstance(big, CI_2)  # 2c only starts at 0: taken
    nvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement(
        big, CI_1, ctypes.byref(ci_placement(2, 1))
    )
    small = create_gi(nvml, handle, P_1G10)
    nvml.nvmlGpuInstanceCreateComputeInstance(small, CI_1)
    assert nvml.nvmlDeviceGetMaxMigDeviceCount(handle) == 7
    devices = []
    for index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        except pynvml.NVMLError_NotFound:
            continue
        devices.append(mig)
    assert len(devices) == 3
    ids = [
        (nvml.nvmlDeviceGetGpuInstanceId(m), nvml.nvmlDeviceGetComputeInstanceId(m))
        for m in devices
    ]
    assert ids == [(7, 0), (2, 0), (2, 1)], "ordered by GI then CI placement"
    uuids = [nvml.nvmlDeviceGetUUID(m) for m in devices]
    assert all(MIG_UUID.fullmatch(u) for u in uuids), uuids
    assert len(set(uuids)) == 3 and gpu_uuid not in uuids
    names = [nvml.nvmlDeviceGetName(m) for m in devices]
    assert (
        names == ["NVIDIA H100 80GB HBM3 MIG 1g.10gb"] + ["NVIDIA H100 80GB HBM3 MIG 3g.40gb"] * 2
    )
    for mig, uuid, mig_ids in zip(devices, uuids, ids, strict=True):
        assert nvml.nvmlDeviceIsMigDeviceHandle(mig) == 1
        by_uuid = nvml.nvmlDeviceGetHandleByUUID(uuid)
        assert nvml.nvmlDeviceGetUUID(by_uuid) == uuid
        assert nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByUUID(uuid.encode())) == uuid
        assert (
            nvml.nvmlDeviceGetGpuInstanceId(by_uuid),
            nvml.nvmlDeviceGetComputeInstanceId(by_uuid),
        ) == mig_ids
        parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
        assert nvml.nvmlDeviceGetUUID(parent) == gpu_uuid
        with pytest.raises(pynvml.NVMLError_NotSupported):
            nvml.nvmlDeviceGetMigMode(mig)
    assert nvml.nvmlDeviceIsMigDeviceHandle(handle) == 0
    assert nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByUUID(gpu_uuid)) == gpu_uuid
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetHandleByUUID("MIG-00000000-0000-0000-0000-000000000000")
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetGpuInstanceId(handle)  # not a MIG device
    # Memory of a MIG device: its GPU instance's memory; used = its processes' memory.
    register_process(state_path, os.getpid(), uuids[1], "pytest", 1 << 30)
    memory = nvml.nvmlDeviceGetMemoryInfo(devices[1])
    assert (memory.total, memory.used, memory.free) == (
        40448 << 20,
        1 << 30,
        (40448 << 20) - (1 << 30),
    )
    small_memory = nvml.nvmlDeviceGetMemoryInfo(devices[0])
    assert (small_memory.total, small_memory.used) == (9984 << 20, 0)
    whole = nvml.nvmlDeviceGetMemoryInfo(handle)
    assert whole.used == (480 << 20) + (1 << 30), "the GPU counts its MIG devices' processes"


def test_mig_device_handle_keeps_naming_its_device(h100: Any) -> None:
    """A handle stays with its MIG device while other MIG devices come and go."""
    nvml, handle = h100
    nvml.nvmlGpuInstanceCreateComputeInstance(create_gi(nvml, handle, P_3G40, start=4), CI_3)
    mine = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, 0)
    uuid = nvml.nvmlDeviceGetUUID(mine)
    by_uuid = nvml.nvmlDeviceGetHandleByUUID(uuid)
    low = create_gi(nvml, handle, P_3G40, start=0)
    nvml.nvmlGpuInstanceCreateComputeInstance(low, CI_1)
    nvml.nvmlGpuInstanceCreateComputeInstance(low, CI_1)
    assert nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, 0)) != uuid, (
        "the new devices sort first"
    )
    for mig in (mine, by_uuid):
        assert nvml.nvmlDeviceGetUUID(mig) == uuid
        assert (nvml.nvmlDeviceGetGpuInstanceId(mig), nvml.nvmlDeviceGetComputeInstanceId(mig)) == (
            2,
            0,
        )
    gi = nvml.nvmlDeviceGetGpuInstanceById(handle, 2)
    nvml.nvmlComputeInstanceDestroy(nvml.nvmlGpuInstanceGetComputeInstanceById(gi, 0))
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetUUID(mine)  # its device is gone: the handle must not name another
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, -1)
