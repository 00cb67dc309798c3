"""The mig_layout module over the SSH lab: every bad input of issue 3, check and diff mode,
assert and export, mig-parted files on the host, and selectors by PCI bus id and UUID.

One lab (an H100 host and an A30 host) and one playbook run: the bad inputs run first, each
as its own task with ignore_errors, between two checksums of the simulator's state file; the
state must come out byte for byte as it went in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_apply import run_host
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_select import (
    parse_gpu_entries,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import open_backend
from lab import HostSpec, LabRun, SshLab

pytestmark = [pytest.mark.integration, pytest.mark.slow]

H100_GPUS = "2xH100-SXM5-80GB"
BROKEN_YAML = "version: v1\nmig-configs:\n  custom: [\n"
WRONG_VERSION = (
    "version: v2\nmig-configs:\n  custom:\n    - devices: all\n      mig-enabled: false\n"
)
GOOD_CONFIG = """version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  custom:
    - devices: [1]
      mig-enabled: true
      mig-devices:
        "4g.40gb": 1
        "1c.3g.40gb": 3
"""

# (task name, module arguments, text the error must contain)
BAD_INPUTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown profile",
        {"layout": ["5g.50gb"]},
        "unknown profile 5g.50gb: H100-SXM5-80GB offers 1g.10gb, 1g.10gb+me",
    ),
    (
        "profile of another model",
        {"layout": ["1g.6gb", "1g.6gb"]},
        "profile 1g.6gb is not offered by H100-SXM5-80GB: it is a profile of A30-24GB",
    ),
    (
        "layout that does not fit",
        {"layout": "3g.40gb, 3g.40gb, 1g.10gb"},
        "layout does not fit H100-SXM5-80GB: its GPU instances need 9 memory slices",
    ),
    (
        "too many of one profile",
        {"layout": "4x2g.20gb"},
        "4 x 2g.20gb requested, but the GPU holds at most 3 instances of 2g.20gb",
    ),
    (
        "overlapping explicit placements",
        {"layout": ["3g.40gb@0", "2g.20gb@2"]},
        "explicit placements overlap: 2g.20gb at 2 (memory slices 2-3) and 3g.40gb at 0",
    ),
    (
        "invalid explicit placement",
        {"layout": ["3g.40gb@2"]},
        "placement 2 is not valid for 3g.40gb on H100-SXM5-80GB: it can start at 0, 4",
    ),
    (
        "placements that cannot be combined",
        {"layout": ["1g.10gb@3", "4g.40gb"]},
        "leaves no valid placement for 4g.40gb (placements {0}:4)",
    ),
    (
        "selector matching no GPU",
        {"gpus": [{"devices": [0, 4], "layout": "all-1g"}]},
        "gpus[0]: selector '4' matches no GPU on this host",
    ),
    (
        "model selector matching no GPU",
        {"gpus": [{"devices": "A30", "layout": "all-1g"}]},
        "gpus[0]: selector 'A30' matches no GPU on this host",
    ),
    (
        "two selectors claiming one GPU",
        {
            "gpus": [
                {"devices": "all", "layout": "all-1g"},
                {"devices": "00000000:43:00.0", "layout": "all-2g"},
            ]
        },
        "GPU 1 (H100-SXM5-80GB, 00000000:43:00.0) is claimed by gpus[0] (devices: all) with layout "
        "all-1g and by gpus[1] (devices: [00000000:43:00.0]) with layout all-2g",
    ),
    (
        "compute split that does not fit",
        {"layout": [{"profile": "3g.40gb", "compute_instances": [2, 2]}]},
        "compute-instance split 2c+2c does not fit 3g.40gb: it needs 4 compute slices",
    ),
    (
        "unknown named layout",
        {"layout": "all-5g"},
        "unknown named layout 'all-5g'; named layouts: all-disabled, all-enabled, all-1g",
    ),
    (
        "malformed mig-parted file (syntax)",
        {"mig_parted_config_file": "{root}/broken.yaml", "mig_parted_label": "custom"},
        "malformed mig-parted config: YAML syntax error at line",
    ),
    (
        "malformed mig-parted file (version)",
        {"mig_parted_config_file": "{root}/v2.yaml", "mig_parted_label": "custom"},
        "unsupported mig-parted config version 'v2'; this module reads v1",
    ),
    (
        "mig-parted label missing",
        {"mig_parted_config_file": "{root}/good.yaml", "mig_parted_label": "balanced"},
        "no label 'balanced' in mig-configs; labels: all-disabled, custom",
    ),
    (
        "missing mig-parted file",
        {"mig_parted_config_file": "{root}/none.yaml"},
        "cannot read mig_parted_config_file",
    ),
    (
        "layout and gpus together",
        {"layout": "all-1g", "gpus": [{"layout": "all-1g"}]},
        "parameters are mutually exclusive: layout|gpus",
    ),
    # null counts as not given (the role passes its variables straight through)
    (
        "no layout, every source null",
        {"layout": None, "gpus": None, "mig_parted_config": None},
        "operation is apply but none of the following is given: layout, gpus, mig_parted_config, "
        "mig_parted_config_file",
    ),
    (
        "mig-parted label without a config",
        {"layout": "all-1g", "mig_parted_label": "custom"},
        "mig_parted_label needs mig_parted_config or mig_parted_config_file",
    ),
    (
        "negative drain timeout",
        {"layout": "all-1g", "drain_timeout": -1},
        "drain_timeout must be 0 or more seconds",
    ),
]

MODULE_DEFAULTS = {
    "group/heteromig.fleet.gpu": {
        "backend": "{{ heteromig_gpu_backend }}",
        "sim_state": "{{ heteromig_sim_state }}",
        "sim_gpus": "{{ heteromig_sim_gpus }}",
    }
}


def _task(name: str, args: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "heteromig.fleet.mig_layout": args, **extra}


def _state_checksum(name: str) -> dict[str, Any]:
    stat = {"path": "{{ heteromig_sim_state }}", "checksum_algorithm": "sha256"}
    return {"name": name, "ansible.builtin.stat": stat}


def _playbook(root: str) -> list[dict[str, Any]]:
    bad = [
        _task(
            "bad: " + name,
            {k: (v.format(root=root) if isinstance(v, str) else v) for k, v in args.items()},
            ignore_errors=True,
        )
        for name, args, _expected in BAD_INPUTS
    ]
    return [
        {
            "name": "Bad input changes nothing",
            "hosts": "h100",
            "gather_facts": False,
            "module_defaults": MODULE_DEFAULTS,
            "tasks": [_state_checksum("state before"), *bad, _state_checksum("state after")],
        },
        {
            "name": "Modes and formats",
            "hosts": "h100",
            "gather_facts": False,
            "module_defaults": MODULE_DEFAULTS,
            "tasks": [
                _task("check with diff", {"layout": "all-1g"}, check_mode=True, diff=True),
                _state_checksum("state after check"),
                _task(
                    "assert a different layout",
                    {"layout": "all-1g", "operation": "assert"},
                    ignore_errors=True,
                ),
                _task(
                    "assert the current layout",
                    {"gpus": [{"devices": "all", "layout": "all-balanced"}], "operation": "assert"},
                ),
                _task("export", {"operation": "export", "export_label": "lab"}),
                _task(
                    "apply a mig-parted file",
                    {"mig_parted_config_file": f"{root}/good.yaml", "mig_parted_label": "custom"},
                    diff=True,
                ),
                _task(
                    "apply the mig-parted file again",
                    {"mig_parted_config_file": f"{root}/good.yaml", "mig_parted_label": "custom"},
                ),
                _task(
                    "select by PCI bus id and UUID",
                    {
                        "gpus": [
                            {"devices": "1b:00.0", "layout": ["7g.80gb"]},
                            {"devices": "{{ gpu1_uuid }}", "layout": {"mig_enabled": False}},
                        ]
                    },
                ),
            ],
        },
        {
            "name": "A profile another model has",
            "hosts": "a30",
            "gather_facts": False,
            "module_defaults": MODULE_DEFAULTS,
            "tasks": [
                _task(
                    "bad: an H100 profile on an A30", {"layout": ["3g.40gb"]}, ignore_errors=True
                ),
                _task("all-balanced on an A30", {"layout": "all-balanced"}),
            ],
        },
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshLab, LabRun]]:
    base = tmp_path_factory.mktemp("mig-layout-lab")
    sim = {"heteromig_gpu_backend": "sim"}
    lab = SshLab(
        [
            HostSpec("h100", {**sim, "heteromig_sim_gpus": H100_GPUS}),
            HostSpec("a30", {**sim, "heteromig_sim_gpus": "1xA30-24GB"}),
        ],
        base,
    )
    try:
        root = lab.hostdir("h100")
        (root / "broken.yaml").write_text(BROKEN_YAML)
        (root / "v2.yaml").write_text(WRONG_VERSION)
        (root / "good.yaml").write_text(GOOD_CONFIG)
        backend = open_backend("sim", str(root / "nvml-sim.json"), H100_GPUS)
        run_host(backend, parse_gpu_entries("all-balanced"))
        backend.close()
        uuid = json.loads((root / "nvml-sim.json").read_text())["gpus"][1]["uuid"]
        playbook = lab.labdir / "mig_layout_lab.yml"
        playbook.write_text(yaml.safe_dump(_playbook(str(root)), sort_keys=False))
        yield lab, lab.run_playbook(playbook, extravars={"gpu1_uuid": uuid}, timeout=240)
    finally:
        lab.close()


def _ok(run: LabRun, task: str, host: str = "h100") -> dict[str, Any]:
    result = run.result(task, host)
    assert result.outcome == "ok", f"{task}: {result.outcome}: {result.res.get('msg')}"
    return result.res


def _failed(run: LabRun, task: str, host: str = "h100") -> dict[str, Any]:
    result = run.result(task, host)
    assert result.outcome == "failed", f"{task} should fail, got {result.outcome}: {result.res}"
    res = result.res
    assert not res["msg"].startswith("MODULE FAILURE"), res
    assert "Traceback" not in res["msg"] + str(res.get("module_stderr", "")), res
    assert res.get("changed") is False
    return res


@pytest.mark.parametrize(
    ("name", "expected"), [(n, e) for n, _a, e in BAD_INPUTS], ids=[n for n, _a, _e in BAD_INPUTS]
)
def test_bad_input_is_named(run: tuple[SshLab, LabRun], name: str, expected: str) -> None:
    _lab, result = run
    assert expected in _failed(result, "bad: " + name)["msg"]


def test_bad_input_leaves_the_state_untouched(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    before = _ok(result, "state before")["stat"]["checksum"]
    assert _ok(result, "state after")["stat"]["checksum"] == before
    assert _ok(result, "state after check")["stat"]["checksum"] == before


def test_a30_names_the_models_that_have_the_profile(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    msg = _failed(result, "bad: an H100 profile on an A30", "a30")["msg"]
    assert "profile 3g.40gb is not offered by A30-24GB: it is a profile of H100-SXM5-80GB" in msg
    devices = _ok(result, "all-balanced on an A30", "a30")["mig_devices"]
    assert [d["profile"] for d in devices] == ["2g.12gb", "1g.6gb", "1g.6gb"]


def test_check_mode_with_diff(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    res = _ok(result, "check with diff")
    assert res["changed"]
    diff = res["diff"]
    assert diff["before"].splitlines()[0] == (
        "GPU 0 (H100-SXM5-80GB, 00000000:1B:00.0): MIG enabled; 2g.20gb@0, 1g.10gb@2, "
        "1g.10gb@3, 3g.40gb@4"
    )
    assert diff["after"].splitlines()[1].endswith("1g.10gb@5, 1g.10gb@6")
    assert [g["status"] for g in res["gpus"]] == ["would_change", "would_change"]


def test_assert_and_export(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    msg = _failed(result, "assert a different layout")["msg"]
    assert msg.startswith("MIG layout differs on 2 GPUs: GPU 0 (H100-SXM5-80GB, 00000000:1B:00.0)")
    assert not _ok(result, "assert the current layout")["changed"]
    exported = _ok(result, "export")["mig_parted_config"]
    assert exported == {
        "version": "v1",
        "mig-configs": {
            "lab": [
                {
                    "devices": "all",
                    "mig-enabled": True,
                    "mig-devices": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
                }
            ]
        },
    }


def test_mig_parted_file_applies_and_is_idempotent(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    res = _ok(result, "apply a mig-parted file")
    assert [g["index"] for g in res["gpus"]] == [1]
    gpu1 = [
        (d["profile"], d["placement"]["start"]) for d in res["mig_devices"] if d["gpu_index"] == 1
    ]
    assert gpu1 == [("4g.40gb", 0), ("1c.3g.40gb", 4), ("1c.3g.40gb", 4), ("1c.3g.40gb", 4)]
    assert "-GPU 1 (H100-SXM5-80GB, 00000000:43:00.0)" not in res["diff"]["before"]
    assert not _ok(result, "apply the mig-parted file again")["changed"]


def test_selectors_by_pci_bus_id_and_uuid(run: tuple[SshLab, LabRun]) -> None:
    lab, result = run
    res = _ok(result, "select by PCI bus id and UUID")
    assert [(g["index"], g["layout"]) for g in res["gpus"]] == [(0, "7g.80gb"), (1, "all-disabled")]
    gpus = json.loads((lab.hostdir("h100") / "nvml-sim.json").read_text())["gpus"]
    assert [(g["mig_current"], len(g["gpu_instances"])) for g in gpus] == [(1, 1), (0, 0)]


def test_every_task_ran(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    names = {r.task for r in result.task_results}
    assert {"bad: " + n for n, _a, _e in BAD_INPUTS} <= names
    assert result.stats.get("failures", {}).get("h100", 0) == 0  # ignored, not failed
    assert Path(result.private_data_dir).exists()
