"""Aggregation of hetero_run records into rows, timelines, coverage and comparisons.

Inputs are contract-shaped results of REAL LoadGen runs (tests/hetero_samples); expected values
are read back from the LoadGen log files themselves, not from the result under test.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import hetero_samples
import pytest
from hetero_samples import power_time, read_mllog

from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_aggregate import (
    build_summary,
    comparisons,
    coverage_of,
    format_metric,
    higher_is_better,
    interference_pct,
    phase_segments,
    row_from_record,
)


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return hetero_samples.build_samples(tmp_path_factory.getbasetemp() / "hetero-samples")


def record(
    result: dict[str, Any] | None,
    *,
    host: str | None = None,
    seq: int = 1,
    status: str = "ok",
    hetero: bool = True,
    task: str = "Run",
    task_uuid: str = "t-1",
    msg: str | None = None,
) -> dict[str, Any]:
    return {
        "schema": 1,
        "seq": seq,
        "host": host or (result or {}).get("host", "h"),
        "task": task,
        "task_uuid": task_uuid,
        "action": "heteromig.fleet.hetero_run" if hetero else "ansible.builtin.ping",
        "hetero": hetero,
        "status": status,
        "msg": msg,
        "result": result,
    }


def summary_metric(fetched_dir: str, label: str) -> float:
    """The headline figure as mlperf_log_summary.txt prints it (e.g. 'Samples per second')."""
    text = (Path(fetched_dir) / "mlperf_log_summary.txt").read_text()
    match = re.search(r"^%s\s*:\s*([\d.]+)" % re.escape(label), text, re.M)
    assert match, text
    return float(match.group(1))


def detail_window(fetched_dir: str) -> tuple[float, float]:
    log = read_mllog(Path(fetched_dir) / "mlperf_log_detail.txt")
    return power_time(log["power_begin"]), power_time(log["power_end"])


def test_valid_row_carries_loadgen_figures(samples: dict[str, dict[str, Any]]) -> None:
    result = samples["valid"]
    row = row_from_record(record(result))
    main_dir = result["main"]["fetched_dir"]
    assert row["verdict"] == "VALID" and row["reasons"] == []
    assert row["main"]["metric"]["value"] == pytest.approx(
        summary_metric(main_dir, "Samples per second"), rel=1e-4
    )
    assert row["main"]["result_validity"] == "VALID"
    assert row["gpu_label"] == "H100-SXM5-80GB #0 1g.10gb"
    assert row["coverage"] == "2/2" and row["covered_all"] is True
    assert row["isolated"] is False


def test_timeline_lanes_follow_the_logs(samples: dict[str, dict[str, Any]]) -> None:
    result = samples["valid"]
    timeline = row_from_record(record(result))["timeline"]
    assert [lane["name"] for lane in timeline["lanes"]] == ["main", "bg-1", "bg-2"]
    main = timeline["lanes"][0]
    begin, end = detail_window(result["main"]["fetched_dir"])
    timed = [s for s in main["segments"] if s["phase"] == "timed"]
    assert (
        len(timed) == 1
        and timed[0]["begin"] == pytest.approx(begin)
        and timed[0]["end"] == pytest.approx(end)
    )
    assert timeline["main_window"] == {"begin": pytest.approx(begin), "end": pytest.approx(end)}
    for lane in timeline["lanes"]:
        phases = [s["phase"] for s in lane["segments"]]
        assert phases[0] == "launch" and phases == sorted(
            phases, key=["launch", "ready", "timed", "end"].index
        )
        bounds = [(s["begin"], s["end"]) for s in lane["segments"]]
        assert all(b <= e for b, e in bounds) and all(
            bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1)
        )
    # bg-1 was stopped after the main benchmark: the runner's SIGTERM after the main timed
    # phase, then its end by that signal (no exit code); the markers are the run's own events
    bg1 = timeline["lanes"][1]
    events = [
        (e["event"], e["t"], e["detail"])
        for e in result["timeline"]
        if e["benchmark"] == "bg-1" and e["event"] in ("kill", "exit")
    ]
    assert [(m["event"], m["t"], m["detail"]) for m in bg1["markers"]] == events
    assert [event for event, _t, _detail in events] == ["kill", "exit"]
    assert events[0][1] >= end and events[1][1] == result["backgrounds"][0]["ended_at"]
    assert (result["backgrounds"][0]["signal"], result["backgrounds"][0]["exit_code"]) == (
        "SIGTERM",
        None,
    )
    assert timeline["t0"] == min(b["launched_at"] for b in [result["main"], *result["backgrounds"]])


def test_phase_segments_without_readiness_is_one_launch_bar() -> None:
    times = {"launch": 10.0, "ready": None, "timed_begin": None, "timed_end": None, "end": 14.0}
    assert phase_segments(times) == [{"phase": "launch", "begin": 10.0, "end": 14.0}]


def test_invalid_row_keeps_every_reason_and_flags_the_uncovered_background(
    samples: dict[str, dict[str, Any]],
) -> None:
    result = samples["invalid"]
    row = row_from_record(record(result, status="failed", msg="hetero run INVALID"))
    assert row["verdict"] == "INVALID"
    summary = (Path(result["main"]["fetched_dir"]) / "mlperf_log_summary.txt").read_text()
    assert "Min duration satisfied : NO" in summary  # what LoadGen itself says
    log = read_mllog(Path(result["main"]["fetched_dir"]) / "mlperf_log_detail.txt")
    assert log["result_validity"] == "INVALID" and log["result_min_duration_met"] is False
    # the runner's reason for it (docs/hetero_result_contract.md), with LoadGen's own words
    assert (
        row["reasons"]
        == result["reasons"]
        == [
            "the main benchmark's LoadGen result is INVALID: min duration not satisfied; %s"
            % log["result_invalid_reason"].strip()
        ]
    )
    assert row["main"]["result_validity"] == "INVALID"
    # the background finished during the main run (a lenient run's warning, not a reason) and
    # the row says by how much it missed the main timed phase, from the logs
    (bg,) = row["backgrounds"]
    ended = result["backgrounds"][0]["ended_at"]
    missed = power_time(log["power_end"]) - ended
    assert missed > 0
    why = re.fullmatch(r"ended ([\d.]+) s before the main timed phase ended", bg["why"])
    assert bg["covered"] is False and why, bg["why"]
    assert float(why.group(1)) == pytest.approx(missed, abs=0.0015)
    assert row["coverage"] == "0/1" and row["covered_all"] is False


def test_crashed_main_has_no_metric(samples: dict[str, dict[str, Any]]) -> None:
    result = samples["crash"]
    row = row_from_record(record(result))
    assert row["verdict"] == "INVALID"
    # fake_bench --crash-after exits 4 in its timed phase, before LoadGen wrote anything
    assert "the main benchmark exited with code 4" in row["reasons"]
    assert not list(Path(result["main"]["fetched_dir"]).glob("mlperf_log_*"))
    assert row["main"]["exit_code"] == 4
    assert row["main"]["metric"] is None and row["main"]["metric_text"] == "-"


def test_coverage_rules() -> None:
    main = {"timed_begin": 100.0, "timed_end": 200.0}
    assert coverage_of(main, {"ready": 90.0, "end": 210.0}) == (True, "covered")
    assert coverage_of(main, {"ready": 90.0, "end": None})[0] is True  # still running
    assert coverage_of(main, {"ready": None, "end": 210.0}) == (False, "never became ready")
    late = coverage_of(main, {"ready": 101.5, "end": 210.0})
    assert late[0] is False and "1.500 s after" in late[1]
    early = coverage_of(main, {"ready": 90.0, "end": 150.0})
    assert early[0] is False and "50.000 s before" in early[1]
    assert (
        coverage_of({"timed_begin": None, "timed_end": None}, {"ready": 1.0, "end": 2.0})[0] is None
    )


def test_interference_against_isolated_run(samples: dict[str, dict[str, Any]]) -> None:
    hetero, isolated = samples["valid"], samples["isolated"]
    rows = [row_from_record(record(isolated, seq=1)), row_from_record(record(hetero, seq=2))]
    pairs = comparisons(rows)
    iso = summary_metric(isolated["main"]["fetched_dir"], "Samples per second")
    het = summary_metric(hetero["main"]["fetched_dir"], "Samples per second")
    assert len(pairs) == 1
    (pair,) = pairs
    assert pair["isolated_value"] == pytest.approx(iso, rel=1e-4)
    assert pair["hetero_value"] == pytest.approx(het, rel=1e-4)
    assert pair["interference_pct"] == pytest.approx(
        (pair["isolated_value"] - pair["hetero_value"]) / pair["isolated_value"] * 100
    )
    assert abs(pair["interference_pct"] - (iso - het) / iso * 100) < 0.05
    assert pair["isolated_source"] == "this run" and pair["higher_is_better"] is True
    assert rows[1]["interference"] is pair and rows[0]["interference"] is None


def test_interference_skips_invalid_runs_and_other_slices(
    samples: dict[str, dict[str, Any]],
) -> None:
    isolated = row_from_record(record(samples["isolated"], seq=1))
    invalid = row_from_record(record(samples["invalid"], seq=2))
    other_profile = copy.deepcopy(samples["valid"])
    other_profile["main"]["slice"]["profile"] = "3g.40gb"
    other = row_from_record(record(other_profile, seq=3))
    assert comparisons([isolated, invalid, other]) == []


def test_interference_prefers_the_same_host_and_takes_baselines(
    samples: dict[str, dict[str, Any]],
) -> None:
    hetero = row_from_record(record(samples["valid"], seq=5))
    same = row_from_record(record(samples["isolated"], seq=1))
    other = copy.deepcopy(samples["isolated"])
    other["host"] = "dgx-h100-99"
    other["main"]["loadgen"]["metric"]["value"] = 1.0
    other_row = row_from_record(record(other, seq=2))
    (pair,) = comparisons([other_row, hetero], baseline_rows=[same])
    assert pair["isolated_host"] == hetero["host"] and pair["isolated_source"] == "baseline"
    (pair,) = comparisons([other_row, hetero])
    assert pair["isolated_host"] == "dgx-h100-99" and pair["isolated_value"] == 1.0


def test_metric_direction_and_formatting() -> None:
    throughput = {"name": "samples_per_second", "value": 1234.5, "unit": "samples/s"}
    latency = {"name": "p90_latency_ns", "value": 2_500_000, "unit": "ns"}
    assert higher_is_better(throughput) and not higher_is_better(latency)
    assert format_metric(throughput) == "1,234.5 samples/s"
    assert format_metric(latency) == "2.50 ms"
    assert format_metric(None) == "-"
    assert interference_pct(100.0, 93.0, True) == pytest.approx(7.0)
    assert interference_pct(10.0, 11.0, False) == pytest.approx(10.0)
    assert interference_pct(0.0, 1.0, True) is None


def test_summary_has_a_row_for_every_host(samples: dict[str, dict[str, Any]]) -> None:
    records = [
        record(
            None,
            host="h4",
            seq=1,
            status="unreachable",
            hetero=False,
            task="Ping",
            msg="ssh: connect refused",
        ),
        record(
            None, host="h1", seq=2, status="failed", hetero=False, task="Ping", msg="ignored later"
        ),
        record(samples["valid"], host="h1", seq=3),
        record(samples["invalid"], host="h2", seq=4, status="failed", msg="hetero run INVALID"),
        record(None, host="h5", seq=5, status="failed", msg="module crashed"),
        record(None, host="h6", seq=6, status="skipped"),
    ]
    started = [
        ("h1", "t-1", "Run"),
        ("h2", "t-1", "Run"),
        ("h3", "t-1", "Run"),
        ("h5", "t-1", "Run"),
    ]
    summary = build_summary(records, started=started, generated_at=1.0, report_dir="/r")
    verdicts = {r["host"]: r["verdict"] for r in summary["rows"]}
    assert verdicts == {
        "h1": "VALID",
        "h2": "INVALID",
        "h3": "NO_RESULT",
        "h4": "UNREACHABLE",
        "h5": "FAILED",
        "h6": "SKIPPED",
    }
    rows = {r["host"]: r for r in summary["rows"]}
    assert rows["h4"]["reasons"] == ["unreachable at task 'Ping': ssh: connect refused"]
    assert rows["h5"]["reasons"] == ["task 'Run' failed: module crashed"]
    assert "interrupted" in rows["h3"]["reasons"][0]
    assert summary["counts"] == {
        "VALID": 1,
        "INVALID": 1,
        "FAILED": 1,
        "UNREACHABLE": 1,
        "SKIPPED": 1,
        "NO_RESULT": 1,
    }
    assert summary["total"] == 6 and summary["ok"] is False
    assert summary["run_ids"] == [hetero_samples.SAMPLE_RUN_ID]
    assert [r["host"] for r in summary["rows"]] == sorted(verdicts)


def test_summary_of_valid_runs_is_ok(samples: dict[str, dict[str, Any]]) -> None:
    summary = build_summary([record(samples["valid"]), record(samples["server"], seq=2)])
    assert summary["ok"] is True and summary["counts"] == {"VALID": 2}
    server = next(r for r in summary["rows"] if r["main"]["scenario"] == "Server")
    expected = summary_metric(
        samples["server"]["main"]["fetched_dir"], "Completed samples per second"
    )
    assert server["main"]["metric"]["value"] == pytest.approx(expected, rel=1e-4)


def test_failed_task_with_valid_body_is_not_valid(samples: dict[str, dict[str, Any]]) -> None:
    row = row_from_record(record(samples["valid"], status="failed", msg="fetch failed"))
    assert row["verdict"] == "FAILED"
    assert row["reasons"] == ["task 'Run' failed: fetch failed"]


def test_phase_segments_absorb_clock_skew_between_markers_and_loadgen() -> None:
    # the readiness marker was read 2 ms after LoadGen's power_begin
    times = {"launch": 10.0, "ready": 11.002, "timed_begin": 11.0, "timed_end": 12.0, "end": 12.5}
    assert phase_segments(times) == [
        {"phase": "launch", "begin": 10.0, "end": 11.0},
        {"phase": "ready", "begin": 11.0, "end": 11.0},
        {"phase": "timed", "begin": 11.0, "end": 12.0},
        {"phase": "end", "begin": 12.0, "end": 12.5},
    ]


def test_shared_gpu_run_says_so_where_the_gpu_is_named(
    samples: dict[str, dict[str, Any]],
) -> None:
    result = copy.deepcopy(samples["valid"])
    result["shared_gpu"] = True
    row = row_from_record(record(result))
    assert row["gpu_label"].endswith("SHARED GPU, NO MIG ISOLATION")
    assert row["isolated"] is False
    plain = row_from_record(record(samples["valid"]))
    assert "SHARED" not in plain["gpu_label"]
