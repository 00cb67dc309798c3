"""Engines of a planned hetero run (plugins/plugin_utils/_run_engines.py). A real plan is
checked end to end (action heteromig.fleet.engine_plan) in tests/integration/test_lab_inventory.py (the engines built = the run's)."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils._run_engines import (
    EngineError,
    run_engines,
)


def plan_of(benchmarks: list[tuple[str, str, str]]) -> dict[str, Any]:
    return {"benchmarks": [{"role": r, "benchmark": b, "scenario": s} for r, b, s in benchmarks]}


def test_main_and_backgrounds_once_each() -> None:
    plan = plan_of(
        [
            ("main", "synth-mlp-small", "Server"),
            ("background", "synth-conv-1d", "Offline"),
            ("background", "synth-mlp-large", "Offline"),
            ("background", "synth-mlp-small", "Offline"),
            ("background", "synth-conv-1d", "Offline"),
        ]
    )
    assert run_engines(plan) == [
        {"benchmark": "synth-conv-1d", "scenario": "Offline"},
        {"benchmark": "synth-mlp-large", "scenario": "Offline"},
        {"benchmark": "synth-mlp-small", "scenario": "Offline"},
        {"benchmark": "synth-mlp-small", "scenario": "Server"},
    ]
    # a high-accuracy main: its engine at 99.9; a background of the same benchmark keeps 99
    plan = plan_of([("main", "bert", "Offline"), ("background", "bert", "Offline")])
    assert run_engines(plan, "high") == [
        {"benchmark": "bert", "scenario": "Offline"},
        {"benchmark": "bert", "scenario": "Offline", "accuracy_target": "99.9"},
    ]


@pytest.mark.parametrize(
    ("plan", "target", "message"),
    [
        ({}, "default", "not a hetero_run plan"),
        ({"benchmarks": []}, "default", "not a hetero_run plan"),
        ("plan", "default", "not a hetero_run plan"),
        ({"benchmarks": [{"role": "main"}]}, "default", "without benchmark or scenario"),
        (plan_of([("main", "a", "Offline")]), "highest", "default or high"),
    ],
)
def test_bad_input_is_named(plan: Any, target: str, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        run_engines(plan, target)
