"""The target-QPS search (plugins/plugin_utils/_campaign_tuning.py) against fake devices.

The oracle is a device of known capacity: a run at target t is VALID iff t <= capacity (the
noisy variant moves the threshold of each short run by a seeded random amount). Every
expectation is written from the capacity, never from what the search returned.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_tuning import (
    CONFIRM,
    TRIAL,
    Outcome,
    TuningError,
    check_settings,
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
    calls: list[tuple[str, int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def __call__(self, kind: str, index: int, target: float) -> Outcome:
        self.calls.append((kind, index, target))
        spread = self.noise if kind == TRIAL else self.confirm_noise
        threshold = self.capacity * (1.0 + self.rng.uniform(-spread, spread))
        return Outcome(target <= threshold, metric=min(target, threshold), info={"n": index})


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
    # 7% of the start: the descent takes 5 trials, the bracket does not narrow in 8, and the
    # value is the highest VALID trial (below the capacity, confirmed), flagged as such
    device = Device(37.0)
    result = tune(device, 500.0, tolerance=0.025)
    assert result.short_trials == 8 and result.converged is False
    assert result.value is not None and 37.0 * 0.8 <= result.value <= 37.0
    assert "did not narrow" in result.reason


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

    def run(kind: str, index: int, target: float) -> Outcome:
        calls.append((kind, index, target))
        return Outcome(kind == TRIAL and target <= 300.0)

    result = tune(run, 400.0, max_confirmations=2)
    assert result.value is None and result.found is not None
    assert [c[0] for c in calls].count(CONFIRM) == 2
    assert "INVALID" in result.reason


def test_search_brackets_the_capacity() -> None:
    lo, hi, converged, trials = search(Device(733.0), 1000.0, tolerance=0.02)
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
