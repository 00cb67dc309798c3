"""LoadGen log parsing (plugins/module_utils/agent/_loadgen_logs.py) on real LoadGen 6.0.17 logs
(tests/fixtures/loadgen/<scenario>/, see its README) and on damaged copies of them."""

from __future__ import annotations

import calendar
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_logs import (
    DETAIL_LOG,
    SUMMARY_LOG,
    empty_accuracy,
    empty_result,
    find_loadgen_dirs,
    find_named_file,
    judge_accuracy_lines,
    parse_detail,
    parse_power_time,
    read_accuracy,
    read_loadgen_dir,
    result_from_detail,
    result_from_summary,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "loadgen"
SCENARIOS = ("Offline", "Server", "SingleStream", "MultiStream")


def detail(scenario: str) -> dict:
    text = (FIXTURES / scenario / DETAIL_LOG).read_text()
    return result_from_detail(parse_detail(text))


def summary(scenario: str) -> dict:
    return result_from_summary((FIXTURES / scenario / SUMMARY_LOG).read_text())


TZ_CAPTURES = FIXTURES / "tz"
ZONES = ("America/New_York", "Asia/Tokyo", "UTC")


@pytest.fixture
def zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test in the local time zone ``request.param``, restoring the zone afterwards."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield request.param
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.mark.parametrize(
    ("scenario", "validity", "metric_name", "metric_value", "unit"),
    [
        ("Offline", "INVALID", "samples_per_second", 1.08548e06, "samples/s"),
        ("Server", "VALID", "completed_samples_per_second", 983.479, "samples/s"),
        ("SingleStream", "INVALID", "p90_latency_ns", 1236, "ns"),
        ("MultiStream", "INVALID", "p99_latency_ns", 11231, "ns"),
    ],
)
def test_headline_metric_and_validity_per_scenario(
    scenario: str, validity: str, metric_name: str, metric_value: float, unit: str
) -> None:
    result = detail(scenario)
    assert result["scenario"] == scenario and result["mode"] == "PerformanceOnly"
    assert result["result_validity"] == validity
    assert result["metric"] == {"name": metric_name, "value": metric_value, "unit": unit}
    assert result["source"] == DETAIL_LOG


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_summary_agrees_with_detail(scenario: str) -> None:
    """The fallback reads the same facts from the summary as the detail log gives."""
    from_detail, from_summary = detail(scenario), summary(scenario)
    for key in (
        "scenario",
        "mode",
        "result_validity",
        "min_duration_satisfied",
        "min_queries_satisfied",
        "early_stopping_met",
        "latency_ns",
    ):
        assert from_summary[key] == from_detail[key], key
    assert from_summary["metric"]["name"] == from_detail["metric"]["name"]
    assert from_summary["metric"]["value"] == pytest.approx(
        from_detail["metric"]["value"], rel=1e-3
    )
    assert from_summary["power_begin"] is None and from_summary["source"] == SUMMARY_LOG
    assert bool(from_summary["errors"]) == bool(from_detail["errors"])


def test_constraints_errors_and_reasons() -> None:
    server = detail("Server")
    assert server["performance_constraints_satisfied"] is True
    assert server["latency_ns"] == {
        "p50": 96811,
        "p90": 143030,
        "p95": 162568,
        "p97": 170630,
        "p99": 191607,
        "p99.9": 825408,
    }
    offline = detail("Offline")
    assert offline["min_duration_satisfied"] is False and offline["min_queries_satisfied"] is True
    assert offline["invalid_reason"].startswith("Increase expected QPS")
    assert offline["errors"] == []
    single = detail("SingleStream")
    assert len(single["errors"]) == 1 and single["errors"][0].startswith(
        "error_runtime: Ending early"
    )
    multi = detail("MultiStream")
    assert multi["early_stopping_met"] is False
    assert multi["latency_ns"]["p99"] == 11231  # per-query latency for MultiStream


def test_power_window_is_epoch_seconds() -> None:
    offline = detail("Offline")
    # "11-22-2026 05:41:17.924" and ".934", written in UTC
    begin = calendar.timegm((2026, 11, 22, 5, 41, 17)) + 0.924
    assert offline["power_begin"] == pytest.approx(begin)
    assert offline["power_end"] == pytest.approx(begin + 0.010)
    server = detail("Server")
    assert server["power_end"] - server["power_begin"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("11-22-2026 05:41:17.924", calendar.timegm((2026, 11, 22, 5, 41, 17)) + 0.924),
        ("01-02-2027 00:00:00", calendar.timegm((2027, 1, 2, 0, 0, 0))),
        (" 12-31-2026 23:59:59.5 ", calendar.timegm((2026, 12, 31, 23, 59, 59)) + 0.5),
        ("2026-11-22T05:41:17Z", None),
        ("13-45-2026 99:00:00.000", None),
        (None, None),
        (12345, None),
    ],
)
def test_parse_power_time(text: object, expected: float | None) -> None:
    value = parse_power_time(text)
    assert value == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize("zone", ZONES, indirect=True)
@pytest.mark.parametrize("written_in", ZONES)
def test_power_window_lies_inside_the_clock_read_around_the_real_run(
    zone: str, written_in: str
) -> None:
    """Real LoadGen logs written under three zones, read under three zones.

    The oracle is the epoch clock the capture script read right before StartTest and right after
    it returned (clock.json): LoadGen's power window must lie inside it, to LoadGen's 1 ms
    resolution, whatever zone wrote the log and whatever zone reads it.
    """
    capture = TZ_CAPTURES / written_in.replace("/", "_")
    clock = json.loads((capture / "clock.json").read_text())
    assert clock["tz"] == written_in
    result = read_loadgen_dir(str(capture))
    begin, end = result["power_begin"], result["power_end"]
    assert isinstance(begin, float) and isinstance(end, float)
    assert clock["before"] - 0.001 <= begin <= end <= clock["after"] + 0.001, (
        f"power window {begin:.3f}..{end:.3f} outside the clock bracket "
        f"{clock['before']:.3f}..{clock['after']:.3f} (off by {begin - clock['before']:.0f} s)"
    )


def test_impossible_dates_are_not_times() -> None:
    assert parse_power_time("02-30-2026 00:00:00.000") is None
    assert parse_power_time("12-31-2026 24:00:00") is None


def test_broken_lines_are_skipped_and_the_last_record_wins() -> None:
    text = "\n".join(
        [
            "not a record",
            ':::MLLOG {"key": "result_validity", "value": "INVALID"}',
            ':::MLLOG {"key": "result_validity", "value": "VALID", "metadata": {"is_warning": true}}',
            ':::MLLOG {"key": "power_begin", "value": "11-22-2026 05:41:17.9',  # cut off
            ":::MLLOG [1, 2]",
            'prefix :::MLLOG {"key": "result_samples_per_second", "value": "12.5"}',
        ]
    )
    values = parse_detail(text)
    assert values["result_validity"] == "VALID" and values["_warnings"] == 1
    assert "power_begin" not in values
    result = result_from_detail(dict(values, effective_scenario="Offline"))
    assert result["metric"]["value"] == 12.5


def _copy(scenario: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in (DETAIL_LOG, SUMMARY_LOG):
        shutil.copy(FIXTURES / scenario / name, dest / name)
    return dest


@pytest.mark.parametrize("zone", ["America/New_York"], indirect=True)
def test_read_dir_finds_nested_logs_newest_first(tmp_path: Path, zone: str) -> None:
    old = _copy("Offline", tmp_path / "DGX-H100" / "resnet50" / "Offline")
    new = _copy("Server", tmp_path / "DGX-H100" / "resnet50" / "Server")
    os.utime(old / DETAIL_LOG, (1, 1))
    os.utime(old / SUMMARY_LOG, (1, 1))
    (tmp_path / "stdout.log").write_text("noise")
    assert find_loadgen_dirs(str(tmp_path)) == [str(new), str(old)]
    result = read_loadgen_dir(str(tmp_path))
    assert result["scenario"] == "Server" and result["result_validity"] == "VALID"
    assert result["log_files"] == [
        "DGX-H100/resnet50/Server/" + DETAIL_LOG,
        "DGX-H100/resnet50/Server/" + SUMMARY_LOG,
    ]
    assert result["power_begin"] == pytest.approx(
        calendar.timegm((2026, 11, 22, 5, 41, 18)) + 0.005
    )


def test_read_dir_falls_back_to_the_summary(tmp_path: Path) -> None:
    run = _copy("Server", tmp_path)
    (run / DETAIL_LOG).unlink()
    result = read_loadgen_dir(str(tmp_path))
    assert result["source"] == SUMMARY_LOG and result["result_validity"] == "VALID"
    assert result["metric"]["value"] == 983.48


@pytest.mark.parametrize("zone", ["Asia/Tokyo"], indirect=True)
def test_truncated_detail_keeps_its_power_window_and_takes_the_summary_result(
    tmp_path: Path, zone: str
) -> None:
    run = _copy("Server", tmp_path)
    text = (run / DETAIL_LOG).read_text()
    (run / DETAIL_LOG).write_text(text[: text.index('"key": "result_validity"') - 10])
    result = read_loadgen_dir(str(tmp_path))
    assert result["source"] == SUMMARY_LOG and result["result_validity"] == "VALID"
    assert result["power_begin"] is not None and result["power_end"] is not None


def test_no_logs(tmp_path: Path) -> None:
    result = read_loadgen_dir(str(tmp_path / "missing"))
    assert result["result_validity"] is None and result["log_files"] == []
    (tmp_path / DETAIL_LOG).write_text("garbage\n")
    result = read_loadgen_dir(str(tmp_path))
    assert result["result_validity"] is None and result["log_files"] == [DETAIL_LOG]


# ------------------------------------------------------------------ edges (issue 15, mutants)
def _record(key: str, value: object, **metadata: object) -> str:
    record: dict[str, object] = {"key": key, "value": value}
    if metadata:
        record["metadata"] = metadata
    return ":::MLLOG " + json.dumps(record)


def test_parse_detail_errors_warnings_and_odd_records() -> None:
    text = "\n".join(
        [
            _record("error_runtime", "boom", is_error=True, is_warning=False),
            _record("warning_generic", "hm", is_warning=True),
            _record("warning_generic", "hm again", is_warning=True),
            _record("plain", 3, is_error=False),
            ':::MLLOG {"key": "odd", "value": 1, "metadata": "not a dict"}',
            ':::MLLOG {"value": "no key"}',
            ':::MLLOG "a string"',
        ]
    )
    values = parse_detail(text)
    assert values["_errors"] == ["error_runtime: boom"]
    assert values["_warnings"] == 2
    assert values["plain"] == 3 and values["odd"] == 1 and values["warning_generic"] == "hm again"
    assert set(values) == {
        "error_runtime",
        "warning_generic",
        "plain",
        "odd",
        "_errors",
        "_warnings",
    }
    assert parse_detail("") == {"_errors": [], "_warnings": 0}


def test_detail_falls_back_to_requested_scenario_and_mode() -> None:
    result = result_from_detail(
        {
            "requested_scenario": "Offline",
            "requested_test_mode": "AccuracyOnly",
            "result_samples_per_second": 7,
        }
    )
    assert result["scenario"] == "Offline" and result["mode"] == "AccuracyOnly"
    assert result["metric"] == {"name": "samples_per_second", "value": 7, "unit": "samples/s"}
    effective = result_from_detail(
        {
            "requested_scenario": "Offline",
            "effective_scenario": "Server",
            "requested_test_mode": "AccuracyOnly",
            "effective_test_mode": "PerformanceOnly",
        }
    )
    assert effective["scenario"] == "Server" and effective["mode"] == "PerformanceOnly"
    assert effective["metric"] is None and effective["source"] == DETAIL_LOG


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"result_validity": "VALID"}, "VALID"),
        ({"result_validity": "INVALID"}, "INVALID"),
        ({"result_validity": "valid"}, None),
        ({"result_validity": None}, None),
        ({}, None),
    ],
)
def test_detail_validity_is_valid_invalid_or_none(values: dict, expected: str | None) -> None:
    assert result_from_detail(values)["result_validity"] == expected


def test_detail_constraint_flags_must_be_booleans_and_the_reason_is_stripped() -> None:
    result = result_from_detail(
        {
            "result_min_duration_met": True,
            "result_min_queries_met": False,
            "early_stopping_met": "true",  # not a bool: not believed
            "result_perf_constraints_met": 1,
            "result_invalid_reason": "  Reduce target QPS.  ",
        }
    )
    assert result["min_duration_satisfied"] is True
    assert result["min_queries_satisfied"] is False
    assert result["early_stopping_met"] is None
    assert result["performance_constraints_satisfied"] is None
    assert result["invalid_reason"] == "Reduce target QPS."
    assert result_from_detail({"result_invalid_reason": "   "})["invalid_reason"] is None
    assert result_from_detail({"result_invalid_reason": 5})["invalid_reason"] is None


def test_detail_headline_fallbacks_and_number_shapes() -> None:
    server = result_from_detail(
        {"effective_scenario": "Server", "result_scheduled_samples_per_sec": "99.5"}
    )
    assert server["metric"] == {
        "name": "completed_samples_per_second",
        "value": 99.5,
        "unit": "samples/s",
    }
    both = result_from_detail(
        {
            "effective_scenario": "Server",
            "result_completed_samples_per_sec": 10,
            "result_scheduled_samples_per_sec": 20,
        }
    )
    assert both["metric"]["value"] == 10  # completed first
    skipped = result_from_detail(
        {
            "effective_scenario": "Server",
            "result_completed_samples_per_sec": True,  # a bool is no number
            "result_scheduled_samples_per_sec": "n/a",
        }
    )
    assert skipped["metric"] is None
    whole = result_from_detail({"effective_scenario": "Offline", "result_samples_per_second": 12.0})
    assert whole["metric"]["value"] == 12 and isinstance(whole["metric"]["value"], int)
    huge = result_from_detail(
        {"effective_scenario": "Offline", "result_samples_per_second": float(2**53)}
    )
    assert isinstance(huge["metric"]["value"], float) and huge["metric"]["value"] == 2.0**53
    below = result_from_detail(
        {"effective_scenario": "Offline", "result_samples_per_second": float(2**53 - 1)}
    )
    assert isinstance(below["metric"]["value"], int) and below["metric"]["value"] == 2**53 - 1
    negative = result_from_detail(
        {"effective_scenario": "Offline", "result_samples_per_second": -float(2**53)}
    )
    assert isinstance(negative["metric"]["value"], float)
    unknown = result_from_detail({"effective_scenario": "Nightly", "result_samples_per_second": 1})
    assert unknown["metric"] is None


def test_multistream_latency_falls_back_to_per_sample_keys() -> None:
    result = result_from_detail(
        {
            "effective_scenario": "MultiStream",
            "result_99.00_percentile_latency_ns": 500,
            "result_50.00_percentile_per_query_latency_ns": 100,
            "result_50.00_percentile_latency_ns": 90,
        }
    )
    assert result["latency_ns"] == {"p50": 100, "p99": 500}
    assert result["metric"] == {"name": "p99_latency_ns", "value": 500, "unit": "ns"}
    single = result_from_detail(
        {
            "effective_scenario": "SingleStream",
            "result_90.00_percentile_per_query_latency_ns": 1,  # not a SingleStream key
            "result_99.90_percentile_latency_ns": 7,
        }
    )
    assert single["latency_ns"] == {"p99.9": 7} and single["metric"] is None


SUMMARY_HEAD = "Scenario : %s\nMode     : PerformanceOnly\nResult is : INVALID\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Min duration satisfied : NO\nMin queries satisfied : No\n", (False, False, None, None)),
        (
            "  Performance constraints satisfied : Yes\n  Early stopping satisfied: NO\n",
            (None, None, False, True),
        ),
        ("", (None, None, None, None)),
    ],
)
def test_summary_yes_no_flags(body: str, expected: tuple) -> None:
    result = result_from_summary(SUMMARY_HEAD % "Server" + body)
    assert (
        result["min_duration_satisfied"],
        result["min_queries_satisfied"],
        result["early_stopping_met"],
        result["performance_constraints_satisfied"],
    ) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("0 ERRORS encountered. See detailed log.", []),
        ("1 ERROR encountered. See detailed log.", ["1 LoadGen error(s), see " + DETAIL_LOG]),
        ("12 ERRORS encountered. See detailed log.", ["12 LoadGen error(s), see " + DETAIL_LOG]),
        ("No errors encountered during test.", []),
    ],
)
def test_summary_error_count(line: str, expected: list[str]) -> None:
    assert result_from_summary(SUMMARY_HEAD % "Offline" + line + "\n")["errors"] == expected


@pytest.mark.parametrize(
    ("scenario", "body", "metric"),
    [
        ("Offline", "Samples per second : 12.5\n", ("samples_per_second", 12.5, "samples/s")),
        ("Offline", "Samples per second : fast\n", None),
        (
            "Server",
            "Scheduled samples per second : 40\n",
            ("completed_samples_per_second", 40, "samples/s"),
        ),
        (
            "Server",
            "Completed samples per second : 30\nScheduled samples per second : 40\n",
            ("completed_samples_per_second", 30, "samples/s"),
        ),
        ("SingleStream", "90.0th percentile latency (ns) : 1234\n", ("p90_latency_ns", 1234, "ns")),
        ("MultiStream", "99.0th percentile latency (ns) : 4321\n", ("p99_latency_ns", 4321, "ns")),
        ("MultiStream", "90.0th percentile latency (ns) : 1234\n", None),
        ("Nightly", "Samples per second : 12.5\n", None),
    ],
)
def test_summary_headline_per_scenario(scenario: str, body: str, metric: tuple | None) -> None:
    result = result_from_summary(SUMMARY_HEAD % scenario + body)
    assert result["scenario"] == scenario and result["mode"] == "PerformanceOnly"
    assert result["result_validity"] == "INVALID" and result["source"] == SUMMARY_LOG
    expected = None if metric is None else dict(zip(("name", "value", "unit"), metric, strict=True))
    assert result["metric"] == expected


def test_summary_percentiles_only_known_ones() -> None:
    text = SUMMARY_HEAD % "Server" + (
        "50.00 percentile latency (ns)   : 10\n"
        "99.90 percentile latency (ns)   : 20\n"
        "75.00 percentile latency (ns)   : 30\n"
    )
    assert result_from_summary(text)["latency_ns"] == {"p50": 10, "p99.9": 20}
    assert result_from_summary("")["scenario"] is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("01-01-2027 00:00:00.5", 0.5),
        ("01-01-2027 00:00:00.05", 0.05),
        ("01-01-2027 00:00:00.123456", 0.123456),
        ("01-01-2027 00:00:00.000001", 0.000001),
        ("01-01-2027 00:00:00.", None),
        ("01-01-2027 00:00:00.1234567", None),
        ("01-01-2027 00:00:00 trailing", None),
        ("x01-01-2027 00:00:00", None),
    ],
)
def test_parse_power_time_fractions(text: str, expected: float | None) -> None:
    base = calendar.timegm((2027, 1, 1, 0, 0, 0))
    value = parse_power_time(text)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(base + expected, abs=1e-7)


def test_find_dirs_summary_only_ties_and_the_newest_of_two_files(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    (a / SUMMARY_LOG).write_text("x")
    (b / DETAIL_LOG).write_text("x")
    (c / DETAIL_LOG).write_text("x")
    (c / SUMMARY_LOG).write_text("x")
    (tmp_path / "other.txt").write_text("x")
    for path in (a / SUMMARY_LOG, b / DETAIL_LOG, c / DETAIL_LOG):
        os.utime(path, (100, 100))
    os.utime(c / SUMMARY_LOG, (50, 50))
    assert find_loadgen_dirs(str(tmp_path)) == [str(a), str(b), str(c)]  # same mtime: by path
    os.utime(c / SUMMARY_LOG, (200, 200))  # the newer of c's two files counts
    assert find_loadgen_dirs(str(tmp_path)) == [str(c), str(a), str(b)]
    assert find_loadgen_dirs(str(tmp_path / "nowhere")) == []


def test_read_dir_keeps_a_detail_result_when_the_summary_has_none(tmp_path: Path) -> None:
    run = _copy("Server", tmp_path)
    text = (run / DETAIL_LOG).read_text()
    (run / DETAIL_LOG).write_text(text[: text.index('"key": "result_validity"') - 10])
    (run / SUMMARY_LOG).write_text("garbage\n")
    (run / "notes.txt").write_text("not a LoadGen file")
    result = read_loadgen_dir(str(tmp_path))
    assert result["source"] == DETAIL_LOG and result["result_validity"] is None
    assert result["scenario"] == "Server" and result["power_begin"] is not None
    assert result["log_files"] == [DETAIL_LOG, SUMMARY_LOG]


def test_read_dir_summary_only_without_a_result_is_still_the_summary(tmp_path: Path) -> None:
    (tmp_path / SUMMARY_LOG).write_text("Scenario : Offline\nMode : PerformanceOnly\n")
    result = read_loadgen_dir(str(tmp_path))
    assert result["source"] == SUMMARY_LOG and result["scenario"] == "Offline"
    assert result["result_validity"] is None and result["power_begin"] is None


def test_read_dir_prefers_the_detail_logs_errors_over_the_summarys(tmp_path: Path) -> None:
    run = _copy("SingleStream", tmp_path)
    text = (run / DETAIL_LOG).read_text()
    cut = text[: text.index('"key": "result_validity"') - 10]
    assert "error_runtime" in cut
    (run / DETAIL_LOG).write_text(cut)
    result = read_loadgen_dir(str(tmp_path))
    assert result["source"] == SUMMARY_LOG
    assert len(result["errors"]) == 1 and result["errors"][0].startswith("error_runtime: ")
    (run / DETAIL_LOG).write_text("no records\n")
    result = read_loadgen_dir(str(tmp_path))
    assert result["errors"] == ["1 LoadGen error(s), see " + DETAIL_LOG]


# ------------------------------------------------------------------------------- accuracy
ACC = {"file": "accuracy.txt", "passed": r"accuracy=.*: PASS", "failed": r": FAIL\b"}


def test_judge_accuracy_lines_fail_wins_last_pass_counts() -> None:
    assert (
        judge_accuracy_lines([], "PASS", "FAIL")
        == empty_accuracy()
        == {
            "passed": None,
            "summary": None,
            "source": None,
        }
    )
    assert judge_accuracy_lines(
        [("a", " accuracy=1: PASS \nnoise\n"), ("b", "accuracy=2: PASS\n")],
        ACC["passed"],
        ACC["failed"],
    ) == {"passed": True, "summary": "accuracy=2: PASS", "source": "b"}
    assert judge_accuracy_lines(
        [("a", "accuracy=1: PASS\n  x: FAIL  \n"), ("b", "accuracy=3: FAIL\n")],
        ACC["passed"],
        ACC["failed"],
    ) == {"passed": False, "summary": "x: FAIL", "source": "a"}
    assert judge_accuracy_lines([("a", "nothing here\n")], ACC["passed"], ACC["failed"]) == {
        "passed": None,
        "summary": None,
        "source": None,
    }


def test_find_named_file_newest_then_by_path(tmp_path: Path) -> None:
    assert find_named_file(str(tmp_path), "accuracy.txt") is None
    one, two = tmp_path / "x" / "accuracy.txt", tmp_path / "y" / "accuracy.txt"
    for path in (one, two):
        path.parent.mkdir()
        path.write_text("")
        os.utime(path, (100, 100))
    (tmp_path / "accuracy.txt.bak").write_text("")
    assert find_named_file(str(tmp_path), "accuracy.txt") == str(one)
    os.utime(two, (200, 200))
    assert find_named_file(str(tmp_path), "accuracy.txt") == str(two)


def test_read_accuracy_file_then_output(tmp_path: Path) -> None:
    assert read_accuracy(str(tmp_path), ACC) == empty_accuracy()
    (tmp_path / "stdout.log").write_text("accuracy=50%: PASS\n")
    assert read_accuracy(str(tmp_path), ACC) == {
        "passed": True,
        "summary": "accuracy=50%: PASS",
        "source": "stdout.log",
    }
    nested = tmp_path / "logs" / "accuracy.txt"
    nested.parent.mkdir()
    nested.write_text("accuracy=40%: FAIL\n")
    assert read_accuracy(str(tmp_path), ACC) == {
        "passed": False,
        "summary": "accuracy=40%: FAIL",
        "source": "logs/accuracy.txt",
    }
    nested.write_text("accuracy=60%: PASS\n")
    (tmp_path / "stdout.log").write_text("noise\n")
    assert read_accuracy(str(tmp_path), ACC)["source"] == "logs/accuracy.txt"


def test_empty_result_exactly(tmp_path: Path) -> None:
    expected = {
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
    assert empty_result() == expected
    assert read_loadgen_dir(str(tmp_path)) == expected
    assert result_from_detail({}) == dict(expected, source=DETAIL_LOG)
    assert result_from_summary("") == dict(expected, source=SUMMARY_LOG)


def test_logs_with_bytes_that_are_not_utf8_are_still_read(tmp_path: Path) -> None:
    text = (FIXTURES / "Server" / DETAIL_LOG).read_bytes()
    (tmp_path / DETAIL_LOG).write_bytes(b"\xff\xfe garbage\n" + text)
    (tmp_path / "mlperf_log_trace.json").write_bytes(b"\xff")
    result = read_loadgen_dir(str(tmp_path))
    assert result["result_validity"] == "VALID" and result["scenario"] == "Server"
    assert result["log_files"] == [DETAIL_LOG, "mlperf_log_trace.json"]
    (tmp_path / "accuracy.txt").write_bytes(b"\xff accuracy=1%: PASS\n")
    assert read_accuracy(str(tmp_path), ACC)["summary"] == "\ufffd accuracy=1%: PASS"


def test_a_record_whose_value_quotes_the_prefix_is_read_from_the_first_prefix() -> None:
    values = parse_detail(':::MLLOG {"key": "generic_message", "value": ":::MLLOG {} x"}')
    assert values["generic_message"] == ":::MLLOG {} x"


def test_read_respects_its_byte_limit(tmp_path: Path) -> None:
    from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_logs import _read

    path = tmp_path / "log.txt"
    path.write_bytes(b"0123456789")
    assert _read(str(path), 4) == "0123"
    assert _read(str(path)) == "0123456789"
    assert _read(str(tmp_path / "missing")) is None


def test_find_dirs_with_mtimes_below_one_second(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d, mtime in ((a, 0.0), (b, 0.5)):
        d.mkdir()
        (d / DETAIL_LOG).write_text("x")
        os.utime(d / DETAIL_LOG, (mtime, mtime))
    assert find_loadgen_dirs(str(tmp_path)) == [str(b), str(a)]


def test_files_that_vanish_or_dangle_are_skipped(tmp_path: Path) -> None:
    """A log or accuracy file that cannot be stat'ed (a dangling link, a file removed between
    the walk and the stat) does not break the search."""
    (tmp_path / DETAIL_LOG).symlink_to(tmp_path / "gone")
    assert find_loadgen_dirs(str(tmp_path)) == [str(tmp_path)]
    (tmp_path / "accuracy.txt").symlink_to(tmp_path / "gone")
    assert find_named_file(str(tmp_path), "accuracy.txt") is None
