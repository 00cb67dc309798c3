"""The claim order of a system's cells, longest first (plugin_utils/_campaign_order), and the
wait of a host with nothing to claim for cells that may come back (CellRun.claim_waiting).

Every estimate below is worked out by hand from the spec's numbers (docs/campaign.md, "The claim
order"); the embedded harness's data set sizes are checked against the harness's own
``models --json`` output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_cell import CellRun
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    append,
    cell_states,
    claim_next,
    finish,
    read,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_order import (
    HarnessDefaults,
    awaited,
    claim_order,
    harness_defaults,
    in_claim_order,
    run_estimate,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    parse_spec,
)

ROOT = Path(__file__).resolve().parents[2]

# The defaults of the embedded harness as its --help documents them (min_query_count per
# scenario; Server target 1000 QPS) and the data set of each model (checked below).
SYNTH = HarnessDefaults(
    min_query_count={"Offline": 1, "Server": 500, "SingleStream": 100, "MultiStream": 662},
    target_qps={"Server": 1000.0},
    dataset={"synth-mlp-small": 1024, "synth-mlp-large": 1024, "synth-conv-1d": 512},
)

LARGE = "sys/synth-mlp-large/Server/%s"
SMALL_SRV = "sys/synth-mlp-small/Server/%s"
SMALL_SS = "sys/synth-mlp-small/SingleStream/%s"


def spec(retries: int = 0, **cells: Any) -> Campaign:
    """One system; mlp-small Server and SingleStream, mlp-large Server at 100 QPS; 2 s mains and
    0.5 s start buffers (the benchmark's sweep), every mode."""
    return parse_spec(
        {
            "version": 1,
            "campaign": "order",
            "defaults": {
                "main_benchmark_duration": 2000,
                "start_time_buffer": 500,
                "retries": retries,
                "lease_timeout": 6000,
                "reconnect_timeout": 2000,
            },
            "systems": [{"name": "sys", "hosts": "all"}],
            "benchmarks": {
                "synth-mlp-small": {
                    "scenarios": ["Server", "SingleStream"],
                    "modes": ["performance", "accuracy"],
                },
                "synth-mlp-large": {
                    "scenarios": ["Server"],
                    "modes": ["performance", "accuracy", "TEST01", "TEST04"],
                },
            },
            "cells": [
                {"match": {"benchmark": "synth-mlp-large"}, "set": {"main_target_qps": 100}},
                *cells.get("rules", []),
            ],
        },
        "order.yml",
    )


def cell(camp: Campaign, cell_id: str) -> Any:
    return next(c for c in camp.cells if c.id == cell_id)


# ------------------------------------------------------------------------------ estimates
def test_a_performance_run_is_its_buffer_and_main_duration() -> None:
    camp = spec()
    # SingleStream: 100 queries of unknown latency; the 2 s min duration is what is known
    assert run_estimate(cell(camp, SMALL_SS % "performance"), SYNTH) == 2.5
    # Server at the harness's 1000 QPS: 500 queries take 0.5 s, the 2 s min duration rules
    assert run_estimate(cell(camp, SMALL_SRV % "performance"), SYNTH) == 2.5


def test_a_server_run_lasts_until_its_min_query_count_at_its_target() -> None:
    camp = spec()
    # 500 queries at 100 QPS: 5 s, longer than the 2 s min duration; TEST01/TEST04 alike
    for mode in ("performance", "TEST01", "TEST04"):
        assert run_estimate(cell(camp, LARGE % mode), SYNTH) == 5.5
    given = spec(rules=[{"match": {"mode": "TEST04"}, "set": {"main_min_query_count": 1000}}])
    assert run_estimate(cell(given, LARGE % "TEST04"), SYNTH) == 10.5  # 1000 / 100 + 0.5


def test_an_accuracy_run_goes_over_the_whole_data_set() -> None:
    camp = spec()
    # 1024 samples at 100 QPS: 10.24 s; at 1000 QPS: 1.024 s, shorter than the min duration
    assert run_estimate(cell(camp, LARGE % "accuracy"), SYNTH) == pytest.approx(10.74)
    assert run_estimate(cell(camp, SMALL_SRV % "accuracy"), SYNTH) == pytest.approx(1.524)
    # a SingleStream run's pace is not known: the main duration stands in for it
    assert run_estimate(cell(camp, SMALL_SS % "accuracy"), SYNTH) == 2.5


def test_without_the_harness_defaults_only_the_spec_counts() -> None:
    camp = spec()
    # no min_query_count known: the duration; no data set known: the duration too
    assert run_estimate(cell(camp, LARGE % "performance"), HarnessDefaults()) == 2.5
    assert run_estimate(cell(camp, LARGE % "accuracy"), HarnessDefaults()) == 2.5
    assert harness_defaults("nvidia_mlperf") == HarnessDefaults()


def test_hetero_run_defaults_apply_where_the_spec_sets_nothing() -> None:
    camp = parse_spec(
        {
            "version": 1,
            "campaign": "d",
            "systems": [{"name": "sys", "hosts": "all"}],
            "benchmarks": {"synth-conv-1d": {"scenarios": ["SingleStream"]}},
        },
        "d.yml",
    )
    # hetero_run's defaults: 600 s main duration, 10 s start buffer
    assert run_estimate(camp.cells[0], SYNTH) == 610.0


def test_a_tuned_cell_adds_its_trials() -> None:
    camp = spec(
        rules=[
            {
                "match": {"benchmark": "synth-mlp-small", "scenario": "Server"},
                "set": {
                    "main_target_qps": "auto",
                    "tune_max_trials": 5,
                    "tune_trial_duration": 3000,
                },
            }
        ]
    )
    # 5 trials of 3 s before the 2.5 s run
    assert run_estimate(cell(camp, SMALL_SRV % "performance"), SYNTH) == 17.5


def test_the_embedded_harness_defaults_agree_with_the_harness() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_harness",
            "models",
            "--json",
        ],
        cwd=ROOT / "collections",
        capture_output=True,
        text=True,
        check=True,
    )
    sizes = {m["name"]: m["qsl_total"] for m in json.loads(out.stdout)}
    known = harness_defaults("heteromig_synthetic")
    assert known.dataset == sizes
    assert {k: known.dataset[k] for k in SYNTH.dataset} == SYNTH.dataset
    assert known.min_query_count == SYNTH.min_query_count
    assert known.target_qps == SYNTH.target_qps


# ----------------------------------------------------------------------------- the order
def ids(order: list[tuple[str, float, str]]) -> list[str]:
    return [cell_id for cell_id, _s, _src in order]


def test_longest_first_and_ties_keep_the_spec_order() -> None:
    order = claim_order(spec(), [], SYNTH)["sys"]
    assert ids(order) == [
        LARGE % "accuracy",  # 10.74
        LARGE % "performance",  # 5.5, then TEST01 and TEST04 in spec order
        LARGE % "TEST01",
        LARGE % "TEST04",
        SMALL_SRV % "performance",  # 2.5: the spec's order
        SMALL_SS % "performance",
        SMALL_SS % "accuracy",
        SMALL_SRV % "accuracy",  # 1.524
    ]
    assert {src for _c, _s, src in order} == {"spec"}


def claimed(cell_id: str, run_id: str, t: float, **kw: Any) -> dict[str, Any]:
    return {"event": "claimed", "cell": cell_id, "run_id": run_id, "t": t, "attempt": 1, **kw}


def finished(cell_id: str, run_id: str, t: float, **kw: Any) -> dict[str, Any]:
    return {"event": "finished", "cell": cell_id, "run_id": run_id, "t": t, "verdict": "VALID",
            "failed": False, **kw}  # fmt: skip


def test_a_cell_that_ran_before_is_ordered_by_its_measured_time() -> None:
    records = [
        # SingleStream accuracy (spec 2.5 s) ran for 18 and 24 s: median 21 s, 18.5 s over
        claimed(SMALL_SS % "accuracy", "a", 100.0),
        finished(SMALL_SS % "accuracy", "a", 118.0, verdict="INVALID"),
        claimed(SMALL_SS % "accuracy", "b", 200.0),
        finished(SMALL_SS % "accuracy", "b", 224.0),
        # mlp-large TEST04 (spec 5.5 s) ran for 8 s: 2.5 s over
        claimed(LARGE % "TEST04", "e", 500.0),
        finished(LARGE % "TEST04", "e", 508.0),
        # left out: a failed attempt, a resumed one
        claimed(LARGE % "accuracy", "c", 300.0),
        finished(LARGE % "accuracy", "c", 301.0, failed=True),
        claimed(LARGE % "TEST01", "d", 400.0, resume=True),
        finished(LARGE % "TEST01", "d", 401.0),
    ]
    order = claim_order(spec(), records, SYNTH)["sys"]
    got = [(cell_id, round(s, 3), src) for cell_id, s, src in order]
    # the others: their spec estimate plus the system's median overhead, (18.5 + 2.5) / 2
    assert got == [
        (LARGE % "accuracy", 21.24, "spec"),  # 10.74 + 10.5
        (SMALL_SS % "accuracy", 21.0, "ledger"),
        (LARGE % "performance", 16.0, "spec"),  # 5.5 + 10.5
        (LARGE % "TEST01", 16.0, "spec"),
        (SMALL_SRV % "performance", 13.0, "spec"),  # 2.5 + 10.5
        (SMALL_SS % "performance", 13.0, "spec"),
        (SMALL_SRV % "accuracy", 12.024, "spec"),  # 1.524 + 10.5
        (LARGE % "TEST04", 8.0, "ledger"),  # measured short: last
    ]


def test_claims_follow_the_plans_order(tmp_path: Path) -> None:
    camp = spec()
    order = {"sys": ids(claim_order(camp, [], SYNTH)["sys"])}
    view = in_claim_order(camp, order)
    ledger = str(tmp_path / "ledger.jsonl")
    got = []
    for n in range(len(camp.cells)):
        claim = claim_next(ledger, view, "sys", "h%d" % (n % 3), "s1")
        assert claim is not None
        got.append(claim.cell.id)
    assert got == order["sys"]
    assert claim_next(ledger, view, "sys", "h0", "s1") is None


def test_cells_the_order_does_not_name_come_last_in_spec_order() -> None:
    camp = spec()
    view = in_claim_order(camp, {"sys": [LARGE % "TEST04", SMALL_SS % "accuracy"]})
    rest = [c.id for c in camp.cells if c.id not in (LARGE % "TEST04", SMALL_SS % "accuracy")]
    assert [c.id for c in view.cells] == [LARGE % "TEST04", SMALL_SS % "accuracy", *rest]
    assert [c.id for c in in_claim_order(camp, {"sys": None}).cells] == [c.id for c in camp.cells]


# --------------------------------------------------------------- waiting for a retry
def test_a_host_with_nothing_to_claim_waits_only_for_cells_that_may_come_back() -> None:
    camp = spec(retries=1)
    large, small = LARGE % "accuracy", SMALL_SS % "accuracy"
    records = [
        claimed(large, "r1", 1000.0, host="h2", session="s1"),  # may come back
        claimed(small, "r2", 1000.0, host="h3", session="s0"),  # an earlier session's
        claimed(SMALL_SRV % "accuracy", "r3", 1000.0, host="h2", session="s1", attempt=2),
    ]
    states = cell_states(records)
    assert awaited(camp, "sys", "s1", states, 1000.0) == [large]
    # patience: twice expected_s (2 + 0.5 + 60 s) + lease 6 s + reconnect 2 s = 133 s
    assert awaited(camp, "sys", "s1", states, 1133.0) == [large]
    assert awaited(camp, "sys", "s1", states, 1133.5) == []
    assert awaited(spec(retries=0), "sys", "s1", states, 1000.0) == []  # no attempt left


class Action:
    """Stands in for the campaign action: CellRun.claim_waiting only claims and reads."""

    def hetero_run(self, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("not called")

    def runner(
        self, args: dict[str, Any], task_vars: dict[str, Any], pythonpath: str
    ) -> dict[str, Any]:
        raise AssertionError("not called")

    def var(self, name: str, task_vars: Any) -> Any:
        return None


def test_a_free_host_takes_the_retry_of_a_cell_that_failed_elsewhere(tmp_path: Path) -> None:
    camp = parse_spec(
        {
            "version": 1,
            "campaign": "wait",
            "defaults": {"main_benchmark_duration": 1000, "retries": 1},
            "systems": [{"name": "sys", "hosts": "all"}],
            "benchmarks": {"synth-mlp-small": {"scenarios": ["Offline"]}},
        },
        "wait.yml",
    )
    ledger = str(tmp_path / "ledger.jsonl")
    theirs = claim_next(ledger, camp, "sys", "h2", "s1")
    assert theirs is not None
    run = CellRun(Action(), camp, str(tmp_path), ledger, "s1", "h1", "sys", {}, {})
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:  # h2's run ends INVALID while h1 waits
            finish(ledger, theirs, "h2", "s1", verdict="INVALID", failed=False)

    mine = run.claim_waiting(None, pause=0.5, sleep=sleep)
    assert pauses == [0.5, 0.5, 0.5]
    assert mine is not None and mine.cell.id == theirs.cell.id and mine.attempt == 2
    records, _w = read(ledger)
    assert [(r["event"], r["host"], r["attempt"]) for r in records] == [
        ("claimed", "h2", 1),
        ("finished", "h2", 1),
        ("claimed", "h1", 2),
    ]
    # h1's attempt ends VALID: nothing is left, and nothing may come back; no wait
    finish(ledger, mine, "h1", "s1", verdict="VALID", failed=False)
    assert run.claim_waiting(None, sleep=sleep) is None
    assert len(pauses) == 3


def test_no_wait_when_the_cell_in_flight_has_no_attempt_left(tmp_path: Path) -> None:
    camp = spec(retries=0)
    ledger = str(tmp_path / "ledger.jsonl")
    for _n in range(len(camp.cells)):
        assert claim_next(ledger, camp, "sys", "h2", "s1") is not None
    append(ledger, {"event": "note"})  # other events change nothing
    run = CellRun(Action(), camp, str(tmp_path), ledger, "s1", "h1", "sys", {}, {})
    assert run.claim_waiting(None, sleep=lambda s: pytest.fail("waited")) is None
    assert run.wait(sleep=lambda s: pytest.fail("waited")) is False


def test_wait_ends_at_once_when_a_cell_can_be_claimed(tmp_path: Path) -> None:
    camp = spec(retries=0)
    ledger = str(tmp_path / "ledger.jsonl")
    for _n in range(len(camp.cells)):
        assert claim_next(ledger, camp, "sys", "h2", "s0") is not None  # an earlier session
    run = CellRun(Action(), camp, str(tmp_path), ledger, "s1", "h1", "sys", {}, {})
    # h2's unfinished claims of session s0 may be taken over (claim rule 3): no waiting
    assert run.wait(sleep=lambda s: pytest.fail("waited")) is True
    assert run.claim_waiting(None, sleep=lambda s: pytest.fail("waited")) is not None
