# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read MLPerf LoadGen's logs: validity, the scenario's headline metric, latencies, timed window.

``mlperf_log_detail.txt`` holds one ``:::MLLOG {json}`` record per line (keys such as
``result_validity``, ``result_samples_per_second``, ``power_begin``); it is preferred.
``mlperf_log_summary.txt`` (``Result is : VALID``, ``Samples per second: ...``) is the fallback
when the detail log is missing or has no result (an older LoadGen, a truncated run).

Pure functions over text, plus ``find_loadgen_dirs``/``read_loadgen_dir`` that read files. No
other I/O.

Times: LoadGen writes ``power_begin``/``power_end`` (``MM-DD-YYYY HH:MM:SS.mmm``) in **UTC**,
whatever the benchmark process's ``TZ`` is (checked with LoadGen 6.0.17 under UTC,
America/New_York and Asia/Tokyo: tests/fixtures/loadgen/tz/). ``parse_power_time`` is the one
place that turns them into epoch seconds, and it never consults the local zone. (LoadGen's
``test_datetime`` is the opposite: local time with a misleading ``Z``; nothing here reads it.)
"""

from __future__ import annotations

import calendar
import contextlib
import datetime
import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

DETAIL_LOG = "mlperf_log_detail.txt"
SUMMARY_LOG = "mlperf_log_summary.txt"
LOADGEN_FILES = (
    SUMMARY_LOG,
    DETAIL_LOG,
    "mlperf_log_accuracy.json",
    "mlperf_log_trace.json",
)
MLLOG_PREFIX = ":::MLLOG "

# The checks of a parsed LoadGen result (parse_loadgen's keys) that say a run was too short,
# and the words that name each one failing; then the latency check.
LENGTH_CHECKS = (
    ("min_duration_satisfied", "min duration not satisfied"),
    ("min_queries_satisfied", "min queries not satisfied"),
    ("early_stopping_met", "early stopping not satisfied"),
)
LATENCY_CHECK = ("performance_constraints_satisfied", "latency constraint not met")

# Percentiles reported in the result, as contract keys -> LoadGen's key infix.
_PERCENTILES = (
    ("p50", "50.00"),
    ("p90", "90.00"),
    ("p95", "95.00"),
    ("p97", "97.00"),
    ("p99", "99.00"),
    ("p99.9", "99.90"),
)

# The scenario's headline metric: (contract name, unit, detail keys tried in order).
_HEADLINE = {
    "Offline": ("samples_per_second", "samples/s", ("result_samples_per_second",)),
    "Server": (
        "completed_samples_per_second",
        "samples/s",
        ("result_completed_samples_per_sec", "result_scheduled_samples_per_sec"),
    ),
    "SingleStream": ("p90_latency_ns", "ns", ("result_90.00_percentile_latency_ns",)),
    "MultiStream": (
        "p99_latency_ns",
        "ns",
        ("result_99.00_percentile_per_query_latency_ns", "result_99.00_percentile_latency_ns"),
    ),
}

_SUMMARY_PATTERNS = {
    "scenario": re.compile(r"^Scenario\s*:\s*(\S+)", re.M),
    "mode": re.compile(r"^Mode\s*:\s*(\S+)", re.M),
    "validity": re.compile(r"^Result is\s*:\s*(VALID|INVALID)", re.M),
    "min_duration": re.compile(r"Min duration satisfied\s*:\s*(Yes|NO|No)", re.M),
    "min_queries": re.compile(r"Min queries satisfied\s*:\s*(Yes|NO|No)", re.M),
    "early_stopping": re.compile(r"Early stopping satisfied\s*:\s*(Yes|NO|No)", re.M),
    "perf_constraints": re.compile(r"Performance constraints satisfied\s*:\s*(Yes|NO|No)", re.M),
    "samples_per_second": re.compile(r"^Samples per second\s*:\s*(\S+)", re.M),
    "completed_samples_per_second": re.compile(r"^Completed samples per second\s*:\s*(\S+)", re.M),
    "scheduled_samples_per_second": re.compile(r"^Scheduled samples per second\s*:\s*(\S+)", re.M),
    "ss_p90": re.compile(r"^90\.0th percentile latency \(ns\)\s*:\s*(\S+)", re.M),
    "ms_p99": re.compile(r"^99\.0th percentile latency \(ns\)\s*:\s*(\S+)", re.M),
    "errors": re.compile(r"^(\d+) ERRORS? encountered", re.M),
}
_SUMMARY_PERCENTILE = re.compile(r"^(\d+\.\d+) percentile latency \(ns\)\s*:\s*(\d+)", re.M)
_UTC = datetime.timezone.utc
_POWER_TIME = re.compile(r"^(\d{2})-(\d{2})-(\d{4}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$")


def parse_power_time(text: Any) -> Optional[float]:
    """LoadGen's ``power_begin`` value ``"11-22-2026 05:41:17.924"`` (UTC) -> epoch seconds.

    None for anything that is not such a time (wrong shape, impossible date).
    """
    if not isinstance(text, str):
        return None
    match = _POWER_TIME.match(text.strip())
    if not match:
        return None
    month, day, year, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7) or "0"
    try:
        moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=_UTC)
    except (OverflowError, ValueError):  # 02-30, hour 99, ...
        return None
    base = float(calendar.timegm(moment.utctimetuple()))
    return base + int(fraction) / (10.0 ** len(fraction))


def parse_detail(text: str) -> Dict[str, Any]:
    """``:::MLLOG`` records -> {key: value} (last record wins) plus ``_errors``/``_warnings``.

    Lines that are not MLLOG records, or whose JSON is broken (a log cut off mid-line), are
    skipped. ``_errors`` lists the values of records flagged ``is_error``.
    """
    values: Dict[str, Any] = {}
    errors: List[str] = []
    warnings = 0
    for line in text.splitlines():
        start = line.find(MLLOG_PREFIX)
        if start < 0:
            continue
        try:
            record = json.loads(line[start + len(MLLOG_PREFIX) :])
        except ValueError:
            continue
        if not isinstance(record, dict) or "key" not in record:
            continue
        key = str(record["key"])
        values[key] = record.get("value")
        metadata = record.get("metadata")
        if isinstance(metadata, dict):
            if metadata.get("is_error"):
                errors.append("%s: %s" % (key, record.get("value")))
            if metadata.get("is_warning"):
                warnings += 1
    values["_errors"] = errors
    values["_warnings"] = warnings
    return values


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def _yes(value: Optional[str]) -> Optional[bool]:
    if value is None:
        return None
    return value.lower() == "yes"


def empty_result() -> Dict[str, Any]:
    """The ``loadgen`` structure of a benchmark whose logs were not found."""
    return {
        "result_validity": None,
        "scenario": None,
        "mode": None,
        "metric": None,
        "latency_ns": {},
        "min_duration_satisfied": None,
        "min_queries_satisfied": None,
        "early_stopping_met": None,
        "performance_constraints_satisfied": None,
        "invalid_reason": None,
        "errors": [],
        "power_begin": None,
        "power_end": None,
        "source": None,
        "log_files": [],
    }


def result_from_detail(values: Dict[str, Any]) -> Dict[str, Any]:
    """The contract's ``loadgen`` structure from ``parse_detail`` output."""
    result = empty_result()
    scenario = values.get("effective_scenario") or values.get("requested_scenario")
    result["scenario"] = scenario
    result["mode"] = values.get("effective_test_mode") or values.get("requested_test_mode")
    validity = values.get("result_validity")
    result["result_validity"] = validity if validity in ("VALID", "INVALID") else None
    for key, name in (
        ("result_min_duration_met", "min_duration_satisfied"),
        ("result_min_queries_met", "min_queries_satisfied"),
        ("early_stopping_met", "early_stopping_met"),
        ("result_perf_constraints_met", "performance_constraints_satisfied"),
    ):
        if isinstance(values.get(key), bool):
            result[name] = values[key]
    reason = values.get("result_invalid_reason")
    result["invalid_reason"] = (
        reason.strip() if isinstance(reason, str) and reason.strip() else None
    )
    result["errors"] = list(values.get("_errors", []))
    per_query = scenario == "MultiStream"
    for name, infix in _PERCENTILES:
        key = "result_%s_percentile_%slatency_ns" % (infix, "per_query_" if per_query else "")
        number = _number(values.get(key))
        if number is None and per_query:
            number = _number(values.get("result_%s_percentile_latency_ns" % infix))
        if number is not None:
            result["latency_ns"][name] = number
    headline = _HEADLINE.get(str(scenario))
    if headline:
        name, unit, keys = headline
        for key in keys:
            number = _number(values.get(key))
            if number is not None:
                result["metric"] = {"name": name, "value": number, "unit": unit}
                break
    result["power_begin"] = parse_power_time(values.get("power_begin"))
    result["power_end"] = parse_power_time(values.get("power_end"))
    result["source"] = DETAIL_LOG
    return result


def result_from_summary(text: str) -> Dict[str, Any]:
    """The contract's ``loadgen`` structure from ``mlperf_log_summary.txt`` (no power window)."""
    found = {}
    for key, pattern in _SUMMARY_PATTERNS.items():
        match = pattern.search(text)
        found[key] = match.group(1) if match else None
    result = empty_result()
    scenario = found["scenario"]
    result["scenario"] = scenario
    result["mode"] = found["mode"]
    result["result_validity"] = found["validity"]
    result["min_duration_satisfied"] = _yes(found["min_duration"])
    result["min_queries_satisfied"] = _yes(found["min_queries"])
    result["early_stopping_met"] = _yes(found["early_stopping"])
    result["performance_constraints_satisfied"] = _yes(found["perf_constraints"])
    if found["errors"] and int(found["errors"]) > 0:
        result["errors"] = ["%s LoadGen error(s), see %s" % (found["errors"], DETAIL_LOG)]
    names = {infix: name for name, infix in _PERCENTILES}
    for infix, value in _SUMMARY_PERCENTILE.findall(text):
        if infix in names:
            result["latency_ns"][names[infix]] = int(value)
    metric: Optional[Tuple[str, str, Optional[str]]] = None
    if scenario == "Offline":
        metric = ("samples_per_second", "samples/s", found["samples_per_second"])
    elif scenario == "Server":
        metric = (
            "completed_samples_per_second",
            "samples/s",
            found["completed_samples_per_second"] or found["scheduled_samples_per_second"],
        )
    elif scenario == "SingleStream":
        metric = ("p90_latency_ns", "ns", found["ss_p90"])
    elif scenario == "MultiStream":
        metric = ("p99_latency_ns", "ns", found["ms_p99"])
    if metric and _number(metric[2]) is not None:
        result["metric"] = {"name": metric[0], "value": _number(metric[2]), "unit": metric[1]}
    result["source"] = SUMMARY_LOG
    return result


def _read(path: str, limit: int = 64 * 1024 * 1024) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return None


def find_loadgen_dirs(root: str) -> List[str]:
    """Directories under ``root`` (itself included) that hold a LoadGen summary or detail log.

    NVIDIA's harness nests them (``LOG_DIR/<system>/<benchmark>/<scenario>/``); the newest
    directory comes first.
    """
    found: List[Tuple[float, str]] = []
    for directory, _dirs, files in os.walk(root):
        names = set(files)
        if DETAIL_LOG in names or SUMMARY_LOG in names:
            newest = 0.0
            for name in (DETAIL_LOG, SUMMARY_LOG):
                if name in names:
                    with contextlib.suppress(OSError):
                        newest = max(newest, os.stat(os.path.join(directory, name)).st_mtime)
            found.append((newest, directory))
    found.sort(key=lambda item: (-item[0], item[1]))
    return [directory for _mtime, directory in found]


def read_loadgen_dir(root: str) -> Dict[str, Any]:
    """The ``loadgen`` structure of the newest LoadGen run under ``root``.

    The detail log is preferred; the summary fills in when the detail log is missing, or has no
    ``result_validity`` (a run cut off before LoadGen wrote its results).
    """
    dirs = find_loadgen_dirs(root)
    if not dirs:
        return empty_result()
    directory = dirs[0]
    result = empty_result()
    detail = _read(os.path.join(directory, DETAIL_LOG))
    if detail is not None:
        result = result_from_detail(parse_detail(detail))
    if result["result_validity"] is None:
        summary = _read(os.path.join(directory, SUMMARY_LOG))
        if summary is not None:
            from_summary = result_from_summary(summary)
            if from_summary["result_validity"] is not None or detail is None:
                # keep the detail log's power window and errors if it had them
                for key in ("power_begin", "power_end"):
                    from_summary[key] = result[key]
                from_summary["errors"] = result["errors"] or from_summary["errors"]
                result = from_summary
    result["log_files"] = sorted(
        os.path.relpath(os.path.join(directory, name), root)
        for name in os.listdir(directory)
        if name.startswith("mlperf_log_")
    )
    return result


# ------------------------------------------------------------------------------- accuracy
OUTPUT_LOG = "stdout.log"  # the runner's copy of a benchmark's merged stdout/stderr


def empty_accuracy() -> Dict[str, Any]:
    """The ``accuracy`` structure of an accuracy run whose verdict line was not found."""
    return {"passed": None, "summary": None, "source": None}


def judge_accuracy_lines(
    sources: List[Tuple[str, str]], passed_regex: str, failed_regex: str
) -> Dict[str, Any]:
    """The accuracy verdict from ``[(source name, text), ...]``, searched in that order.

    A FAIL line anywhere wins over any PASS line (a harness that prints both has failed); else
    the last PASS line is the verdict. ``passed`` is None when neither appears.
    """
    passed, failed = re.compile(passed_regex), re.compile(failed_regex)
    verdict = empty_accuracy()
    for source, text in sources:
        for line in text.splitlines():
            if failed.search(line):
                return {"passed": False, "summary": line.strip(), "source": source}
            if passed.search(line):
                verdict = {"passed": True, "summary": line.strip(), "source": source}
    return verdict


def find_named_file(root: str, name: str) -> Optional[str]:
    """The newest file called ``name`` under ``root`` (itself included), or None."""
    found: List[Tuple[float, str]] = []
    for directory, _dirs, files in os.walk(root):
        if name in files:
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                found.append((os.stat(path).st_mtime, path))
    if not found:
        return None
    found.sort(key=lambda item: (-item[0], item[1]))
    return found[0][1]


def read_accuracy(root: str, check: Dict[str, Any]) -> Dict[str, Any]:
    """An accuracy run's verdict: ``check["file"]`` under ``root``, then the benchmark's output.

    ``check`` is the harness profile's ``accuracy`` section: ``file``, and the ``passed`` and
    ``failed`` regexes of its verdict line. ``source`` names where the line was found, relative
    to ``root``.
    """
    sources: List[Tuple[str, str]] = []
    path = find_named_file(root, str(check["file"]))
    if path is not None:
        text = _read(path)
        if text is not None:
            sources.append((os.path.relpath(path, root), text))
    output = _read(os.path.join(root, OUTPUT_LOG))
    if output is not None:
        sources.append((OUTPUT_LOG, output))
    return judge_accuracy_lines(sources, str(check["passed"]), str(check["failed"]))
