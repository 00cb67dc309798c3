"""The shortest tuning trial that can tell a Server limit within the tolerance
(plugin_utils/_campaign_tuned_cell.trial_floor_ms).

The oracle is a queue simulated here, independent of the formula in the code: queries arrive
every 1/q s for T s, one server answers each in 1/c s in order, and the run is VALID while the
99th percentile latency (LoadGen's Server rule) stays within the bound. The highest target such
a run finds VALID is what a short trial would report."""

from __future__ import annotations

import math

import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import parse_spec
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_tuned_cell import (
    _trial_duration,
    trial_floor_ms,
)

CAPACITY = 1000.0  # queries a second


def p99_latency(target: float, seconds: float) -> float:
    done, latencies = 0.0, []
    for i in range(int(target * seconds)):
        arrival = i / target
        done = max(arrival, done) + 1.0 / CAPACITY
        latencies.append(done - arrival)
    latencies.sort()
    return latencies[math.ceil(0.99 * len(latencies)) - 1]


def highest_valid(bound_s: float, seconds: float) -> float:
    lo, hi = CAPACITY, 3 * CAPACITY
    for _step in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p99_latency(mid, seconds) <= bound_s else (lo, mid)
    return lo


def cell(**settings: object) -> object:
    tuning = {k: v for k, v in settings.items() if k.startswith("tune_")}
    options = {k: v for k, v in settings.items() if not k.startswith("tune_")}
    camp = parse_spec(
        {
            "version": 1,
            "campaign": "floor",
            "defaults": {"main_benchmark_duration": 60000, "retries": 0},
            "systems": [{"name": "lab", "hosts": "gpus"}],
            "benchmarks": {"synth-mlp-small": {"scenarios": ["Server"], "modes": ["performance"]}},
            "cells": [{"match": {}, "set": {"main_target_qps": "auto", **tuning, **options}}],
        },
        "spec.yml",
    )
    return camp.cells[0]


@pytest.mark.parametrize(("bound_ms", "tolerance"), [(400, 0.025), (100, 0.05), (50, 0.025)])
def test_a_trial_at_the_floor_reports_the_limit_within_the_tolerance(
    bound_ms: int, tolerance: float
) -> None:
    floor = trial_floor_ms(
        cell(main_target_latency_ns=bound_ms * 1_000_000, tune_tolerance=tolerance)
    )
    found = highest_valid(bound_ms / 1000, floor / 1000)
    # the 99th percentile puts the edge at B / (0.99 T): 1% of the tolerance past it
    assert CAPACITY <= found <= CAPACITY * (1 + tolerance * 1.011)
    # and the floor is needed: a trial half as long is VALID past the tolerance
    assert highest_valid(bound_ms / 1000, floor / 2000) > CAPACITY * (1 + 1.9 * tolerance)


def test_the_floor_lengthens_short_trials_up_to_the_cell_and_only_with_a_bound() -> None:
    bound = {"main_target_latency_ns": 400_000_000}  # 400 ms / 2.5% = 16 s
    assert _trial_duration(cell(**bound)) == 16000  # a tenth of 60 s is shorter
    assert _trial_duration(cell(tune_trial_duration=2000, **bound)) == 16000
    assert _trial_duration(cell(tune_trial_duration=20000, **bound)) == 20000
    assert _trial_duration(cell(main_benchmark_duration=8000, **bound)) == 8000  # the cell's own
    assert _trial_duration(cell(tune_trial_duration=2000)) == 2000  # no bound given
    assert trial_floor_ms(cell()) == 0
