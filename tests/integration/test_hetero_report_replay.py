"""The hetero_report callback over the multi-host SSH lab, fed by recorded results.

Four lab hosts: h1 replays a VALID heterogeneous run, h2 an INVALID one whose task FAILS (as
hetero_run does with fail_on_invalid), h3 a VALID Server run, and h4 is down (UNREACHABLE at the
first task). The results are REAL LoadGen runs (tests/hetero_samples), replayed by the test-only
module playbooks/library/hetero_run_replay.py, so the JSONL can be compared with what each host
returned byte for byte; an earlier isolated run of h1's benchmark is given as baseline.
test_hetero_report.py runs the same checks over the real heteromig.fleet.hetero_run. Marked
compat: the compat cell runs it on ansible-core 2.19 (Python 3.11) too.
"""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hetero_samples
import pytest
from hetero_report_support import (
    PLAYBOOK,
    REPLAY_ACTIONS,
    as_returned,
    hetero_records,
    replay_sources,
)

from lab import HostSpec, LabRun, SshLab

pytestmark = [pytest.mark.integration, pytest.mark.compat]  # also on ansible-core 2.19

HOSTS = {"h1": "valid", "h2": "invalid", "h3": "server"}
RUN_TASK = "Run the heterogeneous workload (replayed)"


@dataclass
class FleetRun:
    run: LabRun
    report: Path
    sources: dict[str, dict[str, Any]]  # host -> the result it replayed
    isolated: dict[str, Any]
    workdir: Path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetRun]:
    samples = hetero_samples.build_samples(tmp_path_factory.getbasetemp() / "hetero-samples")
    work = tmp_path_factory.mktemp("hetero-report")
    paths = replay_sources(samples, HOSTS, work / "replay")
    isolated = hetero_samples.as_host(samples["isolated"], "h1")
    baseline = work / "baseline.jsonl"
    baseline.write_text(
        json.dumps(
            {
                "schema": 1,
                "seq": 1,
                "host": "h1",
                "hetero": True,
                "status": "ok",
                "result": isolated,
            }
        )
        + "\n"
    )
    specs = [HostSpec(h, {"heteromig_replay_src": str(p)}) for h, p in paths.items()]
    specs.append(HostSpec("h4", {"heteromig_replay_src": "/nonexistent"}))
    with SshLab(specs, work / "lab") as lab:
        lab.stop_host("h4")
        run = lab.run_playbook(
            PLAYBOOK,
            envvars={
                "HETEROMIG_REPORT_DIR": str(work / "reports"),
                "HETEROMIG_REPORT_ACTIONS": REPLAY_ACTIONS,
                "HETEROMIG_REPORT_BASELINES": str(baseline),
            },
            timeout=240,
        )
        yield FleetRun(
            run=run,
            report=work / "reports" / hetero_samples.SAMPLE_RUN_ID,
            sources={h: json.loads(p.read_text()) for h, p in paths.items()},
            isolated=isolated,
            workdir=work,
        )


def test_play_outcome_is_what_the_lab_did(fleet: FleetRun) -> None:
    run = fleet.run
    assert run.status == "failed" and run.rc != 0, run.stdout[-3000:]
    assert run.hosts(RUN_TASK, "ok") == {"h1", "h3"}
    assert run.hosts(RUN_TASK, "failed") == {"h2"}
    assert run.hosts("Reach the host", "unreachable") == {"h4"}


def test_jsonl_holds_every_result_as_it_was_returned(fleet: FleetRun) -> None:
    lines = (fleet.report / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(r["schema"] == 1 for r in records)
    hetero = hetero_records(fleet.report / "results.jsonl")
    assert sorted((r["host"], r["status"]) for r in hetero) == [
        ("h1", "ok"),
        ("h2", "failed"),
        ("h3", "ok"),
    ]
    for rec in hetero:
        source = fleet.sources[rec["host"]]
        body = {k: v for k, v in rec["result"].items() if k not in ("changed", "msg", "failed")}
        assert body == as_returned(source)
        assert rec["action"] == "hetero_run_replay" and rec["task"] == RUN_TASK
    (dark,) = [r for r in records if not r["hetero"]]
    assert (dark["host"], dark["status"], dark["task"]) == ("h4", "unreachable", "Reach the host")
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)


def test_summary_rows_for_every_host(fleet: FleetRun) -> None:
    summary = json.loads((fleet.report / "summary.json").read_text())
    rows = {r["host"]: r for r in summary["rows"]}
    assert {h: r["verdict"] for h, r in rows.items()} == {
        "h1": "VALID",
        "h2": "INVALID",
        "h3": "VALID",
        "h4": "UNREACHABLE",
    }
    assert summary["run_ids"] == [hetero_samples.SAMPLE_RUN_ID] and summary["interrupted"] is False
    assert rows["h2"]["reasons"] == fleet.sources["h2"]["reasons"]
    assert rows["h4"]["reasons"][0].startswith("unreachable at task 'Reach the host': ")
    assert rows["h1"]["main"]["metric"] == fleet.sources["h1"]["main"]["loadgen"]["metric"]
    # the interference against the baseline's isolated run of the same benchmark and slice
    (pair,) = summary["comparisons"]
    iso = fleet.isolated["main"]["loadgen"]["metric"]["value"]
    het = fleet.sources["h1"]["main"]["loadgen"]["metric"]["value"]
    assert (
        pair["host"],
        pair["isolated_source"],
        pair["isolated_value"],
        pair["hetero_value"],
    ) == ("h1", "baseline", iso, het)
    assert pair["interference_pct"] == pytest.approx((iso - het) / iso * 100)


def test_csv_and_junit(fleet: FleetRun) -> None:
    with (fleet.report / "summary.csv").open(newline="") as handle:
        rows = {r["host"]: r for r in csv.DictReader(handle)}
    assert {h: r["verdict"] for h, r in rows.items()} == {
        "h1": "VALID",
        "h2": "INVALID",
        "h3": "VALID",
        "h4": "UNREACHABLE",
    }
    assert rows["h3"]["scenario"] == "Server" and rows["h3"]["gpu_model"] == "A100-SXM4-80GB"
    suite = ET.parse(fleet.report / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "1", "1")
    failure = suite.find("testcase[@classname='hetero_run.h2']/failure")
    assert failure is not None and failure.get("message") == "INVALID: " + "; ".join(
        fleet.sources["h2"]["reasons"]
    )
    assert suite.find("testcase[@classname='hetero_run.h4']/error") is not None
    assert suite.find("testcase[@classname='hetero_run.h1']/failure") is None
    md = (fleet.report / "summary.md").read_text()
    assert "| h4 | - | - | - | - | UNREACHABLE |" in md


def test_stdout_has_progress_lines_and_the_table(fleet: FleetRun) -> None:
    out = fleet.run.stdout
    progress = [line for line in out.splitlines() if line.startswith("hetero_report: [")]
    assert sorted(line.split()[2] for line in progress) == ["h1", "h2", "h3"]
    assert "hetero_report: [" in out and any(
        " h2 INVALID, backgrounds 0/1 covered" in p for p in progress
    )
    assert sorted(line.split()[1] for line in progress) == ["[1/3]", "[2/3]", "[3/3]"]
    # next to the stdout callback's own output, not instead of it
    assert "PLAY RECAP" in out and "changed: [h1]" in out
    assert out.index("PLAY RECAP") < out.index(
        "HETERO RUN REPORT [%s]" % hetero_samples.SAMPLE_RUN_ID
    )
    table = out[out.index("HETERO RUN REPORT") :].splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("host "))
    assert table[header].split() == [
        "host",
        "gpu",
        "main",
        "benchmark",
        "scenario",
        "metric",
        "verdict",
        "reasons",
    ]
    lines = {line.split()[0]: line for line in table[header + 2 : header + 6]}
    assert sorted(lines) == ["h1", "h2", "h3", "h4"]
    assert re.search(
        r"synth-mlp-small\s+Offline\s+[\d,.]+ samples/s \([+-][\d.]+% vs isolated\)\s+VALID",
        lines["h1"],
    )
    # h2's one reason, cut to the table's 70 columns
    (reason,) = fleet.sources["h2"]["reasons"]
    assert len(reason) > 70
    assert re.search(r"INVALID\s+%s$" % re.escape(reason[:69] + "\u2026"), lines["h2"])
    assert "UNREACHABLE" in lines["h4"] and "unreachable at task 'Reach the host'" in lines["h4"]
    assert table[header + 6] == "4 run(s): VALID=2 INVALID=1 UNREACHABLE=1"
    assert "hetero_report: reports in %s" % fleet.report in out
