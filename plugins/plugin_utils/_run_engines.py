# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engines a planned hetero run needs, as heteromig.fleet.engine_build ``combinations``.

A hetero_run dry run (check mode) returns the run's plan: the main benchmark in its scenario and
every background (always Offline), after the background set is resolved against the host's
slices. Each becomes one engine; the main one at the ``99.9`` accuracy target when the run asks
``main_accuracy_target: high`` (engine_build's default is 99), the backgrounds at the default.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ACCURACY_TARGETS = {"default": "", "high": "99.9"}


class EngineError(ValueError):
    """The plan or the accuracy target is not what a hetero_run dry run returns."""


def run_engines(
    plan: Mapping[str, Any], main_accuracy_target: str = "default"
) -> list[dict[str, str]]:
    """Deduplicated engine_build combinations of ``plan`` (a hetero_run plan), sorted."""
    if main_accuracy_target not in ACCURACY_TARGETS:
        raise EngineError(
            "main_accuracy_target must be default or high, not %r" % (main_accuracy_target,)
        )
    benchmarks = plan.get("benchmarks") if isinstance(plan, Mapping) else None
    if not isinstance(benchmarks, list) or not benchmarks:
        raise EngineError(
            "not a hetero_run plan (no benchmarks): pass the 'plan' of a hetero_run dry run"
        )
    found: set[tuple[str, str, str]] = set()
    for bench in benchmarks:
        if (
            not isinstance(bench, Mapping)
            or not bench.get("benchmark")
            or not bench.get("scenario")
        ):
            raise EngineError("a planned benchmark without benchmark or scenario: %r" % (bench,))
        target = ACCURACY_TARGETS[main_accuracy_target] if bench.get("role") == "main" else ""
        found.add((str(bench["benchmark"]), str(bench["scenario"]), target))
    combos = []
    for benchmark, scenario, target in sorted(found):
        combo = {"benchmark": benchmark, "scenario": scenario}
        if target:
            combo["accuracy_target"] = target
        combos.append(combo)
    return combos
