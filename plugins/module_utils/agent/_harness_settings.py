# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The embedded harness's LoadGen settings and results: the defaults where LoadGen's own would
not suit short synthetic runs, a run's TestSettings values (explicit ones, else derived from the
warm-up), mlperf_log_summary.txt read back, and the AccuracyOnly check as a HarnessError.

Part of the program ``_loadgen_harness``. Private module (leading underscore): not a public API
of the collection.
"""

from __future__ import annotations

import argparse
import re
from typing import Any, Dict, Mapping, Optional

from ansible_collections.heteromig.fleet.plugins.module_utils.agent import (
    _harness_accuracy as _accuracy,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._harness_base import (
    EXIT_FAILED,
    HarnessError,
)

# Defaults where LoadGen's own would not suit short synthetic runs.
DEFAULT_MIN_DURATION_MS = 10000
# LoadGen's early-stopping check needs enough queries to bound the tail latency: at least 64 for
# SingleStream (90th percentile), 662 for MultiStream (99th), about 460 for Server (99th, when no
# query is late). Fewer queries make a run INVALID however fast it is.
DEFAULT_MIN_QUERY_COUNT = {"Offline": 1, "Server": 500, "SingleStream": 100, "MultiStream": 662}
DEFAULT_SERVER_TARGET_QPS = 1000.0
DEFAULT_SERVER_TARGET_LATENCY_NS = 100 * 1000 * 1000
DEFAULT_WARMUP_MS = 300
# Offline: LoadGen issues expected_qps x min_duration x 1.1 samples in one query. The harness
# measures the throughput through LoadGen (calibrate_offline) and asks for this much more, which
# keeps the run past min_duration when the load around it changes. At 1.5 the H100's runs
# reached 1.27-1.4x the calibrated rate (little margin left), and a simulated main on a loaded
# 2-core machine ran past 1.5x when its neighbours ended (INVALID: min duration not satisfied).
OFFLINE_QPS_HEADROOM = 2.0
# SingleStream/MultiStream: LoadGen stops issuing once min_duration and min_query_count are met,
# and pre-generates queries from the expected latency: under-estimate it.
STREAM_LATENCY_FACTOR = 0.5
MAX_PREGENERATED_QUERIES = 2000000
# LoadGen keeps about this much memory per issued sample (measured with 6.0.17, trace off).
LOADGEN_BYTES_PER_SAMPLE = 220
# LoadGen sizes an Offline query for min_duration at the expected QPS (10% more).
OFFLINE_QUERY_MARGIN = 1.1
# TEST01/TEST04-style audit settings (the settings only; no compliance verification here).
AUDIT_TESTS = ("TEST01", "TEST04")


# ---------------------------------------------------------------------------------------------
# LoadGen settings and results
# ---------------------------------------------------------------------------------------------
def loadgen_settings(args: argparse.Namespace, warm: Dict[str, Any]) -> Dict[str, Any]:
    """The TestSettings values of this run (explicit ones, else derived from the warm-up)."""
    scenario = args.scenario
    settings: Dict[str, Any] = {
        "scenario": scenario,
        "mode": args.mode,
        "min_duration_ms": args.min_duration_ms,
        "min_query_count": args.min_query_count or DEFAULT_MIN_QUERY_COUNT[scenario],
        "print_timestamps": bool(args.print_timestamps),
    }
    if args.max_duration_ms:
        settings["max_duration_ms"] = args.max_duration_ms
    floor_ns = max(1000, int(args.min_duration_ms * 1e6 / MAX_PREGENERATED_QUERIES))
    if scenario == "Offline":
        measured = warm.get("loadgen_samples_per_second") or warm.get("samples_per_second")
        settings["offline_expected_qps"] = args.offline_expected_qps or max(
            1.0, round((measured or 1.0) * OFFLINE_QPS_HEADROOM, 3)
        )
    elif scenario == "Server":
        settings["server_target_qps"] = args.server_target_qps or DEFAULT_SERVER_TARGET_QPS
        settings["server_target_latency_ns"] = (
            args.server_target_latency_ns or DEFAULT_SERVER_TARGET_LATENCY_NS
        )
    elif scenario == "SingleStream":
        settings["single_stream_expected_latency_ns"] = args.single_stream_expected_latency_ns or (
            max(floor_ns, int(warm["batch_latency_ns"] * STREAM_LATENCY_FACTOR))
        )
    else:
        settings["multi_stream_expected_latency_ns"] = args.multi_stream_expected_latency_ns or (
            max(floor_ns, int(warm["batch_latency_ns"] * STREAM_LATENCY_FACTOR))
        )
    if args.audit_test == "TEST01":
        settings.update(accuracy_log_probability=0.1, accuracy_log_rng_seed=720381539243781796)
    elif args.audit_test == "TEST04":
        settings.update(performance_issue_same=True, performance_issue_same_index=3)
    return settings


def offline_query_samples(values: Mapping[str, Any]) -> int:
    """How many samples LoadGen's one Offline query holds with these settings."""
    return int(
        values["offline_expected_qps"] * values["min_duration_ms"] / 1000.0 * OFFLINE_QUERY_MARGIN
    )


def cap_offline_query(values: Dict[str, Any], max_mb: Optional[int]) -> Optional[str]:
    """Shorten an Offline run whose one query would need more than ``max_mb`` of LoadGen memory.

    LoadGen allocates the whole query at the start: a background asked to run for hours at a
    fast slice's rate would need hundreds of GB and die of ``std::bad_alloc``. ``min_duration_ms``
    is lowered until the query fits; the warning to print is returned (None when nothing changed).
    """
    if not max_mb or values.get("scenario") != "Offline" or values.get("mode") != "PerformanceOnly":
        return None
    samples = offline_query_samples(values)
    if samples * LOADGEN_BYTES_PER_SAMPLE <= max_mb * 1e6:
        return None
    fitting = int(max_mb * 1e6 / LOADGEN_BYTES_PER_SAMPLE)
    asked = int(values["min_duration_ms"])
    shortened = max(
        1, int(fitting * 1000.0 / (values["offline_expected_qps"] * OFFLINE_QUERY_MARGIN))
    )
    values["min_duration_ms"] = min(asked, shortened)
    return (
        "Offline: the one LoadGen query would hold about %d samples (~%.0f MB), over "
        "max_offline_query_mb %d: min_duration_ms lowered from %d to %d (at %g expected QPS). "
        "A background stops when the main ends; if the main runs longer than this, the "
        "background ends first and the run says so"
        % (
            samples,
            samples * LOADGEN_BYTES_PER_SAMPLE / 1e6,
            max_mb,
            asked,
            values["min_duration_ms"],
            values["offline_expected_qps"],
        )
    )


def apply_settings(lg: Any, values: Dict[str, Any]) -> Any:
    settings = lg.TestSettings()
    for key, value in values.items():
        if key == "scenario":
            settings.scenario = getattr(lg.TestScenario, value)
        elif key == "mode":
            settings.mode = getattr(lg.TestMode, value)
        else:
            setattr(settings, key, value)
    return settings


# Headline metric per scenario, as mlperf_log_summary.txt labels it (older LoadGen releases
# printed "Scheduled samples per second" for Server).
_HEADLINE = {
    "Samples per second": "samples_per_second",
    "Completed samples per second": "completed_samples_per_second",
    "Scheduled samples per second": "scheduled_samples_per_second",
    "90.0th percentile latency (ns)": "p90_latency_ns",
    "99.0th percentile latency (ns)": "p99_latency_ns",
}
_PERCENTILE = re.compile(r"^(\d+\.\d+) percentile latency \(ns\)$")


def parse_summary(path: str) -> Dict[str, Any]:
    """Validity, headline metric and latency percentiles from mlperf_log_summary.txt."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    result: Dict[str, Any] = {}
    percentiles: Dict[str, float] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Result is":
            result["result_validity"] = value
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        match = _PERCENTILE.match(key)
        if match:
            percentiles["p%g" % float(match.group(1))] = number
        elif key in _HEADLINE and _HEADLINE[key] not in result:
            result[_HEADLINE[key]] = number
    if percentiles:
        result["latency_ns"] = percentiles
    return result


def check_accuracy(
    model: Any, log_dir: str, data: Any, accuracy_target: str, reference: Any = None
) -> Dict[str, Any]:
    """The accuracy check of _harness_accuracy (LoadGen's outputs against float64)."""
    try:
        return _accuracy.check_accuracy(model, log_dir, data, accuracy_target, reference)
    except _accuracy.AccuracyLogError as exc:
        raise HarnessError(str(exc), EXIT_FAILED) from None
