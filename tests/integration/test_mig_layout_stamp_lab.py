"""mig_layout's stamp over the SSH lab: when a run reuses the recorded plan, and when it must not.

One H100 host with two GPUs and one playbook. A run right after an apply reuses the record
(and returns what planning would have); a different request, a layout changed behind the
module's back, check mode and a corrupt record all plan again; check mode never writes one.
An assert and a plan (operation plan, outside check mode) that find the layout record it; a
plan of another layout changes nothing and records nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from lab import HostSpec, LabRun, SshLab

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODULE_DEFAULTS = {
    "group/heteromig.fleet.gpu": {
        "backend": "{{ heteromig_gpu_backend }}",
        "sim_state": "{{ heteromig_sim_state }}",
        "sim_gpus": "{{ heteromig_sim_gpus }}",
    }
}
STAMP = "{{ heteromig_sim_state | dirname }}/mig_layout-stamp.json"


def _layout(name: str, args: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "heteromig.fleet.mig_layout": args, **extra}


def _stat(name: str) -> dict[str, Any]:
    return {"name": name, "ansible.builtin.stat": {"path": STAMP}}


PLAYBOOK = [
    {
        "name": "The applied-layout stamp",
        "hosts": "h100",
        "gather_facts": False,
        "module_defaults": MODULE_DEFAULTS,
        "tasks": [
            _layout("first apply", {"layout": "all-1g"}),
            _stat("stamp after the first apply"),
            _layout("again", {"layout": "all-1g"}, diff=True),
            _layout(
                "again, small result",
                {"layout": "all-1g", "return_mig_devices": False, "return_gpu_states": False},
                check_mode=True,
            ),
            _layout("again, planning", {"layout": "all-1g", "stamp": False}, diff=True),
            _layout(
                "planning, small result",
                {"layout": "all-1g", "stamp": False, "return_gpu_states": False},
            ),
            _layout("another request", {"layout": "all-2g"}, check_mode=True),
            _layout(
                "change GPU 1 without a stamp",
                {"gpus": [{"devices": [1], "layout": "all-7g"}], "stamp": False},
            ),
            _layout("after the change behind its back", {"layout": "all-1g"}),
            _layout("reused after the repair", {"layout": "all-1g"}),
            {
                "name": "remove the stamp",
                "ansible.builtin.file": {"path": STAMP, "state": "absent"},
            },
            _layout("check mode without a stamp", {"layout": "all-1g"}, check_mode=True),
            _stat("stamp after check mode"),
            {
                "name": "corrupt the stamp",
                "ansible.builtin.copy": {"dest": STAMP, "content": "{not json", "mode": "0644"},
            },
            _layout("with a corrupt stamp", {"layout": "all-1g"}),
            _layout("reused after the rewrite", {"layout": "all-1g"}),
            {
                "name": "remove the stamp again",
                "ansible.builtin.file": {"path": STAMP, "state": "absent"},
            },
            _layout("assert records", {"layout": "all-1g", "operation": "assert"}),
            _layout("reused after the assert", {"layout": "all-1g"}, check_mode=True),
            {
                "name": "remove the stamp for the plans",
                "ansible.builtin.file": {"path": STAMP, "state": "absent"},
            },
            _layout(
                "plan in check mode", {"layout": "all-1g", "operation": "plan"}, check_mode=True
            ),
            _stat("stamp after a plan in check mode"),
            _layout("plan records", {"layout": "all-1g", "operation": "plan"}),
            _stat("stamp after a plan"),
            _layout("plan of another layout", {"layout": "all-2g", "operation": "plan"}, diff=True),
            _layout(
                "reused after the plans",
                {"layout": "all-1g", "return_gpu_states": False},
                check_mode=True,
            ),
            {
                "name": "remove the stamp for the role",
                "ansible.builtin.file": {"path": STAMP, "state": "absent"},
            },
        ],
    }
] + [
    {
        "name": f"The mig_partition role, run {number}",
        "hosts": "h100",
        "gather_facts": False,
        "module_defaults": MODULE_DEFAULTS,
        "vars": {"heteromig_mig_layout": "all-1g", "heteromig_mig_end_play_if_unchanged": True},
        "tasks": [
            {
                "name": "Apply the MIG layout",
                "ansible.builtin.import_role": {"name": "heteromig.fleet.mig_partition"},
            }
        ],
    }
    for number in (1, 2)
]
ROLE_PLAN = "Plan the MIG layout (changes nothing)"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshLab, LabRun]]:
    base = tmp_path_factory.mktemp("mig-stamp-lab")
    lab = SshLab(
        [
            HostSpec(
                "h100", {"heteromig_gpu_backend": "sim", "heteromig_sim_gpus": "2xH100-SXM5-80GB"}
            )
        ],
        base,
    )
    try:
        playbook = lab.labdir / "mig_layout_stamp.yml"
        playbook.write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))
        yield lab, lab.run_playbook(playbook, timeout=240)
    finally:
        lab.close()


def _ok(run: LabRun, task: str) -> dict[str, Any]:
    result = run.result(task, "h100")
    assert result.outcome == "ok", f"{task}: {result.outcome}: {result.res.get('msg')}"
    return result.res


def test_an_apply_records_and_the_next_run_reuses(run: tuple[SshLab, LabRun]) -> None:
    lab, result = run
    first = _ok(result, "first apply")
    assert first["changed"] and first["plan_reused"] is False
    assert _ok(result, "stamp after the first apply")["stat"]["exists"]
    again = _ok(result, "again")
    assert again["changed"] is False and again["plan_reused"] is True
    assert len(again["mig_devices"]) == 14  # read live, not recorded
    assert [g["status"] for g in again["gpus"]] == ["unchanged", "unchanged"]
    record = json.loads((lab.hostdir("h100") / "mig_layout-stamp.json").read_text())
    assert (
        record["format"] == "heteromig.mig-layout-stamp" and "mig_devices" not in record["result"]
    )


def test_a_reused_result_is_what_planning_returns(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    reused = _ok(result, "again")
    planned = _ok(result, "again, planning")
    assert planned["plan_reused"] is False and planned["changed"] is False
    for key in (
        "gpus",
        "mig_parted_config",
        "mig_devices",
        "unmanaged_gpus",
        "diff",
        "reboot_required",
        "reboot_required_gpus",
    ):
        assert reused[key] == planned[key], key


def test_return_options_shape_a_reused_result(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    small = _ok(result, "again, small result")
    assert small["plan_reused"] is True and "mig_devices" not in small
    assert all("before" not in g and "after" not in g for g in small["gpus"])
    assert [g["mig_device_count"] for g in small["gpus"]] == [7, 7]
    assert "diff" not in small
    planned = _ok(result, "planning, small result")
    assert planned["plan_reused"] is False and len(planned["mig_devices"]) == 14
    assert all("before" not in g and "after" not in g for g in planned["gpus"])
    assert [g["mig_device_count"] for g in planned["gpus"]] == [7, 7]


def test_another_request_plans(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    other = _ok(result, "another request")
    assert other["plan_reused"] is False and other["changed"] is True


def test_a_change_behind_its_back_is_seen(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    assert _ok(result, "change GPU 1 without a stamp")["changed"]
    repaired = _ok(result, "after the change behind its back")
    assert repaired["plan_reused"] is False and repaired["changed"] is True
    assert [g["changed"] for g in repaired["gpus"]] == [False, True]
    assert _ok(result, "reused after the repair")["plan_reused"] is True


def test_check_mode_never_writes_a_stamp(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    checked = _ok(result, "check mode without a stamp")
    assert checked["plan_reused"] is False and checked["changed"] is False
    assert _ok(result, "stamp after check mode")["stat"]["exists"] is False


def test_a_corrupt_stamp_is_a_miss_and_is_rewritten(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    corrupt = _ok(result, "with a corrupt stamp")
    assert corrupt["plan_reused"] is False and corrupt["changed"] is False
    assert not corrupt.get("warnings")
    assert _ok(result, "reused after the rewrite")["plan_reused"] is True


def test_an_assert_records(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    asserted = _ok(result, "assert records")
    assert asserted["changed"] is False and asserted["plan_reused"] is False
    assert _ok(result, "reused after the assert")["plan_reused"] is True


def test_a_plan_records_a_matching_layout_outside_check_mode(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    checked = _ok(result, "plan in check mode")
    assert checked["changed"] is False and checked["would_change"] is False
    assert checked["plan_reused"] is False
    assert _ok(result, "stamp after a plan in check mode")["stat"]["exists"] is False
    planned = _ok(result, "plan records")
    assert planned["changed"] is False and planned["would_change"] is False
    assert planned["plan_reused"] is False
    assert [g["status"] for g in planned["gpus"]] == ["unchanged", "unchanged"]
    assert _ok(result, "stamp after a plan")["stat"]["exists"]


def test_a_plan_of_a_change_changes_nothing(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    other = _ok(result, "plan of another layout")
    assert other["changed"] is False and other["would_change"] is True
    assert [g["status"] for g in other["gpus"]] == ["would_change", "would_change"]
    assert [g["changed"] for g in other["gpus"]] == [True, True]
    assert [g["actions"] for g in other["gpus"]] == [[], []]
    assert "1g.10gb" in other["diff"]["before"] and "2g.20gb" in other["diff"]["after"]
    # the GPUs are still in all-1g and the stamp the first plan recorded is still there
    reused = _ok(result, "reused after the plans")
    assert reused["plan_reused"] is True and reused["changed"] is False
    assert reused["would_change"] is False
    # what the plan recorded is what it returned (the GPU states aside, not asked for here)
    planned = _ok(result, "plan records")
    assert reused["gpus"] == [
        {k: v for k, v in g.items() if k not in ("before", "after")} for g in planned["gpus"]
    ]
    assert reused["mig_parted_config"] == planned["mig_parted_config"]


def test_the_role_records_a_matching_layout_once(run: tuple[SshLab, LabRun]) -> None:
    _lab, result = run
    first, second = result.results(ROLE_PLAN, "h100")
    assert first.res["plan_reused"] is False and first.res["changed"] is False
    assert second.res["plan_reused"] is True and second.res["changed"] is False
    assert first.res["would_change"] is False and second.res["would_change"] is False
    # both runs ended the host's play after planning (the include would report skipped)
    assert result.results("Apply the MIG layout where it changes", "h100") == []
