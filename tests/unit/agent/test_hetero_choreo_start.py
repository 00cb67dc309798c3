"""How a run of the HeteroMIG choreography (plugins/module_utils/agent/_hetero_choreo.py,
_choreo_types.py, _choreo_checks.py) gets to its main benchmark, pinned where mutation testing
(benchmarks/mutation.sh) found it unpinned: every configuration problem in words and the
defaults, which benchmarks the machine wants readiness and progress from, the progress history
and its trim, ``steady`` at its tolerance and window edges, the ready line, the immediate start,
and the scanners that find a readiness marker or a progress count in a benchmark's output
(partial lines, tails, anchors, messages).

Split from test_hetero_choreo_mutants.py with test_hetero_choreo_verdict.py (whole runs, how they
stop, and the verdict); the fake driver of both is in hetero_choreo_support.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hetero_choreo_support import LINE, T0, make

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_checks import (
    LineScanner,
    ProgressScanner,
    steady,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import (
    ACCURACY_ONLY,
    MAIN,
    PHASE_BUFFER,
    PHASE_MAIN,
    PHASE_STARTING,
    Begin,
    CancelTimer,
    Config,
    Exited,
    Launch,
    Progress,
    Ready,
    TimerFired,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_choreo import (
    Choreography,
)


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("overrides", "problems"),
    [
        ({}, []),
        (
            {"background_start_timeout": 0, "run_timeout": -1, "steady_window": 0},
            [
                "background_start_timeout must be greater than 0, got 0",
                "run_timeout must be greater than 0, got -1",
                "steady_window must be greater than 0, got 0",
            ],
        ),
        (
            {
                "start_time_buffer": -1,
                "end_time_buffer_min": -0.5,
                "stop_grace": -2,
                "kill_grace": -3,
            },
            [
                "start_time_buffer must not be negative, got -1",
                "end_time_buffer_min must not be negative, got -0.5",
                "stop_grace must not be negative, got -2",
                "kill_grace must not be negative, got -3",
            ],
        ),
        (
            {"start_time_buffer": 0, "end_time_buffer_min": 0, "stop_grace": 0, "kill_grace": 0},
            [],
        ),
        (
            {"background_start_timeout": 0.001, "run_timeout": 0.001, "steady_window": 0.001},
            [],
        ),
        (
            {"start_time_buffer_mode": "sometimes", "background_mode": "never"},
            [
                "start_time_buffer_mode must be 'fixed' or 'steady', got 'sometimes'",
                "background_mode must be 'automatic' or 'wait', got 'never'",
            ],
        ),
        (
            {"main_mode": "Both"},
            ["main_mode must be PerformanceOnly or AccuracyOnly, got 'Both'"],
        ),
        ({"steady_windows": 1}, ["steady_windows must be at least 2, got 1"]),
        ({"steady_windows": 2}, []),
        ({"steady_tolerance": 0}, ["steady_tolerance must be between 0 and 1, got 0"]),
        ({"steady_tolerance": 1}, ["steady_tolerance must be between 0 and 1, got 1"]),
        ({"steady_tolerance": 0.999}, []),
        ({"backgrounds": ("a", "a")}, ["background names must be unique and not 'main'"]),
        ({"backgrounds": ("main",)}, ["background names must be unique and not 'main'"]),
        ({"start_time_buffer_mode": "steady", "background_mode": "wait"}, []),
        ({"main_mode": ACCURACY_ONLY}, []),
    ],
)
def test_config_problems_exactly(overrides: dict[str, Any], problems: list[str]) -> None:
    assert Config(**overrides).validate() == problems
    if problems:
        with pytest.raises(ValueError, match="^%s$" % re.escape("; ".join(problems))):
            Choreography(Config(**overrides))


def test_config_defaults() -> None:
    config = Config()
    assert (
        config.background_start_timeout,
        config.start_time_buffer,
        config.start_time_buffer_mode,
        config.steady_window,
        config.steady_windows,
        config.steady_tolerance,
        config.main_immediate_start,
        config.background_mode,
        config.end_time_buffer_min,
        config.stop_grace,
        config.kill_grace,
        config.run_timeout,
        config.lenient,
        config.main_mode,
        config.backgrounds,
        config.labels,
    ) == (
        600.0,
        10.0,
        "fixed",
        2.0,
        3,
        0.05,
        False,
        "automatic",
        30.0,
        10.0,
        5.0,
        7200.0,
        False,
        "PerformanceOnly",
        (),
        (),
    )


# -------------------------------------------------------------------------------- helpers
def test_wants_readiness_and_progress() -> None:
    d = make(start_time_buffer_mode="steady", start_time_buffer=30.0)
    assert not d.machine.wants_readiness("nobody") and not d.machine.wants_progress("nobody")
    d.at(Begin, 0)
    assert d.machine.wants_readiness("bg-1") and not d.machine.wants_progress("bg-1")
    d.at(Ready, 1, "bg-1", LINE)
    assert not d.machine.wants_readiness("bg-1")
    assert d.machine.wants_progress("bg-1") and d.machine.phase == PHASE_STARTING
    assert not d.machine.wants_progress("bg-2")  # not ready yet
    d.at(Ready, 1, "bg-2", LINE)
    assert d.machine.phase == PHASE_BUFFER and d.machine.wants_progress("bg-2")
    d.at(TimerFired, 31, "start_buffer")
    assert d.machine.phase == PHASE_MAIN and not d.machine.wants_progress("bg-1")
    assert d.machine.wants_readiness(MAIN)


def test_progress_before_the_buffer_is_kept_and_counts() -> None:
    d = make(
        start_time_buffer_mode="steady",
        start_time_buffer=30.0,
        steady_window=1.0,
        steady_windows=2,
    )
    d.at(Begin, 0)
    d.at(Ready, 0, "bg-1", LINE)
    for t in (0.0, 1.0, 2.0):  # bg-2 not ready yet: no launch, but bg-1's history grows
        assert d.at(Progress, t, "bg-1", 100 * t) == []
    assert d.machine.benches["bg-1"].progress == [(T0, 0.0), (T0 + 1, 100.0), (T0 + 2, 200.0)]
    d.at(Ready, 2, "bg-2", LINE)
    d.at(Progress, 3, "bg-1", 300)
    d.at(Progress, 4, "bg-1", 400)
    d.at(Progress, 2, "bg-2", 0)
    d.at(Progress, 3, "bg-2", 100)
    out = d.at(Progress, 4, "bg-2", 200)
    assert out == [CancelTimer("start_buffer"), Launch(MAIN)]
    assert CancelTimer("start_buffer") in out and d.machine.steady_at == T0 + 4
    assert (4.0, "phase", None, "backgrounds reached steady throughput") in d.timeline()
    assert "start_buffer" not in d.machine.timers


def test_progress_trim_keeps_what_the_steady_check_needs() -> None:
    d = make(
        backgrounds=("bg-1",),
        start_time_buffer_mode="steady",
        start_time_buffer=100.0,
        steady_window=1.0,
        steady_windows=2,
    )
    d.at(Begin, 0)
    d.at(Ready, 0, "bg-1", LINE)
    samples = [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (3.0, 0.0), (4.0, 0.0)]
    for t, value in samples:  # stalled: never steady
        d.at(Progress, t, "bg-1", value)
    # keep_after = 4 - 1 * (2 + 2) = 0: nothing older than the window is dropped yet
    assert [p[0] - T0 for p in d.machine.benches["bg-1"].progress] == [0, 1, 2, 3, 4]
    d.at(Progress, 5.5, "bg-1", 0.0)  # keep_after 1.5: drop while the second sample is older
    assert [p[0] - T0 for p in d.machine.benches["bg-1"].progress] == [1, 2, 3, 4, 5.5]
    d.at(Progress, 100, "bg-1", 0.0)
    assert [p[0] - T0 for p in d.machine.benches["bg-1"].progress] == [5.5, 100]


@pytest.mark.parametrize(
    ("samples", "now", "expected"),
    [
        # window edges at 0, 1, 2, 3: a sample exactly on an edge counts for that edge
        ([(0.0, 0.0), (1.0, 100.0), (2.0, 200.0), (3.0, 300.0)], 3.0, True),
        # edges 0.5 .. 3.5 take the samples at 0, 1, 2, 3
        ([(0.0, 0.0), (1.0, 100.0), (2.0, 200.0), (3.0, 300.0)], 3.5, True),
        ([(0.6, 0.0), (1.0, 100.0), (2.0, 200.0), (3.0, 300.0)], 3.5, False),  # none by 0.5
        ([(0.001, 0.0), (1.0, 100.0), (2.0, 200.0), (3.0, 300.0)], 3.0, False),  # no 0 edge
        # rates 100, 100, 105: spread 5 / mean 101.67 = 0.049 <= 0.05
        ([(0.0, 0.0), (1.0, 100.0), (2.0, 200.0), (3.0, 305.0)], 3.0, True),
        # rates 100, 100, 106: 6 / 102 = 0.0588 > 0.05
        ([(0.0, 0.0), (1.0, 100.0), (2.0, 200.0), (3.0, 306.0)], 3.0, False),
        # the last sample at or before each edge: 0.5 -> 50 counts for the edge at 1? no: 1.0
        ([(0.0, 0.0), (0.5, 999.0), (1.0, 100.0), (2.0, 200.0), (3.0, 300.0)], 3.0, True),
        ([(0.0, 0.0), (1.0, 100.0), (1.5, 7.0), (2.0, 200.0), (3.0, 300.0)], 3.0, True),
        ([(0.0, 0.0), (1.0, 100.0), (2.0, 200.0), (2.5, 250.0), (3.0, 300.0)], 3.0, True),
        ([(0.0, 300.0), (1.0, 200.0), (2.0, 100.0), (3.0, 0.0)], 3.0, False),  # negative
        ([(0.0, 0.0), (1.0, 100.0), (2.0, 100.0), (3.0, 200.0)], 3.0, False),  # one zero rate
    ],
)
def test_steady_edges(samples: list[tuple[float, float]], now: float, expected: bool) -> None:
    assert steady(samples, now, 1.0, 3, 0.05) is expected


def test_steady_with_two_windows_and_a_wider_window() -> None:
    samples = [(0.0, 0.0), (2.0, 100.0), (4.0, 200.0)]
    assert steady(samples, 4.0, 2.0, 2, 0.01) is True
    assert steady(samples, 4.0, 2.0, 3, 0.01) is False
    assert steady([(0.0, 0.0), (1.0, 10.0)], 1.0, 1.0, 1, 0.01) is True


# -------------------------------------------------------------------------------- scanners
def test_line_scanner_matches_the_whole_line_around_the_match() -> None:
    scanner = LineScanner(("MARK",))
    assert scanner.feed(b"a\nxx MARK yy  \nb\n") == "xx MARK yy"
    scanner = LineScanner(("MARK",))
    assert scanner.feed(b"MARK at start\n") == "MARK at start"
    scanner = LineScanner(("first", "second"))
    assert scanner.feed(b"second\n") == "second"
    assert LineScanner(("^MARK$",)).feed(b"x\nMARK\ny\n") == "MARK"


def test_line_scanner_tail_is_kept_between_chunks() -> None:
    scanner = LineScanner(("MARK",), max_line=100)
    assert scanner.feed(b"noise\nMA") is None
    assert scanner._tail == b"MA"
    assert scanner.feed(b"RK") is None and scanner._tail == b"MARK"
    assert scanner.feed(b" end\nnext") == "MARK end"
    assert scanner._tail == b"next"
    assert scanner.feed(b" line\n") is None and scanner._tail == b""
    scanner = LineScanner(("MARK",), max_line=4)
    assert scanner.feed(b"x\n123456789") is None and scanner._tail == b"6789"
    assert scanner.feed(b"\nMARK\n") == "MARK"


def test_line_scanner_match_in_the_unfinished_tail_is_not_reported() -> None:
    scanner = LineScanner(("MARK",))
    assert scanner.feed(b"done\nMARK without newline") is None
    assert scanner.feed(b"\n") == "MARK without newline"
    scanner = LineScanner(("MARK",))
    assert scanner.feed(b"x\nMARK") is None


def test_line_scanner_decodes_bad_bytes_and_cuts_nothing_else() -> None:
    scanner = LineScanner(("MARK",))
    assert scanner.feed(b"\xff MARK \xfe\n") == "\ufffd MARK \ufffd"
    assert scanner.max_line == 65536


def test_progress_scanner_keeps_a_partial_line_and_uses_the_last_match() -> None:
    scanner = ProgressScanner(r"n=(?P<count>\d+)")
    assert scanner.feed(b"n=1\nn=2\nn=3") == 2.0
    assert scanner._tail == b"n=3"
    assert scanner.feed(b"4") is None and scanner._tail == b"n=34"
    assert scanner.feed(b"\n") == 34.0 and scanner._tail == b""
    scanner = ProgressScanner(r"n=(?P<count>\d+)")
    assert scanner.feed(b"n=5 n=6\n") == 6.0


# ------------------------------------------------------------- second round of survivors
def test_steady_rate_and_spread_edges() -> None:
    # rates 95, 100, 105: spread 10 / mean 100 is exactly the tolerance 0.1: steady
    exact = [(0.0, 0.0), (1.0, 95.0), (2.0, 195.0), (3.0, 300.0)]
    assert steady(exact, 3.0, 1.0, 3, 0.1) is True
    assert steady(exact, 3.0, 1.0, 3, 0.099) is False
    # slow but steady: rates of half a sample per second are positive
    assert steady([(0.0, 0.0), (1.0, 0.5), (2.0, 1.0), (3.0, 1.5)], 3.0, 1.0, 3, 0.05) is True
    # counts far above the times: the history check looks at times, not counts
    big = [(0.0, 1000.0), (1.0, 1100.0), (2.0, 1200.0), (3.0, 1300.0)]
    assert steady(big, 3.0, 1.0, 3, 0.05) is True
    # a zero rate is never steady, whatever the tolerance (called directly, outside Config)
    stalled_once = [(0.0, 0.0), (1.0, 0.0), (2.0, 100.0), (3.0, 200.0)]
    assert steady(stalled_once, 3.0, 1.0, 3, 1.5) is False


def test_a_failed_background_does_not_make_the_others_steady() -> None:
    d = make(
        lenient=True,
        start_time_buffer_mode="steady",
        start_time_buffer=100.0,
        steady_window=1.0,
        steady_windows=2,
    )
    d.at(Begin, 0)
    d.at(Exited, 0.5, "bg-1", 1)  # failed (lenient) and listed first
    d.at(Ready, 1, "bg-2", LINE)
    assert d.machine.phase == PHASE_BUFFER
    for t, value in ((1.0, 0.0), (2.0, 10.0), (3.0, 100.0), (4.0, 110.0)):  # never steady
        d.at(Progress, t, "bg-2", value)
    assert Launch(MAIN) not in d.actions and d.machine.phase == PHASE_BUFFER
    for t, value in ((5.0, 210.0), (6.0, 310.0)):  # steady now
        d.at(Progress, t, "bg-2", value)
    assert Launch(MAIN) in d.actions and d.machine.steady_at == T0 + 6


def test_progress_trim_keeps_a_sample_exactly_at_the_oldest_edge() -> None:
    d = make(
        backgrounds=("bg-1",),
        start_time_buffer_mode="steady",
        start_time_buffer=100.0,
        steady_window=1.0,
        steady_windows=2,
    )
    d.at(Begin, 0)
    d.at(Ready, 0, "bg-1", LINE)
    for t in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0):
        d.at(Progress, t, "bg-1", 0.0)
    # keep_after = 5 - 4 = 1: the sample at 1 s is not older than that, so 0 s stays before it
    assert [p[0] - T0 for p in d.machine.benches["bg-1"].progress] == [0, 1, 2, 3, 4, 5]


def test_progress_scanner_lines_anchors_tail_and_message() -> None:
    scanner = ProgressScanner(r"^n=(?P<count>\d+)")
    assert scanner.feed(b"x\nn=5\n") == 5.0  # ^ matches at each line's start
    assert scanner.feed(b"xn=6\n") is None
    assert ProgressScanner(r"^(?P<count>\d)").feed(b"x\n7 not finished") is None
    scanner = ProgressScanner(r"n=(?P<count>\d+)")
    assert scanner.feed(b"a" * 70000) is None and len(scanner._tail) == 65536
    with pytest.raises(
        ValueError, match=r"^progress_regex needs a named group 'count': done \\d\+$"
    ):
        ProgressScanner(r"done \d+")


# -------------------------------------------------------------- third round of survivors
def test_the_ready_line_is_capped_at_500_characters() -> None:
    d = make(backgrounds=("bg-1",))
    d.at(Begin, 0)
    d.at(Ready, 1, "bg-1", "x" * 600)
    assert d.machine.benches["bg-1"].ready_line == "x" * 500


def test_immediate_start_logs_the_main_phase_at_the_last_marker() -> None:
    d = make(main_immediate_start=True)
    d.at(Begin, 0)
    d.at(Ready, 1, "bg-1", LINE)
    d.at(Ready, 2, "bg-2", LINE)
    assert d.timeline()[-3:] == [
        (2.0, "phase", None, "all backgrounds ready"),
        (2.0, "phase", None, "main_running"),
        (2.0, "launch", MAIN, "pid 1003"),
    ]


def test_line_scanner_never_matches_the_unfinished_next_line() -> None:
    scanner = LineScanner(("^M",))
    assert scanner.feed(b"x\nM") is None  # one character after the last newline
    scanner = LineScanner(("^M",))
    assert scanner.feed(b"ab") is None
    assert scanner.feed(b"c\nM rest") is None  # with a tail: still not the next line's start
    assert scanner.feed(b"\n") == "M rest"


def test_line_scanner_an_empty_line_can_be_the_marker() -> None:
    assert LineScanner(("^$",)).feed(b"\nfoo\n") == ""


def test_line_scanner_messages() -> None:
    with pytest.raises(ValueError, match=r"^at least one readiness regex is needed$"):
        LineScanner(())


def test_progress_scanner_starts_with_an_empty_tail() -> None:
    assert ProgressScanner(r"^n=(?P<count>\d+)").feed(b"n=1\n") == 1.0
