"""Every verdict rule of the HeteroMIG choreography (plugins/module_utils/agent/_hetero_choreo.py,
_choreo_types.py, _choreo_checks.py) at its edge: 1 ms inside and 1 ms outside, driven with
events and a fake clock.

The expected values come from the rules as documented (docs/hetero_run.md "Verdict",
docs/hetero_result_contract.md, the module docstring), not from running the code:

- every background is in its timed phase for the *whole* main timed window: it entered its timed
  phase no later than the window's begin, and left it no earlier than the window's end;
- wait mode: each background finishes at least ``end_time_buffer_min`` after the main exits;
- the main is launched when the last background is ready plus ``start_time_buffer``, not before;
- a background not ready within ``background_start_timeout`` of the start fails the run;
- an AccuracyOnly main's window runs from its readiness marker to its exit, whatever power
  window LoadGen logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hetero_choreo_support import CONFIG_DEFAULTS

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_checks import (
    overlap_problem,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import (
    ACCURACY_ONLY,
    INVALID,
    MAIN,
    PHASE_BUFFER,
    PHASE_DONE,
    PHASE_MAIN,
    PHASE_STARTING,
    PHASE_WAITING,
    VALID,
    ArmTimer,
    Begin,
    Bench,
    Collect,
    Config,
    Exited,
    Finish,
    Launch,
    Launched,
    Ready,
    ResultsCollected,
    SignalGroup,
    TimerFired,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_choreo import (
    Choreography,
)

T0 = 1_800_000_000.0
MS = 0.001  # one millisecond: LoadGen's resolution, and the edge every rule is tested at
INSIDE, OUTSIDE = "inside", "outside"


def power(begin: float, end: float) -> dict[str, Any]:
    """A PerformanceOnly LoadGen result with a power window (seconds after T0)."""
    return {
        "result_validity": VALID,
        "power_begin": T0 + begin,
        "power_end": T0 + end,
        "errors": [],
        "source": "mlperf_log_detail.txt",
    }


@dataclass
class Driver:
    """Fake clock + fake processes (like test_hetero_choreo.Driver), with accuracy results."""

    machine: Choreography
    now: float = T0
    actions: list[Any] = field(default_factory=list)
    loadgen: dict[str, dict[str, Any]] = field(default_factory=dict)
    accuracy: dict[str, dict[str, Any]] = field(default_factory=dict)

    def send(self, event: Any) -> list[Any]:
        self.now = event.t
        out = self.machine.handle(event)
        self.actions.extend(out)
        follow: list[Any] = []
        for action in out:
            if isinstance(action, Launch):
                follow.append(Launched(self.now, action.name, 1000 + len(self.actions)))
            elif isinstance(action, Collect):
                follow.append(ResultsCollected(self.now, self.loadgen, self.accuracy))
        for event in follow:
            out.extend(self.send(event))
        return out

    def begin(self) -> list[Any]:
        return self.send(Begin(T0))

    def ready(self, name: str, t: float) -> list[Any]:
        return self.send(Ready(T0 + t, name, "[I] running actual test."))

    def exit(self, name: str, t: float, code: int | None = 0, sig: str | None = None) -> list[Any]:
        return self.send(Exited(T0 + t, name, code, sig))

    def fire(self, key: str) -> list[Any]:
        return self.send(TimerFired(self.machine.timers[key], key))

    def stop_all_after(self, t: float) -> None:
        for name, bench in self.machine.benches.items():
            if bench.running and bench.stop_requested_at is not None:
                self.exit(name, t, None, "SIGTERM")

    def launched(self, name: str) -> float | None:
        return self.machine.benches[name].launched_at

    def finish(self) -> Finish:
        found = [a for a in self.actions if isinstance(a, Finish)]
        assert len(found) == 1, self.actions
        return found[0]


def make(**overrides: Any) -> Driver:
    return Driver(Choreography(Config(**{**CONFIG_DEFAULTS, **overrides})))


def to_main(d: Driver, ready: float = 2.0, main_ready: float | None = 8.0) -> None:
    """Begin, both backgrounds ready at ``ready``, the buffer (5 s), the main and its marker."""
    d.begin()
    d.ready("bg-1", ready)
    d.ready("bg-2", ready)
    d.fire("start_buffer")
    assert d.machine.phase == PHASE_MAIN and d.launched(MAIN) == T0 + ready + 5.0
    if main_ready is not None:
        d.ready(MAIN, main_ready)


def one_reason(finish: Finish) -> str:
    assert finish.verdict == INVALID and len(finish.reasons) == 1, finish
    return finish.reasons[0]


def valid(finish: Finish) -> None:
    assert (finish.verdict, finish.reasons) == (VALID, ()), finish


# --------------------------------------------------------------- background start vs begin
@pytest.mark.parametrize(
    ("bg_begin", "side"), [(20.0 - MS, INSIDE), (20.0, INSIDE), (20.0 + MS, OUTSIDE)]
)
def test_background_entering_its_timed_phase_at_the_main_windows_begin(
    bg_begin: float, side: str
) -> None:
    """Main window (power) 20..40 s; bg-1's power window begins 1 ms before, at, 1 ms after."""
    d = make(background_mode="wait")
    to_main(d)
    d.loadgen = {
        MAIN: power(20.0, 40.0),
        "bg-1": power(bg_begin, 50.0),
        "bg-2": power(2.0, 50.0),
    }
    d.exit(MAIN, 40.5)
    d.exit("bg-1", 50.0)
    d.exit("bg-2", 50.0)
    if side == INSIDE:
        valid(d.finish())
    else:
        assert one_reason(d.finish()) == (
            "bg-1 entered its timed phase at +20.001 s, after the main timed window began at "
            "+20.000 s"
        )


@pytest.mark.parametrize("main_ready", [8.0, 8.0 + MS])
def test_background_marker_at_or_before_the_main_marker_window(main_ready: float) -> None:
    """No power windows anywhere: the main's window is its marker to its exit, a background's
    its marker to its exit. The main starts when the last background is ready (8 s), so its
    marker can come at that same instant at the earliest: covered."""
    d = make(start_time_buffer=0.0)
    d.begin()
    d.ready("bg-2", 1.0)
    d.ready("bg-1", 8.0)
    assert d.launched(MAIN) == T0 + 8.0
    d.ready(MAIN, main_ready)
    d.loadgen = {MAIN: {"result_validity": VALID, "errors": []}}
    d.exit(MAIN, 30.0)
    d.stop_all_after(30.5)
    valid(d.finish())
    assert d.machine.main.timed_window == {
        "begin": T0 + main_ready,
        "end": T0 + 30.0,
        "source": "markers",
    }


@pytest.mark.parametrize(
    ("bg", "side"),
    [
        ((8.0 - MS, 30.0), INSIDE),
        ((8.0, 30.0), INSIDE),
        ((8.0 + MS, 30.0), OUTSIDE),
        ((1.0, 30.0 - MS), OUTSIDE),
        ((1.0, 30.0 + MS), INSIDE),
    ],
)
def test_overlap_problem_at_one_millisecond(bg: tuple[float, float], side: str) -> None:
    """The pure rule: a background window covers the main window 8..30 s (inclusive ends)."""
    main = {"begin": T0 + 8.0, "end": T0 + 30.0, "source": "markers"}
    window = {"begin": T0 + bg[0], "end": T0 + bg[1], "source": "markers"}
    problem = overlap_problem(Bench("bg-1", "background"), window, main, T0)
    if side == INSIDE:
        assert problem is None
    elif bg[0] > 8.0:
        assert problem == (
            "entered its timed phase at +8.001 s, after the main timed window began at +8.000 s"
        )
    else:
        assert problem == (
            "left its timed phase at +29.999 s, before the main timed window ended at +30.000 s"
        )


@pytest.mark.parametrize(("bg_begin", "side"), [(20.0 - MS, INSIDE), (20.0 + MS, OUTSIDE)])
def test_power_begin_without_power_end_against_the_main_window(bg_begin: float, side: str) -> None:
    """A background with power_begin but no power_end (stopped by the runner): its timed phase
    is power_begin..exit; the begin edge still holds at 1 ms."""
    d = make()
    to_main(d)
    d.loadgen = {
        MAIN: power(20.0, 40.0),
        "bg-1": {"power_begin": T0 + bg_begin, "power_end": None},
    }
    d.exit(MAIN, 40.5)
    d.stop_all_after(41.0)
    bw = d.machine.benches["bg-1"].timed_window
    assert bw == {"begin": T0 + bg_begin, "end": T0 + 41.0, "source": "power_begin/exit"}
    if side == INSIDE:
        valid(d.finish())
    else:
        assert one_reason(d.finish()).startswith("bg-1 entered its timed phase at +20.001 s")


# ------------------------------------------------------------------- background end vs end
@pytest.mark.parametrize(
    ("bg_end", "side"), [(40.0 - MS, OUTSIDE), (40.0, INSIDE), (40.0 + MS, INSIDE)]
)
def test_background_leaving_its_timed_phase_at_the_main_windows_end(
    bg_end: float, side: str
) -> None:
    """Main window (power) 20..40 s; bg-1's power window ends 1 ms before, at, 1 ms after.

    A background that leaves its timed phase even 1 ms before the main's window ends did not
    cover it (the closest case tested elsewhere is a whole second)."""
    d = make(background_mode="wait", end_time_buffer_min=0.0)
    to_main(d)
    d.loadgen = {
        MAIN: power(20.0, 40.0),
        "bg-1": power(2.0, bg_end),
        "bg-2": power(2.0, 50.0),
    }
    d.exit(MAIN, 40.5)
    d.exit("bg-1", 41.0)  # exits after the main: only LoadGen's window tells
    d.exit("bg-2", 50.0)
    if side == INSIDE:
        valid(d.finish())
    else:
        assert one_reason(d.finish()) == (
            "bg-1 left its timed phase at +39.999 s, before the main timed window ended at "
            "+40.000 s"
        )


@pytest.mark.parametrize(("bg_exit", "side"), [(30.0 - MS, OUTSIDE), (30.0 + MS, INSIDE)])
def test_background_exiting_around_the_main_exit_in_automatic_mode(
    bg_exit: float, side: str
) -> None:
    """Automatic mode, no power windows: a background exiting on its own 1 ms before the main
    exits finished while the main ran; 1 ms after, it was already being stopped: VALID."""
    d = make()
    to_main(d)
    d.loadgen = {MAIN: {"result_validity": VALID, "errors": []}}
    if side == OUTSIDE:
        d.exit("bg-1", bg_exit, 0)
        assert d.machine.phase != PHASE_MAIN  # the run is being stopped
        d.stop_all_after(bg_exit + 0.5)
        assert d.finish().reasons == (
            "bg-1 finished while the main benchmark was still running (its min_duration is too "
            "short)",
        )
    else:
        d.exit(MAIN, 30.0)
        assert SignalGroup("bg-1", "SIGTERM") in d.actions
        d.exit("bg-1", bg_exit, 0)
        d.exit("bg-2", bg_exit, None, "SIGTERM")
        valid(d.finish())
        assert d.machine.benches["bg-1"].timed_window == {
            "begin": T0 + 2.0,
            "end": T0 + bg_exit,
            "source": "markers",
        }


# -------------------------------------------------------------------- end_time_buffer_min
@pytest.mark.parametrize(
    ("after", "side"), [(3.0 - MS, OUTSIDE), (3.0, INSIDE), (3.0 + MS, INSIDE)]
)
def test_wait_mode_end_time_buffer_min(after: float, side: str) -> None:
    """Wait mode, end_time_buffer_min 3 s: bg-1 finishing 2.999 s after the main's exit is too
    early; at least 3 s after is fine ("each must finish at least end_time_buffer_min after")."""
    d = make(background_mode="wait")
    to_main(d)
    d.loadgen = {
        MAIN: power(8.5, 30.0),
        "bg-1": power(2.0, 30.0 + after),
        "bg-2": power(2.0, 40.0),
    }
    d.exit(MAIN, 30.0)
    assert d.machine.phase == PHASE_WAITING
    d.exit("bg-1", 30.0 + after)
    if side == OUTSIDE:
        assert SignalGroup("bg-2", "SIGTERM") in d.actions  # a failed background stops the run
        d.stop_all_after(33.5)
        assert one_reason(d.finish()) == (
            "bg-1 finished too early: 3.0 s after the main benchmark, less than "
            "end_time_buffer_min (3.0 s)"
        )
        assert d.machine.benches["bg-1"].failed == one_reason(d.finish())
    else:
        assert d.machine.phase == PHASE_WAITING and d.machine.benches["bg-1"].failed is None
        d.exit("bg-2", 40.0)
        valid(d.finish())


def test_wait_mode_end_time_buffer_counts_from_the_main_exit_not_its_power_end() -> None:
    """The buffer is measured from the main's exit (30 s), not from its power_end (25 s)."""
    d = make(background_mode="wait")
    to_main(d)
    d.loadgen = {MAIN: power(8.5, 25.0), "bg-1": power(2.0, 32.0), "bg-2": power(2.0, 40.0)}
    d.exit(MAIN, 30.0)
    d.exit("bg-1", 33.0 - MS)  # 7.999 s after power_end, 2.999 s after the exit
    d.stop_all_after(34.0)
    assert one_reason(d.finish()).startswith("bg-1 finished too early: 3.0 s after")


# -------------------------------------------------------------------- start_time_buffer
@pytest.mark.parametrize("buffer", [5.0, 0.5])
def test_the_main_is_launched_exactly_when_the_start_buffer_ends(buffer: float) -> None:
    """The buffer runs from the *last* background's marker; the main starts when it ends."""
    d = make(start_time_buffer=buffer)
    d.begin()
    d.ready("bg-1", 1.0)
    out = d.ready("bg-2", 2.0)
    assert ArmTimer("start_buffer", T0 + 2.0 + buffer) in out
    assert d.machine.phase == PHASE_BUFFER and d.launched(MAIN) is None
    # 1 ms before the buffer ends: anything may still happen, the main is not launched
    d.send(Ready(T0 + 2.0 + buffer - MS, "bg-1", "running actual test."))
    assert d.machine.phase == PHASE_BUFFER and d.launched(MAIN) is None
    assert not any(isinstance(a, Launch) and a.name == MAIN for a in d.actions)
    out = d.fire("start_buffer")
    assert Launch(MAIN) in out and d.machine.phase == PHASE_MAIN
    assert d.launched(MAIN) == T0 + 2.0 + buffer


def test_a_background_exiting_1ms_before_the_buffer_ends_fails_the_run() -> None:
    d = make()
    d.begin()
    d.ready("bg-1", 1.0)
    d.ready("bg-2", 2.0)
    d.exit("bg-1", 7.0 - MS, 0)
    assert d.launched(MAIN) is None and "start_buffer" not in d.machine.timers
    d.stop_all_after(7.5)
    finish = d.finish()
    assert finish.reasons == ("bg-1 exited with code 0 before the main benchmark started",)


# -------------------------------------------------------------- background_start_timeout
@pytest.mark.parametrize(("ready", "side"), [(60.0 - MS, INSIDE), (60.0 + MS, OUTSIDE)])
def test_readiness_deadline(ready: float, side: str) -> None:
    """background_start_timeout 60 s from Begin: bg-2 ready 1 ms before it goes on to the
    buffer; 1 ms after it, the deadline has already failed the run."""
    d = make()
    out = d.begin()
    assert ArmTimer("ready_deadline", T0 + 60.0) in out
    d.ready("bg-1", 1.0)
    if side == INSIDE:
        out = d.ready("bg-2", ready)
        assert d.machine.phase == PHASE_BUFFER and "ready_deadline" not in d.machine.timers
        d.fire("start_buffer")
        d.ready(MAIN, ready + 6.0)
        d.loadgen = {MAIN: power(ready + 6.0, ready + 10.0)}
        d.exit(MAIN, ready + 10.5)
        d.stop_all_after(ready + 11.0)
        valid(d.finish())
    else:
        assert d.machine.timers["ready_deadline"] == T0 + 60.0
        out = d.fire("ready_deadline")
        assert SignalGroup("bg-2", "SIGTERM") in out and SignalGroup("bg-1", "SIGTERM") in out
        d.ready("bg-2", ready)  # too late
        assert d.launched(MAIN) is None
        d.stop_all_after(ready + 0.5)
        finish = d.finish()
        assert finish.reasons[0] == (
            "bg-2 did not reach its timed phase within 60.0 s (no readiness marker: hung or too "
            "slow to start)"
        )
        assert finish.reasons[1:] == ()  # the main not launched follows from it


def test_readiness_deadline_lenient_goes_on_without_the_late_background() -> None:
    d = make(lenient=True)
    d.begin()
    d.ready("bg-1", 1.0)
    out = d.fire("ready_deadline")
    assert out[0] == SignalGroup("bg-2", "SIGTERM")
    assert ArmTimer("start_buffer", T0 + 65.0) in out  # buffer from the deadline
    d.ready("bg-2", 60.0 + MS)  # its marker, 1 ms late, changes nothing
    assert d.machine.phase == PHASE_BUFFER and d.machine.timers["start_buffer"] == T0 + 65.0
    d.exit("bg-2", 60.5, None, "SIGTERM")
    d.fire("start_buffer")
    d.ready(MAIN, 66.0)
    d.loadgen = {MAIN: power(66.0, 70.0)}
    d.exit(MAIN, 70.5)
    d.stop_all_after(71.0)
    finish = d.finish()
    assert finish.verdict == VALID and len(finish.warnings) == 1
    assert finish.warnings[0].startswith("bg-2 did not reach its timed phase within 60.0 s")


# ------------------------------------------------------------------------ run_timeout
@pytest.mark.parametrize(("exit_at", "side"), [(100.0 - MS, INSIDE), (100.0 + MS, OUTSIDE)])
def test_run_deadline(exit_at: float, side: str) -> None:
    """run_timeout 100 s from Begin: everything over 1 ms before it is VALID; the timer firing
    first aborts the run."""
    d = make(run_timeout=100.0)
    assert ArmTimer("run_deadline", T0 + 100.0) in d.begin()
    d.ready("bg-1", 1.0)
    d.ready("bg-2", 1.0)
    d.fire("start_buffer")
    d.ready(MAIN, 7.0)
    d.loadgen = {MAIN: power(7.0, exit_at - 0.5)}
    if side == INSIDE:
        d.exit(MAIN, exit_at)
        d.stop_all_after(exit_at + 0.0001)
        assert "run_deadline" not in d.machine.timers
        valid(d.finish())
    else:
        d.fire("run_deadline")
        d.stop_all_after(exit_at)
        reasons = d.finish().reasons
        assert reasons[0] == "the run exceeded its timeout (background_benchmark_timeout, 100.0 s)"


# ------------------------------------------------------------------- main benchmark timeout
@pytest.mark.parametrize(("exit_at", "side"), [(27.0 - MS, INSIDE), (27.0 + MS, OUTSIDE)])
def test_main_timeout(exit_at: float, side: str) -> None:
    """main_timeout 20 s from the main's launch (at +7 s): a main that exits 1 ms before +27 s
    is judged as usual; one still running then is stopped, with one reason and none of the
    false "left its timed phase" reasons the stopped backgrounds would otherwise give."""
    d = make(main_timeout=20.0)
    to_main(d, ready=2.0, main_ready=8.0)
    assert d.machine.timers["main_deadline"] == T0 + 27.0
    d.loadgen = {MAIN: power(8.0, exit_at - 0.5)}
    if side == INSIDE:
        d.exit(MAIN, exit_at)
        assert "main_deadline" not in d.machine.timers
        d.stop_all_after(exit_at + 0.5)
        valid(d.finish())
    else:
        out = d.fire("main_deadline")
        assert SignalGroup(MAIN, "SIGTERM") in out and SignalGroup("bg-1", "SIGTERM") in out
        d.loadgen = {}  # a hung main wrote no result
        d.exit("bg-1", 27.0 + 0.2, None, "SIGTERM")  # the backgrounds end before the main
        d.exit("bg-2", 27.0 + 0.3, None, "SIGTERM")
        d.exit(MAIN, 27.0 + 0.4, None, "SIGTERM")
        assert one_reason(d.finish()) == (
            "the main benchmark was still running 20.0 s after its launch "
            "(main_benchmark_timeout): it hung, or runs far longer than its min_duration; "
            "the run was stopped"
        )


class SlowMainStart(Driver):
    """The main's process starts 0.5 s after the choreography asks for it (a loaded host)."""

    def send(self, event: Any) -> list[Any]:
        if isinstance(event, Launched) and event.name == MAIN:
            event = Launched(event.t + 0.5, event.name, event.pid)
        return super().send(event)


def test_main_timeout_counts_from_the_launch_the_result_records() -> None:
    """Its timeout runs from the launch that ``launched_at`` records and the reason names, so a
    stopped main never shows less than main_timeout between its launch and its end."""
    d = SlowMainStart(make(main_timeout=20.0).machine)
    d.begin()
    d.ready("bg-1", 2.0)
    d.ready("bg-2", 2.0)
    d.fire("start_buffer")
    assert d.launched(MAIN) == T0 + 7.5
    assert d.machine.timers["main_deadline"] == T0 + 7.5 + 20.0


def test_no_main_timeout_by_default() -> None:
    d = make()
    to_main(d)
    assert "main_deadline" not in d.machine.timers


# ---------------------------------------------------------------------- AccuracyOnly main
def accuracy_run(d: Driver, passed: bool | None = True) -> None:
    at = T0 + 30.0  # LoadGen logs an accuracy run's power window as one instant at its end
    d.loadgen[MAIN] = {
        "mode": ACCURACY_ONLY,
        "source": "mlperf_log_detail.txt",
        "result_validity": None,
        "power_begin": at,
        "power_end": at,
        "errors": [],
    }
    d.accuracy[MAIN] = {"passed": passed, "summary": "accuracy=99.9%: PASS", "source": "x"}


@pytest.mark.parametrize(
    ("bg_begin", "side"), [(10.0 - MS, INSIDE), (10.0, INSIDE), (10.0 + MS, OUTSIDE)]
)
def test_accuracy_main_window_begins_at_its_marker(bg_begin: float, side: str) -> None:
    """AccuracyOnly: the main's window is its marker (10 s) to its exit (31 s), not LoadGen's
    power instant (30 s); a background entering its timed phase 1 ms after the marker fails."""
    d = make(main_mode=ACCURACY_ONLY, background_mode="wait")
    to_main(d, main_ready=10.0)
    d.loadgen = {"bg-1": power(bg_begin, 40.0), "bg-2": power(2.0, 40.0)}
    accuracy_run(d)
    d.exit(MAIN, 31.0)
    d.exit("bg-1", 40.0)
    d.exit("bg-2", 40.0)
    assert d.machine.main.timed_window == {
        "begin": T0 + 10.0,
        "end": T0 + 31.0,
        "source": "markers",
    }
    if side == INSIDE:
        valid(d.finish())
    else:
        assert one_reason(d.finish()) == (
            "bg-1 entered its timed phase at +10.001 s, after the main timed window began at "
            "+10.000 s"
        )


@pytest.mark.parametrize(
    ("bg_end", "side"), [(31.0 - MS, OUTSIDE), (31.0, INSIDE), (31.0 + MS, INSIDE)]
)
def test_accuracy_main_window_ends_at_its_exit(bg_end: float, side: str) -> None:
    """AccuracyOnly: the window ends at the main's exit (31 s), after LoadGen's power instant
    (30 s): a background whose timed phase ends 1 ms before the exit did not cover it."""
    d = make(main_mode=ACCURACY_ONLY, background_mode="wait")
    to_main(d, main_ready=10.0)
    d.loadgen = {"bg-1": power(2.0, bg_end), "bg-2": power(2.0, 40.0)}
    accuracy_run(d)
    d.exit(MAIN, 31.0)
    d.exit("bg-1", 35.0)
    d.exit("bg-2", 40.0)
    if side == INSIDE:
        valid(d.finish())
    else:
        assert one_reason(d.finish()) == (
            "bg-1 left its timed phase at +30.999 s, before the main timed window ended at "
            "+31.000 s"
        )


def test_accuracy_main_without_a_marker_runs_from_launch_to_exit() -> None:
    d = make(main_mode=ACCURACY_ONLY, background_mode="wait")
    to_main(d, main_ready=None)  # launched at 7 s, never printed a marker
    d.loadgen = {"bg-1": power(7.0 + MS, 40.0), "bg-2": power(2.0, 40.0)}
    accuracy_run(d)
    d.exit(MAIN, 31.0)
    d.exit("bg-1", 40.0)
    d.exit("bg-2", 40.0)
    assert d.machine.main.timed_window == {
        "begin": T0 + 7.0,
        "end": T0 + 31.0,
        "source": "launch/exit",
    }
    assert one_reason(d.finish()).startswith("bg-1 entered its timed phase at +7.001 s")


def test_performance_main_window_is_the_power_window_even_inside_the_markers() -> None:
    """The same run as PerformanceOnly: the power window (20..30 s) is the main window, so a
    background entering 1 ms after the main's marker but before power_begin covers it."""
    d = make(background_mode="wait")
    to_main(d, main_ready=10.0)
    d.loadgen = {MAIN: power(20.0, 30.0), "bg-1": power(10.0 + MS, 40.0), "bg-2": power(2.0, 40.0)}
    d.exit(MAIN, 31.0)
    d.exit("bg-1", 40.0)
    d.exit("bg-2", 40.0)
    valid(d.finish())
    assert d.machine.phase == PHASE_DONE and d.machine.main.timed_window == {
        "begin": T0 + 20.0,
        "end": T0 + 30.0,
        "source": "power_begin/power_end",
    }


def test_readiness_deadline_is_counted_from_begin_not_from_the_first_marker() -> None:
    d = make()
    d.begin()
    d.ready("bg-1", 59.0)
    assert d.machine.timers["ready_deadline"] == T0 + 60.0
    assert d.machine.phase == PHASE_STARTING
