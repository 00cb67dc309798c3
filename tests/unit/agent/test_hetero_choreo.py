"""The HeteroMIG choreography (plugins/module_utils/agent/_hetero_choreo.py, with its vocabulary in
_choreo_types.py and its checks and scanners in _choreo_checks.py) with a fake clock and fake
processes: every path from launch to verdict, no real process and no real time."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from hetero_choreo_support import CONFIG_DEFAULTS
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_checks import (
    DEFAULT_READINESS_REGEXES,
    LineScanner,
    ProgressScanner,
    steady,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import (
    INVALID,
    MAIN,
    PHASE_BUFFER,
    PHASE_COLLECTING,
    PHASE_DONE,
    PHASE_MAIN,
    PHASE_STARTING,
    PHASE_WAITING,
    VALID,
    AbortRequested,
    ArmTimer,
    Begin,
    CancelTimer,
    Collect,
    Config,
    Exited,
    Finish,
    Launch,
    Launched,
    LaunchFailed,
    Progress,
    Ready,
    ResultsCollected,
    SignalGroup,
    TimerFired,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_choreo import (
    Choreography,
)

T0 = 1_800_000_000.0


def power(begin: float, end: float) -> dict[str, Any]:
    return {"result_validity": VALID, "power_begin": begin, "power_end": end, "errors": []}


@dataclass
class Driver:
    """Fake clock + fake processes: feeds events, records every action, launches on demand."""

    machine: Choreography
    now: float = T0
    actions: list[Any] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    fail_launch: dict[str, str] = field(default_factory=dict)
    loadgen: dict[str, dict[str, Any]] = field(default_factory=dict)

    def at(self, seconds: float) -> float:
        self.now = T0 + seconds
        return self.now

    def send(self, event: Any) -> list[Any]:
        out = self.machine.handle(event)
        self.actions.extend(out)
        follow: list[Any] = []
        for action in out:
            if isinstance(action, Launch):
                if action.name in self.fail_launch:
                    follow.append(
                        LaunchFailed(self.now, action.name, self.fail_launch[action.name])
                    )
                else:
                    self.pids[action.name] = 1000 + len(self.pids)
                    follow.append(Launched(self.now, action.name, self.pids[action.name]))
            elif isinstance(action, Collect):
                follow.append(ResultsCollected(self.now, self.loadgen))
        for event in follow:
            out.extend(self.send(event))
        return out

    def begin(self) -> list[Any]:
        return self.send(Begin(self.at(0)))

    def ready(self, name: str, t: float) -> list[Any]:
        return self.send(Ready(self.at(t), name, "[I] running actual test."))

    def exit(self, name: str, t: float, code: int | None = 0, sig: str | None = None) -> list[Any]:
        return self.send(Exited(self.at(t), name, code, sig))

    def fire(self, key: str, t: float | None = None) -> list[Any]:
        when = self.machine.timers[key] if t is None else T0 + t
        self.now = when
        return self.send(TimerFired(when, key))

    def signals(self) -> list[tuple[str, str]]:
        return [(a.name, a.signal) for a in self.actions if isinstance(a, SignalGroup)]

    def finish(self) -> Finish:
        found = [a for a in self.actions if isinstance(a, Finish)]
        assert len(found) == 1, self.actions
        return found[0]

    def stop_all_after(self, t: float) -> None:
        """Every process that got SIGTERM and still runs exits from it at ``t``."""
        for name, bench in self.machine.benches.items():
            if bench.running and bench.stop_requested_at is not None:
                self.exit(name, t, None, "SIGTERM")


def make(backgrounds: int | tuple[str, ...] = 2, **overrides: Any) -> Driver:
    if isinstance(backgrounds, int):
        backgrounds = tuple("bg-%d" % (i + 1) for i in range(backgrounds))
    values: dict[str, Any] = {
        **CONFIG_DEFAULTS,
        "backgrounds": backgrounds,
        "labels": (("main", "m-bench"), ("bg-1", "b1"), ("bg-2", "b2")),
        **overrides,
    }
    return Driver(Choreography(Config(**values)))


def run_to_main(d: Driver, ready_at: float = 2.0) -> None:
    """Begin, every background ready at ``ready_at``, the buffer, the main launched and ready."""
    d.begin()
    for bench in d.machine.backgrounds:
        d.ready(bench.name, ready_at)
    if d.machine.phase == PHASE_BUFFER:
        d.fire("start_buffer")
    assert d.machine.phase == PHASE_MAIN
    d.ready(MAIN, d.now - T0 + 1.0)


# ------------------------------------------------------------------------------ happy paths
def test_automatic_mode_valid_run_end_to_end() -> None:
    d = make()
    out = d.begin()
    assert [a for a in out if isinstance(a, Launch)] == [Launch("bg-1"), Launch("bg-2")]
    assert ArmTimer("ready_deadline", T0 + 60) in out and ArmTimer("run_deadline", T0 + 1000) in out
    assert d.machine.phase == PHASE_STARTING
    assert d.machine.wants_readiness("bg-1") and not d.machine.wants_readiness(MAIN)

    d.ready("bg-1", 2.0)
    assert d.machine.phase == PHASE_STARTING  # bg-2 not ready yet
    out = d.ready("bg-2", 3.0)
    assert CancelTimer("ready_deadline") in out
    assert ArmTimer("start_buffer", T0 + 8.0) in out and d.machine.phase == PHASE_BUFFER
    assert not d.machine.wants_readiness("bg-1")

    out = d.fire("start_buffer")
    assert Launch(MAIN) in out and d.machine.phase == PHASE_MAIN
    d.ready(MAIN, 9.0)
    d.loadgen = {MAIN: power(T0 + 9.1, T0 + 19.0)}
    out = d.exit(MAIN, 19.5)
    assert ("bg-1", "SIGTERM") in d.signals() and ("bg-2", "SIGTERM") in d.signals()
    assert ArmTimer("kill:bg-1", T0 + 21.5) in out
    d.exit("bg-1", 19.6, None, "SIGTERM")
    assert d.machine.phase != PHASE_DONE
    out = d.exit("bg-2", 19.7, None, "SIGTERM")
    assert CancelTimer("kill:bg-2") in out and CancelTimer("run_deadline") in out

    finish = d.finish()
    assert (finish.verdict, finish.reasons, finish.warnings) == (VALID, (), ())
    machine = d.machine
    assert machine.done and machine.verdict == VALID and machine.timers == {}
    assert machine.main.timed_window == {
        "begin": T0 + 9.1,
        "end": T0 + 19.0,
        "source": "power_begin/power_end",
    }
    assert machine.benches["bg-1"].timed_window == {
        "begin": T0 + 2.0,
        "end": T0 + 19.6,
        "source": "markers",
    }
    timeline = machine.sorted_timeline()
    assert [e["t"] for e in timeline] == sorted(e["t"] for e in timeline)
    events = [(e["event"], e["benchmark"]) for e in timeline]
    assert ("timed_begin", MAIN) in events and ("timed_end", MAIN) in events
    assert (
        events.index(("launch", "bg-1"))
        < events.index(("ready", "bg-1"))
        < events.index(("launch", MAIN))
        < events.index(("exit", MAIN))
        < events.index(("kill", "bg-1"))
    )
    state = machine.bench_state("bg-1")
    assert (
        state["stopped_by_runner"] and state["signal"] == "SIGTERM" and state["exit_code"] is None
    )


def test_without_backgrounds_the_main_starts_at_once() -> None:
    d = make(backgrounds=0)
    out = d.begin()
    assert Launch(MAIN) in out and d.machine.phase == PHASE_MAIN
    d.ready(MAIN, 1.0)
    d.loadgen = {MAIN: power(T0 + 1.0, T0 + 4.0)}
    d.exit(MAIN, 4.5)
    assert d.finish().verdict == VALID


@pytest.mark.parametrize("overrides", [{"main_immediate_start": True}, {"start_time_buffer": 0.0}])
def test_immediate_start_skips_the_buffer(overrides: dict[str, Any]) -> None:
    d = make(**overrides)
    d.begin()
    d.ready("bg-1", 1.0)
    out = d.ready("bg-2", 1.5)
    assert Launch(MAIN) in out
    assert not any(isinstance(a, ArmTimer) and a.key == "start_buffer" for a in d.actions)


def test_wait_mode_backgrounds_finishing_late_enough_are_valid() -> None:
    d = make(background_mode="wait")
    run_to_main(d)
    d.loadgen = {
        MAIN: power(T0 + 8.0, T0 + 20.0),
        "bg-1": power(T0 + 2.0, T0 + 25.0),
        "bg-2": power(T0 + 2.0, T0 + 26.0),
    }
    d.exit(MAIN, 20.5)
    assert d.machine.phase == PHASE_WAITING and d.signals() == []
    d.exit("bg-1", 25.0)
    d.exit("bg-2", 26.0)
    assert d.finish().verdict == VALID
    assert d.machine.benches["bg-2"].timed_window["source"] == "power_begin/power_end"


# ------------------------------------------------------------------------------- faults
def test_background_crash_before_ready_fails_and_stops_everything() -> None:
    d = make()
    d.begin()
    d.ready("bg-2", 1.0)
    d.exit("bg-1", 2.0, 3)
    assert ("bg-2", "SIGTERM") in d.signals()
    assert Launch(MAIN) not in d.actions
    d.stop_all_after(2.5)
    finish = d.finish()
    assert finish.verdict == INVALID
    # one reason: the main not launched is what the failure did, not a second reason
    assert finish.reasons == ("bg-1 (b1) exited with code 3 before it was ready",)
    assert d.machine.benches[MAIN].state == "not_launched"


def test_background_crash_before_ready_with_lenient_is_a_warning() -> None:
    d = make(lenient=True)
    d.begin()
    d.ready("bg-2", 1.0)
    out = d.exit("bg-1", 2.0, 3)
    assert ArmTimer("start_buffer", T0 + 7.0) in out  # the rest are ready: go on
    d.fire("start_buffer")
    d.ready(MAIN, 8.0)
    d.loadgen = {MAIN: power(T0 + 8.0, T0 + 12.0)}
    d.exit(MAIN, 12.5)
    d.stop_all_after(12.6)
    finish = d.finish()
    assert finish.verdict == VALID
    assert finish.warnings == (
        "bg-1 (b1) exited with code 3 before it was ready (lenient: the run goes on without it)",
    )


def test_background_that_hangs_fails_at_the_readiness_deadline() -> None:
    d = make()
    d.begin()
    d.ready("bg-1", 1.0)
    out = d.fire("ready_deadline")
    assert SignalGroup("bg-1", "SIGTERM") in out and SignalGroup("bg-2", "SIGTERM") in out
    d.stop_all_after(61.0)
    finish = d.finish()
    assert finish.verdict == INVALID
    assert finish.reasons[0].startswith("bg-2 (b2) did not reach its timed phase within 60.0 s")


def test_hung_background_with_lenient_is_stopped_and_the_run_goes_on() -> None:
    d = make(lenient=True)
    d.begin()
    d.ready("bg-1", 1.0)
    out = d.fire("ready_deadline")
    assert out[0] == SignalGroup("bg-2", "SIGTERM")
    assert ArmTimer("start_buffer", T0 + 65.0) in out
    d.exit("bg-2", 61.0, None, "SIGTERM")  # stopped by us: no second complaint
    d.fire("start_buffer")
    d.ready(MAIN, 66.0)
    d.loadgen = {MAIN: power(T0 + 66.0, T0 + 70.0)}
    d.exit(MAIN, 70.5)
    d.stop_all_after(71.0)
    finish = d.finish()
    assert finish.verdict == VALID and len(finish.warnings) == 1
    assert "did not reach its timed phase" in finish.warnings[0]


def test_background_exit_during_the_start_buffer_fails() -> None:
    d = make()
    d.begin()
    d.ready("bg-1", 1.0)
    d.ready("bg-2", 1.0)
    d.exit("bg-2", 3.0, 0)
    d.stop_all_after(3.5)
    reasons = d.finish().reasons
    assert reasons[0] == "bg-2 (b2) exited with code 0 before the main benchmark started"
    assert "start_buffer" not in d.machine.timers


def test_background_crash_after_the_main_started_fails_and_stops_the_main() -> None:
    d = make()
    run_to_main(d)
    out = d.exit("bg-2", 10.0, 139)
    assert SignalGroup(MAIN, "SIGTERM") in out and SignalGroup("bg-1", "SIGTERM") in out
    d.stop_all_after(10.5)
    finish = d.finish()
    assert finish.verdict == INVALID
    # one reason: the main's stop and its missing LoadGen result follow from it
    assert finish.reasons == (
        "bg-2 (b2) exited with code 139 while the main benchmark was running",
    )


def test_background_finishing_during_the_main_run_is_too_short() -> None:
    d = make(lenient=True)
    run_to_main(d)
    d.exit("bg-1", 10.0, 0)
    assert d.machine.phase == PHASE_MAIN  # lenient: goes on
    d.loadgen = {MAIN: power(T0 + 8.0, T0 + 12.0)}
    d.exit(MAIN, 12.5)
    d.stop_all_after(12.6)
    finish = d.finish()
    assert finish.verdict == VALID
    assert "finished while the main benchmark was still running" in finish.warnings[0]


def test_background_finishing_too_early_in_wait_mode_is_invalid() -> None:
    d = make(background_mode="wait")
    run_to_main(d)
    d.loadgen = {MAIN: power(T0 + 8.0, T0 + 20.0)}
    d.exit(MAIN, 20.0)
    d.exit("bg-1", 21.0, 0)  # 1 s after the main: end_time_buffer_min is 3 s
    assert ("bg-2", "SIGTERM") in d.signals()
    d.stop_all_after(21.5)
    reasons = d.finish().reasons
    assert reasons[0] == (
        "bg-1 (b1) finished too early: 1.0 s after the main benchmark, less than "
        "end_time_buffer_min (3.0 s)"
    )


def test_background_failing_after_the_main_in_wait_mode_is_invalid() -> None:
    d = make(background_mode="wait")
    run_to_main(d)
    d.loadgen = {MAIN: power(T0 + 8.0, T0 + 20.0)}
    d.exit(MAIN, 20.0)
    d.exit("bg-1", 30.0, 2)
    d.exit("bg-2", 30.0, None, "SIGTERM")
    assert d.finish().reasons[0] == "bg-1 (b1) exited with code 2 after the main benchmark ended"


@pytest.mark.parametrize(
    ("code", "sig", "reason"),
    [
        (1, None, "the main benchmark exited with code 1"),
        (None, "SIGSEGV", "the main benchmark was killed by SIGSEGV"),
    ],
)
def test_main_crash_stops_the_backgrounds(code: int | None, sig: str | None, reason: str) -> None:
    d = make(background_mode="wait")
    run_to_main(d)
    d.exit(MAIN, 10.0, code, sig)
    assert ("bg-1", "SIGTERM") in d.signals()  # even in wait mode: no point waiting
    d.stop_all_after(10.5)
    finish = d.finish()
    assert finish.verdict == INVALID and finish.reasons[0] == reason


def test_main_loadgen_invalid_lists_what_failed() -> None:
    d = make()
    run_to_main(d)
    d.loadgen = {
        MAIN: {
            "result_validity": INVALID,
            "min_duration_satisfied": False,
            "min_queries_satisfied": True,
            "performance_constraints_satisfied": False,
            "invalid_reason": "Reduce target QPS.",
            "power_begin": T0 + 8.0,
            "power_end": T0 + 12.0,
            "errors": ["error_runtime: boom"],
        }
    }
    d.exit(MAIN, 12.5)
    d.stop_all_after(12.6)
    finish = d.finish()
    assert finish.reasons == (
        "the main benchmark's LoadGen result is INVALID: min duration not satisfied; latency "
        "constraint not met; Reduce target QPS.",
    )
    assert finish.warnings == ("LoadGen error in the main benchmark's log: error_runtime: boom",)


def test_missing_loadgen_result_is_invalid_and_the_window_falls_back_to_markers() -> None:
    d = make()
    run_to_main(d)
    d.exit(MAIN, 12.5)
    d.stop_all_after(12.6)
    finish = d.finish()
    assert finish.reasons[0].startswith("no LoadGen result for the main benchmark")
    assert d.machine.main.timed_window == {"begin": T0 + 8.0, "end": T0 + 12.5, "source": "markers"}


def test_main_without_marker_uses_launch_and_exit() -> None:
    d = make()
    d.begin()
    d.ready("bg-1", 1.0)
    d.ready("bg-2", 1.0)
    d.fire("start_buffer")
    d.exit(MAIN, 9.0)
    d.stop_all_after(9.5)
    assert d.machine.main.timed_window == {
        "begin": T0 + 6.0,
        "end": T0 + 9.0,
        "source": "launch/exit",
    }


def test_background_whose_power_window_ends_before_the_main_is_caught() -> None:
    d = make(background_mode="wait", end_time_buffer_min=0.0)
    run_to_main(d)
    d.loadgen = {
        MAIN: power(T0 + 8.0, T0 + 20.0),
        "bg-1": power(T0 + 2.0, T0 + 19.0),
        "bg-2": power(T0 + 2.0, T0 + 30.0),
    }
    d.exit(MAIN, 20.2)
    d.exit("bg-1", 20.3)  # exited after the main, but LoadGen says its timed phase ended at 19 s
    d.exit("bg-2", 30.0)
    finish = d.finish()
    assert finish.reasons == (
        "bg-1 (b1) left its timed phase at +19.000 s, before the main timed window ended at "
        "+20.000 s",
    )


def test_background_entering_its_timed_phase_late_is_caught() -> None:
    d = make(background_mode="wait", end_time_buffer_min=0.0)
    run_to_main(d)
    d.loadgen = {MAIN: power(T0 + 8.0, T0 + 20.0), "bg-1": power(T0 + 9.0, T0 + 25.0)}
    d.exit(MAIN, 20.2)
    d.exit("bg-1", 25.0)
    d.exit("bg-2", 25.0)
    assert d.finish().reasons == (
        "bg-1 (b1) entered its timed phase at +9.000 s, after the main timed window began at "
        "+8.000 s",
    )


def test_sigkill_after_the_grace_and_giving_up_after_that() -> None:
    d = make()
    run_to_main(d)
    d.loadgen = {MAIN: power(T0 + 8.0, T0 + 12.0)}
    d.exit(MAIN, 12.0)
    d.exit("bg-1", 12.1, None, "SIGTERM")
    out = d.fire("kill:bg-2")  # bg-2 ignores SIGTERM
    assert out[0] == SignalGroup("bg-2", "SIGKILL")
    assert ArmTimer("reap:bg-2", T0 + 15.0) in out
    d.fire("reap:bg-2")  # and even SIGKILL (uninterruptible sleep)
    finish = d.finish()
    assert finish.reasons == ("bg-2 (b2) did not exit 1.0 s after SIGKILL; giving up on it",)
    assert d.machine.benches["bg-2"].lost


def test_sigkill_then_exit() -> None:
    d = make()
    run_to_main(d)
    d.loadgen = {MAIN: power(T0 + 8.0, T0 + 12.0)}
    d.exit(MAIN, 12.0)
    d.exit("bg-1", 12.1, None, "SIGTERM")
    d.fire("kill:bg-2")
    out = d.exit("bg-2", 14.2, None, "SIGKILL")
    assert CancelTimer("reap:bg-2") in out
    assert d.finish().verdict == VALID


def test_abort_request_stops_everything_with_the_reason() -> None:
    d = make()
    run_to_main(d)
    out = d.send(AbortRequested(d.at(10.0), "the controller's lease expired"))
    assert {a.name for a in out if isinstance(a, SignalGroup)} == {MAIN, "bg-1", "bg-2"}
    d.stop_all_after(10.5)
    reasons = d.finish().reasons
    assert reasons[0] == "the controller's lease expired"
    assert d.send(AbortRequested(d.at(11.0), "again")) == []  # done: ignored


def test_run_deadline_aborts() -> None:
    d = make(run_timeout=30.0)
    run_to_main(d)
    d.fire("run_deadline")
    d.stop_all_after(30.5)
    assert (
        d.finish().reasons[0]
        == "the run exceeded its timeout (background_benchmark_timeout, 30.0 s)"
    )


def test_launch_failures() -> None:
    d = make()
    d.fail_launch = {"bg-1": "No such file or directory: 'make'"}
    d.begin()
    d.stop_all_after(0.5)
    assert (
        d.finish().reasons[0]
        == "bg-1 (b1) could not be launched: No such file or directory: 'make'"
    )

    d = make(backgrounds=0)
    d.fail_launch = {MAIN: "Permission denied"}
    d.begin()
    finish = d.finish()
    assert finish.reasons == ("main (m-bench) could not be launched: Permission denied",)


def test_launched_while_aborting_is_stopped_at_once() -> None:
    machine = make().machine
    machine.handle(Begin(T0))
    machine.handle(AbortRequested(T0 + 1, "stop"))
    out = machine.handle(Launched(T0 + 1.1, "bg-1", 42))  # a late launch confirmation
    assert out[0] == SignalGroup("bg-1", "SIGTERM")
    assert machine.benches["bg-1"].running


# --------------------------------------------------------------------------- steady mode
def test_steady_mode_starts_the_main_once_throughput_is_steady() -> None:
    d = make(
        start_time_buffer_mode="steady", start_time_buffer=30.0, steady_window=1.0, steady_windows=3
    )
    d.begin()
    d.ready("bg-1", 1.0)
    d.ready("bg-2", 1.0)
    assert d.machine.phase == PHASE_BUFFER
    assert d.machine.wants_progress("bg-1") and not d.machine.wants_progress(MAIN)
    launched_at = None
    for step in range(0, 60):
        t = 1.0 + step * 0.25
        rate = 100.0 if t > 3.0 else 20.0  # ramping up, then steady
        for name in ("bg-1", "bg-2"):
            value = 20.0 * min(t, 3.0) + 100.0 * max(0.0, t - 3.0)
            out = d.send(Progress(d.at(t), name, value if rate else 0))
            if Launch(MAIN) in out:
                launched_at = t
        if launched_at:
            break
    assert launched_at is not None and 6.0 <= launched_at <= 6.5
    assert d.machine.steady_at == T0 + launched_at
    assert not d.machine.wants_progress("bg-1")


def test_steady_mode_gives_up_at_the_buffer_with_a_warning() -> None:
    d = make(start_time_buffer_mode="steady", start_time_buffer=4.0)
    d.begin()
    d.ready("bg-1", 1.0)
    d.ready("bg-2", 1.0)
    out = d.fire("start_buffer")
    assert Launch(MAIN) in out
    assert "did not show steady throughput" in d.machine.warnings[0]


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([(0.0, 0.0), (1.0, 100.0), (2.0, 200.0), (3.0, 300.0)], True),
        ([(0.0, 0.0), (1.0, 100.0), (2.0, 150.0), (3.0, 300.0)], False),  # uneven
        ([(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (3.0, 0.0)], False),  # stalled
        ([(1.5, 0.0), (2.0, 100.0), (3.0, 200.0)], False),  # not enough history
        ([(0.0, 0.0)], False),
    ],
)
def test_steady(samples: list[tuple[float, float]], expected: bool) -> None:
    assert steady(samples, 3.0, 1.0, 3, 0.05) is expected


# ------------------------------------------------------------------------- housekeeping
def test_events_after_done_and_unknown_events() -> None:
    d = make(backgrounds=0)
    d.begin()
    d.exit(MAIN, 1.0)
    assert d.machine.done
    assert d.machine.handle(Ready(T0 + 2, MAIN, "x")) == []
    with pytest.raises(TypeError):
        make().machine.handle(object())


def test_duplicate_and_stale_events_are_ignored() -> None:
    d = make()
    d.begin()
    d.ready("bg-1", 1.0)
    assert d.send(Ready(d.at(1.5), "bg-1", "again")) == []
    assert d.machine.benches["bg-1"].ready_at == T0 + 1.0
    assert d.send(TimerFired(d.at(2.0), "start_buffer")) == []  # not armed
    assert d.send(Progress(d.at(2.0), "bg-1", 5)) == []  # fixed mode: no progress wanted
    assert d.send(Exited(d.at(2.0), MAIN, 0)) == []  # the main never ran
    assert d.machine.phase == PHASE_STARTING


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"background_start_timeout": 0}, "background_start_timeout must be greater than 0"),
        ({"run_timeout": -1}, "run_timeout must be greater than 0"),
        ({"start_time_buffer": -1}, "start_time_buffer must not be negative"),
        ({"end_time_buffer_min": -0.5}, "end_time_buffer_min must not be negative"),
        (
            {"start_time_buffer_mode": "sometimes"},
            "start_time_buffer_mode must be 'fixed' or 'steady'",
        ),
        ({"background_mode": "never"}, "background_mode must be 'automatic' or 'wait'"),
        ({"steady_tolerance": 1.5}, "steady_tolerance must be between 0 and 1"),
        ({"steady_windows": 1}, "steady_windows must be at least 2"),
        ({"backgrounds": ("main",)}, "background names must be unique"),
    ],
)
def test_config_problems_are_named(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make(**overrides)


def test_collecting_waits_for_results() -> None:
    machine = make(backgrounds=0).machine
    machine.handle(Begin(T0))
    machine.handle(Launched(T0, MAIN, 7))
    out = machine.handle(Exited(T0 + 3, MAIN, 0))
    assert Collect() in out and machine.phase == PHASE_COLLECTING
    assert machine.handle(AbortRequested(T0 + 4, "late")) == []
    out = machine.handle(ResultsCollected(T0 + 5, {MAIN: power(T0 + 1, T0 + 2), "other": {}}))
    assert out[-1] == Finish(VALID, (), ())


# --------------------------------------------------------------------------------- scanners
def test_line_scanner_defaults_match_nvidia_triton_and_loadgen_markers() -> None:
    for line in (
        b"[I] [heteromig_harness] Starting running actual test.",
        b"&&&& RUNNING ... [2023-01-01] running actual test.  \r",
        b"I1203 Start running actual test",
        b"Loadgen :: Perf mode start. system_clock Timestamp = 1795326077",
    ):
        scanner = LineScanner(DEFAULT_READINESS_REGEXES)
        assert scanner.feed(b"noise\n" + line + b"\nmore\n") == line.decode().rstrip()
    scanner = LineScanner(DEFAULT_READINESS_REGEXES)
    assert scanner.feed(b"running actual test. is not at the end here\n") is None
    assert scanner.feed(b"the actual test is running\n") is None


def test_line_scanner_waits_for_the_whole_line_across_chunks() -> None:
    scanner = LineScanner(DEFAULT_READINESS_REGEXES)
    assert scanner.feed(b"warming up\n[I] running act") is None
    assert scanner.feed(b"ual test.") is None  # no newline yet: maybe more follows
    assert scanner.feed(b"\n") == "[I] running actual test."


def test_line_scanner_caps_a_line_without_newlines() -> None:
    scanner = LineScanner(("x{3}$",), max_line=8)
    assert scanner.feed(b"a" * 100) is None
    assert len(scanner._tail) == 8
    assert scanner.feed(b"xxx\n") == "a" * 8 + "xxx"  # the line's start was cut to 8 bytes
    with pytest.raises(ValueError):
        LineScanner(())


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.sampled_from(["noise", "running actual test", "x" * 50, ""]), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_line_scanner_is_independent_of_chunking(before: list[str], cuts: list[int]) -> None:
    """Whatever the pipe's chunk boundaries, the first marker line is found, and only that."""
    lines = [*before, "[I] ts=1.0 running actual test.", "after"]
    data = "\n".join(lines).encode() + b"\n"
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    scanner = LineScanner(DEFAULT_READINESS_REGEXES)
    found = [scanner.feed(data[a:b]) for a, b in itertools.pairwise(points)]
    hits = [f for f in found if f is not None]
    assert hits[:1] == ["[I] ts=1.0 running actual test."]


def test_progress_scanner_reports_the_last_count() -> None:
    scanner = ProgressScanner(r"completed (?P<count>\d+) samples")
    assert scanner.feed(b"completed 10 samples\ncompleted 20 samples\ncompleted 3") == 20.0
    assert scanner.feed(b"0 samples\n") == 30.0
    assert scanner.feed(b"nothing\n") is None
    with pytest.raises(ValueError, match="named group 'count'"):
        ProgressScanner(r"completed \d+")


def test_progress_history_is_trimmed_and_repeated_launches_ignored() -> None:
    d = make(
        start_time_buffer_mode="steady",
        start_time_buffer=100.0,
        steady_window=1.0,
        steady_windows=2,
        steady_tolerance=0.01,
    )
    d.begin()
    assert d.send(Launched(d.at(0.1), "bg-1", 99)) == []  # already launched: ignored
    d.ready("bg-1", 1.0)
    d.ready("bg-2", 1.0)
    for step in range(40):  # bg-2 never steady: alternating rates
        t = 1.0 + step * 0.5
        d.send(Progress(d.at(t), "bg-1", 10.0 * step))
        d.send(Progress(d.at(t), "bg-2", 10.0 * step + (7.0 if (step // 2) % 2 else 0.0)))
    assert Launch(MAIN) not in d.actions
    history = d.machine.benches["bg-1"].progress
    assert len(history) <= 12 and history[-1] == (T0 + 20.5, 390.0)


def test_overlap_problem_without_a_timed_phase() -> None:
    from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_checks import (
        overlap_problem,
    )
    from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import Bench

    main = {"begin": T0 + 1, "end": T0 + 2, "source": "markers"}
    assert "never reached its timed phase" in str(
        overlap_problem(Bench("bg-1", "background"), None, main, T0)
    )
    window = {"begin": T0, "end": T0 + 3, "source": "markers"}
    assert overlap_problem(Bench("bg-1", "background"), window, main, T0) is None


def test_progress_scanner_partial_lines_and_bad_counts() -> None:
    scanner = ProgressScanner(r"done (?P<count>\S+)")
    assert scanner.feed(b"done 5") is None  # no newline yet
    assert scanner.feed(b"0\n") == 50.0
    assert scanner.feed(b"done many\n") is None
