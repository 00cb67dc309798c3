# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Target-QPS tuning under hetero load: the search, without any run (controller only).

Submitters tune a Server target in isolation, then lower it until the run stays VALID under
background load (FIELD_NOTES 1, "Tuning practice"). :func:`tune` does that with a bracketing
search over short trial runs, then one full-length confirmation run:

1. **Bracket.** The first trial runs at ``upper`` (the cell's ``tune_start``, or the samples/s
   of a short Offline probe). A VALID trial steps *up* by ``step`` (then ``step**2``,
   ``step**4``, ...) until one is INVALID; an INVALID one steps *down* the same way until one is
   VALID, never below ``upper * floor_fraction`` (a floor that is INVALID ends the search: no
   target is VALID).
2. **Narrow.** Between the highest VALID target ``lo`` and the lowest INVALID one ``hi`` the
   next trial runs at ``sqrt(lo * hi)`` (bisection on a log scale) until ``hi / lo <= 1 +
   tolerance``: the capacity lies in ``[lo, hi)``, so ``lo`` is within ``tolerance`` of it.
   At most ``max_trials`` trials in all; when they run out first, ``lo`` is taken as it is and
   the result says it did not converge.
3. **Confirm.** One full-length run at ``lo``. An INVALID confirmation (a short trial is a noisy
   witness) steps down by the tolerance, ``value / (1 + tolerance)``, and confirms again, at most
   ``max_confirmations`` times in all.

Pure: the runs are the callable ``run`` (kind, index, target) -> :class:`Outcome`, so the search
is unit-tested against a fake device of known capacity (tests/unit/test_campaign_tuning.py).
No Ansible imports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

TRIAL = "trial"
CONFIRM = "confirm"
VALID = "VALID"
INVALID = "INVALID"

DEFAULT_TOLERANCE = 0.025
DEFAULT_MAX_TRIALS = 8
DEFAULT_STEP = 1.2
DEFAULT_FLOOR_FRACTION = 0.05
DEFAULT_MAX_CONFIRMATIONS = 3
# the value written into the options is rounded to this many significant digits: 3 digits are
# finer than any tolerance allowed (0.1%), and 412.5 reads better than 412.4873611
SIGNIFICANT_DIGITS = 4


class TuningError(ValueError):
    """Bad search settings (the campaign checks them before anything runs)."""


@dataclass(frozen=True)
class Outcome:
    """What one run said: VALID or not, its headline metric, anything the caller keeps."""

    valid: bool
    metric: Any = None
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Trial:
    kind: str  # TRIAL (short) or CONFIRM (full length)
    index: int  # 1, 2, ... within its kind
    target: float
    verdict: str  # VALID or INVALID
    metric: Any = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "index": self.index,
            "target": self.target,
            "verdict": self.verdict,
            "metric": self.metric,
            **dict(self.info),
        }


@dataclass(frozen=True)
class Result:
    value: float | None  # the confirmed target (VALID at full length), else None
    found: float | None  # the search's highest VALID short-trial target, else None
    converged: bool  # the bracket narrowed to the tolerance within max_trials
    lo: float | None  # the final bracket: highest VALID ...
    hi: float | None  # ... and lowest INVALID short-trial target
    trials: list[Trial]  # every run in order, short trials and confirmations
    reason: str  # one line: what happened

    @property
    def short_trials(self) -> int:
        return sum(1 for t in self.trials if t.kind == TRIAL)

    @property
    def confirmations(self) -> int:
        return sum(1 for t in self.trials if t.kind == CONFIRM)


Runner = Callable[[str, int, float], Outcome]


def rounded(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """``value`` to ``digits`` significant digits, never above ``value`` (rounded down)."""
    if value <= 0 or not math.isfinite(value):
        return value
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(value)))
    return math.floor(value * scale + 1e-9) / scale


def check_settings(
    upper: float,
    tolerance: float = DEFAULT_TOLERANCE,
    max_trials: int = DEFAULT_MAX_TRIALS,
    step: float = DEFAULT_STEP,
    floor_fraction: float = DEFAULT_FLOOR_FRACTION,
    max_confirmations: int = DEFAULT_MAX_CONFIRMATIONS,
) -> None:
    """TuningError naming the first bad setting."""
    if not (isinstance(upper, (int, float)) and math.isfinite(upper) and upper > 0):
        raise TuningError("the starting target must be a number > 0, got %r" % (upper,))
    if not 0.001 <= tolerance <= 0.5:
        raise TuningError("tolerance must be between 0.001 and 0.5, got %r" % (tolerance,))
    if max_trials < 1:
        raise TuningError("max_trials must be >= 1, got %r" % (max_trials,))
    if step <= 1.0 + tolerance:
        raise TuningError("step must be greater than 1 + tolerance, got %r" % (step,))
    if not 0.0 < floor_fraction < 1.0:
        raise TuningError("floor_fraction must be between 0 and 1, got %r" % (floor_fraction,))
    if max_confirmations < 1:
        raise TuningError("max_confirmations must be >= 1, got %r" % (max_confirmations,))


def search(
    run: Runner,
    upper: float,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_trials: int = DEFAULT_MAX_TRIALS,
    step: float = DEFAULT_STEP,
    floor_fraction: float = DEFAULT_FLOOR_FRACTION,
    digits: int = SIGNIFICANT_DIGITS,
) -> tuple[float | None, float | None, bool, list[Trial]]:
    """Steps 1-2 (module doc): (lo, hi, converged, trials). lo is None when nothing was VALID.
    Every target is rounded down to ``digits`` significant digits before it runs."""
    check_settings(upper, tolerance, max_trials, step, floor_fraction)
    floor = upper * floor_fraction
    lo: float | None = None
    hi: float | None = None
    trials: list[Trial] = []
    target = float(upper)
    exponent = 1  # the next expansion's step is step ** exponent (1, 2, 4, ...)
    while len(trials) < max_trials:
        target = rounded(target, digits)
        if (lo is not None and target <= lo) or (hi is not None and target >= hi):
            return lo, hi, True, trials  # the rounding leaves nothing between lo and hi
        outcome = run(TRIAL, len(trials) + 1, target)
        trials.append(
            Trial(
                TRIAL,
                len(trials) + 1,
                target,
                VALID if outcome.valid else INVALID,
                outcome.metric,
                dict(outcome.info),
            )
        )
        if outcome.valid:
            lo = target
        else:
            hi = target
        if lo is not None and hi is not None:
            if hi / lo <= 1.0 + tolerance:
                return lo, hi, True, trials
            target = math.sqrt(lo * hi)
        elif lo is not None:  # every trial VALID so far: step up
            target = lo * step**exponent
            exponent *= 2
        else:  # every trial INVALID so far: step down, not below the floor
            if hi is None:
                raise AssertionError("no trial ran: the first one is always recorded")
            if hi <= rounded(floor, digits) * (1.0 + 1e-9):
                return None, hi, True, trials
            target = max(floor, hi / step**exponent)
            exponent *= 2
    return lo, hi, False, trials


def tune(
    run: Runner,
    upper: float,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_trials: int = DEFAULT_MAX_TRIALS,
    step: float = DEFAULT_STEP,
    floor_fraction: float = DEFAULT_FLOOR_FRACTION,
    max_confirmations: int = DEFAULT_MAX_CONFIRMATIONS,
    digits: int = SIGNIFICANT_DIGITS,
) -> Result:
    """The search, then the confirmation runs (module doc). ``run`` is called with kind TRIAL
    (short runs) and CONFIRM (full-length runs), an index counting from 1 within the kind, and
    the target. Targets passed to ``run`` are rounded down to ``digits`` significant digits."""
    check_settings(upper, tolerance, max_trials, step, floor_fraction, max_confirmations)
    lo, hi, converged, trials = search(
        run,
        upper,
        tolerance=tolerance,
        max_trials=max_trials,
        step=step,
        floor_fraction=floor_fraction,
        digits=digits,
    )
    if lo is None:
        return Result(
            None,
            None,
            converged,
            None,
            hi,
            trials,
            "no short trial was VALID, down to %g (the floor, %g x the start %g)"
            % (min(t.target for t in trials), floor_fraction, upper)
            if converged
            else "no short trial was VALID in %d trial(s), down to %g"
            % (len(trials), min(t.target for t in trials)),
        )
    found = lo
    value = found
    for index in range(1, max_confirmations + 1):
        outcome = run(CONFIRM, index, value)
        trials.append(
            Trial(
                CONFIRM,
                index,
                value,
                VALID if outcome.valid else INVALID,
                outcome.metric,
                dict(outcome.info),
            )
        )
        if outcome.valid:
            return Result(
                value,
                found,
                converged,
                lo,
                hi,
                trials,
                "tuned to %g: %d short trial(s)%s, confirmed at full length%s"
                % (
                    value,
                    sum(1 for t in trials if t.kind == TRIAL),
                    "" if converged else " (the bracket did not narrow to the tolerance)",
                    " after %d step(s) down" % (index - 1) if index > 1 else "",
                ),
            )
        if index < max_confirmations:
            value = rounded(value / (1.0 + tolerance), digits)
    return Result(
        None,
        found,
        converged,
        lo,
        hi,
        trials,
        "short trials found %g, but %d full-length confirmation(s) down to %g were INVALID"
        % (found, max_confirmations, value),
    )
