"""Applying MIG layouts against the NVML simulator (module_utils/mig/_mig_apply.py, _mig_host.py).

No Ansible: ``run_host`` is called directly with an opened sim backend, and the simulator's
state file is inspected to prove what was (and was not) touched.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest
from real_gpu_tables import CAPTURED, RealGpu, captured, noted
from sim_faults import inject_fault

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_apply import run_host
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_host import (
    HostMig,
    MigApplyError,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_layout_spec import (
    Geometry,
    LayoutError,
    Profile,
    geometry_from_model,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_parted import (
    parse_mig_parted,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    parse_gpu_entries,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    GpuBackend,
    open_backend,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_catalog import (
    MODELS,
    find_model,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import read_host
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim_changes import (
    register_process,
)

Open = Callable[..., GpuBackend]


@pytest.fixture
def sim(state_path: str) -> Iterator[Open]:
    opened: list[GpuBackend] = []

    def make(gpus: Any = "8xH100-SXM5-80GB") -> GpuBackend:
        backend = open_backend("sim", state_path, gpus)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


def state(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def gpus_json(path: str) -> list[dict[str, Any]]:
    return state(path)["gpus"]


def apply(
    backend: GpuBackend, layout: Any = None, gpus: Any = None, **kwargs: Any
) -> dict[str, Any]:
    return run_host(backend, parse_gpu_entries(layout, gpus), **kwargs)


def layout_of(gpu: dict[str, Any]) -> list[tuple[int, int, int]]:
    return sorted((gi["profile_id"], gi["start"], gi["id"]) for gi in gpu["gpu_instances"])


class Sleeper:
    """A real process to register on a MIG device; reaped at once when it dies."""

    def __init__(self, ignore_term: bool = False) -> None:
        code = "import signal, time\n"
        if ignore_term:
            code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        code += "print('ready', flush=True)\ntime.sleep(120)\n"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # signal handlers are in place
        self.pid = self.proc.pid
        self._reaper = threading.Thread(target=self.proc.wait, daemon=True)
        self._reaper.start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self._reaper.join(10)


@pytest.fixture
def sleepers() -> Iterator[Callable[..., Sleeper]]:
    made: list[Sleeper] = []

    def make(ignore_term: bool = False) -> Sleeper:
        made.append(Sleeper(ignore_term))
        return made[-1]

    yield make
    for sleeper in made:
        sleeper.stop()


# ------------------------------------------------------------------ apply and idempotency
def test_apply_then_reapply_changes_nothing(sim: Open, state_path: str) -> None:
    backend = sim("8xH100-SXM5-80GB")
    result = apply(backend, "all-1g")
    assert result["changed"] and not result["reboot_required"]
    assert len(result["mig_devices"]) == 56
    assert all(
        g["status"] == "changed" and g["actions"][0] == "enabled MIG" for g in result["gpus"]
    )
    # the returned slices are exactly what gpu_facts reads
    assert result["mig_devices"] == read_host(backend.nvml)["mig_devices"]
    before = Path(state_path).read_bytes()
    mtime = Path(state_path).stat().st_mtime_ns

    again = apply(backend, "all-1g")

    assert not again["changed"]
    assert {g["status"] for g in again["gpus"]} == {"unchanged"}
    assert again["mig_devices"] == result["mig_devices"]
    assert Path(state_path).read_bytes() == before  # not a single write
    assert Path(state_path).stat().st_mtime_ns == mtime
    assert again["mig_parted_config"] == {
        "version": "v1",
        "mig-configs": {
            "current": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 7}}]
        },
    }


def test_change_one_gpu_of_eight_leaves_the_others_untouched(sim: Open, state_path: str) -> None:
    backend = sim("8xH100-SXM5-80GB")
    apply(backend, "all-1g")
    before = gpus_json(state_path)

    result = apply(backend, gpus=[{"devices": [3], "layout": "all-balanced"}])

    after = gpus_json(state_path)
    for index in (0, 1, 2, 4, 5, 6, 7):
        assert after[index] == before[index]  # same GI ids, CI ids, MIG UUIDs
    assert [g["index"] for g in result["gpus"]] == [3]
    assert result["unmanaged_gpus"] == [0, 1, 2, 4, 5, 6, 7]
    kept = {gi["start"]: gi for gi in before[3]["gpu_instances"] if gi["start"] in (2, 3)}
    for gi in after[3]["gpu_instances"]:
        if gi["start"] in kept:
            assert gi == kept[gi["start"]]  # the 1g slices at 2 and 3 were kept as they were
    assert sorted((gi["start"], gi["size"]) for gi in after[3]["gpu_instances"]) == [
        (0, 2),
        (2, 1),
        (3, 1),
        (4, 4),
    ]
    assert result["gpus"][0]["actions"] == [
        "destroyed 1g.10gb@0 (GPU instance 7)",
        "destroyed 1g.10gb@1 (GPU instance 8)",
        "destroyed 1g.10gb@4 (GPU instance 11)",
        "destroyed 1g.10gb@5 (GPU instance 12)",
        "destroyed 1g.10gb@6 (GPU instance 13)",
        "created 2g.20gb@0 (GPU instance 3)",
        "created 3g.40gb@4 (GPU instance 2)",
    ]
    assert len(result["mig_devices"]) == 7 * 7 + 4


def test_uneven_layout_succeeds_where_creation_order_fails(sim: Open, state_path: str) -> None:
    backend = sim("2xH100-SXM5-80GB")
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(1)
    nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    # NVML without placements: 3g, 2g, 1g land at 0, 4, 6 and the last 1g finds no room
    for profile_id in (9, 14, 19):
        nvml.nvmlDeviceCreateGpuInstance(handle, profile_id)
    with pytest.raises(pynvml.NVMLError) as info:
        nvml.nvmlDeviceCreateGpuInstance(handle, 19)
    assert info.value.value == pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES

    result = apply(backend, gpus=[{"devices": [0], "layout": "3g.40gb, 2g.20gb, 1g.10gb, 1g.10gb"}])

    assert result["changed"]
    assert [d["profile"] for d in result["mig_devices"] if d["gpu_index"] == 0] == [
        "2g.20gb",
        "1g.10gb",
        "1g.10gb",
        "3g.40gb",
    ]


def test_selectors_by_uuid_pci_and_model(sim: Open, state_path: str) -> None:
    backend = sim("2xA100-SXM4-40GB,1xA30-24GB")
    gpus = gpus_json(state_path)
    result = apply(
        backend,
        gpus=[
            {"devices": gpus[0]["uuid"], "layout": "all-3g"},
            {"devices": gpus[1]["pci_bus_id"].lower()[4:], "layout": ["7g.40gb"]},
            {"devices": "A30", "layout": "all-1g"},
        ],
    )
    profiles = {(d["gpu_index"], d["profile"]) for d in result["mig_devices"]}
    assert profiles == {(0, "3g.20gb"), (1, "7g.40gb"), (2, "1g.6gb")}


def test_compute_instance_split(sim: Open) -> None:
    backend = sim("1xH100-SXM5-80GB")
    layout = [{"profile": "3g.40gb", "compute_instances": ["1c", "2c"]}, "4g.40gb"]
    result = apply(backend, layout)
    devices = [
        (d["profile"], d["placement"]["start"], d["compute_placement"])
        for d in result["mig_devices"]
    ]
    assert devices == [
        ("4g.40gb", 0, {"start": 0, "size": 4}),
        ("2c.3g.40gb", 4, {"start": 0, "size": 2}),
        ("1c.3g.40gb", 4, {"start": 2, "size": 1}),
    ]
    assert not apply(backend, layout)["changed"]


def _real_geometry(real: RealGpu, model: str | None) -> Geometry:
    """The geometry a planner must see on ``real``, built from the real source alone.

    Profiles are listed in the order the real gpu_facts lists them (``nvidia-smi mig -lgip``
    order) where there is a capture, else in the field notes' order.
    """
    profiles = list(real.profiles)
    if real.facts is not None:
        order = [p["id"] for p in real.facts["profiles"]]
        profiles.sort(key=lambda p: order.index(p.id))
    return Geometry(
        name=real.nvml_name or "",
        model=model,
        compute_slices=real.compute_slices,
        memory_slices=real.memory_slices,
        profiles=tuple(
            Profile(
                name=p.name,
                id=p.id,
                index=p.index if p.index is not None else -1,
                slice_count=p.slice_count,
                instance_count=p.instance_count,
                memory_mib=p.memory_mib if p.memory_mib is not None else -1,
                starts=p.starts,
                size=p.size,
            )
            for p in profiles
        ),
        mode_change_needs_reset=real.mode_change_needs_reset,
    )


@pytest.mark.parametrize("key", CAPTURED)
def test_geometry_read_through_nvml_equals_the_real_capture(sim: Open, key: str) -> None:
    """Names, ids, indices, slice and instance counts, memory, placements: as the real GPU."""
    real = captured(key)
    backend = sim("1x" + key)
    mig = HostMig(backend)
    got = mig.geometry(mig.records()[0])
    assert got == _real_geometry(real, real.facts["model"] if real.facts else None)
    # and the catalog's own table (what geometry_from_model hands the planner) says the same
    model = find_model(key)
    assert model is not None
    assert {p.id: p for p in geometry_from_model(model).profiles} == {p.id: p for p in got.profiles}


@pytest.mark.parametrize("key", [m.key for m in MODELS if m.key not in CAPTURED])
def test_geometry_read_through_nvml_equals_the_field_notes(sim: Open, key: str) -> None:
    """Models without a capture: what the field notes publish (names, ids, counts, placements)."""
    real = noted(key)
    backend = sim("1x" + key)
    mig = HostMig(backend)
    got = mig.geometry(mig.records()[0])
    # the notes give neither NVML profile indices nor memory sizes: those are not compared
    unpublished = {"index": -1, "memory_mib": -1}
    assert [p._replace(**unpublished) for p in got.profiles] == list(
        _real_geometry(real, key).profiles
    )
    assert (got.compute_slices, got.memory_slices, got.mode_change_needs_reset) == (
        real.compute_slices,
        real.memory_slices,
        real.mode_change_needs_reset,
    )


def test_placement_match_modes(sim: Open, state_path: str) -> None:
    backend = sim("1xH100-SXM5-80GB")
    nvml = backend.nvml
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    for profile_id in (19, 14, 9):  # 1g@0, 2g@2, 3g@4: not where the planner puts them
        gi = nvml.nvmlDeviceCreateGpuInstance(handle, profile_id)
        nvml.nvmlGpuInstanceCreateComputeInstance(gi, {9: 2, 14: 1, 19: 0}[profile_id])
    layout = "3g.40gb, 2g.20gb, 1g.10gb"
    assert not apply(backend, layout, match="none")["changed"]
    assert not apply(backend, layout, match="explicit")["changed"]
    assert not apply(backend, "3g.40gb@4, 2g.20gb, 1g.10gb", match="explicit")["changed"]
    assert apply(backend, "3g.40gb, 2g.20gb, 1g.10gb@6", match="explicit", check_mode=True)[
        "changed"
    ]
    result = apply(backend, layout, match="exact")
    assert result["changed"]
    assert not apply(backend, layout, match="exact")["changed"]


# ------------------------------------------------------------------------ check, assert
def test_check_mode_changes_nothing(sim: Open, state_path: str) -> None:
    backend = sim("2xA100-SXM4-40GB")
    apply(backend, "all-1g")
    before = Path(state_path).read_bytes()
    result = apply(backend, "all-balanced", check_mode=True)
    assert result["changed"]
    assert Path(state_path).read_bytes() == before
    assert [g["status"] for g in result["gpus"]] == ["would_change", "would_change"]
    assert [i["profile"] for i in result["gpus"][0]["after"]["instances"]] == [
        "2g.10gb",
        "1g.5gb",
        "1g.5gb",
        "3g.20gb",
    ]
    assert "3g.20gb@4" in result["diff"]["after"] and "1g.5gb@6" in result["diff"]["before"]


def test_plan_is_a_check_mode_apply_that_reports_no_change(sim: Open, state_path: str) -> None:
    backend = sim("2xA100-SXM4-40GB")
    apply(backend, "all-1g")
    before = Path(state_path).read_bytes()
    planned = apply(backend, "all-balanced", operation="plan")
    checked = apply(backend, "all-balanced", check_mode=True)
    assert Path(state_path).read_bytes() == before
    assert planned["changed"] is False and planned["would_change"] is True
    assert checked["changed"] is True and checked["would_change"] is True
    assert planned["gpus"] == checked["gpus"] and planned["diff"] == checked["diff"]
    matching = apply(backend, "all-1g", operation="plan")
    assert matching["changed"] is False and matching["would_change"] is False
    assert [g["status"] for g in matching["gpus"]] == ["unchanged", "unchanged"]


def test_plan_refuses_a_busy_gpu_like_an_apply(sim: Open, state_path: str, sleepers) -> None:
    backend = sim("1xH100-SXM5-80GB")
    apply(backend, "all-1g")
    worker = sleepers()
    register_process(state_path, worker.pid, _mig_uuid(state_path, 0, 0), "mlperf-harness")
    with pytest.raises(MigApplyError) as info:
        apply(backend, "all-7g", operation="plan")
    assert f"pid {worker.pid} (mlperf-harness)" in str(info.value)
    drained = apply(backend, "all-7g", operation="plan", drain=True)
    assert drained["changed"] is False and drained["would_change"] is True
    assert drained["gpus"][0]["actions"] == [
        f"would drain pid {worker.pid} (mlperf-harness) "
        f"on GPU 0 GPU instance 7, compute instance 0, "
        f"{_mig_uuid(state_path, 0, 0)}"
    ]
    assert worker.proc.poll() is None


def test_an_apply_reports_what_it_would_change(sim: Open) -> None:
    backend = sim("1xH100-SXM5-80GB")
    first = apply(backend, "all-1g")
    assert first["changed"] is True and first["would_change"] is True
    again = apply(backend, "all-1g")
    assert again["changed"] is False and again["would_change"] is False


def test_assert_and_export(sim: Open, state_path: str) -> None:
    backend = sim("2xH100-SXM5-80GB")
    apply(backend, "all-2g")
    assert not run_host(backend, parse_gpu_entries("all-2g"), operation="assert")["changed"]
    with pytest.raises(MigApplyError) as info:
        run_host(backend, parse_gpu_entries("all-1g"), operation="assert")
    assert "MIG layout differs on 2 GPUs" in str(info.value)
    assert "is MIG enabled; 2g.20gb@0, 2g.20gb@2, 2g.20gb@4, wanted MIG enabled; 1g.10gb@0" in str(
        info.value
    )
    exported = run_host(backend, [], operation="export")
    assert exported["mig_parted_config"]["mig-configs"]["current"][0]["mig-devices"] == {
        "2g.20gb": 3
    }
    # the export applies back to the same state
    entries = parse_mig_parted(exported["mig_parted_config"], "current")
    assert not run_host(backend, entries)["changed"]


# -------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("layout", "gpus", "expected"),
    [
        ("all-5g", None, "unknown named layout"),
        (
            ["1g.6gb"],
            None,
            "profile 1g.6gb is not offered by H100-SXM5-80GB: it is a profile of A30-24GB",
        ),
        (["3g.40gb", "3g.40gb", "1g.10gb"], None, "need 9 memory slices"),
        (["3g.40gb@2"], None, "placement 2 is not valid for 3g.40gb"),
        (["3g.40gb@0", "2g.20gb@2"], None, "explicit placements overlap"),
        (None, [{"devices": [9], "layout": "all-1g"}], "selector '9' matches no GPU"),
        (
            None,
            [{"layout": "all-1g"}, {"devices": [1], "layout": "all-2g"}],
            "is claimed by gpus[0]",
        ),
        (
            [{"profile": "1g.10gb", "compute_instances": [2]}],
            None,
            "compute-instance split 2c does not fit",
        ),
    ],
)
def test_bad_input_changes_nothing(
    sim: Open, state_path: str, layout: Any, gpus: Any, expected: str
) -> None:
    backend = sim("2xH100-SXM5-80GB")
    apply(backend, "all-balanced")
    before = Path(state_path).read_bytes()
    with pytest.raises(LayoutError) as info:
        apply(backend, layout, gpus)
    assert expected in str(info.value)
    assert Path(state_path).read_bytes() == before


def test_errors_of_identical_gpus_are_reported_once(sim: Open) -> None:
    backend = sim("4xH100-SXM5-80GB")
    with pytest.raises(LayoutError) as info:
        apply(backend, "3x3g.40gb")
    assert str(info.value).startswith(
        "GPUs 0, 1, 2, 3 (H100-SXM5-80GB): layout: layout does not fit"
    )


# ---------------------------------------------------------------------- busy and drain
def _mig_uuid(path: str, gpu: int, start: int) -> str:
    for gi in gpus_json(path)[gpu]["gpu_instances"]:
        if gi["start"] == start:
            return str(gi["compute_instances"][0]["uuid"])
    raise AssertionError("no instance at %d" % start)


def test_busy_gpu_is_refused_naming_the_processes(sim: Open, state_path: str, sleepers) -> None:
    backend = sim("2xH100-SXM5-80GB")
    apply(backend, "all-1g")
    worker = sleepers()
    uuid = _mig_uuid(state_path, 1, 5)
    register_process(state_path, worker.pid, uuid, "mlperf-harness")
    before = Path(state_path).read_bytes()

    with pytest.raises(MigApplyError) as info:
        apply(backend, "all-balanced")

    message = str(info.value)
    assert (
        f"pid {worker.pid} (mlperf-harness) on GPU 1 GPU instance 12, compute instance 0, {uuid}"
        in message
    )
    assert "nothing was changed" in message and "drain: true" in message
    assert info.value.result["busy"][0]["pid"] == worker.pid
    assert Path(state_path).read_bytes() == before  # not even GPU 0 was changed
    assert worker.proc.poll() is None


def test_process_on_a_kept_instance_does_not_block(sim: Open, state_path: str, sleepers) -> None:
    backend = sim("1xH100-SXM5-80GB")
    apply(backend, "all-1g")
    worker = sleepers()
    register_process(state_path, worker.pid, _mig_uuid(state_path, 0, 2), "kept")
    result = apply(backend, "all-balanced")  # keeps the 1g slices at 2 and 3
    assert result["changed"] and worker.proc.poll() is None
    assert result["gpus"][0]["drained"] == []


def test_drain_terminates_then_kills(sim: Open, state_path: str, sleepers) -> None:
    backend = sim("1xH100-SXM5-80GB")
    apply(backend, "all-1g")
    polite, stubborn = sleepers(), sleepers(ignore_term=True)
    register_process(state_path, polite.pid, _mig_uuid(state_path, 0, 0), "polite")
    register_process(state_path, stubborn.pid, _mig_uuid(state_path, 0, 6), "stubborn")
    started = time.monotonic()

    result = apply(backend, "all-7g", drain=True, drain_timeout=1)

    assert time.monotonic() - started >= 1.0  # the stubborn one got its grace period
    assert polite.proc.wait(5) == -signal.SIGTERM
    assert stubborn.proc.wait(5) == -signal.SIGKILL
    assert sorted(p["name"] for p in result["gpus"][0]["drained"]) == ["polite", "stubborn"]
    assert [d["profile"] for d in result["mig_devices"]] == ["7g.80gb"]


def test_drain_that_cannot_end_a_process_fails_before_any_change(
    sim: Open, state_path: str, sleepers
) -> None:
    backend = sim("1xH100-SXM5-80GB")
    apply(backend, "all-1g")
    worker = sleepers()
    register_process(state_path, worker.pid, _mig_uuid(state_path, 0, 0), "immortal")
    before = Path(state_path).read_bytes()
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    mig = HostMig(backend, sleep=lambda _s: None, clock=clock, kill=lambda _pid, _sig: None)
    with pytest.raises(MigApplyError) as info:
        run_host(backend, parse_gpu_entries("all-7g"), drain=True, drain_timeout=3, mig=mig)
    assert (
        f"drain failed: still on the GPU after SIGTERM, 3s of grace and SIGKILL: pid {worker.pid} (immortal)"
        in str(info.value)
    )
    assert Path(state_path).read_bytes() == before


def test_check_mode_reports_what_would_be_drained(sim: Open, state_path: str, sleepers) -> None:
    backend = sim("1xH100-SXM5-80GB")
    apply(backend, "all-1g")
    worker = sleepers()
    register_process(state_path, worker.pid, _mig_uuid(state_path, 0, 0), "victim")
    result = apply(backend, "all-7g", drain=True, check_mode=True)
    assert result["gpus"][0]["actions"][0].startswith(f"would drain pid {worker.pid} (victim)")
    assert worker.proc.poll() is None


# ------------------------------------------------------------------------ mode changes
def test_hopper_mode_change_is_direct_and_ampere_resets_only_that_gpu(
    sim: Open, state_path: str
) -> None:
    backend = sim("1xH100-SXM5-80GB,2xA100-SXM4-40GB")
    apply(backend, gpus=[{"devices": [2], "layout": "all-3g"}])
    before = gpus_json(state_path)

    result = apply(backend, gpus=[{"devices": [0, 1], "layout": "all-1g"}])

    by_index = {g["index"]: g for g in result["gpus"]}
    assert by_index[0]["actions"][0] == "enabled MIG" and not by_index[0]["reset"]
    assert by_index[1]["reset"] and by_index[1]["actions"][0] == "reset the GPU to enable MIG"
    assert gpus_json(state_path)[2] == before[2]  # the third GPU was neither reset nor touched


def test_ampere_pending_mode_is_completed_with_a_reset(sim: Open, state_path: str) -> None:
    backend = sim("2xA100-SXM4-80GB")
    nvml = backend.nvml
    nvml.nvmlDeviceSetMigMode(nvml.nvmlDeviceGetHandleByIndex(1), pynvml.NVML_DEVICE_MIG_ENABLE)
    assert [(g["mig_current"], g["mig_pending"]) for g in gpus_json(state_path)] == [(0, 0), (0, 1)]

    result = apply(backend, gpus=[{"devices": [1], "layout": "all-1g"}])

    gpu = result["gpus"][0]
    assert gpu["before"]["mig_pending"] and not gpu["before"]["mig_enabled"]
    assert gpu["reset"] and gpu["status"] == "changed"
    assert [(g["mig_current"], g["mig_pending"]) for g in gpus_json(state_path)] == [(0, 0), (1, 1)]


def test_disable_on_ampere_resets_and_cancelling_a_pending_change_does_not(
    sim: Open, state_path: str
) -> None:
    backend = sim("2xA100-SXM4-40GB")
    apply(backend, "all-1g")
    result = apply(backend, "all-disabled")
    assert [g["reset"] for g in result["gpus"]] == [True, True]
    assert result["gpus"][0]["actions"][-1] == "reset the GPU to disable MIG"
    assert [(g["mig_current"], g["mig_pending"]) for g in gpus_json(state_path)] == [(0, 0), (0, 0)]
    nvml = backend.nvml
    nvml.nvmlDeviceSetMigMode(nvml.nvmlDeviceGetHandleByIndex(0), pynvml.NVML_DEVICE_MIG_ENABLE)
    result = apply(backend, "all-disabled")
    assert [g["changed"] for g in result["gpus"]] == [True, False]
    assert result["gpus"][0]["actions"] == ["cancelled the pending MIG mode change"]
    assert not result["gpus"][0]["reset"]
    assert [(g["mig_current"], g["mig_pending"]) for g in gpus_json(state_path)] == [(0, 0), (0, 0)]


def test_reset_impossible_reports_reboot_required(sim: Open, state_path: str) -> None:
    spec = [
        {"model": "A100-SXM4-80GB", "count": 2, "reset_supported": False},
        {"model": "H100-SXM5-80GB", "count": 1},
    ]
    backend = sim(spec)

    result = apply(backend, "all-1g")

    assert result["changed"] and result["reboot_required"]
    assert result["reboot_required_gpus"] == [0, 1]
    reboot = result["gpus"][0]
    assert reboot["status"] == "reboot_required"
    assert "Not Supported" in reboot["reboot_reason"]
    assert reboot["after"]["mig_pending"] and not reboot["after"]["mig_enabled"]
    assert {d["gpu_index"] for d in result["mig_devices"]} == {2}  # the H100 was applied

    backend.reboot_simulated_host()
    again = apply(backend, "all-1g")
    assert not again["reboot_required"]
    assert len(again["mig_devices"]) == 21  # Ampere kept the mode; Hopper re-enabled
    assert not apply(backend, "all-1g")["changed"]


# --------------------------------------------------------------- failures and rollback
def test_nvml_failure_midway_restores_the_previous_layout(sim: Open, state_path: str) -> None:
    backend = sim("2xH100-SXM5-80GB")
    apply(backend, "all-1g")
    before = gpus_json(state_path)
    inject_fault(
        state_path, "nvmlDeviceCreateGpuInstanceWithPlacement", pynvml.NVML_ERROR_UNKNOWN, skip=2
    )

    with pytest.raises(MigApplyError) as info:
        apply(backend, gpus=[{"devices": [0], "layout": "all-2g"}])

    message = str(info.value)
    assert message.startswith(
        "changing GPU 0 (H100-SXM5-80GB, 00000000:1B:00.0) failed: Unknown Error (NVML error 999)"
    )
    assert "last completed step: created 2g.20gb@2 (GPU instance 4)" in message
    assert "Its previous layout was restored" in message
    assert info.value.result["rollback"]["outcome"] == "restored"
    assert info.value.result["failed_gpu"] == 0
    after = gpus_json(state_path)
    assert layout_of(after[0]) == layout_of(before[0])  # same profiles, placements, GI ids
    assert after[1] == before[1]
    assert len(info.value.result["mig_devices"]) == 14


def test_failure_in_compute_instance_creation_rolls_back(sim: Open, state_path: str) -> None:
    backend = sim("1xH100-SXM5-80GB")
    apply(backend, "all-3g")
    before = layout_of(gpus_json(state_path)[0])
    inject_fault(
        state_path,
        "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
        pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES,
        skip=1,
    )
    with pytest.raises(MigApplyError, match="Insufficient Resources"):
        apply(backend, "all-balanced")
    assert layout_of(gpus_json(state_path)[0]) == before


def test_failed_rollback_leaves_the_gpu_cleanly_empty(sim: Open, state_path: str) -> None:
    backend = sim("1xH100-SXM5-80GB")
    apply(backend, "all-2g")
    inject_fault(
        state_path,
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        pynvml.NVML_ERROR_UNKNOWN,
        skip=1,
        times=5,
    )
    with pytest.raises(MigApplyError) as info:
        apply(backend, "all-1g")
    assert info.value.result["rollback"]["outcome"] == "emptied"
    assert "left cleanly empty" in str(info.value)
    gpu = gpus_json(state_path)[0]
    assert gpu["mig_current"] == 1 and gpu["gpu_instances"] == []


def test_failed_enable_on_hopper_restores_mig_disabled(sim: Open, state_path: str) -> None:
    backend = sim("1xH100-SXM5-80GB")
    inject_fault(state_path, "nvmlDeviceCreateGpuInstanceWithPlacement", pynvml.NVML_ERROR_UNKNOWN)
    with pytest.raises(MigApplyError, match="previous layout was restored"):
        apply(backend, "all-1g")
    gpu = gpus_json(state_path)[0]
    assert (gpu["mig_current"], gpu["mig_pending"], gpu["gpu_instances"]) == (0, 0, [])


def test_destroy_failure_rolls_back(sim: Open, state_path: str) -> None:
    backend = sim("1xH100-SXM5-80GB")
    apply(backend, "all-1g")
    before = layout_of(gpus_json(state_path)[0])
    inject_fault(state_path, "nvmlGpuInstanceDestroy", pynvml.NVML_ERROR_IN_USE, skip=3)
    with pytest.raises(MigApplyError, match="In use by another client"):
        apply(backend, "all-7g")
    assert layout_of(gpus_json(state_path)[0]) == before


class _SilentCreate:
    """An NVML whose compute-instance creation reports success and creates nothing."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nvml, name)

    def nvmlGpuInstanceCreateComputeInstanceWithPlacement(self, *args: Any) -> Any:
        return None


def test_success_is_never_reported_with_instances_missing(sim: Open, state_path: str) -> None:
    backend = sim("1xH100-SXM5-80GB")
    apply(backend, "all-3g")
    before = layout_of(gpus_json(state_path)[0])
    lying = GpuBackend("sim", _SilentCreate(backend.nvml), sim=backend.nvml)
    with pytest.raises(MigApplyError) as info:
        run_host(lying, parse_gpu_entries("all-7g"))
    assert "after applying, NVML shows" in str(info.value)
    assert "missing: 7g.80gb@0" in str(info.value)
    # the same lying NVML cannot re-create the old compute instances either: the rollback
    # notices (it verifies too) and leaves the GPU cleanly empty instead of half-built
    assert before and info.value.result["rollback"]["outcome"] == "emptied"
    assert gpus_json(state_path)[0]["gpu_instances"] == []
