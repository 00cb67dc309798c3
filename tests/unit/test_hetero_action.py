"""Pure parts of the hetero_run action plugin (plugins/action/hetero_run.py), which live in
plugins/plugin_utils/_hetero_options.py, _hetero_watch.py and _hetero_results.py: the result
structure against docs/hetero_result_contract.md, the archive unpacking, transient failures."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleActionFail

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_logs import (
    empty_result,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_arg_spec import (
    ARGUMENT_SPEC,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_contract import (
    contract_result,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_plan import (
    build_plan,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_results import (
    extract_archive,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_watch import (
    detached_lease_s,
    ended_benchmarks,
    lost_reason,
    progress_line,
    run_id_key,
    task_failure,
    verdict_line,
)

pytestmark = pytest.mark.compat  # the action plugin also runs on ansible-core 2.19 / Python 3.11

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "docs" / "hetero_result_contract.md"
DOC_STUB = ROOT / "plugins" / "modules" / "hetero_run.py"


def contract_blocks() -> tuple[set[str], set[str], set[str]]:
    """Keys of the contract's two YAML blocks: the result, <benchmark>, and its loadgen."""
    blocks = re.findall(r"```yaml\n(.*?)```", CONTRACT.read_text(), re.S)
    top = set(re.findall(r"^(\w+):", blocks[0], re.M))
    bench = set(re.findall(r"^(\w+):", blocks[1], re.M))
    loadgen_block = blocks[1].split("\nloadgen:", 1)[1].split("\nlog_dir:", 1)[0]
    loadgen = set(re.findall(r"^  (\w+):", loadgen_block, re.M))
    assert {"verdict", "timeline"} <= top and {"slice", "loadgen"} <= bench and "metric" in loadgen
    return top, bench, loadgen


def sample_plan(tmp_path: Path) -> dict[str, Any]:
    devices = [
        {
            "uuid": "MIG-%d" % i,
            "gpu_index": 0,
            "profile": "1g.10gb",
            "gpu_instance_id": 7 + i,
            "compute_instance_id": 0,
            "placement": {"start": i, "size": 1},
            "gpu_model": "H100-SXM5-80GB",
        }
        for i in range(3)
    ]
    options = {k: v.get("default") for k, v in ARGUMENT_SPEC.items()}
    return build_plan(
        options,
        host="h1",
        devices=devices,
        gpus=[],
        python="python3",
        host_root=str(tmp_path),
        host_pythonpath=str(tmp_path / "lib"),
        backend={"name": "nvml"},
        run_id="r1",
    )


def test_result_has_every_key_of_the_contract(tmp_path: Path) -> None:
    plan = sample_plan(tmp_path)
    loadgen = dict(empty_result(), result_validity="VALID")
    host_result = {
        "verdict": "VALID",
        "reasons": [],
        "warnings": [],
        "timeline": [{"t": 1.0, "event": "launch", "benchmark": "main", "detail": ""}],
        "benchmarks": [
            {"name": b["name"], "exit_code": 0, "loadgen": loadgen} for b in plan["benchmarks"]
        ],
    }
    result = contract_result(plan, host_result, str(tmp_path / "res"), dry_run=False)
    top, bench, loadgen_keys = contract_blocks()
    assert top - {"changed", "fetched_files", "plan"} <= set(result), top - set(result)
    for entry in [result["main"], *result["backgrounds"]]:
        assert bench <= set(entry), bench - set(entry)
        assert loadgen_keys <= set(entry["loadgen"]), loadgen_keys - set(entry["loadgen"])
        assert isinstance(entry["command"], list)
    assert result["main"]["fetched_dir"] == str(tmp_path / "res" / "main")
    assert [b["name"] for b in result["backgrounds"]] == ["bg-1", "bg-2"]

    dry = contract_result(plan, None, "x", dry_run=True)
    assert dry["verdict"] == "DRY_RUN" and dry["results_dir"] is None and dry["timeline"] == []
    assert (
        dry["main"]["loadgen"] is None and dry["main"]["command"] == plan["benchmarks"][0]["argv"]
    )


def test_doc_stub_documents_every_option() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(DOC_STUB.read_text(), str(DOC_STUB), "exec"), namespace)
    documented = yaml.safe_load(namespace["DOCUMENTATION"])["options"]
    assert set(documented) == set(ARGUMENT_SPEC)
    for name, spec in ARGUMENT_SPEC.items():
        doc = documented[name]
        assert doc.get("type") == spec["type"], name
        assert doc.get("default") == spec.get("default"), name
        assert doc.get("choices") == spec.get("choices"), name
    returned = yaml.safe_load(namespace["RETURN"])
    top, bench, _loadgen = contract_blocks()
    assert top - {"changed"} <= set(returned), top - set(returned)
    assert bench <= set(returned["backgrounds"]["contains"]), bench - set(
        returned["backgrounds"]["contains"]
    )


def _tar(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return buffer.getvalue()


def test_extract_archive(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(_tar([("main/stdout.log", b"hello", None), ("result.json", b"{}", None)]))
    extract_archive(str(archive), str(tmp_path / "out"))
    assert (tmp_path / "out" / "main" / "stdout.log").read_bytes() == b"hello"


@pytest.mark.parametrize(
    "member", [("../escape", b"x", None), ("/etc/evil", b"x", None), ("link", None, "/etc/passwd")]
)
def test_extract_archive_refuses_escapes(
    tmp_path: Path, member: tuple[str, bytes | None, str | None]
) -> None:
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(_tar([member]))
    with pytest.raises(AnsibleActionFail, match="refusing to unpack"):
        extract_archive(str(archive), str(tmp_path / "out"))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out" / "link").exists()


def test_lost_reason_tells_a_reboot_from_a_killed_runner() -> None:
    status = {"phase": "lost", "pid": 4242, "started_at": 1_800_000_000.0}
    killed = lost_reason("h1", "r1", "/v/runs/r1", {**status, "host_booted_at": 1.7e9}, [])
    assert killed == (
        "the runner of run r1 on h1 (pid 4242) died before the run finished and wrote no "
        "result (its logs: /v/runs/r1/runner.log on the host)"
    )
    rebooted = lost_reason(
        "h1", "r1", "/v/runs/r1", {**status, "host_booted_at": 1_800_000_030.0}, []
    )
    assert rebooted.startswith(
        "h1 rebooted during run r1 (up since 2027-01-15 08:00:30 UTC; the run started "
        "2027-01-15 08:00:00 UTC)"
    )
    left = lost_reason("h1", "r1", "/v/runs/r1", status, ["bg-1", "main"])
    assert "; it left bg-1, main running, now stopped (its logs:" in left
    assert "runner.log:" not in killed + rebooted + left  # no raw log in a reason


def test_run_id_key_per_loop_item_and_call() -> None:
    plain = run_id_key("uuid-a", {})
    assert plain == "uuid-a"
    assert run_id_key("uuid-a", {}) == "uuid-a-1"  # a retry (until) is a new run
    first = run_id_key("uuid-b", {"ansible_loop_var": "item", "item": "fake-a"})
    second = run_id_key("uuid-b", {"ansible_loop_var": "item", "item": "fake-b"})
    again = run_id_key("uuid-b", {"ansible_loop_var": "item", "item": "fake-a"})
    assert len({first, second, again}) == 3 and first.startswith("uuid-b-")
    assert again == first + "-1"  # the same value twice in one list


def test_a_run_started_without_waiting_gets_a_lease_for_the_whole_run(tmp_path: Path) -> None:
    plan = sample_plan(tmp_path)
    choreo = plan["choreography"]
    # written out: expected duration + readiness timeout + stop grace + 120 s margin
    whole = (
        plan["expected_duration_s"]
        + choreo["background_start_timeout"]
        + choreo["stop_grace"]
        + 120.0
    )
    assert detached_lease_s(plan) == pytest.approx(min(whole, choreo["run_timeout"]))
    assert detached_lease_s(plan) > plan["lease_s"]
    capped = dict(plan, choreography=dict(choreo, run_timeout=30.0))
    assert detached_lease_s(capped) == pytest.approx(max(plan["lease_s"], 30.0))


def test_progress_line() -> None:
    status = {
        "phase": "buffer",
        "elapsed_s": 12.34,
        "expected_duration_s": 40,
        "updated_at": 1000.0,
        "benchmarks": {
            "main": {"state": "running", "launched_at": 997.5},
            "bg-2": {"ready": False, "failed": True},
            "bg-1": {"ready": True},
        },
    }
    # the main's own time (2.5 s since its launch) against the expected 40 s, which count from
    # that launch; the run's 12.34 s include the backgrounds' start
    assert progress_line("h1", status) == (
        "hetero_run [h1] buffer | 12.3 s | backgrounds ready 1/2 (failed: bg-2) | "
        "main: running, 2.5/40.0 s"
    )
    status["benchmarks"]["main"]["ready"] = True
    assert progress_line("h1", status).endswith("| main: timed phase, 2.5/40.0 s")
    status["phase"] = "done"
    status["benchmarks"]["main"].update(state="exited", exit_code=0, ended_at=1041.25)
    assert progress_line("h1", status).endswith("| main: exited with code 0 after 43.8 s")
    status["benchmarks"]["main"].update(exit_code=None, signal="SIGTERM")
    assert progress_line("h1", status).endswith("| main: was killed by SIGTERM after 43.8 s")
    status["benchmarks"]["main"] = {"state": "not_launched"}
    assert progress_line("h1", status).endswith("| main: not launched")
    assert progress_line("h1", {}) == "hetero_run [h1] None | 0.0 s | main: pending"


def test_ended_benchmarks_names_each_once() -> None:
    status = {
        "ended_processes": [
            {"benchmark": "main"},
            {"benchmark": "bg-1"},
            {"benchmark": "bg-1"},
            {"benchmark": "?"},
            {"benchmark": None},
            "not a process",
        ]
    }
    assert ended_benchmarks(status) == ["bg-1", "main"]
    assert ended_benchmarks({}) == []


def test_verdict_line_and_task_failure() -> None:
    metric = {"name": "samples_per_second", "value": 10.5, "unit": "samples/s"}
    valid = {
        "run_id": "r1",
        "verdict": "VALID",
        "reasons": [],
        "main": {"loadgen": {"metric": metric}},
    }
    assert (
        verdict_line("h1", valid)
        == "hetero_run [h1] VALID | main samples_per_second: 10.5 samples/s"
    )
    invalid = {
        "run_id": "r1",
        "verdict": "INVALID",
        "reasons": ["a", "b"],
        "main": {"loadgen": None},
    }
    assert verdict_line("h1", invalid) == "hetero_run [h1] INVALID | a; b"
    assert task_failure("h1", valid, None, True) is None
    assert task_failure("h1", invalid, None, False) is None
    assert task_failure("h1", invalid, None, True) == "hetero run r1 on h1 is INVALID: a; b"
    assert task_failure("h1", valid, "fetch failed", False) == "fetch failed"
