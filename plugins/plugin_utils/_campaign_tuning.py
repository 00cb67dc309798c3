# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Target-QPS tuning under hetero load: the search, without any run (controller only).

Submitters tune a Server target in isolation, then lower it until the run stays VALID under
background load (FIELD_NOTES 1, "Tuning practice"). :func:`tune` does that with a bracketing
search over short trial runs, then one full-length confirmation run. Each INVALID trial has a
cause (:mod:`_campaign_trial_cause`, in LoadGen's own terms), and only some causes say where
the limit is:

- **too high** (LoadGen's latency constraint broken): the target is above the limit;
- **too short** (the latency held, but early stopping, min duration or min queries was not
  satisfied): the trial said nothing about the target. It runs again at the same target, longer
  (long enough for the queries LoadGen asked for). When no query missed the latency bound, the
  count is what early stopping needs whatever the target, and later trials are sized for it at
  their own target (never shorter than the trial length). When some queries missed the bound
  and the count asked for does not fit in ``max_trial_ms`` (the full length), the target cannot
  be shown VALID in the cell: it is read as too high;
- **other** (e.g. the main's LoadGen VALID but the hetero run INVALID for a background): the
  trial runs once more at the same target; a second one is read as too high.

Every run counts as a short trial, the repeated ones too. The search:

1. **Bracket.** The first trial runs at ``upper`` (the cell's ``tune_start``, or the samples/s
   of a short Offline probe). A VALID trial steps *up* by ``step`` (then ``step**2``,
   ``step**4``, ...) until one is too high; a too-high one steps *down* the same way until one
   is VALID, never below ``upper * floor_fraction`` (a floor that is too high ends the search:
   no target is VALID). A too-high trial's completed samples/s (LoadGen completes an overloaded
   Server run at about the capacity) is an estimate of the limit: where it lies below one step
   down, the next trial goes just below it instead.
2. **Narrow.** Between the highest VALID target ``lo`` and the lowest too-high one ``hi`` the
   next trial runs at ``sqrt(lo * hi)`` (bisection on a log scale), or half a tolerance above
   (else below) the estimate where that lies inside the bracket, or, once a VALID trial passed
   the estimate, ``lo`` times a growing step, until ``hi / lo <= 1 + tolerance``. The estimate
   only chooses where to try; the bracket moves on verdicts alone: the capacity lies in
   ``[lo, hi)``, so ``lo`` is within ``tolerance`` of it. At most ``max_trials`` trials in all; when they run out first, ``lo`` is taken as it is and
   the result says it did not converge. A trial that would have to be longer than
   ``max_trial_ms`` (the full length) runs at that length; one that is still too short there
   ends the search (the cell's length cannot give LoadGen enough queries at that target).
3. **Confirm.** One full-length run at ``lo``. A too-high confirmation (a short trial is a noisy
   witness) steps down by the tolerance, ``value / (1 + tolerance)``, and confirms again, at most
   ``max_confirmations`` times in all; an inconclusive one (other) runs once more at the same
   value (a second one steps down); a confirmation too short for LoadGen ends the tuning.

Pure: the runs are the callable ``run`` (kind, index, target, duration_ms) -> :class:`Outcome`
(duration_ms is None for a confirmation: the cell's own length), so the search is unit-tested
against fake devices of known capacity (tests/unit/test_campaign_tuning.py). No Ansible imports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_trial_cause import (
    OTHER,
    TOO_HIGH,
    TOO_SHORT,
    Cause,
    duration_for,
    queries_to_ask,
)

TRIAL = "trial"
CONFIRM = "confirm"
VALID = "VALID"
INVALID = "INVALID"

DEFAULT_TOLERANCE = 0.025
DEFAULT_MAX_TRIALS = 8
DEFAULT_STEP = 1.2
DEFAULT_FLOOR_FRACTION = 0.05
DEFAULT_MAX_CONFIRMATIONS = 3
DEFAULT_TRIAL_MS = 1000
# the value written into the options is rounded to this many significant digits: 3 digits are
# finer than any tolerance allowed (0.1%), and 412.5 reads better than 412.4873611
SIGNIFICANT_DIGITS = 4


class TuningError(ValueError):
    """Bad search settings (the campaign checks them before anything runs)."""


@dataclass(frozen=True)
class Outcome:
    """What one run said: VALID or not, why (None: VALID, or too high when INVALID), its
    headline metric, anything the caller keeps."""

    valid: bool
    metric: Any = None
    info: Mapping[str, Any] = field(default_factory=dict)
    cause: Cause | None = None

    @property
    def reads_as(self) -> str:
        """VALID, TOO_HIGH, TOO_SHORT or OTHER."""
        if self.valid:
            return VALID
        if self.cause is None or self.cause.cause == VALID:
            return TOO_HIGH
        return self.cause.cause


@dataclass(frozen=True)
class Trial:
    kind: str  # TRIAL (short) or CONFIRM (full length)
    index: int  # 1, 2, ... within its kind
    target: float
    verdict: str  # VALID or INVALID
    metric: Any = None
    info: Mapping[str, Any] = field(default_factory=dict)
    cause: str = VALID  # how the search read it: VALID, TOO_HIGH, TOO_SHORT or OTHER
    why: str | None = None  # LoadGen's words for it
    duration_ms: int | None = None  # the trial's length (None: a full-length confirmation)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "index": self.index,
            "target": self.target,
            "duration_ms": self.duration_ms,
            "verdict": self.verdict,
            "cause": self.cause,
            "why": self.why,
            "metric": self.metric,
            **dict(self.info),
        }


@dataclass(frozen=True)
class Searched:
    """What the search (steps 1-2) found."""

    lo: float | None  # the highest VALID short-trial target, None when nothing was VALID
    hi: float | None  # the lowest too-high one
    converged: bool  # the bracket narrowed to the tolerance (or nothing lies between)
    trials: list[Trial]
    stopped: str | None = None  # why it ended early (a trial too short at the full length)


@dataclass(frozen=True)
class Result:
    value: float | None  # the confirmed target (VALID at full length), else None
    found: float | None  # the search's highest VALID short-trial target, else None
    converged: bool  # the bracket narrowed to the tolerance within max_trials
    lo: float | None  # the final bracket: highest VALID ...
    hi: float | None  # ... and lowest too-high short-trial target
    trials: list[Trial]  # every run in order, short trials and confirmations
    reason: str  # one line: what happened

    @property
    def short_trials(self) -> int:
        return sum(1 for t in self.trials if t.kind == TRIAL)

    @property
    def confirmations(self) -> int:
        return sum(1 for t in self.trials if t.kind == CONFIRM)

    @property
    def lengthened(self) -> int:
        """Short trials repeated longer because LoadGen found them too short."""
        return sum(1 for t in self.trials if t.kind == TRIAL and t.cause == TOO_SHORT)


Runner = Callable[[str, int, float, int | None], Outcome]


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
    trial_ms: int = DEFAULT_TRIAL_MS,
    max_trial_ms: int | None = None,
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
    if trial_ms < 1:
        raise TuningError("the trial duration must be >= 1 ms, got %r" % (trial_ms,))
    if max_trial_ms is not None and max_trial_ms < trial_ms:
        raise TuningError(
            "the longest trial (%r ms) is shorter than the trial duration (%r ms)"
            % (max_trial_ms, trial_ms)
        )


def search(
    run: Runner,
    upper: float,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_trials: int = DEFAULT_MAX_TRIALS,
    step: float = DEFAULT_STEP,
    floor_fraction: float = DEFAULT_FLOOR_FRACTION,
    digits: int = SIGNIFICANT_DIGITS,
    trial_ms: int = DEFAULT_TRIAL_MS,
    max_trial_ms: int | None = None,
) -> Searched:
    """Steps 1-2 (module doc). Every target is rounded down to ``digits`` significant digits
    before it runs; each trial runs ``trial_ms`` or longer (what too-short trials taught),
    never longer than ``max_trial_ms``."""
    check_settings(
        upper,
        tolerance,
        max_trials,
        step,
        floor_fraction,
        trial_ms=trial_ms,
        max_trial_ms=max_trial_ms,
    )
    floor = upper * floor_fraction
    lo: float | None = None
    hi: float | None = None
    trials: list[Trial] = []
    target = float(upper)
    exponent = 1  # the next expansion's step is step ** exponent (1, 2, 4, ...)
    min_queries = 0  # the query count LoadGen asked for in a too-short trial
    next_ms: int | None = None  # the retry of a too-short trial with queries over the bound
    repeat = False  # the next trial repeats the last target (too short, or other)
    # the lowest completed samples/s of a too-high trial: LoadGen completes an overloaded Server
    # run at about the capacity, so it says where to look; the bracket still moves only on
    # verdicts
    estimate: float | None = None
    climb = 1  # the step exponent from lo once the estimate has been passed (1, 2, 4, ...)
    while len(trials) < max_trials:
        if not repeat:
            target = rounded(target, digits)
            if (lo is not None and target <= lo) or (hi is not None and target >= hi):
                return Searched(lo, hi, True, trials)  # the rounding leaves nothing between
        duration = duration_for(trial_ms, target, min_queries)
        if next_ms is not None:
            duration, next_ms = max(duration, next_ms), None
        if max_trial_ms is not None:
            duration = min(duration, max_trial_ms)
        outcome = run(TRIAL, len(trials) + 1, target, duration)
        reads = outcome.reads_as
        cause = outcome.cause
        trials.append(
            Trial(
                TRIAL,
                len(trials) + 1,
                target,
                VALID if outcome.valid else INVALID,
                outcome.metric,
                dict(outcome.info),
                reads,
                cause.why if cause is not None and not outcome.valid else None,
                duration,
            )
        )
        if reads == TOO_SHORT:
            short = cause or Cause(TOO_SHORT, "")
            asked = queries_to_ask(duration, target, short)
            longer = duration_for(trial_ms, target, max(min_queries, asked))
            capped = max_trial_ms is not None and (
                duration >= max_trial_ms or longer > max_trial_ms
            )
            if capped and short.overlatency:
                # queries over the bound, and LoadGen's count does not fit in the full length:
                # this target cannot be shown VALID in the cell, it is too high
                reads = TOO_HIGH
                trials[-1] = replace(
                    trials[-1],
                    cause=TOO_HIGH,
                    why="%s; more than the full length (%s ms) gives: read as too high"
                    % (short.why, max_trial_ms),
                )
            elif max_trial_ms is not None and duration >= max_trial_ms:
                return Searched(
                    lo,
                    hi,
                    False,
                    trials,
                    "a trial at %g QPS, already at the full length (%d ms), was still too "
                    "short for LoadGen (%s): lengthen main_benchmark_duration"
                    % (target, duration, short.why or "too short"),
                )
            else:
                if short.overlatency:
                    # the count is this target's (queries missed the bound): its retry only
                    next_ms = longer
                else:
                    # a count early stopping needs whatever the target: every later trial
                    min_queries = max(min_queries, asked)
                repeat = True
                continue
        if reads == OTHER and not (
            repeat and trials[-2].cause == OTHER and trials[-2].target == target
        ):
            repeat = True  # says nothing about the target: once more
            continue
        repeat = False
        if reads == VALID:
            lo = target
        else:  # too high, or a second OTHER at the same target
            hi = target
            if reads == TOO_HIGH:
                rate = completed_rate(outcome.metric)
                if rate is not None and 0 < rate < target and (estimate is None or rate < estimate):
                    estimate = rate
        if lo is not None and hi is not None:
            if hi / lo <= 1.0 + tolerance:
                return Searched(lo, hi, True, trials)
            target = _inside(lo, hi, estimate, tolerance) or math.sqrt(lo * hi)
            if estimate is not None and lo * step**climb < target:
                # the estimate was low (VALID above it): climb from lo, as when nothing is known
                # above it, rather than bisect the wide bracket the jump left
                target = lo * step**climb
                climb *= 2
        elif lo is not None:  # every trial VALID so far: step up
            target = lo * step**exponent
            exponent *= 2
        else:  # every trial too high so far: step down, not below the floor
            if hi is None:
                raise AssertionError("no trial ran: the first one is always recorded")
            if hi <= rounded(floor, digits) * (1.0 + 1e-9):
                return Searched(None, hi, True, trials)
            if estimate is not None and estimate / (1.0 + tolerance) < hi / step:
                # an overloaded Server run completes at about the capacity: go just below it
                target = max(floor, estimate / (1.0 + tolerance))
            else:
                target = max(floor, hi / step**exponent)
                exponent *= 2
    return Searched(lo, hi, False, trials)


def completed_rate(metric: Any) -> float | None:
    """The completed samples/s of a Server trial's LoadGen result (the hetero run's headline
    metric, or a bare number), else None."""
    if isinstance(metric, Mapping):
        if metric.get("name") not in (None, "completed_samples_per_second"):
            return None
        metric = metric.get("value")
    if isinstance(metric, bool) or not isinstance(metric, (int, float)):
        return None
    return float(metric) if math.isfinite(metric) else None


def _inside(lo: float, hi: float, estimate: float | None, tolerance: float) -> float | None:
    """Where to try next inside the bracket ``(lo, hi)``, guided by the capacity ``estimate``:
    half a tolerance above it, else half a tolerance below it, whichever lies strictly inside
    (so the bracket shrinks whatever the verdict); None: bisect."""
    if estimate is None:
        return None
    half = math.sqrt(1.0 + tolerance)
    margin = 1.0 + tolerance / 10.0
    for candidate in (estimate * half, estimate / half):
        if lo * margin < candidate < hi / margin:
            return candidate
    return None


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
    trial_ms: int = DEFAULT_TRIAL_MS,
    max_trial_ms: int | None = None,
) -> Result:
    """The search, then the confirmation runs (module doc). ``run`` is called with kind TRIAL
    (short runs, with their length in ms) and CONFIRM (full-length runs, length None), an index
    counting from 1 within the kind, and the target. Targets passed to ``run`` are rounded down
    to ``digits`` significant digits."""
    check_settings(
        upper,
        tolerance,
        max_trials,
        step,
        floor_fraction,
        max_confirmations,
        trial_ms,
        max_trial_ms,
    )
    found_by = search(
        run,
        upper,
        tolerance=tolerance,
        max_trials=max_trials,
        step=step,
        floor_fraction=floor_fraction,
        digits=digits,
        trial_ms=trial_ms,
        max_trial_ms=max_trial_ms,
    )
    lo, hi, converged, trials = found_by.lo, found_by.hi, found_by.converged, found_by.trials
    lengthened = sum(1 for t in trials if t.cause == TOO_SHORT)
    counted = "%d short trial(s)%s" % (
        len(trials),
        " (%d of them too short for LoadGen, run again longer)" % lengthened if lengthened else "",
    )
    if lo is None:
        if found_by.stopped:
            reason = "no short trial was VALID: %s" % found_by.stopped
        elif converged:
            reason = "no short trial was VALID, down to %g (the floor, %g x the start %g)" % (
                min(t.target for t in trials),
                floor_fraction,
                upper,
            )
        else:
            reason = "no short trial was VALID in %s, down to %g" % (
                counted,
                min(t.target for t in trials),
            )
        return Result(None, None, converged, None, hi, trials, reason)
    found = lo
    value = found

    def unconfirmed(reason: str) -> Result:
        return Result(None, found, converged, lo, hi, trials, reason)

    for index in range(1, max_confirmations + 1):
        outcome = run(CONFIRM, index, value, None)
        reads = outcome.reads_as
        trials.append(
            Trial(
                CONFIRM,
                index,
                value,
                VALID if outcome.valid else INVALID,
                outcome.metric,
                dict(outcome.info),
                reads,
                outcome.cause.why if outcome.cause is not None and not outcome.valid else None,
                None,
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
                "tuned to %g: %s%s, confirmed at full length%s"
                % (
                    value,
                    counted,
                    (" (the search stopped: %s)" % found_by.stopped)
                    if found_by.stopped
                    else ""
                    if converged
                    else " (the bracket did not narrow to the tolerance)",
                    " after %d step(s) down" % (index - 1) if index > 1 else "",
                ),
            )
        if reads == TOO_SHORT:
            return unconfirmed(
                "short trials found %g, but the full-length confirmation at %g was too short "
                "for LoadGen (%s): lengthen main_benchmark_duration"
                % (found, value, outcome.cause.why if outcome.cause else "too short"),
            )
        if index < max_confirmations:
            again = reads == OTHER and not (
                index > 1 and trials[-2].kind == CONFIRM and trials[-2].cause == OTHER
            )
            if not again:  # an inconclusive confirmation runs once more at the same value
                value = rounded(value / (1.0 + tolerance), digits)
    return unconfirmed(
        "short trials found %g, but %d full-length confirmation(s) down to %g were INVALID"
        % (found, max_confirmations, value),
    )
