"""NVML simulator: fault injection, concurrent processes, handle types and state-file reads.

Covers injected faults (skip, times, error code), concurrent writers on the shared state file,
pynvml ctypes handle types and foreign handles, parsing the state file once until it changes,
and a read-only run not loading the simulator's changing half.

The simulator is driven through its pynvml-compatible functions only, plus what it documents as
its outside doors: ``register_process`` (what a CUDA context does), ``inject_fault``,
``sim_reset_gpu`` / ``GpuBackend.reset_gpu`` (``nvidia-smi -r``) and ``sim_reboot``. Shared
constants and helpers: nvml_sim_helpers.py; the ``h100`` and ``live_child`` fixtures:
conftest.py (both in this directory).
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pynvml
import pytest
from nvml_sim_helpers import (
    CI_3,
    DISABLE,
    ENABLE,
    P_1G10,
    P_3G40,
    P_7G80,
    SimFactory,
    create_gi,
    end,
    gi_summary,
    list_gis,
    mode,
)
from sim_faults import inject_fault

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim import (
    SimulatedNvml,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_changes import (
    register_process,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_state import (
    SimulatorError,
    StateFile,
)


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
