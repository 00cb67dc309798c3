"""A background's Offline query is bounded in LoadGen memory (it would otherwise be sized for
background_benchmark_timeout, 2 hours, and die of std::bad_alloc on a fast slice)."""

from __future__ import annotations

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._harness_settings import (
    cap_offline_query,
)


def offline(qps: float, duration_ms: int) -> dict[str, object]:
    return {
        "scenario": "Offline",
        "mode": "PerformanceOnly",
        "min_duration_ms": duration_ms,
        "offline_expected_qps": qps,
    }


def test_the_run_that_crashed_is_shortened_to_fit() -> None:
    # seen in the lanes lab test: 152377.8 expected QPS for 7200000 ms, about 1.2e9 samples
    values = offline(152377.8, 7200000)
    message = cap_offline_query(values, 2000)
    # 2000 MB at 220 bytes a sample: 9090909 samples; at 152377.8 QPS with LoadGen's 10% more,
    # 9090909 / (152377.8 * 1.1) = 54.236 s
    assert values["min_duration_ms"] == 54236
    assert (
        message is not None
        and "7200000 to 54236" in message
        and "max_offline_query_mb 2000" in message
    )


def test_a_query_that_fits_is_left_alone() -> None:
    # 1000 QPS for 600 s: 660000 samples, 145 MB
    values = offline(1000.0, 600000)
    assert cap_offline_query(values, 2000) is None
    assert values["min_duration_ms"] == 600000


def test_no_limit_and_other_scenarios_are_left_alone() -> None:
    values = offline(152377.8, 7200000)
    assert cap_offline_query(values, None) is None
    assert values["min_duration_ms"] == 7200000
    server = dict(values, scenario="Server")
    assert cap_offline_query(server, 2000) is None and server["min_duration_ms"] == 7200000
    accuracy = dict(values, mode="AccuracyOnly")
    assert cap_offline_query(accuracy, 2000) is None
