"""The run contract (module_utils/agent/_run_contract.py): what the controller sends, read back.

The plans are the controller's own (build_plan over a real harness profile); the checks are
what the host runner must hold to: it reads every key back as it was sent, it refuses another
version by name, and the shape problems are named before anything starts.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_hetero_profiles import plan as built_plan

from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _hetero_runner as R
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_contract import (
    OUTCOME_KEYS,
    PLAN_FORMAT,
    PLAN_VERSION,
    BenchmarkPlan,
    ContractError,
    RunPlan,
    outcome_of,
)


@pytest.mark.parametrize("mode", ["PerformanceOnly", "AccuracyOnly"])
def test_a_built_plan_reads_back_as_it_was_sent(mode: str) -> None:
    sent = json.loads(json.dumps(built_plan(main_mode=mode)))  # as it travels: JSON
    read = RunPlan.from_wire(sent)
    assert isinstance(read.benchmarks[0], BenchmarkPlan) and read.benchmarks[0].role == "main"
    assert read.to_wire() == sent
    assert sent["format"] == "heteromig.hetero-plan" and sent["version"] == 2
    assert ("accuracy_check" in sent["benchmarks"][0]) is (mode == "AccuracyOnly")
    assert R.validate_plan(sent) == []


def test_another_version_is_refused_by_name_and_says_what_to_do() -> None:
    sent = built_plan()
    sent["version"] = PLAN_VERSION + 1
    with pytest.raises(ContractError) as caught:
        RunPlan.from_wire(sent)
    message = str(caught.value)
    assert "version %d" % PLAN_VERSION in message and "version %d" % (PLAN_VERSION + 1) in message
    assert PLAN_FORMAT in message and "runtime_sync" in message


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda p: p.update(run_id="../x"), "plan.run_id"),
        (lambda p: p.update(benchmarks=[]), "plan.benchmarks must be a non-empty list"),
        (lambda p: p["benchmarks"][0].update(argv=[]), "argv must be a non-empty list"),
        (lambda p: p["benchmarks"][0].update(env={"1BAD": "x"}), "invalid variable name"),
        (lambda p: p["benchmarks"][0].update(name="other"), "no benchmark named 'main'"),
        (lambda p: p.update(choreography=[]), "plan.choreography must be a mapping"),
    ],
)
def test_shape_problems_are_named(change: Any, words: str) -> None:
    sent = built_plan()
    change(sent)
    with pytest.raises(ContractError) as caught:
        RunPlan.from_wire(sent)
    assert words in str(caught.value)
    assert any(words in problem for problem in caught.value.problems)


def test_the_outcome_keys_are_the_ones_the_runner_writes() -> None:
    # result.json of a real runner is rebuilt by tests/hetero_samples; here the keys only
    assert set(OUTCOME_KEYS) == {
        "exit_code",
        "signal",
        "failed",
        "launched_at",
        "ready_at",
        "ended_at",
        "timed_window",
        "loadgen",
        "accuracy",
        "stopped_by_runner",
    }
    assert outcome_of({}) == dict.fromkeys(OUTCOME_KEYS) | {"stopped_by_runner": False}
