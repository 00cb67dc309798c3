"""NVML simulator: init/shutdown, GPU descriptions and identity, the state file, MIG mode.

Covers NVML init and shutdown, checking of GPU descriptions, per-GPU identity (UUID, serial,
PCI bus), unusable or mismatched state files, and MIG mode changes: Hopper (at once) and
Ampere (pending until a GPU reset), resets refused or unsupported, and host reboots.

The simulator is driven through its pynvml-compatible functions only, plus what it documents as
its outside doors: ``register_process`` (what a CUDA context does), ``inject_fault``,
``sim_reset_gpu`` / ``GpuBackend.reset_gpu`` (``nvidia-smi -r``) and ``sim_reboot``. Shared
constants and helpers: nvml_sim_helpers.py; the ``h100`` and ``live_child`` fixtures:
conftest.py (both in this directory).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pynvml
import pytest
from nvml_sim_helpers import (
    CI_3,
    DISABLE,
    ENABLE,
    P_1G10,
    P_1G10ME,
    P_1G20,
    P_2G20,
    P_3G40,
    P_4G40,
    P_7G80,
    SimFactory,
    all_gis,
    ci_summary,
    create_gi,
    end,
    file_snapshot,
    list_gis,
    mode,
)

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
)


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
