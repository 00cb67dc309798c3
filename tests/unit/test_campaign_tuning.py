"""The target-QPS search (plugins/plugin_utils/_campaign_tuning.py) against fake devices.

The oracle is a device of known capacity: a run at target t is VALID iff t <= capacity (the
noisy variant moves the threshold of each short run by a seeded random amount). The LoadGen
variant also knows LoadGen's early stopping: a Server run of fewer than EARLY_STOPPING_QUERIES
queries is INVALID for too few queries whatever its target, as real LoadGen 6.0.17 said in
tests/fixtures/loadgen/tuning/ (417 processed + 42 more needed, 202 + 257, 300 + 159: 459 each
time with no query over the latency bound). Every expectation is written from the capacity and
those logs, never from what the search returned.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_trial_cause import (
    OTHER,
    TOO_HIGH,
    TOO_SHORT,
    VALID,
    Cause,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_tuning import (
    CONFIRM,
    TRIAL,
    Outcome,
    TuningError,
    check_settings,
    completed_rate,
    rounded,
    search,
    tune,
)


@dataclass
class Device:
    """VALID iff target <= capacity (short trials: the capacity x (1 + noise) of that run)."""

    capacity: float
    noise: float = 0.0
    confirm_noise: float = 0.0
    seed: int = 0
    # an overloaded run's completed samples/s as LoadGen reports it: the capacity times this
    # (None: no rate reported, as from a harness whose logs have none)
    rate_bias: float | None = 1.0
    calls: list[tuple[str, int, float]] = field(default_factory=list)
    durations: list[int | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def __call__(self, kind: str, index: int, target: float, duration_ms: int | None) -> Outcome:
        self.calls.append((kind, index, target))
        self.durations.append(duration_ms)
        spread = self.noise if kind == TRIAL else self.confirm_noise
        threshold = self.capacity * (1.0 + self.rng.uniform(-spread, spread))
        if self.rate_bias is None:
            metric = None
        else:
            metric = target if target <= threshold else threshold * self.rate_bias
        return Outcome(target <= threshold, metric=metric, info={"n": index})


# from 0.58x to 1.7x the start (the isolated value or the Offline probe is near the capacity):
# 2 to 3 trials bracket it, 3 to 4 narrow the bracket
CAPACITIES = [290.0, 300.0, 412.0, 499.0, 500.0, 505.0, 580.0, 640.0, 777.0, 850.0]


@pytest.mark.parametrize("capacity", CAPACITIES)
def test_converges_within_the_tolerance_of_the_capacity_in_8_trials(capacity: float) -> None:
    device = Device(capacity)
    result = tune(device, 500.0, tolerance=0.025)
    assert result.short_trials <= 8
    assert result.value is not None
    # never above the capacity (that would be INVALID), and within 2.5% of it
    assert result.value <= capacity
    assert result.value >= capacity * (1 - 0.025), result
    # the confirmation is the last run, at full length, at the value, and VALID
    assert device.calls[-1] == (CONFIRM, 1, result.value)
    assert result.trials[-1].verdict == "VALID" and result.confirmations == 1


@pytest.mark.parametrize("capacity", [500.0, 560.0, 700.0])
def test_an_upper_bound_below_the_capacity_steps_up(capacity: float) -> None:
    # the start (an isolated value, or the probe) is VALID: the search looks above it
    device = Device(capacity)
    result = tune(device, 450.0, tolerance=0.03)
    assert device.calls[0] == (TRIAL, 1, 450.0)
    assert result.trials[0].verdict == "VALID"
    assert any(t > 450.0 for _kind, _number, t in device.calls), "never tried above the start"
    assert result.value is not None and capacity * 0.97 <= result.value <= capacity
    assert result.short_trials <= 8


def test_a_capacity_far_below_the_start_stays_valid_without_converging() -> None:
    # no completed rate to go by, 7% of the start: the descent takes 5 trials, the bracket does
    # not narrow in 8, and the value is the highest VALID trial (below the capacity,
    # confirmed), flagged as such
    device = Device(37.0, rate_bias=None)
    result = tune(device, 500.0, tolerance=0.025)
    assert result.short_trials == 8 and result.converged is False
    assert result.value is not None and 37.0 * 0.8 <= result.value <= 37.0
    assert "did not narrow" in result.reason


@pytest.mark.parametrize("capacity", [37.0, 240.0, 455.0])
def test_an_overloaded_trials_completed_rate_takes_the_search_to_the_capacity(
    capacity: float,
) -> None:
    # the Offline probe far above the Server limit (the embedded harness's was 2.2x on the
    # device): LoadGen completes the overloaded first trial at about the capacity, and the
    # search goes just below it instead of stepping down blindly
    device = Device(capacity)
    result = tune(device, 500.0, tolerance=0.025)
    assert result.converged is True and result.short_trials <= 5, result.trials
    assert result.value is not None and capacity * (1 - 0.025) <= result.value <= capacity
    assert result.hi is not None and result.lo is not None and result.hi / result.lo <= 1.025


@pytest.mark.parametrize("bias", [0.85, 0.95, 1.05, 1.15])
@pytest.mark.parametrize("capacity", [110.0, 230.0, 480.0])
def test_a_completed_rate_off_the_capacity_only_guides_the_bracket(
    capacity: float, bias: float
) -> None:
    # LoadGen's completed rate of an overloaded run wanders around the capacity (the device's
    # coarse scan: 45856 to 53892 against a limit near 47000 to 49000): the bracket still moves
    # only on verdicts, so the value stays at or below the capacity and within the tolerance
    device = Device(capacity, rate_bias=bias)
    result = tune(device, 500.0, tolerance=0.025)
    assert result.short_trials <= 8, result.trials
    assert result.value is not None and result.value <= capacity
    assert result.value >= capacity * (1 - 0.025), result.trials


@pytest.mark.parametrize(
    ("metric", "rate"),
    [
        ({"name": "completed_samples_per_second", "value": 48672.7, "unit": "samples/s"}, 48672.7),
        ({"name": "samples_per_second", "value": 104196.0}, None),  # an Offline probe's
        (512.5, 512.5),
        (None, None),
        ({"name": "completed_samples_per_second", "value": None}, None),
        (True, None),
    ],
)
def test_the_completed_rate_is_read_from_the_hetero_runs_metric(metric: Any, rate: Any) -> None:
    assert completed_rate(metric) == rate


def test_a_capacity_below_every_probe_finds_nothing_and_confirms_nothing() -> None:
    device = Device(0.5)  # below the floor: 5% of 100
    result = tune(device, 100.0, floor_fraction=0.05)
    assert result.value is None and result.found is None
    assert all(kind == TRIAL for kind, _number, _target in device.calls)
    assert {t.verdict for t in result.trials} == {"INVALID"}
    # it went down to the floor (5.0) and stopped there
    assert min(t for _kind, _number, t in device.calls) == 5.0
    assert len(device.calls) <= 8
    assert "no short trial was VALID" in result.reason


def test_a_device_that_is_never_valid_in_the_trial_budget() -> None:
    device = Device(0.0)
    result = tune(device, 1000.0, max_trials=3, floor_fraction=0.001)
    assert result.value is None and len(device.calls) == 3
    assert result.converged is False


@pytest.mark.parametrize("seed", range(12))
def test_noisy_trials_and_a_failing_confirmation_step_down(seed: int) -> None:
    # short runs are noisy (+-3%), full-length runs are exact: a value found above the
    # capacity is caught by the confirmation and lowered by the tolerance until it holds
    capacity = 420.0
    device = Device(capacity, noise=0.03, seed=seed)
    result = tune(device, 500.0, tolerance=0.025, max_confirmations=4)
    assert result.short_trials <= 8
    assert result.value is not None
    assert result.value <= capacity  # the exact confirmation never lets a higher value through
    # within the tolerance plus the noise (and one step down of the tolerance)
    assert result.value >= capacity * (1 - 0.03) / 1.025 * (1 - 0.025), result
    confirms = [t for t in result.trials if t.kind == CONFIRM]
    assert confirms[-1].verdict == "VALID"
    assert all(t.verdict == "INVALID" for t in confirms[:-1])
    for before, after in itertools.pairwise(confirms):
        assert after.target == pytest.approx(before.target / 1.025, rel=1e-3)


def test_confirmations_that_all_fail_give_no_value() -> None:
    calls: list[tuple[str, int, float]] = []

    def run(kind: str, index: int, target: float, duration_ms: int | None) -> Outcome:
        calls.append((kind, index, target))
        return Outcome(kind == TRIAL and target <= 300.0)

    result = tune(run, 400.0, max_confirmations=2)
    assert result.value is None and result.found is not None
    assert [c[0] for c in calls].count(CONFIRM) == 2
    assert "INVALID" in result.reason


def test_search_brackets_the_capacity() -> None:
    found = search(Device(733.0), 1000.0, tolerance=0.02)
    lo, hi, converged, trials = found.lo, found.hi, found.converged, found.trials
    assert converged and lo is not None and hi is not None
    assert lo <= 733.0 < hi and hi / lo <= 1.02
    assert len(trials) <= 8
    assert all((t.verdict == "VALID") == (t.target <= 733.0) for t in trials)


def test_rounding_is_down_to_4_significant_digits() -> None:
    assert rounded(412.4873611) == 412.4
    assert rounded(0.012345) == 0.01234
    assert rounded(99999.0) == 99990.0


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"upper": 0}, "starting target"),
        ({"upper": 10, "tolerance": 0.9}, "tolerance"),
        ({"upper": 10, "max_trials": 0}, "max_trials"),
        ({"upper": 10, "step": 1.01}, "step"),
        ({"upper": 10, "floor_fraction": 1.0}, "floor_fraction"),
        ({"upper": 10, "max_confirmations": 0}, "max_confirmations"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], word: str) -> None:
    with pytest.raises(TuningError, match=word):
        check_settings(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------- trials too short for LoadGen
EARLY_STOPPING_QUERIES = 417 + 42  # tests/fixtures/loadgen/tuning/too-few-queries


@dataclass
class LoadGenDevice:
    """A device of known capacity under LoadGen's early stopping (module doc): a run of
    target x duration queries; too few -> TOO_SHORT with LoadGen's count, over the capacity ->
    TOO_HIGH (LoadGen's latency verdict comes first, as in the ``latency`` fixture), else
    VALID. A confirmation runs ``full_ms``."""

    capacity: float
    full_ms: int = 2000
    calls: list[tuple[str, float, int]] = field(default_factory=list)

    def __call__(self, kind: str, index: int, target: float, duration_ms: int | None) -> Outcome:
        length = self.full_ms if duration_ms is None else duration_ms
        self.calls.append((kind, target, length))
        if target > self.capacity:
            return Outcome(False, cause=Cause(TOO_HIGH, "performance constraints not satisfied"))
        queries = int(target * length / 1000.0)
        if queries < EARLY_STOPPING_QUERIES:
            return Outcome(
                False,
                cause=Cause(
                    TOO_SHORT,
                    "early stopping not satisfied",
                    queries,
                    EARLY_STOPPING_QUERIES,
                ),
            )
        return Outcome(True, metric=target)


def test_a_low_start_lengthens_its_too_short_trial_instead_of_stepping_down() -> None:
    # the failure of benchmarks/bench_tuning.py --tune-start 420 (docs/benchmarks.md): 1 s at
    # 420 QPS is too short for early stopping; reading it as "too high" stepped down for ever
    device = LoadGenDevice(600.0)
    result = tune(device, 420.0, trial_ms=1000, max_trial_ms=2000)
    assert result.value is not None, result.reason
    assert 600.0 * 0.97 <= result.value <= 600.0, result
    assert result.short_trials <= 8
    first, second = result.trials[0], result.trials[1]
    assert (first.target, first.duration_ms, first.cause) == (420.0, 1000, TOO_SHORT)
    # the same target again, long enough for the queries LoadGen asked for, and VALID
    assert second.target == 420.0 and second.verdict == "VALID"
    assert second.duration_ms is not None
    assert 420.0 * second.duration_ms / 1000.0 >= EARLY_STOPPING_QUERIES
    assert second.duration_ms <= 2000
    # no trial ever went below the start: a too-short trial is not "too high"
    assert min(t.target for t in result.trials) == 420.0
    # every trial read as too high really was above the capacity
    assert all(t.target > 600.0 for t in result.trials if t.cause == TOO_HIGH)
    assert result.lengthened == 1
    assert "too short for LoadGen" in result.reason


def test_later_trials_are_sized_for_the_queries_loadgen_asked_for() -> None:
    device = LoadGenDevice(600.0)
    result = tune(device, 420.0, trial_ms=1000, max_trial_ms=2000)
    # after the lesson, no trial is too short again, and none is shorter than the trial length
    assert [t.cause for t in result.trials].count(TOO_SHORT) == 1
    for trial in result.trials[1:]:
        if trial.kind == TRIAL:
            assert trial.duration_ms is not None and trial.duration_ms >= 1000
            assert trial.target * trial.duration_ms / 1000.0 >= EARLY_STOPPING_QUERIES


def test_a_start_from_the_probe_keeps_the_short_trial_length() -> None:
    # near the capacity a 1 s trial has enough queries: nothing is lengthened (as the lab test)
    device = LoadGenDevice(600.0)
    result = tune(device, 599.0, trial_ms=1000, max_trial_ms=2000)
    assert result.value is not None and 600.0 * 0.97 <= result.value <= 600.0
    assert {t.duration_ms for t in result.trials if t.kind == TRIAL} == {1000}
    assert result.lengthened == 0


def test_a_trial_still_too_short_at_the_full_length_ends_the_search() -> None:
    # 100 QPS: 459 queries need 4.6 s, the cell is 2 s long: no trial can be judged
    device = LoadGenDevice(600.0)
    result = tune(device, 100.0, trial_ms=1000, max_trial_ms=2000)
    assert result.value is None and result.found is None
    assert [(t.target, t.duration_ms, t.cause) for t in result.trials] == [
        (100.0, 1000, TOO_SHORT),
        (100.0, 2000, TOO_SHORT),
    ]
    assert "lengthen main_benchmark_duration" in result.reason
    assert all(kind == TRIAL for kind, _t, _d in device.calls)


def test_a_confirmation_too_short_for_loadgen_is_not_stepped_down() -> None:
    # short trials of 3 s are long enough at 200 QPS; the 2 s confirmation is not
    device = LoadGenDevice(200.0, full_ms=2000)
    result = tune(device, 200.0, trial_ms=3000, max_trial_ms=3000)
    assert result.value is None and result.found == 200.0
    confirms = [t for t in result.trials if t.kind == CONFIRM]
    assert [(t.target, t.cause) for t in confirms] == [(200.0, TOO_SHORT)]
    assert "too short for LoadGen" in result.reason


def test_an_inconclusive_trial_runs_again_and_a_second_one_counts_as_too_high() -> None:
    outcomes = {
        # target -> the causes of its runs, in order
        500.0: [OTHER, VALID],  # a background failed once, then VALID
        600.0: [OTHER, OTHER],  # twice: read as too high
    }
    seen: list[tuple[float, str]] = []

    def run(kind: str, index: int, target: float, duration_ms: int | None) -> Outcome:
        if kind == CONFIRM:
            return Outcome(True)
        queue = outcomes.get(target)
        cause = queue.pop(0) if queue else (VALID if target <= 550.0 else TOO_HIGH)
        seen.append((target, cause))
        if cause == VALID:
            return Outcome(True)
        return Outcome(False, cause=Cause(cause, cause))

    result = tune(run, 500.0, tolerance=0.025, max_trials=12)
    assert seen[:4] == [(500.0, OTHER), (500.0, VALID), (600.0, OTHER), (600.0, OTHER)]
    assert result.value is not None and 550.0 * 0.975 <= result.value <= 550.0
    assert result.trials[3].cause == OTHER
    assert result.hi is not None and result.hi <= 600.0


@dataclass
class OverBoundDevice(LoadGenDevice):
    """LoadGenDevice, but near the capacity some queries miss the bound: from ``edge`` up to
    the capacity early stopping wants ``needed_near_edge`` queries (with 2 over the bound), as
    in tests/fixtures/loadgen/tuning/some-overlatency (417 + 421 with 2 late)."""

    edge: float = 560.0
    needed_near_edge: int = 838

    def __call__(self, kind: str, index: int, target: float, duration_ms: int | None) -> Outcome:
        length = self.full_ms if duration_ms is None else duration_ms
        queries = int(target * length / 1000.0)
        if self.edge <= target <= self.capacity and queries < self.needed_near_edge:
            self.calls.append((kind, target, length))
            return Outcome(
                False,
                cause=Cause(TOO_SHORT, "early stopping", queries, self.needed_near_edge, 2),
            )
        return super().__call__(kind, index, target, duration_ms)


def test_a_short_trial_with_queries_over_the_bound_is_retried_longer_at_its_target_only() -> None:
    # 838 queries at ~600 QPS fit in the 2 s cell: the target runs again, longer; the count is
    # that target's, so later trials elsewhere keep the short length
    device = OverBoundDevice(600.0, full_ms=2000)
    result = tune(device, 590.0, trial_ms=1000, max_trial_ms=2000)
    first, second = result.trials[0], result.trials[1]
    assert (first.target, first.duration_ms, first.cause) == (590.0, 1000, TOO_SHORT)
    assert second.target == 590.0 and second.duration_ms is not None
    assert 590.0 * second.duration_ms / 1000.0 >= 838 and second.duration_ms <= 2000
    assert second.verdict == "VALID"
    later = [t for t in result.trials[2:] if t.kind == TRIAL and not 560.0 <= t.target <= 600.0]
    assert later and all(t.duration_ms == 1000 for t in later)
    assert result.value is not None and 560.0 <= result.value <= 600.0


def test_a_short_trial_over_the_bound_that_cannot_fit_the_cell_is_too_high() -> None:
    # early stopping wants 5000 queries near the capacity: more than 2 s at ~600 QPS gives, so
    # such a target cannot be shown VALID in this cell: read as too high at once, no retry
    device = OverBoundDevice(600.0, full_ms=2000, needed_near_edge=5000)
    result = tune(device, 590.0, trial_ms=1000, max_trial_ms=2000)
    first = result.trials[0]
    assert (first.target, first.verdict, first.cause) == (590.0, "INVALID", TOO_HIGH)
    assert first.why is not None and "read as too high" in first.why
    assert result.trials[1].target < 590.0  # stepped down, not repeated
    assert result.value is not None and result.value < 560.0
    assert all(t.cause != TOO_SHORT for t in result.trials)


def test_an_inconclusive_confirmation_runs_again_at_the_same_value() -> None:
    # the bench at load 26: a confirmation with no LoadGen result stepped down to 3.9% below
    # the capacity; it says nothing about the value, so the value is confirmed again
    confirms: list[tuple[float, str]] = []
    plan = [OTHER, VALID]

    def run(kind: str, index: int, target: float, duration_ms: int | None) -> Outcome:
        if kind == TRIAL:
            return Outcome(target <= 600.0)
        cause = plan.pop(0)
        confirms.append((target, cause))
        return Outcome(cause == VALID, cause=None if cause == VALID else Cause(cause, cause))

    result = tune(run, 590.0)
    assert confirms[0][0] == confirms[1][0] == result.value
    assert result.value is not None and 600.0 * 0.975 <= result.value <= 600.0
    assert result.confirmations == 2


def test_two_inconclusive_confirmations_step_down_like_a_too_high_one() -> None:
    targets: list[float] = []

    def run(kind: str, index: int, target: float, duration_ms: int | None) -> Outcome:
        if kind == TRIAL:
            return Outcome(target <= 600.0)
        targets.append(target)
        if len(targets) <= 2:
            return Outcome(False, cause=Cause(OTHER, "no LoadGen result"))
        return Outcome(True)

    result = tune(run, 590.0, max_confirmations=3)
    assert targets[0] == targets[1] and targets[2] == pytest.approx(targets[1] / 1.025, rel=1e-3)
    assert result.value == targets[2]
