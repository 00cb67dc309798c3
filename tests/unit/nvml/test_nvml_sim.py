"""Behaviour of the NVML simulator, through its pynvml-compatible functions only.

Besides the pynvml surface, the tests use what the simulator documents as its outside doors:
``register_process`` (what a CUDA context does), ``inject_fault``, ``sim_reset_gpu`` /
``GpuBackend.reset_gpu`` (``nvidia-smi -r``) and ``sim_reboot``.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest
from sim_faults import inject_fault

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    BackendError,
    open_backend,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim import (
    SimulatedNvml,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_changes import (
    register_process,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_state import (
    STATE_FORMAT,
    STATE_VERSION,
    SimulatorError,
    StateFile,
)

SimFactory = Callable[..., Any]  # the make_sim fixture (conftest.py)

ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE
DISABLE = pynvml.NVML_DEVICE_MIG_DISABLE
SHARED = pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED

# H100 80GB GPU-instance profile ids (nvidia-smi mig -lgip).
P_1G10, P_1G10ME, P_1G20, P_2G20, P_3G40, P_4G40, P_7G80 = 19, 20, 15, 14, 9, 5, 0
# Compute-instance profile ids (NVML_COMPUTE_INSTANCE_PROFILE_*): 1, 2, 3, 4, 7 slices.
CI_1, CI_2, CI_3, CI_4, CI_7 = 0, 1, 2, 3, 4

MIG_UUID = re.compile(r"MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# ---------------------------------------------------------------------- helpers
def gi_placement(start: int, size: int) -> Any:
    placement = pynvml.c_nvmlGpuInstancePlacement_t()
    placement.start, placement.size = start, size
    return placement


def ci_placement(start: int, size: int) -> Any:
    placement = pynvml.c_nvmlComputeInstancePlacement_t()
    placement.start, placement.size = start, size
    return placement


def create_gi(nvml: Any, handle: Any, profile_id: int, start: int | None = None) -> Any:
    if start is None:
        return nvml.nvmlDeviceCreateGpuInstance(handle, profile_id)
    size = _gi_size(nvml, handle, profile_id)
    return nvml.nvmlDeviceCreateGpuInstanceWithPlacement(
        handle, profile_id, ctypes.byref(gi_placement(start, size))
    )


def _gi_size(nvml: Any, handle: Any, profile_id: int) -> int:
    count = ctypes.c_uint(0)
    nvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, None, ctypes.byref(count))
    array = (pynvml.c_nvmlGpuInstancePlacement_t * count.value)()
    nvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, array, ctypes.byref(count))
    return int(array[0].size)


def gi_summary(nvml: Any, gi: Any) -> tuple[int, int, int, int]:
    """(GI id, profile id, placement start, placement size)."""
    info = nvml.nvmlGpuInstanceGetInfo(gi)
    return info.id, info.profileId, info.placement.start, info.placement.size


def ci_summary(nvml: Any, ci: Any) -> tuple[int, int, int, int]:
    """(CI id, CI profile id, placement start, placement size)."""
    info = nvml.nvmlComputeInstanceGetInfo(ci)
    return info.id, info.profileId, info.placement.start, info.placement.size


def list_gis(nvml: Any, handle: Any, profile_id: int) -> list[tuple[int, int, int, int]]:
    count = ctypes.c_uint(8)
    array = (pynvml.c_nvmlGpuInstance_t * 8)()
    nvml.nvmlDeviceGetGpuInstances(handle, profile_id, array, ctypes.byref(count))
    return [gi_summary(nvml, array[i]) for i in range(count.value)]


def all_gis(nvml: Any, handle: Any, profile_ids: tuple[int, ...]) -> list[tuple[int, ...]]:
    return sorted(gi for pid in profile_ids for gi in list_gis(nvml, handle, pid))


def mode(nvml: Any, index: int = 0) -> list[int]:
    return list(nvml.nvmlDeviceGetMigMode(nvml.nvmlDeviceGetHandleByIndex(index)))


def file_snapshot(path: str) -> tuple[bytes, int]:
    return Path(path).read_bytes(), os.stat(path).st_mtime_ns


@pytest.fixture
def h100(make_sim: SimFactory) -> tuple[Any, Any]:
    """An H100 with MIG enabled (Hopper applies at once): (nvml, device handle)."""
    nvml = make_sim("1xH100-SXM5-80GB")
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceSetMigMode(handle, ENABLE) == pynvml.NVML_SUCCESS
    return nvml, handle


@pytest.fixture
def live_child() -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose pid can be registered; killed and reaped at the end."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def end(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()  # reaped: the pid no longer exists


# ---------------------------------------------------------------------- init and configuration
def test_calls_before_init_raise_uninitialized(state_path: str) -> None:
    nvml = SimulatedNvml(state_path, "1xH100")
    assert not os.path.exists(state_path), "constructing must not create the state file"
    for call in (
        nvml.nvmlDeviceGetCount,
        lambda: nvml.nvmlDeviceGetHandleByIndex(0),
        nvml.nvmlSystemGetDriverVersion,
        nvml.nvmlShutdown,
    ):
        with pytest.raises(pynvml.NVMLError_Uninitialized):
            call()
    nvml.nvmlInit()
    assert nvml.nvmlDeviceGetCount() == 1
    nvml.nvmlInit()  # NVML counts init/shutdown pairs
    nvml.nvmlShutdown()
    assert nvml.nvmlDeviceGetCount() == 1, "one shutdown after two inits keeps NVML open"
    nvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()


def test_init_without_gpus_needs_an_existing_state(state_path: str) -> None:
    with pytest.raises(SimulatorError, match="does not exist"):
        SimulatedNvml(state_path).nvmlInit()
    assert not os.path.exists(state_path)


def test_simulator_error_is_a_backend_error() -> None:
    assert issubclass(SimulatorError, BackendError)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("2xB300", ["unknown simulated GPU model 'B300'", "known models:", "H100-SXM5-80GB"]),
        ([{"model": "V100"}], ["unknown simulated GPU model 'V100'", "A30-24GB"]),
        ("0xH100", ["GPU count for H100 must be a whole number from 1 to 64, got 0"]),
        ("65xA30", ["GPU count for A30 must be a whole number from 1 to 64, got 65"]),
        ([{"model": "H100", "count": "2"}], ["must be a whole number", "got '2'"]),
        ([{"model": "H100", "count": True}], ["must be a whole number", "got True"]),
        ("40xH100,40xA30", ["at most 64 simulated GPUs per host, got 80"]),
        ([{"model": "H100", "cnt": 2}], ["unknown key(s) cnt", "allowed: model, count"]),
        ("", ["no simulated GPUs described", "8xH100-SXM5-80GB"]),
        (8, ["must be a string like '8xH100-SXM5-80GB' or a list, not int"]),
        ("2xH100;1xA30", ["cannot read simulated GPU entry '2xH100;1xA30'"]),
        (
            [{"model": "A30", "reset_supported": "maybe"}],
            ["reset_supported in simulated GPU entry", "must be true or false, got 'maybe'"],
        ),
    ],
)
def test_bad_gpu_descriptions_name_the_problem(
    state_path: str, spec: Any, expected: list[str]
) -> None:
    with pytest.raises(SimulatorError) as caught:
        SimulatedNvml(state_path, spec).nvmlInit()
    for text in expected:
        assert text in str(caught.value), "%r not in %r" % (text, str(caught.value))
    assert not os.path.exists(state_path), "a bad description must not create a state file"


def test_gpu_descriptions_accept_keys_aliases_and_mappings(make_sim: SimFactory) -> None:
    nvml = make_sim(
        ["1xh100", {"model": "NVIDIA A30", "count": 2, "reset_supported": False}, "A100"]
    )
    names = [
        nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i))
        for i in range(nvml.nvmlDeviceGetCount())
    ]
    assert names == [
        "NVIDIA H100 80GB HBM3",
        "NVIDIA A30",
        "NVIDIA A30",
        "NVIDIA A100-SXM4-40GB",
    ]


def test_every_gpu_has_its_own_uuid_serial_and_pci_bus(make_sim: SimFactory) -> None:
    nvml = make_sim("56xA30,8xH100")
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    assert len(handles) == 64
    buses = [nvml.nvmlDeviceGetPciInfo(h).busId for h in handles]
    assert len(set(buses)) == 64, "duplicate PCI bus ids: %s" % sorted(
        {b for b in buses if buses.count(b) > 1}
    )
    assert len({nvml.nvmlDeviceGetUUID(h) for h in handles}) == 64
    assert len({nvml.nvmlDeviceGetSerial(h) for h in handles}) == 64
    assert [nvml.nvmlDeviceGetIndex(h) for h in handles] == list(range(64))
    assert buses[0] == "00000000:1B:00.0", "the first GPUs sit on a DGX's buses"


_STATE_HEAD = {"format": STATE_FORMAT, "version": STATE_VERSION}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", ["is corrupt", "move it away"]),
        ("", ["is corrupt"]),
        (json.dumps([1, 2]), ["is not a heteromig simulator state file", STATE_FORMAT]),
        (json.dumps({"format": "other"}), ["is not a heteromig simulator state file"]),
        (
            json.dumps(dict(_STATE_HEAD, version=STATE_VERSION + 1)),
            [
                "written by a newer heteromig",
                "state version %d" % (STATE_VERSION + 1),
                "reads version %d" % STATE_VERSION,
            ],
        ),
        (json.dumps(dict(_STATE_HEAD, version="1")), ["newer heteromig", "state version '1'"]),
        (
            json.dumps(dict(_STATE_HEAD, gpus=[], processes=[], faults=[])),
            ["is corrupt: 'spec' is missing or not a list"],
        ),
        (
            json.dumps(dict(_STATE_HEAD, gpus={}, processes=[], faults=[], spec=[])),
            ["is corrupt: 'gpus' is missing or not a list"],
        ),
    ],
)
@pytest.mark.parametrize("gpus", [None, "1xH100"], ids=["no-spec", "with-spec"])
def test_unusable_state_file_is_reported_and_left_untouched(
    state_path: str, content: str, expected: list[str], gpus: Any
) -> None:
    Path(state_path).parent.mkdir(parents=True)
    Path(state_path).write_text(content, encoding="utf-8")
    before = file_snapshot(state_path)
    with pytest.raises(SimulatorError) as caught:
        SimulatedNvml(state_path, gpus).nvmlInit()
    message = str(caught.value)
    assert state_path in message, "the message must name the file: %r" % message
    for text in expected:
        assert text in message, "%r not in %r" % (text, message)
    assert file_snapshot(state_path) == before, "the unusable state file was modified"


def test_state_for_other_gpus_is_reported_and_left_untouched(
    make_sim: SimFactory, state_path: str
) -> None:
    make_sim("1xH100-SXM5-80GB")
    before = file_snapshot(state_path)
    with pytest.raises(SimulatorError) as caught:
        make_sim("2xH100-SXM5-80GB,1xA30")
    message = str(caught.value)
    for text in (
        "describes 1xH100-SXM5-80GB",
        "now configured with 2xH100-SXM5-80GB,1xA30-24GB",
        "remove the state file",
    ):
        assert text in message, "%r not in %r" % (text, message)
    assert file_snapshot(state_path) == before
    # The same GPUs under another name are the same description.
    assert make_sim("1xH100").nvmlDeviceGetCount() == 1


def test_state_is_shared_between_simulator_objects(make_sim: SimFactory, h100: Any) -> None:
    nvml, handle = h100
    create_gi(nvml, handle, P_3G40)
    other = make_sim()  # no description: reads the existing state
    other_handle = other.nvmlDeviceGetHandleByIndex(0)
    assert other.nvmlDeviceGetMigMode(other_handle) == [1, 1]
    assert list_gis(other, other_handle, P_3G40) == [(1, P_3G40, 0, 4)]
    assert other.nvmlDeviceGetUUID(other_handle) == nvml.nvmlDeviceGetUUID(handle)


# ---------------------------------------------------------------------- MIG mode
@pytest.mark.parametrize("model", ["H100-SXM5-80GB", "H100-NVL-94GB", "H200-141GB"])
def test_hopper_mode_change_applies_at_once(make_sim: SimFactory, model: str) -> None:
    nvml = make_sim("1x" + model)
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetMaxMigDeviceCount(handle) == 0
    assert nvml.nvmlDeviceSetMigMode(handle, ENABLE) == pynvml.NVML_SUCCESS
    assert mode(nvml) == [1, 1]
    assert nvml.nvmlDeviceGetMaxMigDeviceCount(handle) == 7
    assert nvml.nvmlDeviceSetMigMode(handle, DISABLE) == pynvml.NVML_SUCCESS
    assert mode(nvml) == [0, 0]


def test_hopper_mode_change_stays_pending_while_a_process_runs(
    make_sim: SimFactory, state_path: str, live_child: subprocess.Popen[bytes]
) -> None:
    nvml = make_sim("1xH100")
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    register_process(state_path, live_child.pid, nvml.nvmlDeviceGetUUID(handle), "train.py")
    assert nvml.nvmlDeviceSetMigMode(handle, ENABLE) == pynvml.NVML_ERROR_IN_USE
    assert mode(nvml) == [0, 1], "the change must stay pending"
    with pytest.raises(pynvml.NVMLError_NotSupported):
        create_gi(nvml, handle, P_1G10)  # MIG is not active yet
    end(live_child)
    assert nvml.nvmlDeviceSetMigMode(handle, ENABLE) == pynvml.NVML_SUCCESS
    assert mode(nvml) == [1, 1]


@pytest.mark.parametrize("model", ["A100-SXM4-40GB", "A100-SXM4-80GB", "A30"])
def test_ampere_mode_change_waits_for_a_gpu_reset(state_path: str, model: str) -> None:
    backend = open_backend("sim", state_path, "2x" + model)
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(1)
    assert nvml.nvmlDeviceSetMigMode(handle, ENABLE) == pynvml.NVML_ERROR_RESET_REQUIRED
    assert mode(nvml, 1) == [0, 1]
    assert nvml.nvmlDeviceGetMaxMigDeviceCount(handle) == 0
    with pytest.raises(pynvml.NVMLError_NotSupported):
        create_gi(nvml, handle, nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, 0).id)
    backend.reset_gpu(1)
    assert mode(nvml, 1) == [1, 1]
    assert mode(nvml, 0) == [0, 0], "resetting GPU 1 must not touch GPU 0"
    # Asking again for the current mode cancels nothing and needs no reset.
    assert nvml.nvmlDeviceSetMigMode(handle, ENABLE) == pynvml.NVML_SUCCESS
    # Disabling is pending too, and asking for the current mode again cancels it.
    assert nvml.nvmlDeviceSetMigMode(handle, DISABLE) == pynvml.NVML_ERROR_RESET_REQUIRED
    assert mode(nvml, 1) == [1, 0]
    assert nvml.nvmlDeviceSetMigMode(handle, ENABLE) == pynvml.NVML_SUCCESS
    assert mode(nvml, 1) == [1, 1]
    backend.close()


def test_reset_of_a_gpu_index_outside_the_host_is_refused(state_path: str) -> None:
    backend = open_backend("sim", state_path, "2xA100-SXM4-40GB")
    nvml = backend.nvml
    nvml.nvmlDeviceSetMigMode(nvml.nvmlDeviceGetHandleByIndex(1), ENABLE)
    for index in (-1, 2):
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            backend.reset_gpu(index)
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            nvml.nvmlDeviceGetHandleByIndex(index)
    assert mode(nvml, 1) == [0, 1], "a refused reset must not apply GPU 1's pending mode"
    backend.close()


def test_reset_unsupported_leaves_a_reboot(make_sim: SimFactory, state_path: str) -> None:
    backend = open_backend(
        "sim", state_path, [{"model": "A100-SXM4-40GB", "reset_supported": False}]
    )
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceSetMigMode(handle, ENABLE) == pynvml.NVML_ERROR_RESET_REQUIRED
    with pytest.raises(pynvml.NVMLError_NotSupported):
        backend.reset_gpu(0)
    assert mode(nvml) == [0, 1]
    backend.reboot_simulated_host()
    assert mode(nvml) == [1, 1], "a reboot applies Ampere's pending mode"
    backend.close()


@pytest.mark.parametrize("flag", [False, "no", "False", "off", 0, "0"])
def test_reset_supported_false_spellings(state_path: str, flag: Any) -> None:
    """An inventory string like 'no' must not read as true (bool('no') is True)."""
    backend = open_backend("sim", state_path, [{"model": "A30", "reset_supported": flag}])
    backend.nvml.nvmlDeviceSetMigMode(backend.nvml.nvmlDeviceGetHandleByIndex(0), ENABLE)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        backend.reset_gpu(0)
    backend.close()


def test_reset_refused_while_a_process_runs(
    state_path: str, live_child: subprocess.Popen[bytes]
) -> None:
    backend = open_backend("sim", state_path, "1xA30")
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(handle, ENABLE)
    register_process(state_path, live_child.pid, nvml.nvmlDeviceGetUUID(handle), "x")
    with pytest.raises(pynvml.NVMLError_InUse):
        backend.reset_gpu(0)
    assert mode(nvml) == [0, 1]
    end(live_child)
    backend.reset_gpu(0)
    assert mode(nvml) == [1, 1]
    backend.close()


def test_reboot_clears_hopper_mode_and_every_instance(
    make_sim: SimFactory, state_path: str, live_child: subprocess.Popen[bytes]
) -> None:
    nvml = make_sim("1xH100,1xA30")
    hopper, ampere = (nvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
    nvml.nvmlDeviceSetMigMode(hopper, ENABLE)
    nvml.nvmlDeviceSetMigMode(ampere, ENABLE)
    nvml.sim_reset_gpu(1)
    gi = create_gi(nvml, hopper, P_3G40)
    ci = nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_3)
    create_gi(nvml, ampere, 0)
    mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(hopper, 0)
    register_process(state_path, live_child.pid, nvml.nvmlDeviceGetUUID(mig), "job")
    assert ci_summary(nvml, ci)[0] == 0
    nvml.sim_reboot()
    assert mode(nvml, 0) == [0, 0], "Hopper does not keep MIG mode across a reboot"
    assert mode(nvml, 1) == [1, 1], "Ampere keeps MIG mode across a reboot"
    assert all_gis(nvml, ampere, (0, 5, 6, 14, 21)) == [], "instances never survive a reboot"
    assert nvml.nvmlDeviceGetComputeRunningProcesses(hopper) == []
    nvml.nvmlDeviceSetMigMode(hopper, ENABLE)
    assert all_gis(nvml, hopper, (P_1G10, P_1G10ME, P_1G20, P_2G20, P_3G40, P_4G40, P_7G80)) == []


def test_mig_mode_arguments_are_checked(h100: Any) -> None:
    nvml, handle = h100
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceSetMigMode(handle, 2)
    create_gi(nvml, handle, P_1G10)
    with pytest.raises(pynvml.NVMLError_InUse):
        nvml.nvmlDeviceSetMigMode(handle, DISABLE)  # GPU instances still exist
    assert mode(nvml) == [1, 1]


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


# ---------------------------------------------------------------------- fault injection
def test_fault_fails_exactly_the_chosen_call_after_skip(
    h100: Any, make_sim: SimFactory, state_path: str
) -> None:
    nvml, handle = h100
    inject_fault(state_path, "nvmlDeviceCreateGpuInstance", pynvml.NVML_ERROR_UNKNOWN, skip=2)
    create_gi(nvml, handle, P_1G10)
    create_gi(nvml, handle, P_1G10)
    create_gi(nvml, handle, P_1G10, start=5)  # another function: not counted, not failed
    other = make_sim()  # the fault lives in the state file: any process hits it
    with pytest.raises(pynvml.NVMLError_Unknown):
        other.nvmlDeviceCreateGpuInstance(other.nvmlDeviceGetHandleByIndex(0), P_1G10)
    assert [gi[2] for gi in list_gis(other, handle, P_1G10)] == [0, 1, 5], (
        "what was written before the fault persists; the failed call wrote nothing"
    )
    assert gi_summary(nvml, create_gi(nvml, handle, P_1G10))[2] == 2, "times=1: one failure"


def test_fault_repeats_times_and_carries_the_chosen_error(h100: Any, state_path: str) -> None:
    nvml, handle = h100
    gi = create_gi(nvml, handle, P_7G80)
    inject_fault(state_path, "nvmlGpuInstanceDestroy", pynvml.NVML_ERROR_IN_USE, times=2)
    for _unused0 in range(2):
        with pytest.raises(pynvml.NVMLError_InUse):
            nvml.nvmlGpuInstanceDestroy(gi)
    assert list_gis(nvml, handle, P_7G80) == [(0, P_7G80, 0, 8)]
    assert nvml.nvmlGpuInstanceDestroy(gi) == pynvml.NVML_SUCCESS


def test_fault_on_mig_mode_and_reset(make_sim: SimFactory, state_path: str) -> None:
    nvml = make_sim("1xA100")
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    inject_fault(state_path, "nvmlDeviceSetMigMode", pynvml.NVML_ERROR_NO_PERMISSION)
    inject_fault(state_path, "sim_reset_gpu", pynvml.NVML_ERROR_TIMEOUT)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        nvml.nvmlDeviceSetMigMode(handle, ENABLE)
    assert mode(nvml) == [0, 0]
    assert nvml.nvmlDeviceSetMigMode(handle, ENABLE) == pynvml.NVML_ERROR_RESET_REQUIRED
    with pytest.raises(pynvml.NVMLError_Timeout):
        nvml.sim_reset_gpu(0)
    assert mode(nvml) == [0, 1]
    nvml.sim_reset_gpu(0)
    assert mode(nvml) == [1, 1]


# ---------------------------------------------------------------------- concurrency
def _create_and_register(path: str, gpu: int, start: Any, done: Any, release: Any) -> None:
    """Child: create every 1g.10gb on GPU ``gpu``, register itself on it, wait for release."""
    nvml = SimulatedNvml(path)
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(gpu)
    start.wait(30)
    for _unused0 in range(7):
        nvml.nvmlDeviceCreateGpuInstance(handle, P_1G10)
    register_process(path, os.getpid(), nvml.nvmlDeviceGetUUID(handle), "worker-%d" % gpu)
    done.set()
    release.wait(30)


def _create_one(path: str, start: Any) -> None:
    nvml = SimulatedNvml(path)
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    start.wait(30)
    nvml.nvmlDeviceCreateGpuInstance(handle, P_1G10)


def _mp() -> Any:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _watch_file(path: str, until: Any) -> int:
    """Read the raw state file (no lock) until ``until()``; every read must be valid JSON."""
    reads = 0
    deadline = time.monotonic() + 20
    while not until():
        assert time.monotonic() < deadline, "workers did not finish"
        text = Path(path).read_text(encoding="utf-8")
        try:
            json.loads(text)
        except ValueError as exc:
            raise AssertionError("state file was not valid JSON mid-update: %s" % exc) from exc
        reads += 1
    return reads


def test_concurrent_writers_lose_no_update(make_sim: SimFactory, state_path: str) -> None:
    gpus = 8
    nvml = make_sim("%dxH100" % gpus)
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(gpus)]
    for handle in handles:
        nvml.nvmlDeviceSetMigMode(handle, ENABLE)
    ctx = _mp()
    start, release = ctx.Barrier(gpus + 1), ctx.Event()
    done = [ctx.Event() for _unused0 in range(gpus)]
    workers = [
        ctx.Process(target=_create_and_register, args=(state_path, i, start, done[i], release))
        for i in range(gpus)
    ]
    for worker in workers:
        worker.start()
    try:
        start.wait(30)

        reads = _watch_file(
            state_path,
            lambda: all(e.is_set() for e in done) or any(w.exitcode is not None for w in workers),
        )
        assert reads > 0
        assert [w.exitcode for w in workers] == [None] * gpus, "a worker failed"
        for gpu, (handle, worker) in enumerate(zip(handles, workers, strict=True)):
            assert [gi[2] for gi in list_gis(nvml, handle, P_1G10)] == list(range(7)), (
                "GPU %d lost GPU instances" % gpu
            )
            procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            assert [p.pid for p in procs] == [worker.pid], "GPU %d processes" % gpu
    finally:
        release.set()
        for worker in workers:
            worker.join(30)
    assert [w.exitcode for w in workers] == [0] * gpus
    assert all(nvml.nvmlDeviceGetComputeRunningProcesses(h) == [] for h in handles), (
        "exited workers must be forgotten"
    )


def test_concurrent_creates_on_one_gpu_get_distinct_places(
    make_sim: SimFactory, state_path: str
) -> None:
    nvml = make_sim("1xH100")
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(handle, ENABLE)
    ctx = _mp()
    start = ctx.Barrier(8)
    workers = [ctx.Process(target=_create_one, args=(state_path, start)) for _unused0 in range(7)]
    for worker in workers:
        worker.start()
    start.wait(30)
    _watch_file(state_path, lambda: all(w.exitcode is not None for w in workers))
    for worker in workers:
        worker.join(30)
    assert [w.exitcode for w in workers] == [0] * 7
    assert [gi[:3] for gi in list_gis(nvml, handle, P_1G10)] == [
        (7 + s, P_1G10, s) for s in range(7)
    ]


# ---------------------------------------------------------------------- handle types
def test_handles_are_pynvml_ctypes_pointers(h100: Any) -> None:
    nvml, handle = h100
    assert isinstance(handle, pynvml.c_nvmlDevice_t)
    gi = create_gi(nvml, handle, P_3G40)
    assert isinstance(gi, pynvml.c_nvmlGpuInstance_t)
    ci = nvml.nvmlGpuInstanceCreateComputeInstance(gi, CI_3)
    assert isinstance(ci, pynvml.c_nvmlComputeInstance_t)
    mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, 0)
    assert isinstance(mig, pynvml.c_nvmlDevice_t)
    assert isinstance(
        nvml.nvmlDeviceGetHandleByUUID(nvml.nvmlDeviceGetUUID(mig)), pynvml.c_nvmlDevice_t
    )
    info = nvml.nvmlComputeInstanceGetInfo(ci)
    assert isinstance(info, pynvml.c_nvmlComputeInstanceInfo_t)
    assert nvml.nvmlGpuInstanceGetInfo(info.gpuInstance).id == 1
    assert nvml.nvmlDeviceGetUUID(info.device) == nvml.nvmlDeviceGetUUID(handle)
    assert isinstance(nvml.nvmlGpuInstanceGetInfo(gi), pynvml.c_nvmlGpuInstanceInfo_t)
    assert isinstance(nvml.nvmlDeviceGetMemoryInfo(handle), pynvml.c_nvmlMemory_t)
    assert isinstance(nvml.nvmlDeviceGetPciInfo(handle), pynvml.nvmlPciInfo_t)
    # Constants, structures and error classes come from pynvml itself.
    assert nvml.NVMLError is pynvml.NVMLError
    assert nvml.NVML_ERROR_IN_USE == pynvml.NVML_ERROR_IN_USE
    assert nvml.c_nvmlGpuInstancePlacement_t is pynvml.c_nvmlGpuInstancePlacement_t


def _foreign_handles(nvml: Any, handle: Any) -> list[Any]:
    gi = create_gi(nvml, handle, P_7G80)
    return [
        pynvml.c_nvmlDevice_t(),  # NULL
        ctypes.cast(ctypes.c_void_p(0x7F00DEADBEEF), pynvml.c_nvmlDevice_t),
        42,
        None,
        "GPU-0",
        ctypes.cast(gi, pynvml.c_nvmlDevice_t),  # a GPU-instance handle posing as a device
    ]


def test_foreign_handles_are_invalid_argument(h100: Any) -> None:
    nvml, handle = h100
    for foreign in _foreign_handles(nvml, handle):
        for call in (
            nvml.nvmlDeviceGetName,
            nvml.nvmlDeviceGetUUID,
            nvml.nvmlDeviceGetMigMode,
            nvml.nvmlDeviceGetMemoryInfo,
            nvml.nvmlDeviceIsMigDeviceHandle,
            lambda h: nvml.nvmlDeviceCreateGpuInstance(h, P_1G10),
            lambda h: nvml.nvmlDeviceSetMigMode(h, DISABLE),
        ):
            with pytest.raises(pynvml.NVMLError_InvalidArgument):
                call(foreign)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlGpuInstanceGetInfo(handle)  # a device handle posing as a GPU instance
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlComputeInstanceDestroy(ctypes.cast(handle, pynvml.c_nvmlComputeInstance_t))
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(1)


def test_reads_parse_the_state_file_once_until_it_changes(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml = make_sim("2xH100-SXM5-80GB")
    loads: list[str] = []
    real_parse = StateFile._parse

    def counting_parse(self: StateFile, text: str) -> dict[str, Any]:
        loads.append(self.path)
        return real_parse(self, text)

    monkeypatch.setattr(StateFile, "_parse", counting_parse)
    for _round in range(20):
        assert nvml.nvmlDeviceGetCount() == 2
        nvml.nvmlDeviceGetMigMode(nvml.nvmlDeviceGetHandleByIndex(1))
    assert len(loads) == 1
    # another process (here: another simulator on the same file) changes the state
    other = SimulatedNvml(nvml._file.path)
    other.nvmlInit()
    other.nvmlDeviceSetMigMode(other.nvmlDeviceGetHandleByIndex(1), ENABLE)
    loads.clear()
    assert nvml.nvmlDeviceGetMigMode(nvml.nvmlDeviceGetHandleByIndex(1))[0] == ENABLE
    assert len(loads) == 1
    # and a change through this simulator is seen by its next read
    nvml.nvmlDeviceSetMigMode(nvml.nvmlDeviceGetHandleByIndex(1), DISABLE)
    assert nvml.nvmlDeviceGetMigMode(nvml.nvmlDeviceGetHandleByIndex(1))[0] == DISABLE


def test_cached_state_is_not_changed_by_readers(make_sim: SimFactory, live_child: Any) -> None:
    nvml = make_sim("1xH100-SXM5-80GB")
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    uuid = nvml.nvmlDeviceGetUUID(handle)
    register_process(nvml._file.path, live_child.pid, uuid, "bench")
    assert [p.pid for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)] == [live_child.pid]
    end(live_child)
    assert nvml.nvmlDeviceGetComputeRunningProcesses(handle) == []
    # the dead process is filtered per read, never removed from the shared cached state
    assert [p["pid"] for p in nvml._file.read()["processes"]] == [live_child.pid]


def test_state_file_with_invalid_utf8_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b'{"format": "heteromig.nvml-sim", "gpus": [\xff')
    with pytest.raises(SimulatorError, match=r"is corrupt .*move it away"):
        StateFile(str(path)).read()


READ_ONLY_RUN = """
import sys
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import read_host

backend = open_backend("sim", sys.argv[1], "2xH100-SXM5-80GB")
read_host(backend.nvml)
loaded = "ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_changes" in sys.modules
print("changes loaded after reading:", loaded)
backend.nvml.nvmlDeviceSetMigMode(backend.nvml.nvmlDeviceGetHandleByIndex(0), 1)
loaded = "ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_changes" in sys.modules
print("changes loaded after a change:", loaded)
"""


def test_a_run_that_only_reads_does_not_load_the_changing_half(make_sim: SimFactory) -> None:
    nvml = make_sim("2xH100-SXM5-80GB")  # the state file exists, as on every run but the first
    collections = Path(__file__).resolve().parents[3] / "collections"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(collections)]
            + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    )
    done = subprocess.run(
        [sys.executable, "-c", READ_ONLY_RUN, nvml._file.path],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "changes loaded after reading: False",
        "changes loaded after a change: True",
    ], done.stderr
