"""The applied-layout stamp and the MIG state it is keyed by (_mig_stamp.py, _mig_state.py).

No Ansible: the keys are computed from real reads of the NVML simulator, the record is a real
file. The module's use of it (reuse, misses, check mode) is covered over the SSH lab in
tests/integration/test_mig_layout_stamp_lab.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils._import_closure import (
    import_closure,
    imported_names,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_apply import run_host
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_host import HostMig
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    parse_gpu_entries,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_stamp import (
    _PLANNER_SOURCES,
    STAMP_FORMAT,
    LayoutStamp,
    default_stamp_path,
    planner_digest,
    stamp_key,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_state import MigStateReader
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    GpuBackend,
    open_backend,
)

REQUEST: dict[str, Any] = {
    "layout": "all-1g",
    "placement_match": "exact",
    "operation": "apply",
    "return_mig_devices": True,
    "return_gpu_states": True,
    "stamp": True,
}


@pytest.fixture
def backend(state_path: str) -> Iterator[GpuBackend]:
    opened = open_backend("sim", state_path, "2xH100-SXM5-80GB,1xA30-24GB")
    yield opened
    opened.close()


def _state(backend: GpuBackend) -> dict[str, Any]:
    return MigStateReader(backend.nvml).host_state()


def test_host_state_is_what_the_planner_reads(backend: GpuBackend) -> None:
    run_host(backend, parse_gpu_entries("all-balanced"))
    state = _state(backend)
    assert json.loads(json.dumps(state)) == state  # plain data
    mig = HostMig(backend)
    records = mig.records(state)
    for record, gpu in zip(records, state["gpus"], strict=True):
        assert mig.current(record, gpu) == mig.read_state(record)[0]
    assert sorted(state["profiles"]) == ["NVIDIA A30", "NVIDIA H100 80GB HBM3"]
    a30 = [(i["profile"], i["start"]) for i in state["gpus"][2]["instances"]]
    assert a30 == [("2g.12gb", 0), ("1g.6gb", 2), ("1g.6gb", 3)]


def test_the_key_follows_request_state_and_code(backend: GpuBackend) -> None:
    state = _state(backend)
    key = stamp_key(REQUEST, state)
    assert stamp_key(dict(REQUEST), _state(backend)) == key
    # what is returned, not what is planned: same key
    assert stamp_key(dict(REQUEST, return_mig_devices=False, return_gpu_states=False), state) == key
    assert stamp_key(dict(REQUEST, layout="all-2g"), state) != key
    assert stamp_key(dict(REQUEST, placement_match="none"), state) != key
    assert stamp_key(REQUEST, state, planner="other code") != key
    run_host(backend, parse_gpu_entries(gpus=[{"devices": [2], "layout": "all-1g"}]))
    assert stamp_key(REQUEST, _state(backend)) != key


def test_the_planner_digest_covers_the_shipped_sources() -> None:
    digest = planner_digest()
    assert digest == planner_digest() and len(digest) == 64


# What mig_layout ships but a reused stamp's result does not depend on, and why. Every other
# module_utils file it ships must be in the planner digest, or an upgrade of it would be hidden
# behind stamps recorded by the old code.
NOT_IN_THE_RESULT = {
    "_import_closure.py": "computes the boot entry's files",
    "mig/__init__.py": "package docstring",
    "nvml/__init__.py": "package docstring",
    "mig/_mig_boot.py": "boot persistence acts around a change",
    "mig/_mig_persist.py": "boot persistence acts around a change",
    "mig/_mig_change.py": "hooks and clients act around a change",
    "mig/_mig_hooks.py": "hooks act around a change",
    "mig/_mig_clients.py": "clients act around a change",
    "nvml/_gpu_backend.py": "reads the state, which is itself part of the key",
    "nvml/_nvml_errors.py": "reads the state, which is itself part of the key",
    "nvml/_nvml_sim.py": "the simulated NVML: its state is part of the key",
    "nvml/_nvml_sim_activity.py": "the simulated NVML: its state is part of the key",
    "nvml/_nvml_sim_changes.py": "the simulated NVML: its state is part of the key",
    "nvml/_nvml_sim_state.py": "the simulated NVML: its state is part of the key",
}


def test_every_file_mig_layout_ships_is_digested_or_said_not_to_shape_the_result() -> None:
    plugins = Path(__file__).resolve().parents[3] / "plugins"
    utils = plugins / "module_utils"

    def source_of(name: str) -> str | None:
        path = utils / name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    roots = [
        candidate
        for dotted in imported_names((plugins / "modules" / "mig_layout.py").read_text())
        for candidate in (dotted.replace(".", "/") + ".py",)
        if source_of(candidate) is not None
    ]
    shipped = import_closure(source_of, roots)
    assert "mig/_mig_apply.py" in shipped and "mig/_mig_plan.py" in shipped
    digested = {
        "%s/%s" % (package.split(".", 1)[1], name)
        for package, name in _PLANNER_SOURCES
        if package != "modules"
    }
    assert digested <= shipped  # nothing stale in the list
    assert sorted(shipped - digested - set(NOT_IN_THE_RESULT)) == []
    assert sorted(set(NOT_IN_THE_RESULT) - shipped) == []


def test_store_then_lookup(tmp_path: Path) -> None:
    stamp = LayoutStamp(str(tmp_path / "new-dir" / "mig_layout-stamp.json"))
    assert stamp.lookup("k1") is None
    stamp.store("k1", {"changed": False, "gpus": []})
    assert stamp.lookup("k1") == {"changed": False, "gpus": []}
    assert stamp.lookup("k2") is None
    assert os.listdir(tmp_path / "new-dir") == ["mig_layout-stamp.json"]  # no temp file left


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({"format": "something else", "version": 1, "key": "k1", "result": {}}),
        json.dumps({"format": STAMP_FORMAT, "version": 99, "key": "k1", "result": {}}),
        json.dumps({"format": STAMP_FORMAT, "version": 1, "key": "k1", "result": "no"}),
    ],
    ids=["corrupt", "not a mapping", "foreign", "other version", "bad result"],
)
def test_an_unusable_record_is_a_miss(tmp_path: Path, content: str) -> None:
    path = tmp_path / "mig_layout-stamp.json"
    path.write_text(content)
    assert LayoutStamp(str(path)).lookup("k1") is None


def test_an_unwritable_directory_raises_oserror(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        LayoutStamp(str(blocker / "mig_layout-stamp.json")).store("k", {})


def test_where_the_record_lives(tmp_path: Path) -> None:
    sim_state = str(tmp_path / "host" / "nvml-sim.json")
    assert default_stamp_path("sim", sim_state) == str(tmp_path / "host" / "mig_layout-stamp.json")
    assert default_stamp_path("nvml", None) == "/var/lib/heteromig/mig_layout-stamp.json"


def test_every_gpu_counts_its_mig_devices(backend: GpuBackend) -> None:
    run_host(backend, parse_gpu_entries("all-1g"))
    unchanged = run_host(backend, parse_gpu_entries("all-1g"), check_mode=True, with_devices=False)
    assert not unchanged["changed"]
    assert [g["mig_device_count"] for g in unchanged["gpus"]] == [7, 7, 4]
    planned = run_host(backend, parse_gpu_entries("all-2g"), check_mode=True)
    assert [g["mig_device_count"] for g in planned["gpus"]] == [3, 3, 2]  # would have
    assert all("before" in g and "after" in g for g in planned["gpus"])
