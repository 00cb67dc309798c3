# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HeteroMIG choreography's pure checks: the readiness markers and the scanners that find
them (and progress counts) in a benchmark's output, steady throughput, and the verdict inputs
(LoadGen and accuracy problems, the timed windows and whether a background covered the main's).

No I/O: the state machine (``_hetero_choreo``) calls the checks, its driver feeds the scanners.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import (
    ACCURACY_ONLY,
    PERFORMANCE_ONLY,
    VALID,
    Bench,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_logs import (
    LATENCY_CHECK,
    LENGTH_CHECKS,
)

# Readiness markers (regexes over one output line). NVIDIA's C++ harnesses print a line ending
# in "running actual test." right before LoadGen's StartTest; its Triton harness prints "Start
# running actual test" (no period); LoadGen itself prints "Loadgen :: Perf mode start" when
# print_timestamps is on.
DEFAULT_READINESS_REGEXES = (
    r"running actual test\.\s*$",
    r"Start running actual test",
    r"Loadgen :: Perf mode start",
)


# --------------------------------------------------------------------------- pure helpers
def performance_problems(loadgen: Dict[str, Any]) -> List[str]:
    """Why a PerformanceOnly main's LoadGen result does not count (empty when it is VALID)."""
    validity = loadgen.get("result_validity")
    if validity is None:
        return [
            "no LoadGen result for the main benchmark (mlperf_log_detail.txt and "
            "mlperf_log_summary.txt missing or incomplete)"
        ]
    if validity == VALID:
        return []
    unmet = [words for key, words in (*LENGTH_CHECKS, LATENCY_CHECK) if loadgen.get(key) is False]
    if loadgen.get("invalid_reason"):
        unmet.append(loadgen["invalid_reason"])
    return [
        "the main benchmark's LoadGen result is %s%s"
        % (validity, (": " + "; ".join(unmet)) if unmet else "")
    ]


def accuracy_problems(loadgen: Dict[str, Any], accuracy: Optional[Dict[str, Any]]) -> List[str]:
    """Why an AccuracyOnly main does not count (empty when its accuracy check PASSED).

    LoadGen writes no ``result_validity`` in accuracy mode; what counts is that LoadGen ran in
    AccuracyOnly mode and the harness's accuracy check passed.
    """
    problems = []
    mode = loadgen.get("mode")
    if loadgen.get("source") is None:
        problems.append(
            "no LoadGen log for the main benchmark's accuracy run (mlperf_log_detail.txt and "
            "mlperf_log_summary.txt missing)"
        )
    elif mode is not None and mode != ACCURACY_ONLY:
        problems.append(
            "the main benchmark's LoadGen ran in %s mode, not %s" % (mode, ACCURACY_ONLY)
        )
    passed = (accuracy or {}).get("passed")
    if passed is None:
        problems.append(
            "no accuracy result for the main benchmark (its accuracy check wrote no PASS or "
            "FAIL line)"
        )
    elif not passed:
        problems.append(
            "the main benchmark's accuracy check FAILED: %s" % (accuracy or {}).get("summary")
        )
    return problems


def main_window(main: Bench, mode: str = PERFORMANCE_ONLY) -> Optional[Dict[str, Any]]:
    """The main benchmark's timed window: LoadGen's power window, else its marker to its exit.

    An accuracy run's power window is an instant at its end (LoadGen logs both ends together),
    so there the window runs from its marker to its exit: the whole accuracy pass.
    """
    begin, end = main.loadgen.get("power_begin"), main.loadgen.get("power_end")
    if begin is not None and end is not None and mode != ACCURACY_ONLY:
        return {"begin": begin, "end": end, "source": "power_begin/power_end"}
    if main.ended_at is None or main.launched_at is None:
        return None
    if main.ready_at is not None:
        return {"begin": main.ready_at, "end": main.ended_at, "source": "markers"}
    return {"begin": main.launched_at, "end": main.ended_at, "source": "launch/exit"}


def background_window(bench: Bench) -> Optional[Dict[str, Any]]:
    """A background's timed phase: from its marker (or power_begin) to power_end or its end."""
    begin = bench.loadgen.get("power_begin")
    end = bench.loadgen.get("power_end")
    if begin is not None and end is not None:
        return {"begin": begin, "end": end, "source": "power_begin/power_end"}
    start = begin if begin is not None else bench.ready_at
    if start is None or bench.ended_at is None:
        return None
    source = "power_begin/exit" if begin is not None else "markers"
    return {"begin": start, "end": bench.ended_at, "source": source}


def overlap_problem(
    bench: Bench, window: Optional[Dict[str, Any]], main: Dict[str, Any], origin: float
) -> Optional[str]:
    """Why ``bench``'s timed phase does not cover the main window, or None when it does."""
    if window is None:
        return "never reached its timed phase, so it cannot have covered the main timed window"

    def rel(value: float) -> str:
        return "%+.3f s" % (value - origin)

    if window["begin"] > main["begin"]:
        return "entered its timed phase at %s, after the main timed window began at %s" % (
            rel(window["begin"]),
            rel(main["begin"]),
        )
    if window["end"] < main["end"]:
        return "left its timed phase at %s, before the main timed window ended at %s" % (
            rel(window["end"]),
            rel(main["end"]),
        )
    return None


def steady(
    samples: List[Tuple[float, float]], now: float, window: float, windows: int, tolerance: float
) -> bool:
    """Whether the last ``windows`` windows of ``window`` seconds show the same rate.

    ``samples`` are (time, cumulative count). Rates are taken between the count at each window
    edge (the last sample at or before the edge); the spread (max - min) / mean of the rates
    must be within ``tolerance`` and every rate positive.
    """
    if len(samples) < 2 or samples[0][0] > now - window * windows:
        return False

    def value_at(edge: float) -> Optional[float]:
        found = None
        for t, value in samples:
            if t > edge:
                break
            found = value
        return found

    edges = [now - window * k for k in range(windows, -1, -1)]
    values = [value_at(edge) for edge in edges]
    if any(v is None for v in values):
        return False
    rates = [(b - a) / window for a, b in zip(values, values[1:])]  # type: ignore[operator]
    mean = sum(rates) / len(rates)
    if min(rates) <= 0 or mean <= 0:
        return False
    return (max(rates) - min(rates)) / mean <= tolerance


class LineScanner:
    """Finds the first complete output line that matches any of ``patterns`` (bytes regexes).

    ``feed`` takes raw chunks as read from a pipe (lines may span chunks); only complete lines
    are matched, as a line-by-line reader would, but the search runs over whole chunks.
    """

    def __init__(self, patterns: Tuple[str, ...], max_line: int = 65536) -> None:
        if not patterns:
            raise ValueError("at least one readiness regex is needed")
        self.regex = re.compile(
            "|".join("(?:%s)" % p for p in patterns).encode("utf-8"), re.MULTILINE
        )
        self.max_line = max_line
        self._tail = b""

    def feed(self, chunk: bytes) -> Optional[str]:
        end = chunk.rfind(b"\n")
        if end < 0:
            self._tail = (self._tail + chunk)[-self.max_line :]
            return None
        if self._tail:
            data = self._tail + chunk[: end + 1]
            self._tail = chunk[end + 1 :][-self.max_line :]
        else:
            data = chunk[: end + 1] if end + 1 < len(chunk) else chunk
            self._tail = chunk[end + 1 :][-self.max_line :]
        match = self.regex.search(data)
        if match is None:
            return None
        start = data.rfind(b"\n", 0, match.start()) + 1
        stop = data.find(b"\n", match.end())
        return data[start : stop if stop >= 0 else len(data)].decode("utf-8", "replace").rstrip()


class ProgressScanner:
    """The last progress count in a chunk: ``pattern`` has a group named ``count``."""

    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(pattern.encode("utf-8"), re.MULTILINE)
        if "count" not in self.regex.groupindex:
            raise ValueError("progress_regex needs a named group 'count': %s" % pattern)
        self._tail = b""

    def feed(self, chunk: bytes) -> Optional[float]:
        end = chunk.rfind(b"\n")
        if end < 0:
            self._tail = (self._tail + chunk)[-65536:]
            return None
        data = self._tail + chunk[: end + 1]
        self._tail = chunk[end + 1 :]
        last = None
        for match in self.regex.finditer(data):
            last = match
        if last is None:
            return None
        try:
            return float(last.group("count"))
        except ValueError:
            return None
