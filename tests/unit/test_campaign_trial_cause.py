"""Why a tuning trial was INVALID (plugins/plugin_utils/_campaign_trial_cause.py), on real logs.

The logs are LoadGen 6.0.17's own (tests/fixtures/loadgen/tuning/, written by its capture.py,
one directory per case with the settings in case.json). They are read by the collection's
LoadGen parser (module_utils/agent/_loadgen_logs.py), as a hetero run reads its main's logs. What
each case must be read as follows from how it was made (its case.json: target, length, the
device's latency against the bound), not from the code under test; the query counts are the
ones LoadGen printed in those summaries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_logs import (
    parse_detail,
    read_loadgen_dir,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_trial_cause import (
    OTHER,
    TOO_HIGH,
    TOO_SHORT,
    VALID,
    Cause,
    classify,
    duration_for,
    early_stopping_counts,
    early_stopping_text,
    latency_against_bound,
    lengthened_ms,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "loadgen" / "tuning"


def case(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name / "case.json").read_text())


def cause_of(name: str, verdict: str = "INVALID") -> Cause:
    directory = FIXTURES / name
    loadgen = read_loadgen_dir(str(directory))
    detail = parse_detail((directory / "mlperf_log_detail.txt").read_text())
    return classify(
        verdict,
        loadgen,
        detail.get("early_stopping_result"),
        detail.get("result_overlatency_query_count"),
        latency_against_bound(detail),
    )


def test_the_fixtures_are_what_their_settings_say() -> None:
    # the device of each case against the 50 ms bound: the oracle of the tests below
    for name in (
        "too-few-queries",
        "lengthened",
        "max-duration",
        "max-query-count",
        "some-overlatency",
    ):
        assert case(name)["delay_s"] * 1e9 < case(name)["latency_bound_ns"] / 10
    slow = case("some-overlatency")
    assert slow["slow_delay_s"] * 1e9 > slow["latency_bound_ns"] and slow["slow_every"] > 100
    assert case("latency")["delay_s"] * 1e9 > case("latency")["latency_bound_ns"]
    assert read_loadgen_dir(str(FIXTURES / "lengthened"))["result_validity"] == "VALID"
    for name in (
        "too-few-queries",
        "latency",
        "max-duration",
        "max-query-count",
        "some-overlatency",
    ):
        assert read_loadgen_dir(str(FIXTURES / name))["result_validity"] == "INVALID"


def test_a_run_over_the_latency_bound_is_too_high() -> None:
    cause = cause_of("latency")
    assert cause.cause == TOO_HIGH
    # LoadGen's own recommendation is quoted
    assert "Reduce target QPS to improve latency." in cause.why
    # and how far over the bound it was: the device answered after 150 ms (case.json) against
    # the 50 ms bound; LoadGen's summary printed "99.00 percentile latency (ns)   : 153447792"
    assert "99th percentile latency 153.4 ms over the 50 ms bound" in cause.why
    assert case("latency")["delay_s"] * 1e3 <= 153.4


def test_the_latency_against_the_bound_from_each_real_log() -> None:
    # the bound and the percentile are the case's settings (case.json, LoadGen's default 0.99);
    # the latencies are the ones LoadGen printed in each summary's "99.00 percentile latency"
    for name, p99_ms in (("latency", "153.4"), ("lengthened", "8.855")):
        bound_ms = "%g" % (case(name)["latency_bound_ns"] / 1e6)
        summary = (FIXTURES / name / "mlperf_log_summary.txt").read_text()
        printed = next(
            line for line in summary.splitlines() if line.startswith("99.00 percentile latency")
        )
        assert "%.4g" % (int(printed.split(":")[1]) / 1e6) == p99_ms
        detail = parse_detail((FIXTURES / name / "mlperf_log_detail.txt").read_text())
        word = "over" if float(p99_ms) > float(bound_ms) else "within"
        assert latency_against_bound(
            detail
        ) == "99th percentile latency %s ms %s the %s ms bound" % (
            p99_ms,
            word,
            bound_ms,
        )
    # a log without the settings (not a Server run), or no log, says nothing
    assert latency_against_bound({"result_99.00_percentile_latency_ns": 5}) is None
    assert latency_against_bound(None) is None
    # a percentile LoadGen reports no result for says nothing either
    odd = {
        "effective_target_latency_ns": 50_000_000,
        "effective_target_latency_percentile": 0.98,
        "result_99.00_percentile_latency_ns": 60_000_000,
    }
    assert latency_against_bound(odd) is None


@pytest.mark.parametrize(
    ("name", "processed", "more", "unmet"),
    [
        # counts as LoadGen printed them in each summary ("Processed N queries", "Would need to
        # run at least M more queries")
        ("too-few-queries", 417, 42, "early stopping not satisfied"),
        ("max-duration", 202, 257, "min duration not satisfied"),
        ("max-query-count", 300, 159, "min queries not satisfied"),
    ],
)
def test_a_run_too_short_for_loadgen_is_too_short(
    name: str, processed: int, more: int, unmet: str
) -> None:
    cause = cause_of(name)
    assert cause.cause == TOO_SHORT, cause
    assert (cause.processed, cause.queries_needed) == (processed, processed + more)
    assert unmet in cause.why
    assert cause.overlatency == 0  # no query missed the bound


def test_the_summary_gives_the_same_counts_as_the_detail_log() -> None:
    for name, counts in (("too-few-queries", (417, 42)), ("latency", (417, 46261))):
        summary = (FIXTURES / name / "mlperf_log_summary.txt").read_text()
        assert early_stopping_counts(early_stopping_text(summary)) == counts
    # a VALID run says "Run successful." and asks for nothing
    summary = (FIXTURES / "lengthened" / "mlperf_log_summary.txt").read_text()
    assert early_stopping_counts(early_stopping_text(summary)) == (None, None)
    assert early_stopping_text("no such section\n") is None


def test_without_the_early_stopping_text_a_short_run_is_still_too_short() -> None:
    loadgen = read_loadgen_dir(str(FIXTURES / "too-few-queries"))
    cause = classify("INVALID", loadgen, None)
    assert cause.cause == TOO_SHORT and cause.queries_needed is None
    # and is lengthened by doubling
    assert lengthened_ms(1000, 420.0, cause) == 2000


def test_the_lengthened_trial_is_at_least_as_long_as_the_one_loadgen_found_valid() -> None:
    # the real LoadGen run of the same device and target for 1.4 s was VALID ("lengthened")
    short = case("too-few-queries")
    longer = case("lengthened")
    assert longer["target_qps"] == short["target_qps"]
    assert cause_of("lengthened", verdict="VALID").cause == VALID
    length = lengthened_ms(
        short["min_duration_ms"], short["target_qps"], cause_of("too-few-queries")
    )
    assert longer["min_duration_ms"] <= length <= 2 * short["min_duration_ms"]


def test_a_valid_loadgen_result_in_an_invalid_hetero_run_says_nothing_about_the_target() -> None:
    loadgen = read_loadgen_dir(str(FIXTURES / "lengthened"))
    assert classify("INVALID", loadgen, None).cause == OTHER
    assert classify("INVALID", None, None).cause == OTHER  # no LoadGen result at all
    assert classify("VALID", loadgen, None).cause == VALID


def test_later_trials_are_sized_for_the_count_at_their_own_target() -> None:
    # 459 queries (417 + 42) with the 25% margin: 1.4 s at 420 QPS, 1.2 s at 504, and never
    # shorter than the trial length
    assert duration_for(1000, 420.0, 459) == 1400
    assert duration_for(1000, 504.0, 459) == 1200
    assert duration_for(1000, 725.0, 459) == 1000
    assert duration_for(1000, 420.0, 0) == 1000


def test_a_short_run_with_queries_over_the_bound_says_how_many() -> None:
    # the 99th percentile held (every 150th query late), early stopping did not: LoadGen asked
    # for 421 more queries after 417 (its summary), with 2 queries over the bound (detail log)
    cause = cause_of("some-overlatency")
    assert cause.cause == TOO_SHORT
    assert (cause.processed, cause.queries_needed, cause.overlatency) == (417, 838, 2)
    assert "2 over the latency bound" in cause.why
