"""The campaign's ETA learns each system's per-cell overhead from the cells finished so far
(plugin_utils/_campaign_ledger: learned_overheads, cell_estimate, progress).

Every expectation is worked out by hand below from the ledger's timestamps and the spec's
durations (docs/campaign.md, "Progress"): a cell's estimate is its main duration + start buffer
+ the system's median measured overhead (wall time minus main duration and start buffer).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    cell_estimate,
    learned_overheads,
    progress,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_plan import plan_systems
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    parse_spec,
)

# sysA: 5 s main + 1 s buffer (66 s with the fixed 60 s overhead); its Server cell is 20 s + 1 s
A_OFF = "sysA/synth-mlp-small/Offline/performance"
A_SRV = "sysA/synth-mlp-small/Server/performance"
A_SS = "sysA/synth-conv-1d/SingleStream/performance"
B_OFF = "sysB/synth-mlp-small/Offline/performance"
B_SRV = "sysB/synth-mlp-small/Server/performance"
B_SS = "sysB/synth-conv-1d/SingleStream/performance"


def campaign(**system_b: Any) -> Campaign:
    return parse_spec(
        {
            "version": 1,
            "campaign": "eta",
            "defaults": {"main_benchmark_duration": 5000, "start_time_buffer": 1000},
            "systems": [
                {"name": "sysA", "hosts": "a"},
                {"name": "sysB", "hosts": "b", **system_b},
            ],
            "benchmarks": {
                "synth-mlp-small": {"scenarios": ["Offline", "Server"]},
                "synth-conv-1d": {"scenarios": ["SingleStream"]},
            },
            "cells": [
                {
                    "match": {"benchmark": "synth-mlp-small", "scenario": "Server"},
                    "set": {"main_benchmark_duration": 20000, "main_target_qps": 100},
                }
            ],
        },
        "eta.yml",
    )


def claimed(cell: str, run_id: str, t: float, **kw: Any) -> dict[str, Any]:
    return {"event": "claimed", "cell": cell, "run_id": run_id, "t": t, "attempt": 1, **kw}


def finished(cell: str, run_id: str, t: float, **kw: Any) -> dict[str, Any]:
    base = {"event": "finished", "cell": cell, "run_id": run_id, "t": t, "attempt": 1}
    base.update(verdict="VALID", failed=False)
    base.update(kw)
    return base


def test_the_fixed_estimate_until_a_cell_is_done() -> None:
    camp = campaign()
    assert learned_overheads(camp, []) == {}
    counts = progress(camp, [], {"sysA": 1, "sysB": 1}, now=0.0)
    # 66 + 81 + 66 s per system (Server: 20 + 1 + 60), one host each
    assert counts["eta_by_system"] == {"sysA": 213.0, "sysB": 213.0}
    assert counts["overhead_s"] == {"sysA": None, "sysB": None}


def test_the_median_overhead_of_finished_cells_replaces_the_fixed_one() -> None:
    camp = campaign()
    records = [
        # sysA Offline: 6 s nominal, ran 100 -> 116: 10 s of overhead
        claimed(A_OFF, "r1", 100.0),
        finished(A_OFF, "r1", 116.0),
        # sysA Server: 21 s nominal, ran 100 -> 135: 14 s of overhead (INVALID counts: it ran)
        claimed(A_SRV, "r2", 100.0),
        finished(A_SRV, "r2", 135.0, verdict="INVALID"),
        # sysA SingleStream: ran 120 -> 147 = 21 s of overhead
        claimed(A_SS, "r3", 120.0),
        finished(A_SS, "r3", 147.0),
    ]
    # median of 10, 14 and 21
    assert learned_overheads(camp, records) == {"sysA": 14.0}
    cells = {c.id: c for c in camp.cells}
    assert cell_estimate(cells[A_SRV], 14.0) == 35.0  # 20 + 1 + 14
    assert cell_estimate(cells[A_OFF], None) == 66.0


def test_the_eta_uses_what_was_learned_and_the_rest_keeps_the_estimate() -> None:
    camp = campaign()
    records = [
        claimed(A_OFF, "r1", 100.0),
        finished(A_OFF, "r1", 108.0),  # overhead 2 s
        claimed(A_SRV, "r2", 100.0),
        finished(A_SRV, "r2", 125.0, verdict="INVALID"),  # overhead 4 s, 1 retry left
        claimed(A_SS, "r3", 130.0),  # in flight since 130
        claimed(B_OFF, "r4", 100.0),  # sysB: nothing finished yet
    ]
    counts = progress(camp, records, {"sysA": 1, "sysB": 2}, now=140.0)
    assert counts["overhead_s"] == {"sysA": 3.0, "sysB": None}  # median of 2 and 4
    # sysA: Server retry 20 + 1 + 3 = 24; SingleStream 5 + 1 + 3 = 9, 10 s gone: 0 left
    # sysB: Offline in flight 66 - 40 = 26, Server 81, SingleStream 66: 173 over 2 hosts
    assert counts["eta_by_system"] == {"sysA": 24.0, "sysB": 86.5}
    assert counts["eta_s"] == 86.5


def test_runs_that_do_not_measure_an_ordinary_cell_are_left_out() -> None:
    camp = campaign()
    records = [
        # a failed task (host lost after 2 s): not a cell's wall time
        claimed(A_OFF, "r1", 100.0),
        finished(A_OFF, "r1", 102.0, verdict=None, failed=True),
        # resumed after its controller died: the claim's t is not the run's start
        claimed(A_SRV, "r2", 100.0),
        claimed(A_SRV, "r2", 300.0, resume=True, session="s2"),
        finished(A_SRV, "r2", 310.0),
        # a finished record without its claim (another ledger's) and one with no time
        finished(A_SS, "r9", 500.0),
        claimed(B_OFF, "r4", 10.0),
        {"event": "finished", "cell": B_OFF, "run_id": "r4", "verdict": "VALID"},
    ]
    assert learned_overheads(camp, records) == {}


def test_tuned_cells_are_left_out() -> None:
    camp = parse_spec(
        {
            "version": 1,
            "campaign": "eta",
            "defaults": {"main_benchmark_duration": 5000, "start_time_buffer": 1000},
            "systems": [{"name": "sysA", "hosts": "a"}],
            "benchmarks": {"synth-mlp-small": {"scenarios": ["Server"]}},
            "cells": [{"match": {}, "set": {"main_target_qps": "auto"}}],
        },
        "eta.yml",
    )
    cell = "sysA/synth-mlp-small/Server/performance"
    records = [claimed(cell, "r1", 0.0), finished(cell, "r1", 900.0)]  # probe + trials inside
    assert learned_overheads(camp, records) == {}


def test_gpus_at_once_divides_the_eta() -> None:
    camp = campaign(gpus_at_once=3)
    counts = progress(camp, [], {"sysA": 1, "sysB": 1}, now=0.0)
    assert counts["eta_by_system"] == {"sysA": 213.0, "sysB": 71.0}  # 213 over 1 host x 3 GPUs


def test_the_plan_estimate_learns_too() -> None:
    camp = campaign()
    records = [claimed(A_OFF, "r1", 0.0), finished(A_OFF, "r1", 16.0)]  # 10 s overhead
    systems, lines, total = plan_systems(camp, {"sysA": ["a1"], "sysB": ["b1"]}, records)
    # sysA still runs Server (21 + 10) and SingleStream (6 + 10); sysB all three at 60 s
    assert systems["sysA"]["estimated_s"] == 47.0 and systems["sysA"]["overhead_s"] == 10.0
    assert systems["sysB"]["estimated_s"] == 213.0 and systems["sysB"]["overhead_s"] is None
    assert total == 213.0
    # the line ends with the estimate that orders the cells (docs/campaign.md, "The claim
    # order"): its run from the spec (20 s main + 1 s buffer) plus the overhead measured on A_OFF
    # (16 s wall, 5 s main + 1 s buffer)
    assert "  run  %s (about 0m31s; order 31.0 s, spec)" % A_SRV in lines
    assert "  skip %s (done, VALID)" % A_OFF in lines
