"""Whole runs of the HeteroMIG choreography (plugins/module_utils/agent/_hetero_choreo.py,
_choreo_types.py, _choreo_checks.py) and how they end, pinned where mutation testing
(benchmarks/mutation.sh) found them unpinned: the exact timeline and actions of whole runs (the
timeline is part of the result contract, docs/hetero_result_contract.md), stop, abort and the
kill/reap path, launch failures, the readiness and run deadlines, and the verdict (LoadGen and
accuracy problems in words, the windows, the overlap check, the times in its reasons).

Split from test_hetero_choreo_mutants.py with test_hetero_choreo_start.py (configuration,
readiness, progress, ``steady`` and the scanners); the fake driver of both is in
hetero_choreo_support.py."""

from __future__ import annotations

from typing import Any

import pytest
from hetero_choreo_support import LINE, T0, make, power

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_checks import (
    accuracy_problems,
    background_window,
    main_window,
    performance_problems,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import (
    ACCURACY_ONLY,
    INVALID,
    MAIN,
    PHASE_ABORTING,
    PHASE_BUFFER,
    PHASE_COLLECTING,
    PHASE_STARTING,
    PHASE_STOPPING,
    VALID,
    AbortRequested,
    ArmTimer,
    Begin,
    Bench,
    CancelTimer,
    Collect,
    Exited,
    Finish,
    Launch,
    Launched,
    LaunchFailed,
    Ready,
    ResultsCollected,
    SignalGroup,
    TimerFired,
)


# ------------------------------------------------------------------- whole runs, exactly
def test_automatic_run_timeline_and_actions_exactly() -> None:
    d = make()
    d.at(Begin, 0)
    assert d.actions == [
        ArmTimer("run_deadline", T0 + 1000),
        Launch("bg-1"),
        Launch("bg-2"),
        ArmTimer("ready_deadline", T0 + 60),
    ]
    assert d.machine.started_at == T0 and d.machine.phase == PHASE_STARTING
    assert d.at(Ready, 2, "bg-1", LINE) == []
    assert d.at(Ready, 3, "bg-2", LINE) == [
        CancelTimer("ready_deadline"),
        ArmTimer("start_buffer", T0 + 8),
    ]
    assert d.machine.timers == {"run_deadline": T0 + 1000, "start_buffer": T0 + 8}
    assert d.at(TimerFired, 8, "start_buffer") == [Launch(MAIN)]
    assert d.machine.timers == {"run_deadline": T0 + 1000}
    assert d.at(Ready, 9, MAIN, LINE) == []
    d.loadgen = {
        MAIN: power(9.5, 19.5),
        "bg-1": {"power_begin": T0 + 2.5},
        "bg-2": power(3.5, 20.9),
    }
    assert d.at(Exited, 20, MAIN, 0) == [
        SignalGroup("bg-1", "SIGTERM"),
        ArmTimer("kill:bg-1", T0 + 22),
        SignalGroup("bg-2", "SIGTERM"),
        ArmTimer("kill:bg-2", T0 + 22),
    ]
    assert d.machine.phase == PHASE_STOPPING
    assert d.at(Exited, 20.5, "bg-1", None, "SIGTERM") == [CancelTimer("kill:bg-1")]
    out = d.at(Exited, 21, "bg-2", None, "SIGTERM")
    assert out == [
        CancelTimer("kill:bg-2"),
        CancelTimer("run_deadline"),
        Collect(),
        Finish(VALID, (), ()),
    ]
    assert d.machine.timers == {} and d.machine.finished_at == T0 + 21
    assert d.timeline() == [
        (0.0, "phase", None, "starting_backgrounds"),
        (0.0, "launch", "bg-1", "pid 1001"),
        (0.0, "launch", "bg-2", "pid 1002"),
        (2.0, "ready", "bg-1", LINE),
        (2.5, "timed_begin", "bg-1", "LoadGen power_begin"),
        (3.0, "ready", "bg-2", LINE),
        (3.0, "phase", None, "all backgrounds ready"),
        (3.0, "phase", None, "start_buffer"),
        (3.5, "timed_begin", "bg-2", "LoadGen power_begin"),
        (8.0, "phase", None, "main_running"),
        (8.0, "launch", MAIN, "pid 1003"),
        (9.0, "ready", MAIN, LINE),
        (9.5, "timed_begin", MAIN, "LoadGen power_begin"),
        (19.5, "timed_end", MAIN, "LoadGen power_end"),
        (20.0, "exit", MAIN, "exited with code 0"),
        (20.0, "phase", None, "stopping_backgrounds"),
        (20.0, "kill", "bg-1", "SIGTERM"),
        (20.0, "kill", "bg-2", "SIGTERM"),
        (20.5, "exit", "bg-1", "was killed by SIGTERM"),
        (20.9, "timed_end", "bg-2", "LoadGen power_end"),
        (21.0, "exit", "bg-2", "was killed by SIGTERM"),
        (21.0, "phase", None, "collecting"),
        (21.0, "phase", None, "done"),
    ]
    assert d.machine.bench_state("bg-1") == {
        "name": "bg-1",
        "role": "background",
        "state": "exited",
        "pid": 1001,
        "launched_at": T0,
        "ready_at": T0 + 2,
        "ended_at": T0 + 20.5,
        "exit_code": None,
        "signal": "SIGTERM",
        "stopped_by_runner": True,
        "failed": None,
        "timed_window": {"begin": T0 + 2.5, "end": T0 + 20.5, "source": "power_begin/exit"},
        "accuracy": None,
    }
    main = d.machine.bench_state(MAIN)
    assert (main["role"], main["pid"], main["stopped_by_runner"], main["exit_code"]) == (
        "main",
        1003,
        False,
        0,
    )
    assert main["launched_at"] == T0 + 8 and main["ended_at"] == T0 + 20
    assert d.machine.benches["bg-1"].ready_line == LINE
    assert d.machine.label("bg-1") == "bg-1 (b1)" and d.machine.label("bg-2") == "bg-2"


def test_kill_and_reap_timeline_exactly() -> None:
    d = make(backgrounds=("bg-1",))
    d.at(Begin, 0)
    d.at(Ready, 1, "bg-1", LINE)
    d.at(TimerFired, 6, "start_buffer")
    d.at(Ready, 7, MAIN, LINE)
    d.loadgen = {MAIN: power(7, 10)}
    d.at(Exited, 10, MAIN, 0)
    assert d.at(TimerFired, 12, "kill:bg-1") == [
        SignalGroup("bg-1", "SIGKILL"),
        ArmTimer("reap:bg-1", T0 + 13),
    ]
    assert d.machine.benches["bg-1"].running
    out = d.at(TimerFired, 13, "reap:bg-1")
    message = "bg-1 (b1) did not exit 1.0 s after SIGKILL; giving up on it"
    assert out == [CancelTimer("run_deadline"), Collect(), Finish(INVALID, (message,), ())]
    bench = d.machine.benches["bg-1"]
    assert (bench.state, bench.lost, bench.ended_at) == ("exited", True, T0 + 13)
    assert d.timeline()[-6:] == [
        (10.0, "kill", "bg-1", "SIGTERM"),
        (10.0, "timed_end", MAIN, "LoadGen power_end"),  # logged at the verdict, sorted by t
        (12.0, "kill", "bg-1", "SIGKILL: still running 2.0 s after SIGTERM"),
        (13.0, "warning", "bg-1", message),
        (13.0, "phase", None, "collecting"),
        (13.0, "phase", None, "done"),
    ]


def test_kill_and_reap_timers_of_a_benchmark_that_already_exited_do_nothing() -> None:
    machine = make(backgrounds=("bg-1",)).machine
    machine.handle(Begin(T0))
    machine.handle(Launched(T0, "bg-1", 5))
    machine.handle(AbortRequested(T0 + 1, "stop"))
    machine.timers["kill:nobody"] = T0 + 3  # a stale key for a benchmark that does not exist
    assert machine.handle(TimerFired(T0 + 3, "kill:nobody")) == []
    machine.handle(Exited(T0 + 2, "bg-1", None, "SIGTERM"))
    for key in ("kill:bg-1", "reap:bg-1"):
        machine.timers[key] = T0 + 4  # fired late, after the exit
        assert machine.handle(TimerFired(T0 + 4, key)) == []
    assert not machine.benches["bg-1"].lost


def test_steady_give_up_and_lenient_warnings_in_the_timeline() -> None:
    d = make(start_time_buffer_mode="steady", start_time_buffer=4.0, lenient=True)
    d.at(Begin, 0)
    d.at(Ready, 1, "bg-1", LINE)
    out = d.at(Exited, 2, "bg-2", 3)
    warning = "bg-2 exited with code 3 before it was ready (lenient: the run goes on without it)"
    assert out == [CancelTimer("ready_deadline"), ArmTimer("start_buffer", T0 + 6)]
    d.at(TimerFired, 6, "start_buffer")
    steady_warning = (
        "backgrounds did not show steady throughput within start_time_buffer (4.0 s); launching "
        "the main benchmark anyway"
    )
    assert d.machine.warnings == [warning, steady_warning]
    tail = d.timeline()
    assert (2.0, "warning", "bg-2", warning) in tail
    assert tail.index((2.0, "warning", "bg-2", warning)) < tail.index(
        (2.0, "phase", None, "all backgrounds ready")
    )
    assert (6.0, "warning", None, steady_warning) in tail
    assert tail.index((6.0, "warning", None, steady_warning)) + 1 == tail.index(
        (6.0, "phase", None, "main_running")
    )


def test_abort_reason_is_logged_as_a_warning_and_ordering() -> None:
    d = make()
    d.at(Begin, 0)
    out = d.at(AbortRequested, 1, "lease expired")
    assert out == [
        CancelTimer("ready_deadline"),
        SignalGroup("bg-1", "SIGTERM"),
        ArmTimer("kill:bg-1", T0 + 3),
        SignalGroup("bg-2", "SIGTERM"),
        ArmTimer("kill:bg-2", T0 + 3),
    ]
    assert d.machine.phase == PHASE_ABORTING
    assert d.timeline()[3:6] == [
        (1.0, "warning", None, "lease expired"),
        (1.0, "phase", None, "aborting"),
        (1.0, "kill", "bg-1", "SIGTERM"),
    ]
    assert d.machine.main.state == "not_launched"
    d.at(Exited, 1.5, "bg-1", None, "SIGTERM")
    d.at(Exited, 1.5, "bg-2", None, "SIGTERM")
    assert d.finish().reasons == ("lease expired",)


def test_abort_without_a_reason_adds_none() -> None:
    d = make(backgrounds=())
    d.at(Begin, 0)
    d.at(AbortRequested, 1, "")
    assert [e for e in d.timeline() if e[1] == "warning"] == []
    d.at(Exited, 2, MAIN, None, "SIGTERM")
    assert d.finish().reasons == (
        "the main benchmark was stopped before it finished (was killed by SIGTERM)",
        "no LoadGen result for the main benchmark (mlperf_log_detail.txt and "
        "mlperf_log_summary.txt missing or incomplete)",
    )


def test_abort_without_a_reason_names_the_mains_own_exit_code() -> None:
    """A main that handles SIGTERM and exits with a code of its own: the reason gives the code."""
    d = make(backgrounds=())
    d.at(Begin, 0)
    d.at(AbortRequested, 1, "")
    d.at(Exited, 2, MAIN, 1)
    assert d.finish().reasons[0] == (
        "the main benchmark was stopped before it finished (exited with code 1)"
    )


def test_abort_without_a_reason_before_the_main_launched() -> None:
    d = make(backgrounds=("bg-1",))
    d.at(Begin, 0)
    d.at(AbortRequested, 1, "")
    assert d.machine.main.state == "not_launched"
    d.at(Exited, 2, "bg-1", None, "SIGTERM")
    assert d.finish() == Finish(INVALID, ("the main benchmark was not launched",), ())


def test_a_main_timeout_under_a_second_is_armed() -> None:
    d = make(backgrounds=(), main_timeout=0.5)
    out = d.at(Begin, 0)
    assert ArmTimer("main_deadline", T0 + 0.5) in out


def test_run_deadline_during_collecting_is_ignored_and_launch_during_collecting_aborts() -> None:
    machine = make(backgrounds=()).machine
    machine.handle(Begin(T0))
    machine.handle(Launched(T0, MAIN, 7))
    machine.handle(Exited(T0 + 1, MAIN, 0))
    assert machine.phase == PHASE_COLLECTING
    machine.timers["run_deadline"] = T0 + 2
    assert machine.handle(TimerFired(T0 + 2, "run_deadline")) == []
    assert machine.phase == PHASE_COLLECTING and machine.reasons == []

    machine = make(backgrounds=("bg-1",)).machine
    machine.handle(Begin(T0))
    machine.handle(LaunchFailed(T0, "bg-1", "boom"))
    assert machine.phase == PHASE_COLLECTING
    # a launch confirmed after all (the driver's answers crossed): stop it, collect again later
    out = machine.handle(Launched(T0 + 1, "bg-1", 9))
    assert out == [SignalGroup("bg-1", "SIGTERM"), ArmTimer("kill:bg-1", T0 + 3)]
    assert machine.phase == PHASE_ABORTING and machine.benches["bg-1"].running
    assert machine.handle(ResultsCollected(T0 + 1, {})) == []  # not collecting any more
    assert machine.handle(Exited(T0 + 2, "bg-1", None, "SIGTERM"))[-1] == Collect()


def test_launch_failure_of_the_main_and_late_launch_of_a_background() -> None:
    d = make(backgrounds=("bg-1",), lenient=True)
    d.at(Begin, 0)
    d.at(Ready, 1, "bg-1", LINE)
    d.machine.handle(TimerFired(T0 + 6, "start_buffer"))  # Launch(main) not answered yet
    out = d.machine.handle(LaunchFailed(T0 + 6.5, MAIN, "Permission denied"))
    assert out == [
        SignalGroup("bg-1", "SIGTERM"),
        ArmTimer("kill:bg-1", T0 + 8.5),
    ]
    assert d.machine.main.state == "not_launched" and d.machine.main.ended_at == T0 + 6.5
    assert d.machine.main.failed == "main (m-bench) could not be launched: Permission denied"
    assert d.machine.timeline[-3] == {
        "t": T0 + 6.5,
        "event": "exit",
        "benchmark": MAIN,
        "detail": "main (m-bench) could not be launched: Permission denied",
    }
    assert d.machine.handle(LaunchFailed(T0 + 7, MAIN, "again")) == []  # not pending any more
    d.at(Exited, 7, "bg-1", None, "SIGTERM")
    assert d.finish().reasons == ("main (m-bench) could not be launched: Permission denied",)


def test_background_launch_failure_with_lenient_goes_on() -> None:
    d = make(lenient=True)
    d.machine.handle(Begin(T0))
    d.machine.handle(Launched(T0, "bg-1", 1))
    d.machine.handle(LaunchFailed(T0 + 0.1, "bg-2", "no binary"))
    assert d.machine.phase == PHASE_STARTING
    assert d.machine.warnings == [
        "bg-2 could not be launched: no binary (lenient: the run goes on without it)"
    ]
    assert d.at(Ready, 1, "bg-1", LINE) == [
        CancelTimer("ready_deadline"),
        ArmTimer("start_buffer", T0 + 6),
    ]


def test_wait_mode_transitions_exactly() -> None:
    d = make(background_mode="wait", backgrounds=("bg-1",))
    d.at(Begin, 0)
    d.at(Ready, 1, "bg-1", LINE)
    d.at(TimerFired, 6, "start_buffer")
    d.at(Ready, 7, MAIN, LINE)
    d.loadgen = {MAIN: power(7, 10), "bg-1": power(1, 20)}
    assert d.at(Exited, 10, MAIN, 0) == []
    assert d.timeline()[-1] == (10.0, "phase", None, "waiting_backgrounds")
    out = d.at(Exited, 20, "bg-1", 0)
    assert out == [CancelTimer("run_deadline"), Collect(), Finish(VALID, (), ())]


def test_a_main_exit_while_aborting_changes_nothing() -> None:
    d = make(backgrounds=("bg-1",))
    d.at(Begin, 0)
    d.at(Ready, 1, "bg-1", LINE)
    d.at(TimerFired, 6, "start_buffer")
    d.at(AbortRequested, 7, "stop")
    assert d.machine.phase == PHASE_ABORTING
    before = list(d.actions)
    out = d.at(Exited, 8, MAIN, None, "SIGTERM")
    assert out == [CancelTimer("kill:main")]
    assert d.machine.phase == PHASE_ABORTING and d.actions[: len(before)] == before


# ------------------------------------------------------------------------ verdict pieces
def test_main_loadgen_errors_become_warnings_in_the_timeline() -> None:
    d = make(backgrounds=())
    d.at(Begin, 0)
    d.at(Ready, 1, MAIN, LINE)
    d.loadgen = {MAIN: dict(power(1, 2), errors=["e1", "e2"])}
    d.at(Exited, 3, MAIN, 0)
    assert d.finish() == Finish(
        VALID,
        (),
        (
            "LoadGen error in the main benchmark's log: e1",
            "LoadGen error in the main benchmark's log: e2",
        ),
    )
    assert (3.0, "warning", MAIN, "LoadGen error in the main benchmark's log: e2") in d.timeline()


def test_performance_problems_in_words() -> None:
    assert performance_problems({"result_validity": VALID}) == []
    assert performance_problems({"result_validity": INVALID}) == [
        "the main benchmark's LoadGen result is INVALID"
    ]
    assert performance_problems(
        {
            "result_validity": INVALID,
            "min_duration_satisfied": True,
            "min_queries_satisfied": False,
            "early_stopping_met": False,
            "performance_constraints_satisfied": None,
            "invalid_reason": "",
        }
    ) == [
        "the main benchmark's LoadGen result is INVALID: min queries not satisfied; early "
        "stopping not satisfied"
    ]


@pytest.mark.parametrize(
    ("loadgen", "accuracy", "problems"),
    [
        ({"source": "d", "mode": ACCURACY_ONLY}, {"passed": True}, []),
        ({"source": "d", "mode": None}, {"passed": True}, []),
        (
            {"source": None, "mode": ACCURACY_ONLY},
            {"passed": True},
            [
                "no LoadGen log for the main benchmark's accuracy run (mlperf_log_detail.txt and "
                "mlperf_log_summary.txt missing)"
            ],
        ),
        (
            {"source": "d", "mode": "PerformanceOnly"},
            {"passed": True},
            ["the main benchmark's LoadGen ran in PerformanceOnly mode, not AccuracyOnly"],
        ),
        (
            {"source": "d", "mode": ACCURACY_ONLY},
            None,
            [
                "no accuracy result for the main benchmark (its accuracy check wrote no PASS or "
                "FAIL line)"
            ],
        ),
        (
            {"source": "d", "mode": ACCURACY_ONLY},
            {"passed": False, "summary": "acc=1%: FAIL"},
            ["the main benchmark's accuracy check FAILED: acc=1%: FAIL"],
        ),
        (
            {},
            {"passed": False},
            [
                "no LoadGen log for the main benchmark's accuracy run (mlperf_log_detail.txt and "
                "mlperf_log_summary.txt missing)",
                "the main benchmark's accuracy check FAILED: None",
            ],
        ),
    ],
)
def test_accuracy_problems_in_words(
    loadgen: dict[str, Any], accuracy: dict[str, Any] | None, problems: list[str]
) -> None:
    assert accuracy_problems(loadgen, accuracy) == problems


def test_accuracy_main_verdict_goes_through_the_machine() -> None:
    d = make(backgrounds=(), main_mode=ACCURACY_ONLY)
    d.at(Begin, 0)
    d.at(Ready, 1, MAIN, LINE)
    d.loadgen = {MAIN: {"source": "mlperf_log_detail.txt", "mode": ACCURACY_ONLY}}
    d.accuracy = {MAIN: {"passed": False, "summary": "acc: FAIL"}, "stranger": {"passed": True}}
    d.at(Exited, 5, MAIN, 0)
    assert d.finish().reasons == ("the main benchmark's accuracy check FAILED: acc: FAIL",)
    assert d.machine.bench_state(MAIN)["accuracy"] == {"passed": False, "summary": "acc: FAIL"}
    assert "stranger" not in d.machine.benches


def test_results_for_unknown_benchmarks_and_empty_results() -> None:
    d = make(backgrounds=())
    d.at(Begin, 0)
    d.at(Ready, 1, MAIN, LINE)
    d.loadgen = {MAIN: power(1, 4), "ghost": power(0, 9)}
    d.accuracy = {MAIN: {}}
    d.at(Exited, 5, MAIN, 0)
    assert d.finish().verdict == VALID and d.machine.main.accuracy == {}


def test_windows_in_detail() -> None:
    main = Bench(MAIN, "main", launched_at=T0, ended_at=T0 + 9)
    main.loadgen = {"power_begin": T0 + 1}
    assert main_window(main) == {"begin": T0, "end": T0 + 9, "source": "launch/exit"}
    main.loadgen = {"power_end": T0 + 8}
    assert main_window(main)["source"] == "launch/exit"
    main.loadgen = {"power_begin": T0 + 1, "power_end": T0 + 8}
    assert main_window(main, ACCURACY_ONLY) == {
        "begin": T0,
        "end": T0 + 9,
        "source": "launch/exit",
    }
    assert main_window(Bench(MAIN, "main", launched_at=T0)) is None
    assert main_window(Bench(MAIN, "main", ended_at=T0)) is None
    bg = Bench("bg-1", "background", ready_at=T0 + 1)
    assert background_window(bg) is None  # still running
    bg.loadgen = {"power_end": T0 + 5}
    bg.ended_at = T0 + 6
    assert background_window(bg) == {"begin": T0 + 1, "end": T0 + 6, "source": "markers"}
    assert background_window(Bench("bg-2", "background", ended_at=T0)) is None


def test_judge_skips_the_overlap_of_failed_backgrounds_and_without_a_main_window() -> None:
    d = make(lenient=True, background_mode="wait")
    d.at(Begin, 0)
    d.at(Ready, 1, "bg-1", LINE)
    d.at(Ready, 1, "bg-2", LINE)
    d.at(TimerFired, 6, "start_buffer")
    d.at(Ready, 7, MAIN, LINE)
    d.at(Exited, 8, "bg-2", 0)  # finished early: a warning, and no overlap reason on top
    d.loadgen = {MAIN: power(7, 10), "bg-1": power(1, 30)}
    d.at(Exited, 10, MAIN, 0)
    d.at(Exited, 30, "bg-1", 0)
    finish = d.finish()
    assert finish.verdict == VALID and len(finish.warnings) == 1
    assert finish.warnings[0].startswith("bg-2 finished while the main benchmark was still")


def test_a_background_with_no_timed_phase_is_named_in_the_verdict() -> None:
    d = make(backgrounds=("bg-1",), background_mode="wait", main_immediate_start=True)
    d.at(Begin, 0)
    d.at(Ready, 1, "bg-1", LINE)
    d.at(Ready, 2, MAIN, LINE)
    d.loadgen = {MAIN: power(2, 5)}
    d.at(Exited, 5, MAIN, 0)
    d.machine.benches["bg-1"].ready_at = None  # as if its marker had never been seen
    d.at(Exited, 9, "bg-1", 0)
    assert d.finish().reasons == (
        "bg-1 (b1) never reached its timed phase, so it cannot have covered the main timed window",
    )


# ------------------------------------------------------------- second round of survivors
@pytest.mark.parametrize("lenient", [False, True])
def test_two_backgrounds_hanging_at_the_readiness_deadline(lenient: bool) -> None:
    d = make(lenient=lenient)
    d.at(Begin, 0)
    out = d.at(TimerFired, 60, "ready_deadline")
    hung = "%s did not reach its timed phase within 60.0 s (no readiness marker: hung or too slow to start)"
    if lenient:  # both stopped and tolerated; the run goes on to the buffer without them
        assert [a for a in out if isinstance(a, SignalGroup)] == [
            SignalGroup("bg-1", "SIGTERM"),
            SignalGroup("bg-2", "SIGTERM"),
        ]
        assert d.machine.warnings == [
            hung % "bg-1 (b1)" + " (lenient: the run goes on without it)",
            hung % "bg-2" + " (lenient: the run goes on without it)",
        ]
        assert d.machine.phase == PHASE_BUFFER and ArmTimer("start_buffer", T0 + 65) in out
    else:  # the first failure stops the run: one reason, not one per background
        assert d.machine.reasons == [hung % "bg-1 (b1)"]
        assert d.machine.phase == PHASE_ABORTING


def test_a_background_killed_by_a_signal_during_the_main_is_named_so() -> None:
    d = make(backgrounds=("bg-1",))
    d.at(Begin, 0)
    d.at(Ready, 1, "bg-1", LINE)
    d.at(TimerFired, 6, "start_buffer")
    d.at(Exited, 7, "bg-1", None, "SIGKILL")
    d.at(Exited, 7.5, MAIN, None, "SIGTERM")
    assert (
        d.finish().reasons[0]
        == "bg-1 (b1) was killed by SIGKILL while the main benchmark was running"
    )


def test_background_launch_failure_is_logged_at_its_time() -> None:
    d = make()
    d.machine.handle(Begin(T0))
    d.machine.handle(Launched(T0, "bg-2", 1))
    d.machine.handle(LaunchFailed(T0 + 0.1, "bg-1", "no binary"))
    message = "bg-1 (b1) could not be launched: no binary"
    assert d.timeline()[-3:] == [
        (0.1, "exit", "bg-1", message),
        (0.1, "phase", None, "aborting"),
        (0.1, "kill", "bg-2", "SIGTERM"),
    ]


# -------------------------------------------------------------- third round of survivors
def test_a_fresh_machine_and_unknown_events() -> None:
    machine = make().machine
    assert (machine.started_at, machine.finished_at, machine.verdict, machine.steady_at) == (
        None,
        None,
        None,
        None,
    )
    assert machine.reasons == [] and machine.warnings == [] and machine.timers == {}
    with pytest.raises(TypeError, match=r"^unknown event 'nope'$"):
        machine.handle("nope")


def test_a_late_launch_after_a_launch_failure_clears_the_end_time() -> None:
    machine = make(backgrounds=("bg-1",)).machine
    machine.handle(Begin(T0))
    machine.handle(LaunchFailed(T0, "bg-1", "boom"))
    assert machine.benches["bg-1"].ended_at == T0
    machine.handle(Launched(T0 + 1, "bg-1", 9))
    assert machine.bench_state("bg-1")["ended_at"] is None
    assert machine.bench_state("bg-1")["launched_at"] == T0 + 1


def test_a_main_stopped_for_a_reason_adds_no_second_reason() -> None:
    d = make(backgrounds=())
    d.at(Begin, 0)
    d.at(AbortRequested, 1, "stop requested")
    d.at(Exited, 2, MAIN, 143)
    assert d.finish().reasons == ("stop requested",)
    assert d.machine.reasons == list(d.finish().reasons)


def test_the_overlap_is_checked_for_backgrounds_after_a_failed_one() -> None:
    d = make(lenient=True, background_mode="wait", end_time_buffer_min=0.0)
    d.at(Begin, 0)
    d.at(Ready, 1, "bg-1", LINE)
    d.at(Ready, 1, "bg-2", LINE)
    d.at(TimerFired, 6, "start_buffer")
    d.at(Ready, 7, MAIN, LINE)
    d.at(Exited, 8, "bg-1", 0)  # failed (lenient): skipped in the overlap check ...
    d.loadgen = {MAIN: power(7, 10), "bg-2": power(1, 9)}
    d.at(Exited, 10, MAIN, 0)
    d.at(Exited, 11, "bg-2", 0)
    assert d.finish().reasons == (  # ... but bg-2 after it is still checked
        "bg-2 left its timed phase at +9.000 s, before the main timed window ended at +10.000 s",
    )


def test_verdict_times_are_relative_to_the_start_even_when_the_clock_starts_at_zero() -> None:
    """The fake clock may start at 0: the run's start is still the origin of the messages."""
    machine = make(backgrounds=("bg-1",), background_mode="wait").machine
    machine.handle(Begin(0.0))
    machine.handle(Launched(0.0, "bg-1", 1))
    machine.handle(Ready(1.0, "bg-1", LINE))
    machine.handle(TimerFired(6.0, "start_buffer"))
    machine.handle(Launched(6.0, MAIN, 2))
    machine.handle(Exited(20.0, MAIN, 0))
    machine.handle(Exited(30.0, "bg-1", 0))
    out = machine.handle(
        ResultsCollected(
            30.0,
            {
                MAIN: {"result_validity": VALID, "power_begin": 8.0, "power_end": 18.0},
                "bg-1": {"power_begin": 9.0, "power_end": 29.0},
            },
        )
    )
    assert out[-1].reasons == (
        "bg-1 (b1) entered its timed phase at +9.000 s, after the main timed window began at "
        "+8.000 s",
    )
