# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Why a tuning trial was INVALID, in LoadGen's own terms (controller only, pure).

The target-QPS search (:mod:`_campaign_tuning`) must not read every INVALID as "the target is
too high". LoadGen's Server verdict fails for two different kinds of reasons:

- **Too high.** ``Performance constraints satisfied : NO`` (detail log
  ``result_perf_constraints_met: false``), with LoadGen's recommendation "Reduce target QPS to
  improve latency." (``result_invalid_reason``): the latency bound was broken.
- **Too short.** The latency held, but the run was too short for LoadGen to judge it:
  ``Early stopping satisfied: NO`` (LoadGen then says "Processed N queries. Would need to run
  at least M more queries"), ``Min duration satisfied : NO`` or ``Min queries satisfied : NO``
  (with "Increase the target QPS so the loadgen pre-generates more queries."). A longer trial
  at the same target answers the question; a lower target makes it worse (fewer queries).

Anything else (the hetero run INVALID while the main's LoadGen result is VALID, e.g. a
background that ended early; no LoadGen result at all) says nothing about the target: **other**.

The wording is LoadGen 6.0.17's, from real logs (tests/fixtures/loadgen/tuning/, written by its
``capture.py``). The input is the ``loadgen`` structure of the hetero_run result (parsed from
those logs by module_utils/agent/_loadgen_logs.py), LoadGen's early-stopping text (the detail log's
``early_stopping_result``, or the summary's "Early Stopping Result" lines) and, for a too-high
trial, how far its latency was over the bound (:func:`latency_against_bound`, from the detail
log's ``effective_target_latency_ns``, ``effective_target_latency_percentile`` and the result's
latency at that percentile). No Ansible imports.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_logs import (
    LENGTH_CHECKS,
)

VALID = "VALID"
TOO_HIGH = "too_high"
TOO_SHORT = "too_short"
OTHER = "other"
CAUSES = (VALID, TOO_HIGH, TOO_SHORT, OTHER)

# LoadGen's recommendation when the latency bound is broken (results.cc); LLM benchmarks prefix
# it with "TTFT constrain not met: " or "TPOT constrain not met: "
REDUCE_TARGET = "Reduce target QPS"
_PROCESSED = re.compile(r"Processed\s+(\d+)\s+queries")
_MORE = re.compile(r"Would need to run at least\s+(\d+)\s+more queries")
_SUMMARY_EARLY = re.compile(r"^Early Stopping Result:\s*\n((?:[ \t].*\n?)*)", re.M)

# a trial lengthened for too few queries aims this much above LoadGen's count (the count of a
# Server run is random: Poisson arrivals), and is rounded up to whole tenths of a second
QUERY_MARGIN = 1.25
ROUND_MS = 100


@dataclass(frozen=True)
class Cause:
    """One trial's cause (VALID, TOO_HIGH, TOO_SHORT or OTHER) and LoadGen's words for it."""

    cause: str
    why: str
    processed: int | None = None  # queries LoadGen processed (early stopping's count)
    queries_needed: int | None = None  # processed + "would need at least N more"
    overlatency: int | None = None  # queries over the latency bound (result_overlatency_...)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "why": self.why,
            "processed": self.processed,
            "queries_needed": self.queries_needed,
            "overlatency": self.overlatency,
        }


def early_stopping_text(summary: str) -> str | None:
    """The "Early Stopping Result:" lines of a ``mlperf_log_summary.txt`` (None when absent)."""
    match = _SUMMARY_EARLY.search(summary or "")
    return match.group(1) if match else None


def early_stopping_counts(text: str | None) -> tuple[int | None, int | None]:
    """(processed, more needed) from LoadGen's early-stopping result; None where not said."""
    if not text:
        return None, None
    processed = _PROCESSED.search(text)
    more = _MORE.search(text)
    return (
        int(processed.group(1)) if processed else None,
        int(more.group(1)) if more else None,
    )


def latency_against_bound(detail: Mapping[str, Any] | None) -> str | None:
    """LoadGen's latency at its target percentile against its latency bound, from the values of
    a detail log (``parse_detail``): "99th percentile latency 153.4 ms over the 50 ms bound", or
    "... within the 50 ms bound"; None when the log does not give all three (not a Server run,
    or a percentile LoadGen reports no result for)."""
    if not detail:
        return None
    bound = _number(detail.get("effective_target_latency_ns"))
    percentile = _number(detail.get("effective_target_latency_percentile"))
    if bound is None or percentile is None or not 0 < percentile < 1 or bound <= 0:
        return None
    # LoadGen logs the result at each percentile it reports as result_99.00_percentile_...
    value = _number(detail.get("result_%.2f_percentile_latency_ns" % (percentile * 100)))
    if value is None:
        return None
    return "%sth percentile latency %s ms %s the %s ms bound" % (
        "%g" % round(percentile * 100, 2),
        _ms(value),
        "over" if value > bound else "within",
        _ms(bound),
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _ms(ns: float) -> str:
    return "%.4g" % (ns / 1e6)


def classify(
    verdict: str | None,
    loadgen: Mapping[str, Any] | None,
    early_stopping: str | None = None,
    overlatency: int | None = None,
    latency: str | None = None,
) -> Cause:
    """The cause of one trial from its hetero verdict, its main's ``loadgen`` structure,
    LoadGen's early-stopping text, its count of queries over the latency bound (the detail
    log's ``result_overlatency_query_count``) and its latency against the bound
    (:func:`latency_against_bound`, said of a too-high trial; module doc)."""
    if verdict == VALID:
        return Cause(VALID, "VALID")
    loadgen = loadgen or {}
    validity = loadgen.get("result_validity")
    if validity is None:
        return Cause(OTHER, "no LoadGen result for the main benchmark")
    if validity == VALID:
        return Cause(
            OTHER,
            "the main's LoadGen result is VALID; the hetero run is INVALID for another reason",
        )
    reason = str(loadgen.get("invalid_reason") or "").strip()
    if loadgen.get("performance_constraints_satisfied") is False or REDUCE_TARGET in reason:
        return Cause(
            TOO_HIGH,
            "LoadGen: performance constraints not satisfied%s%s"
            % (": %s" % latency if latency else "", _said(reason)),
        )
    unmet = [words for key, words in LENGTH_CHECKS if loadgen.get(key) is False]
    if not unmet:
        return Cause(OTHER, "LoadGen INVALID without a reason it names%s" % _said(reason))
    processed, more = early_stopping_counts(early_stopping)
    needed = processed + more if processed is not None and more is not None else None
    return Cause(
        TOO_SHORT,
        "LoadGen: %s%s%s%s"
        % (
            ", ".join(unmet),
            "; processed %d queries, would need at least %d more" % (processed, more)
            if needed is not None
            else "",
            "; %d over the latency bound" % overlatency if overlatency else "",
            _said(reason),
        ),
        processed,
        needed,
        overlatency if isinstance(overlatency, int) and not isinstance(overlatency, bool) else None,
    )


def _said(reason: str) -> str:
    return " (%s)" % reason if reason else ""


def lengthened_ms(duration_ms: int, target: float, cause: Cause) -> int:
    """A trial length that gives LoadGen what a TOO_SHORT trial lacked: the queries early
    stopping asked for (plus QUERY_MARGIN) at ``target`` queries/s, else twice ``duration_ms``;
    never less than 1.2 x ``duration_ms``. Rounded up to ROUND_MS."""
    wanted = 2.0 * duration_ms
    if cause.queries_needed and target > 0:
        wanted = cause.queries_needed * QUERY_MARGIN / target * 1000.0
    wanted = max(wanted, 1.2 * duration_ms)
    return _round_up(wanted)


def queries_to_ask(duration_ms: int, target: float, cause: Cause) -> int:
    """The query count a TOO_SHORT trial teaches: what :func:`lengthened_ms` asks for, as a
    count, so that :func:`duration_for` gives later trials (at any target) that length."""
    length = lengthened_ms(duration_ms, target, cause)
    return max(cause.queries_needed or 0, math.floor(length / 1000.0 * target / QUERY_MARGIN))


def duration_for(trial_ms: int, target: float, min_queries: int) -> int:
    """The length of a trial at ``target``: ``trial_ms``, or longer so that it issues about
    ``min_queries`` x QUERY_MARGIN queries (what an earlier too-short trial taught)."""
    if min_queries <= 0 or target <= 0:
        return trial_ms
    return max(trial_ms, _round_up(min_queries * QUERY_MARGIN / target * 1000.0))


def _round_up(ms: float) -> int:
    return int(math.ceil(ms / ROUND_MS - 1e-9) * ROUND_MS)
