"""LoadGen log parsing (plugins/module_utils/_loadgen_logs.py) on real LoadGen 6.0.17 logs
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

from ansible_collections.heteromig.fleet.plugins.module_utils._loadgen_logs import (
    DETAIL_LOG,
    SUMMARY_LOG,
    find_loadgen_dirs,
    parse_detail,
    parse_power_time,
    read_loadgen_dir,
    result_from_detail,
    result_from_summary,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "loadgen"
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
    assert begin is not None and end is not None
    assert clock["before"] - 0.001 <= begin <= end <= clock["after"] + 0.001, (
        "power window %.3f..%.3f outside the clock bracket %.3f..%.3f (off by %.0f s)"
        % (begin, end, clock["before"], clock["after"], begin - clock["before"])
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
