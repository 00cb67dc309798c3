"""The campaign report's tuning section: why each run of the search went the way it did.

The ledger is written by the real writer: the tuned cell (plugin_utils/_campaign_tuned_cell)
runs its search against a device that answers each hetero run with a real LoadGen 6.0.17 log
(tests/fixtures/loadgen/tuning/, parsed by the collection's parser, as hetero_run parses a
main's logs), records every trial, and the cell's ``finished`` record is appended by the
ledger's ``finish``, as the campaign action does. The report (plugin_utils/_campaign_report)
then renders that ledger. The expected words are written out from what LoadGen printed in
those logs' summaries (a latency over the bound, the query counts early stopping asked for),
not taken from the code under test.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleActionFail

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_logs import (
    read_loadgen_dir,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    claim_next,
    finish,
    read,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_report import (
    write_campaign_report,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    parse_spec,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_tuned_cell import (
    tuned_cell,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "loadgen" / "tuning"
CELL = "lab/synth-mlp-small/Server/performance"
NOW = 1767225600.0

# What each real log must read as in the report. The numbers are the ones LoadGen printed in
# the summaries: "99.00 percentile latency (ns) : 153447792" against the 50 ms bound of its
# case.json ("latency"); "Processed 417 queries", "at least 42 more" (too-few-queries) and
# "at least 421 more" with 2 queries over the bound in the detail log (some-overlatency).
LATENCY = (
    "too_high: LoadGen: performance constraints not satisfied: 99th percentile latency "
    "153.4 ms over the 50 ms bound (Reduce target QPS to improve latency.)"
)
TOO_FEW = (
    "too_short: LoadGen: early stopping not satisfied; processed 417 queries, would need at "
    "least 42 more"
)
# 838 queries (417 + 421) with the 25% margin at 420 QPS need 2.49 s, more than the cell's 2 s:
# the search reads it as too high (docs/campaign.md, "Tuning")
OVERLATENCY = (
    "too_short (read as too_high): LoadGen: early stopping not satisfied; processed 417 "
    "queries, would need at least 421 more; 2 over the latency bound"
)


def campaign() -> Campaign:
    return parse_spec(
        {
            "version": 1,
            "campaign": "tunereport",
            "defaults": {"main_benchmark_duration": 2000, "retries": 0},
            "systems": [{"name": "lab", "hosts": "gpus"}],
            "benchmarks": {"synth-mlp-small": {"scenarios": ["Server"], "modes": ["performance"]}},
            "cells": [
                {
                    "match": {},
                    "set": {
                        "main_target_qps": "auto",
                        "tune_start": 420,
                        "tune_trial_duration": 1000,
                    },
                }
            ],
        },
        "spec.yml",
    )


class Device:
    """Answers each hetero run with a real LoadGen log: the scripted ones first, then VALID
    ("lengthened") up to ``capacity`` and over the bound ("latency") above it."""

    def __init__(self, script: list[str], capacity: float, fail_at: int | None = None) -> None:
        self.script = list(script)
        self.capacity = capacity
        self.fail_at = fail_at
        self.served: dict[str, str] = {}  # run id -> the fixture served

    def __call__(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.fail_at is not None and len(self.served) + 1 == self.fail_at:
            self.served[args["run_id"]] = "failed"
            raise AnsibleActionFail("the host g1 became unreachable")
        if self.script:
            name = self.script.pop(0)
        else:
            name = "lengthened" if args["main_target_qps"] <= self.capacity else "latency"
        self.served[args["run_id"]] = name
        directory = str(FIXTURES / name)
        loadgen = read_loadgen_dir(directory)
        valid = loadgen["result_validity"] == "VALID"
        return {
            "verdict": "VALID" if valid else "INVALID",
            "reasons": [] if valid else ["main: LoadGen result INVALID"],
            "results_dir": None,
            "main": {"loadgen": loadgen, "fetched_dir": directory},
        }


def run_cell(tmp_path: Path, device: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict]:
    camp = campaign()
    ledger = str(tmp_path / "ledger.jsonl")
    claim = claim_next(ledger, camp, "lab", "g1", "s1")
    assert claim is not None and claim.cell.id == CELL
    failure, result, tuning = tuned_cell(camp, str(tmp_path), ledger, claim, "g1", "s1", device)
    finish(
        ledger,
        claim,
        "g1",
        "s1",
        verdict=result.get("verdict") or "INVALID",
        failed=failure is not None,
        reasons=list(result.get("reasons") or ([failure] if failure else [])),
        metric=((result.get("main") or {}).get("loadgen") or {}).get("metric"),
        results_dir=None,
        tuning=tuning,
    )
    records, warnings = read(ledger)
    assert warnings == []
    write_campaign_report(camp, records, str(tmp_path / "report"), "heteromig", now=NOW)
    return records


def table_rows(markdown: str) -> list[str]:
    section = markdown.split("## Tuning", 1)[1]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]


def test_each_run_of_the_search_says_why_in_every_report(tmp_path: Path) -> None:
    device = Device(["some-overlatency", "too-few-queries"], capacity=400.0)
    records = run_cell(tmp_path, device)
    trials = [r for r in records if r["event"] == "trial"]
    expected = {"some-overlatency": OVERLATENCY, "too-few-queries": TOO_FEW, "latency": LATENCY}
    served = [device.served[t["trial_run_id"]] for t in trials]
    # the search met each kind of log: the scripted two, then both sides of the capacity
    assert served[:2] == ["some-overlatency", "too-few-queries"]
    assert {"lengthened", "latency"} <= set(served[2:])
    [finished] = [r for r in records if r["event"] == "finished"]
    assert finished["verdict"] == "VALID" and finished["tuning"]["value"] <= 400.0

    report = tmp_path / "report"
    markdown = (report / "campaign.md").read_text()
    page = (report / "campaign.html").read_text()
    document = json.loads((report / "campaign.json").read_text())
    rows = table_rows(markdown)
    assert rows[0] == "| # | run | target | verdict | metric | why |"
    assert len(rows) == 1 + len(trials)
    [cell] = document["cells"]
    assert len(cell["tuning"]["trials"]) == len(trials)
    for trial, name, row, entry in zip(
        trials, served, rows[1:], cell["tuning"]["trials"], strict=True
    ):
        words = expected.get(name, "")  # a VALID run ("lengthened") needs no words
        start = "| %d | %s | %g (%g s) | " % (
            trial["index"],
            trial["kind"],
            trial["target"],
            trial["duration_ms"] / 1000,
        )
        assert row.startswith(start), (start, row)
        assert row.endswith("| %s |" % words), (name, row)
        assert ("VALID" if name == "lengthened" else "INVALID") in row
        # the HTML cell and the JSON entry carry the same words, LoadGen's cause beside them
        assert (
            '<td data-cause="%s">%s</td>'
            % (
                "VALID" if name == "lengthened" else words.split(" ", 1)[0].rstrip(":"),
                html.escape(words),
            )
            in page
        ), (name, words)
        assert (entry["trial_run_id"], entry["target"]) == (trial["trial_run_id"], trial["target"])
        assert entry["why"] == (None if name == "lengthened" else words.split(": ", 1)[1])
    # the first run was read as too high although LoadGen's cause was too short
    assert cell["tuning"]["trials"][0]["cause"] == "too_short"
    assert cell["tuning"]["trials"][0]["read_as"] == "too_high"


def test_a_failed_run_says_why_it_failed(tmp_path: Path) -> None:
    device = Device([], capacity=500.0, fail_at=2)
    records = run_cell(tmp_path, device)
    trials = [r for r in records if r["event"] == "trial"]
    assert [t["failed"] for t in trials] == [False, True]
    markdown = (tmp_path / "report" / "campaign.md").read_text()
    rows = table_rows(markdown)
    assert rows[1].startswith("| 1 | trial | 420 (1 s) | VALID | ") and rows[1].endswith(" |  |")
    assert rows[2].endswith("| FAILED |  | failed: the host g1 became unreachable |"), rows[2]
    page = (tmp_path / "report" / "campaign.html").read_text()
    assert "failed: the host g1 became unreachable</td>" in page
