"""Records and the durable JSONL file of the hetero_report callback (no Ansible)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import hetero_samples
import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils import _report_records as records
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_records import (
    JsonlAppender,
    encode_line,
    is_contract_result,
    make_record,
    parse_jsonl,
    read_jsonl,
    result_items,
    write_atomic,
)


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return hetero_samples.build_samples(tmp_path_factory.getbasetemp() / "hetero-samples")


def _record(result: dict[str, Any] | None, status: str = "ok", seq: int = 1) -> dict[str, Any]:
    return make_record(
        seq=seq,
        received_at=1763788560.5,
        host="h1",
        task="Run",
        task_uuid="u-1",
        action="heteromig.fleet.hetero_run",
        hetero=True,
        status=status,
        result=result,
    )


def test_record_keeps_the_contract_body(samples: dict[str, dict[str, Any]]) -> None:
    raw = {**samples["valid"], "invocation": {"module_args": {"x": 1}}}
    rec = _record(raw)
    assert "invocation" not in rec["result"]
    assert rec["result"]["main"] == samples["valid"]["main"]
    assert rec["result"]["timeline"] == samples["valid"]["timeline"]
    assert (rec["schema"], rec["status"], rec["hetero"], rec["msg"]) == (1, "ok", True, None)


def test_record_of_an_unreachable_host_has_no_body() -> None:
    rec = _record(
        {"unreachable": True, "msg": "  ssh: connect to host h1 port 22: refused \n"}, "unreachable"
    )
    assert rec["result"] is None
    assert rec["msg"] == "ssh: connect to host h1 port 22: refused"


def test_record_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        _record(None, "weird")


def test_non_json_values_are_made_safe() -> None:
    body = {
        "run_id": "r",
        "verdict": "VALID",
        "main": {"x": (1, 2), "nan": float("nan")},
        "timeline": [],
        "obj": object(),
    }
    rec = _record(body)
    assert rec["result"]["main"] == {"x": [1, 2], "nan": None}
    assert rec["result"]["obj"].startswith("<object object")
    json.loads(encode_line(rec))  # serialisable


def test_contract_detection_and_loop_items(samples: dict[str, dict[str, Any]]) -> None:
    valid = samples["valid"]
    assert (
        is_contract_result(valid)
        and not is_contract_result({"msg": "x"})
        and not is_contract_result(None)
    )
    loop = {"results": [valid, samples["server"], "not a dict"], "changed": True}
    assert result_items(loop) == [valid, samples["server"]]
    assert result_items(valid) == [valid]
    assert result_items({"msg": "failed"}) == [{"msg": "failed"}]


def test_appender_writes_one_fsynced_line_per_record(
    tmp_path: Path, samples: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(records.os, "fsync", counting_fsync)
    path = tmp_path / "deep" / "dir" / "results.jsonl"
    writer = JsonlAppender(str(path))
    recs = [_record(samples[name], seq=i) for i, name in enumerate(("valid", "invalid", "server"))]
    for n, rec in enumerate(recs, start=1):
        writer.append(rec)
        # durable and complete after every append, before the next one
        assert path.read_bytes().count(b"\n") == n
        assert read_jsonl(str(path)) == recs[:n]
    writer.close()
    assert len([fd for fd in synced if fd >= 0]) >= len(recs)
    with pytest.raises(ValueError, match="closed"):
        writer.append(recs[0])
    # a second writer (the next playbook run into the same directory) appends
    again = JsonlAppender(str(path))
    again.append(recs[0])
    again.close()
    assert read_jsonl(str(path)) == [*recs, recs[0]]


def test_reader_skips_a_torn_last_line(tmp_path: Path, samples: dict[str, dict[str, Any]]) -> None:
    path = tmp_path / "results.jsonl"
    good = [_record(samples["valid"]), _record(samples["invalid"], seq=2)]
    line = encode_line(_record(samples["server"], seq=3))
    path.write_bytes(b"".join(encode_line(r) for r in good) + line[: len(line) // 2])
    assert read_jsonl(str(path)) == good
    assert list(parse_jsonl(["", "[1, 2]", "{bad", json.dumps(good[0])])) == [good[0]]
    assert read_jsonl(str(tmp_path / "missing.jsonl")) == []


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "out" / "summary.json"
    write_atomic(str(target), "one")
    write_atomic(str(target), "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]
