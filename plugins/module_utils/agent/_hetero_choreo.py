# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HeteroMIG choreography as a pure state machine: events in, actions out.

No I/O and no clock reads: every event carries its own timestamp (epoch seconds), and the
machine answers with actions for its driver (``_hetero_runner``) to carry out. Unit tests drive
it with a fake clock and fake processes.

The choreography on one host:

1. ``Begin``: launch every background benchmark (Offline, min_query_count=1, long
   min_duration, its own log directory) and arm the readiness deadline.
2. ``Ready``: a background printed a readiness marker (``LineScanner`` finds it). A background
   that exits, or is not ready by the deadline, fails the run; with ``lenient`` it is stopped
   and recorded as a warning instead.
3. When every background is ready: wait ``start_time_buffer`` (fixed), or until every
   background's throughput is steady (``Progress`` events), or not at all
   (``main_immediate_start``).
4. Launch the main benchmark.
5. When it exits: in ``automatic`` mode stop the backgrounds (SIGTERM to each process group,
   SIGKILL after ``stop_grace``); in ``wait`` mode wait for them and check that none finished
   within ``end_time_buffer_min`` of the main's end.
6. ``Collect``: the driver reads LoadGen's logs and answers ``ResultsCollected``; the machine
   computes the verdict (``Finish``).

An ``AbortRequested`` (lease expired, stop requested) or the run deadline stops everything
gracefully and ends INVALID with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_logs import (
    LATENCY_CHECK,
    LENGTH_CHECKS,
)

MAIN = "main"

PHASE_INIT = "init"
PHASE_STARTING = "starting_backgrounds"
PHASE_BUFFER = "start_buffer"
PHASE_MAIN = "main_running"
PHASE_STOPPING = "stopping_backgrounds"
PHASE_WAITING = "waiting_backgrounds"
PHASE_ABORTING = "aborting"
PHASE_COLLECTING = "collecting"
PHASE_DONE = "done"
PHASES = (
    PHASE_INIT,
    PHASE_STARTING,
    PHASE_BUFFER,
    PHASE_MAIN,
    PHASE_STOPPING,
    PHASE_WAITING,
    PHASE_ABORTING,
    PHASE_COLLECTING,
    PHASE_DONE,
)

VALID = "VALID"
INVALID = "INVALID"

PERFORMANCE_ONLY = "PerformanceOnly"
ACCURACY_ONLY = "AccuracyOnly"
MAIN_MODES = (PERFORMANCE_ONLY, ACCURACY_ONLY)

# Readiness markers (regexes over one output line). NVIDIA's C++ harnesses print a line ending
# in "running actual test." right before LoadGen's StartTest; its Triton harness prints "Start
# running actual test" (no period); LoadGen itself prints "Loadgen :: Perf mode start" when
# print_timestamps is on.
DEFAULT_READINESS_REGEXES = (
    r"running actual test\.\s*$",
    r"Start running actual test",
    r"Loadgen :: Perf mode start",
)

# Benchmark states.
PENDING = "pending"
RUNNING = "running"
EXITED = "exited"
NOT_LAUNCHED = "not_launched"


# ------------------------------------------------------------------------------------ events
@dataclass(frozen=True)
class Begin:
    t: float


@dataclass(frozen=True)
class Launched:
    t: float
    name: str
    pid: int


@dataclass(frozen=True)
class LaunchFailed:
    t: float
    name: str
    error: str


@dataclass(frozen=True)
class Ready:
    t: float
    name: str
    line: str = ""


@dataclass(frozen=True)
class Progress:
    t: float
    name: str
    value: float


@dataclass(frozen=True)
class Exited:
    t: float
    name: str
    code: Optional[int] = None
    signal: Optional[str] = None


@dataclass(frozen=True)
class TimerFired:
    t: float
    key: str


@dataclass(frozen=True)
class AbortRequested:
    t: float
    reason: str


@dataclass(frozen=True)
class ResultsCollected:
    t: float
    loadgen: Dict[str, Dict[str, Any]]
    # accuracy runs only: {name: {"passed": bool | None, "summary": str | None, "source": ...}}
    accuracy: Dict[str, Dict[str, Any]] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class Launch:
    name: str


@dataclass(frozen=True)
class ArmTimer:
    key: str
    at: float


@dataclass(frozen=True)
class CancelTimer:
    key: str


@dataclass(frozen=True)
class SignalGroup:
    name: str
    signal: str  # "SIGTERM" or "SIGKILL"


@dataclass(frozen=True)
class Collect:
    pass


@dataclass(frozen=True)
class Finish:
    verdict: str
    reasons: Tuple[str, ...]
    warnings: Tuple[str, ...]


Event = Any
Action = Any


# ------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class Config:
    """What the choreography needs from the plan (durations in seconds)."""

    backgrounds: Tuple[str, ...] = ()
    background_start_timeout: float = 600.0
    start_time_buffer: float = 10.0
    start_time_buffer_mode: str = "fixed"  # fixed | steady
    steady_window: float = 2.0
    steady_windows: int = 3
    steady_tolerance: float = 0.05
    main_immediate_start: bool = False
    background_mode: str = "automatic"  # automatic | wait
    end_time_buffer_min: float = 30.0
    stop_grace: float = 10.0
    kill_grace: float = 5.0
    run_timeout: float = 7200.0
    # seconds from the main's launch after which a main still running stops the run (0: none)
    main_timeout: float = 0.0
    lenient: bool = False
    # AccuracyOnly: LoadGen judges no validity; the harness's accuracy check is the verdict
    main_mode: str = PERFORMANCE_ONLY
    labels: Tuple[Tuple[str, str], ...] = ()  # (name, "benchmark name") for messages

    def validate(self) -> List[str]:
        """Problems with the configuration, in words (empty when it is usable)."""
        problems = []
        for key in (
            "background_start_timeout",
            "run_timeout",
            "steady_window",
        ):
            if getattr(self, key) <= 0:
                problems.append("%s must be greater than 0, got %r" % (key, getattr(self, key)))
        for key in (
            "start_time_buffer",
            "end_time_buffer_min",
            "stop_grace",
            "kill_grace",
            "main_timeout",
        ):
            if getattr(self, key) < 0:
                problems.append("%s must not be negative, got %r" % (key, getattr(self, key)))
        if self.start_time_buffer_mode not in ("fixed", "steady"):
            problems.append(
                "start_time_buffer_mode must be 'fixed' or 'steady', got %r"
                % (self.start_time_buffer_mode,)
            )
        if self.background_mode not in ("automatic", "wait"):
            problems.append(
                "background_mode must be 'automatic' or 'wait', got %r" % (self.background_mode,)
            )
        if self.main_mode not in MAIN_MODES:
            problems.append(
                "main_mode must be %s, got %r" % (" or ".join(MAIN_MODES), self.main_mode)
            )
        if self.steady_windows < 2:
            problems.append("steady_windows must be at least 2, got %r" % (self.steady_windows,))
        if not 0 < self.steady_tolerance < 1:
            problems.append(
                "steady_tolerance must be between 0 and 1, got %r" % (self.steady_tolerance,)
            )
        if MAIN in self.backgrounds or len(set(self.backgrounds)) != len(self.backgrounds):
            problems.append("background names must be unique and not %r" % MAIN)
        return problems


@dataclass
class Bench:
    """What the machine knows about one benchmark process."""

    name: str
    role: str  # main | background
    state: str = PENDING
    pid: Optional[int] = None
    launched_at: Optional[float] = None
    ready_at: Optional[float] = None
    ready_line: Optional[str] = None
    ended_at: Optional[float] = None
    exit_code: Optional[int] = None
    signal: Optional[str] = None
    stop_requested_at: Optional[float] = None
    failed: Optional[str] = None  # why this benchmark failed (reason or tolerated warning)
    lost: bool = False  # did not exit even after SIGKILL
    progress: List[Tuple[float, float]] = field(default_factory=list)
    loadgen: Dict[str, Any] = field(default_factory=dict)
    accuracy: Optional[Dict[str, Any]] = None  # accuracy runs: the harness's accuracy verdict
    timed_window: Optional[Dict[str, Any]] = None

    @property
    def running(self) -> bool:
        return self.state == RUNNING


def _fmt(seconds: float) -> str:
    return "%.1f s" % seconds


def _exit_text(code: Optional[int], signal: Optional[str]) -> str:
    if signal:
        return "was killed by %s" % signal
    return "exited with code %s" % code


class Choreography:
    """The state machine. ``handle(event)`` returns the actions to carry out, in order."""

    def __init__(self, config: Config) -> None:
        problems = config.validate()
        if problems:
            raise ValueError("; ".join(problems))
        self.config = config
        self.labels = dict(config.labels)
        self.phase = PHASE_INIT
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.benches: Dict[str, Bench] = {MAIN: Bench(MAIN, "main")}
        for name in config.backgrounds:
            self.benches[name] = Bench(name, "background")
        self.reasons: List[str] = []
        self.warnings: List[str] = []
        self.timeline: List[Dict[str, Any]] = []
        self.timers: Dict[str, float] = {}
        self.verdict: Optional[str] = None
        self.steady_at: Optional[float] = None
        # Set when the run was stopped for a reason already recorded (a background failed, an
        # abort, a timeout): what the stop did to the main is a consequence, not a reason.
        self.stopped_for: Optional[str] = None
        self._actions: List[Action] = []

    # ------------------------------------------------------------------------- inspection
    @property
    def backgrounds(self) -> List[Bench]:
        return [self.benches[name] for name in self.config.backgrounds]

    @property
    def main(self) -> Bench:
        return self.benches[MAIN]

    @property
    def done(self) -> bool:
        return self.phase == PHASE_DONE

    def wants_readiness(self, name: str) -> bool:
        """Whether the driver should still scan ``name``'s output for a readiness marker."""
        bench = self.benches.get(name)
        return bench is not None and bench.running and bench.ready_at is None

    def wants_progress(self, name: str) -> bool:
        """Whether the driver should scan ``name``'s output for progress (steady mode)."""
        bench = self.benches.get(name)
        return (
            bench is not None
            and bench.role == "background"
            and bench.running
            and bench.ready_at is not None
            and self.config.start_time_buffer_mode == "steady"
            and self.phase in (PHASE_STARTING, PHASE_BUFFER)
        )

    def label(self, name: str) -> str:
        benchmark = self.labels.get(name)
        return "%s (%s)" % (name, benchmark) if benchmark else name

    # ----------------------------------------------------------------------------- events
    def handle(self, event: Event) -> List[Action]:
        self._actions = []
        handler = getattr(self, "_on_" + type(event).__name__, None)
        if handler is None:
            raise TypeError("unknown event %r" % (event,))
        if self.phase == PHASE_DONE:
            return []
        handler(event)
        actions, self._actions = self._actions, []
        return actions

    def _on_Begin(self, event: Begin) -> None:
        if self.phase != PHASE_INIT:
            return
        t = event.t
        self.started_at = t
        self._arm("run_deadline", t + self.config.run_timeout)
        if self.config.backgrounds:
            self._set_phase(t, PHASE_STARTING)
            for bench in self.backgrounds:
                self._emit(Launch(bench.name))
            self._arm("ready_deadline", t + self.config.background_start_timeout)
        else:
            self._launch_main(t)

    def _on_Launched(self, event: Launched) -> None:
        bench = self.benches[event.name]
        if bench.state not in (PENDING, NOT_LAUNCHED) or bench.launched_at is not None:
            return
        bench.state = RUNNING
        bench.pid = event.pid
        bench.launched_at = event.t
        bench.ended_at = None
        self._log(event.t, "launch", bench.name, "pid %d" % event.pid)
        if bench.name == MAIN and self.config.main_timeout > 0:
            # from the launch the result records, not from the decision to launch: starting a
            # process takes time on a loaded host, and the reason says "after its launch"
            self._arm("main_deadline", event.t + self.config.main_timeout)
        if self.phase in (PHASE_ABORTING, PHASE_STOPPING, PHASE_COLLECTING):
            # launched while the run was being stopped: stop it as well
            if self.phase == PHASE_COLLECTING:
                self.phase = PHASE_ABORTING
            self._stop(event.t, bench)

    def _on_LaunchFailed(self, event: LaunchFailed) -> None:
        bench = self.benches[event.name]
        if bench.state != PENDING:
            return
        bench.state = NOT_LAUNCHED
        bench.ended_at = event.t
        message = "%s could not be launched: %s" % (self.label(bench.name), event.error)
        self._log(event.t, "exit", bench.name, message)
        if bench.role == "main":
            bench.failed = message
            self.reasons.append(message)
            self._stop_all(event.t)
        else:
            self._background_failed(event.t, bench, message)

    def _on_Ready(self, event: Ready) -> None:
        bench = self.benches[event.name]
        if not bench.running or bench.ready_at is not None:
            return
        bench.ready_at = event.t
        bench.ready_line = event.line[:500]
        self._log(event.t, "ready", bench.name, bench.ready_line)
        if bench.role == "background" and self.phase == PHASE_STARTING:
            self._maybe_all_ready(event.t)

    def _on_Progress(self, event: Progress) -> None:
        bench = self.benches[event.name]
        if not self.wants_progress(bench.name):
            return
        bench.progress.append((event.t, float(event.value)))
        keep_after = event.t - self.config.steady_window * (self.config.steady_windows + 2)
        while len(bench.progress) > 2 and bench.progress[1][0] < keep_after:
            bench.progress.pop(0)
        if self.phase == PHASE_BUFFER and self._all_steady(event.t):
            self.steady_at = event.t
            self._log(event.t, "phase", None, "backgrounds reached steady throughput")
            self._cancel("start_buffer")
            self._launch_main(event.t)

    def _on_Exited(self, event: Exited) -> None:
        bench = self.benches[event.name]
        if bench.state != RUNNING:
            return
        t = event.t
        bench.state = EXITED
        bench.ended_at = t
        bench.exit_code = event.code
        bench.signal = event.signal
        self._cancel("kill:" + bench.name)
        self._cancel("reap:" + bench.name)
        self._log(t, "exit", bench.name, _exit_text(event.code, event.signal))
        if bench.role == "main":
            self._main_exited(t, bench)
        elif bench.stop_requested_at is None:
            self._background_exited(t, bench)
        self._maybe_collect(t)

    def _on_TimerFired(self, event: TimerFired) -> None:
        key, t = event.key, event.t
        if key not in self.timers:
            return
        del self.timers[key]
        if key == "ready_deadline":
            self._ready_deadline(t)
        elif key == "start_buffer":
            if self.phase == PHASE_BUFFER:
                if self.config.start_time_buffer_mode == "steady":
                    self._warn(
                        t,
                        None,
                        "backgrounds did not show steady throughput within start_time_buffer "
                        "(%s); launching the main benchmark anyway"
                        % _fmt(self.config.start_time_buffer),
                    )
                self._launch_main(t)
        elif key.startswith("kill:"):
            bench = self.benches.get(key[5:])
            if bench is not None and bench.running:
                self._emit(SignalGroup(bench.name, "SIGKILL"))
                self._log(
                    t,
                    "kill",
                    bench.name,
                    "SIGKILL: still running %s after SIGTERM" % _fmt(self.config.stop_grace),
                )
                self._arm("reap:" + bench.name, t + self.config.kill_grace)
        elif key.startswith("reap:"):
            bench = self.benches.get(key[5:])
            if bench is not None and bench.running:
                bench.state = EXITED
                bench.lost = True
                bench.ended_at = t
                message = "%s did not exit %s after SIGKILL; giving up on it" % (
                    self.label(bench.name),
                    _fmt(self.config.kill_grace),
                )
                self.reasons.append(message)
                self._log(t, "warning", bench.name, message)
                self._maybe_collect(t)
        elif key == "main_deadline" and self.main.running:
            self._abort(
                t,
                "the main benchmark was still running %s after its launch "
                "(main_benchmark_timeout): it hung, or runs far longer than its min_duration; "
                "the run was stopped" % _fmt(self.config.main_timeout),
            )
        elif key == "run_deadline" and self.phase not in (PHASE_COLLECTING, PHASE_DONE):
            self._abort(
                t,
                "the run exceeded its timeout (background_benchmark_timeout, %s)"
                % _fmt(self.config.run_timeout),
            )

    def _on_AbortRequested(self, event: AbortRequested) -> None:
        if self.phase in (PHASE_COLLECTING, PHASE_DONE):
            return
        self._abort(event.t, event.reason)

    def _on_ResultsCollected(self, event: ResultsCollected) -> None:
        if self.phase != PHASE_COLLECTING:
            return
        for name, loadgen in event.loadgen.items():
            if name in self.benches:
                self.benches[name].loadgen = dict(loadgen or {})
        for name, accuracy in event.accuracy.items():
            if name in self.benches:
                self.benches[name].accuracy = dict(accuracy or {})
        self._judge(event.t)

    # ---------------------------------------------------------------------------- helpers
    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _arm(self, key: str, at: float) -> None:
        self.timers[key] = at
        self._emit(ArmTimer(key, at))

    def _cancel(self, key: str) -> None:
        if key in self.timers:
            del self.timers[key]
            self._emit(CancelTimer(key))

    def _log(self, t: float, event: str, name: Optional[str], detail: str = "") -> None:
        self.timeline.append({"t": t, "event": event, "benchmark": name, "detail": detail})

    def _warn(self, t: float, name: Optional[str], message: str) -> None:
        self.warnings.append(message)
        self._log(t, "warning", name, message)

    def _set_phase(self, t: float, phase: str) -> None:
        if self.phase != phase:
            self.phase = phase
            self._log(t, "phase", None, phase)

    def _launch_main(self, t: float) -> None:
        self._set_phase(t, PHASE_MAIN)
        self._emit(Launch(MAIN))

    def _stop(self, t: float, bench: Bench) -> None:
        if not bench.running or bench.stop_requested_at is not None:
            return
        bench.stop_requested_at = t
        self._emit(SignalGroup(bench.name, "SIGTERM"))
        self._log(t, "kill", bench.name, "SIGTERM")
        self._arm("kill:" + bench.name, t + self.config.stop_grace)

    def _stop_all(self, t: float, phase: str = PHASE_ABORTING) -> None:
        self._cancel("ready_deadline")
        self._cancel("start_buffer")
        self._set_phase(t, phase)
        for bench in self.benches.values():
            if bench.state == PENDING:
                bench.state = NOT_LAUNCHED
            self._stop(t, bench)
        self._maybe_collect(t)

    def _abort(self, t: float, reason: str) -> None:
        if reason:
            self.reasons.append(reason)
            self._log(t, "warning", None, reason)
            if self.stopped_for is None:
                self.stopped_for = reason
        self._stop_all(t)

    def _maybe_collect(self, t: float) -> None:
        if self.phase not in (PHASE_STOPPING, PHASE_WAITING, PHASE_ABORTING):
            return
        if any(bench.running for bench in self.benches.values()):
            return
        self._cancel("run_deadline")
        self._set_phase(t, PHASE_COLLECTING)
        self._emit(Collect())

    def _background_failed(self, t: float, bench: Bench, message: str) -> None:
        bench.failed = message
        if self.config.lenient:
            self._warn(t, bench.name, message + " (lenient: the run goes on without it)")
            self._stop(t, bench)
            if self.phase == PHASE_STARTING:
                self._maybe_all_ready(t)
            return
        self.reasons.append(message)
        if self.phase not in (PHASE_ABORTING, PHASE_COLLECTING):
            if self.stopped_for is None:
                self.stopped_for = message
            self._stop_all(t)

    def _maybe_all_ready(self, t: float) -> None:
        waiting = [b for b in self.backgrounds if b.failed is None and b.ready_at is None]
        if waiting:
            return
        self._cancel("ready_deadline")
        self._log(t, "phase", None, "all backgrounds ready")
        config = self.config
        if config.main_immediate_start or config.start_time_buffer <= 0:
            self._launch_main(t)
            return
        self._set_phase(t, PHASE_BUFFER)
        self._arm("start_buffer", t + config.start_time_buffer)

    def _ready_deadline(self, t: float) -> None:
        if self.phase != PHASE_STARTING:
            return
        for bench in self.backgrounds:
            if bench.failed is None and bench.ready_at is None and bench.running:
                self._background_failed(
                    t,
                    bench,
                    "%s did not reach its timed phase within %s (no readiness marker: hung or "
                    "too slow to start)"
                    % (self.label(bench.name), _fmt(self.config.background_start_timeout)),
                )
                if self.phase != PHASE_STARTING:
                    return

    def _background_exited(self, t: float, bench: Bench) -> None:
        """A background exited on its own (the runner did not stop it)."""
        how = _exit_text(bench.exit_code, bench.signal)
        label = self.label(bench.name)
        if self.phase == PHASE_STARTING and bench.ready_at is None:
            self._background_failed(t, bench, "%s %s before it was ready" % (label, how))
        elif self.phase in (PHASE_STARTING, PHASE_BUFFER):
            self._background_failed(
                t, bench, "%s %s before the main benchmark started" % (label, how)
            )
        elif self.phase == PHASE_MAIN:
            if bench.exit_code == 0 and not bench.signal:
                message = (
                    "%s finished while the main benchmark was still running (its min_duration "
                    "is too short)" % label
                )
            else:
                message = "%s %s while the main benchmark was running" % (label, how)
            self._background_failed(t, bench, message)
        elif self.phase == PHASE_WAITING:
            main_end = self.main.ended_at or t
            if bench.exit_code != 0 or bench.signal:
                self._background_failed(
                    t, bench, "%s %s after the main benchmark ended" % (label, how)
                )
            elif t - main_end < self.config.end_time_buffer_min:
                self._background_failed(
                    t,
                    bench,
                    "%s finished too early: %s after the main benchmark, less than "
                    "end_time_buffer_min (%s)"
                    % (label, _fmt(t - main_end), _fmt(self.config.end_time_buffer_min)),
                )

    def _main_exited(self, t: float, bench: Bench) -> None:
        self._cancel("main_deadline")
        failed = bench.exit_code != 0 or bench.signal is not None
        if self.phase in (PHASE_ABORTING, PHASE_COLLECTING):
            return
        if failed or self.config.background_mode == "automatic":
            self._stop_all(t, PHASE_STOPPING)
        else:
            self._set_phase(t, PHASE_WAITING)

    def _all_steady(self, t: float) -> bool:
        config = self.config
        for bench in self.backgrounds:
            if bench.failed is not None:
                continue
            if not steady(
                bench.progress,
                t,
                config.steady_window,
                config.steady_windows,
                config.steady_tolerance,
            ):
                return False
        return True

    # ---------------------------------------------------------------------------- verdict
    def _judge(self, t: float) -> None:
        reasons = list(self.reasons)
        main = self.main
        # The run was stopped for a recorded reason before the main finished by itself: that
        # reason says it all; the main's stop, its missing result and the backgrounds' early
        # end are what the stop did, not further reasons.
        consequence = self.stopped_for is not None and (
            main.state == NOT_LAUNCHED or main.stop_requested_at is not None
        )
        if consequence:
            pass
        elif main.state == NOT_LAUNCHED and main.failed is None:
            reasons.append("the main benchmark was not launched")
        elif (
            main.launched_at is not None and not main.lost and (main.signal or main.exit_code != 0)
        ):
            if main.stop_requested_at is not None:
                reasons.append(
                    "the main benchmark was stopped before it finished (%s)"
                    % _exit_text(main.exit_code, main.signal)
                )
            else:
                reasons.append("the main benchmark %s" % _exit_text(main.exit_code, main.signal))
        loadgen = main.loadgen
        if main.launched_at is not None:
            if consequence:
                pass
            elif self.config.main_mode == ACCURACY_ONLY:
                reasons.extend(accuracy_problems(loadgen, main.accuracy))
            else:
                reasons.extend(performance_problems(loadgen))
            for error in loadgen.get("errors") or []:
                self._warn(t, MAIN, "LoadGen error in the main benchmark's log: %s" % error)
        window = main_window(main, self.config.main_mode)
        main.timed_window = window
        if window is not None and window["source"] == "power_begin/power_end":
            self._log(window["begin"], "timed_begin", MAIN, "LoadGen power_begin")
            self._log(window["end"], "timed_end", MAIN, "LoadGen power_end")
        for bench in self.backgrounds:
            bench.timed_window = background_window(bench)
            bw = bench.timed_window
            if bw is not None and bw["source"].startswith("power_begin"):
                self._log(bw["begin"], "timed_begin", bench.name, "LoadGen power_begin")
                if bw["source"] == "power_begin/power_end":
                    self._log(bw["end"], "timed_end", bench.name, "LoadGen power_end")
            if bench.failed is not None or window is None or consequence:
                continue  # already a reason (or a tolerated warning); nothing to overlap with
            origin = self.started_at if self.started_at is not None else window["begin"]
            problem = overlap_problem(bench, bw, window, origin)
            if problem:
                reasons.append("%s %s" % (self.label(bench.name), problem))
        self.verdict = VALID if not reasons else INVALID
        self.reasons = reasons
        self.finished_at = t
        self._set_phase(t, PHASE_DONE)
        self._emit(Finish(self.verdict, tuple(reasons), tuple(self.warnings)))

    # ------------------------------------------------------------------------- snapshots
    def sorted_timeline(self) -> List[Dict[str, Any]]:
        """The timeline by time; events of the same instant keep the order they happened in."""
        return sorted(self.timeline, key=lambda e: e["t"])

    def bench_state(self, name: str) -> Dict[str, Any]:
        bench = self.benches[name]
        return {
            "name": bench.name,
            "role": bench.role,
            "state": bench.state,
            "pid": bench.pid,
            "launched_at": bench.launched_at,
            "ready_at": bench.ready_at,
            "ended_at": bench.ended_at,
            "exit_code": bench.exit_code,
            "signal": bench.signal,
            "stopped_by_runner": bench.stop_requested_at is not None,
            "failed": bench.failed,
            "timed_window": bench.timed_window,
            "accuracy": bench.accuracy,
        }


# --------------------------------------------------------------------------- pure helpers
def performance_problems(loadgen: Dict[str, Any]) -> List[str]:
    """Why a PerformanceOnly main's LoadGen result does not count (empty when it is VALID)."""
    validity = loadgen.get("result_validity")
    if validity is None:
        return [
            "no LoadGen result for the main benchmark (mlperf_log_detail.txt and "
            "mlperf_log_summary.txt missing or incomplete)"
        ]
    if validity == VALID:
        return []
    unmet = [words for key, words in (*LENGTH_CHECKS, LATENCY_CHECK) if loadgen.get(key) is False]
    if loadgen.get("invalid_reason"):
        unmet.append(loadgen["invalid_reason"])
    return [
        "the main benchmark's LoadGen result is %s%s"
        % (validity, (": " + "; ".join(unmet)) if unmet else "")
    ]


def accuracy_problems(loadgen: Dict[str, Any], accuracy: Optional[Dict[str, Any]]) -> List[str]:
    """Why an AccuracyOnly main does not count (empty when its accuracy check PASSED).

    LoadGen writes no ``result_validity`` in accuracy mode; what counts is that LoadGen ran in
    AccuracyOnly mode and the harness's accuracy check passed.
    """
    problems = []
    mode = loadgen.get("mode")
    if loadgen.get("source") is None:
        problems.append(
            "no LoadGen log for the main benchmark's accuracy run (mlperf_log_detail.txt and "
            "mlperf_log_summary.txt missing)"
        )
    elif mode is not None and mode != ACCURACY_ONLY:
        problems.append(
            "the main benchmark's LoadGen ran in %s mode, not %s" % (mode, ACCURACY_ONLY)
        )
    passed = (accuracy or {}).get("passed")
    if passed is None:
        problems.append(
            "no accuracy result for the main benchmark (its accuracy check wrote no PASS or "
            "FAIL line)"
        )
    elif not passed:
        problems.append(
            "the main benchmark's accuracy check FAILED: %s" % (accuracy or {}).get("summary")
        )
    return problems


def main_window(main: Bench, mode: str = PERFORMANCE_ONLY) -> Optional[Dict[str, Any]]:
    """The main benchmark's timed window: LoadGen's power window, else its marker to its exit.

    An accuracy run's power window is an instant at its end (LoadGen logs both ends together),
    so there the window runs from its marker to its exit: the whole accuracy pass.
    """
    begin, end = main.loadgen.get("power_begin"), main.loadgen.get("power_end")
    if begin is not None and end is not None and mode != ACCURACY_ONLY:
        return {"begin": begin, "end": end, "source": "power_begin/power_end"}
    if main.ended_at is None or main.launched_at is None:
        return None
    if main.ready_at is not None:
        return {"begin": main.ready_at, "end": main.ended_at, "source": "markers"}
    return {"begin": main.launched_at, "end": main.ended_at, "source": "launch/exit"}


def background_window(bench: Bench) -> Optional[Dict[str, Any]]:
    """A background's timed phase: from its marker (or power_begin) to power_end or its end."""
    begin = bench.loadgen.get("power_begin")
    end = bench.loadgen.get("power_end")
    if begin is not None and end is not None:
        return {"begin": begin, "end": end, "source": "power_begin/power_end"}
    start = begin if begin is not None else bench.ready_at
    if start is None or bench.ended_at is None:
        return None
    source = "power_begin/exit" if begin is not None else "markers"
    return {"begin": start, "end": bench.ended_at, "source": source}


def overlap_problem(
    bench: Bench, window: Optional[Dict[str, Any]], main: Dict[str, Any], origin: float
) -> Optional[str]:
    """Why ``bench``'s timed phase does not cover the main window, or None when it does."""
    if window is None:
        return "never reached its timed phase, so it cannot have covered the main timed window"

    def rel(value: float) -> str:
        return "%+.3f s" % (value - origin)

    if window["begin"] > main["begin"]:
        return "entered its timed phase at %s, after the main timed window began at %s" % (
            rel(window["begin"]),
            rel(main["begin"]),
        )
    if window["end"] < main["end"]:
        return "left its timed phase at %s, before the main timed window ended at %s" % (
            rel(window["end"]),
            rel(main["end"]),
        )
    return None


def steady(
    samples: List[Tuple[float, float]], now: float, window: float, windows: int, tolerance: float
) -> bool:
    """Whether the last ``windows`` windows of ``window`` seconds show the same rate.

    ``samples`` are (time, cumulative count). Rates are taken between the count at each window
    edge (the last sample at or before the edge); the spread (max - min) / mean of the rates
    must be within ``tolerance`` and every rate positive.
    """
    if len(samples) < 2 or samples[0][0] > now - window * windows:
        return False

    def value_at(edge: float) -> Optional[float]:
        found = None
        for t, value in samples:
            if t > edge:
                break
            found = value
        return found

    edges = [now - window * k for k in range(windows, -1, -1)]
    values = [value_at(edge) for edge in edges]
    if any(v is None for v in values):
        return False
    rates = [(b - a) / window for a, b in zip(values, values[1:])]  # type: ignore[operator]
    mean = sum(rates) / len(rates)
    if min(rates) <= 0 or mean <= 0:
        return False
    return (max(rates) - min(rates)) / mean <= tolerance


class LineScanner:
    """Finds the first complete output line that matches any of ``patterns`` (bytes regexes).

    ``feed`` takes raw chunks as read from a pipe (lines may span chunks); only complete lines
    are matched, as a line-by-line reader would, but the search runs over whole chunks.
    """

    def __init__(self, patterns: Tuple[str, ...], max_line: int = 65536) -> None:
        if not patterns:
            raise ValueError("at least one readiness regex is needed")
        self.regex = re.compile(
            "|".join("(?:%s)" % p for p in patterns).encode("utf-8"), re.MULTILINE
        )
        self.max_line = max_line
        self._tail = b""

    def feed(self, chunk: bytes) -> Optional[str]:
        end = chunk.rfind(b"\n")
        if end < 0:
            self._tail = (self._tail + chunk)[-self.max_line :]
            return None
        if self._tail:
            data = self._tail + chunk[: end + 1]
            self._tail = chunk[end + 1 :][-self.max_line :]
        else:
            data = chunk[: end + 1] if end + 1 < len(chunk) else chunk
            self._tail = chunk[end + 1 :][-self.max_line :]
        match = self.regex.search(data)
        if match is None:
            return None
        start = data.rfind(b"\n", 0, match.start()) + 1
        stop = data.find(b"\n", match.end())
        return data[start : stop if stop >= 0 else len(data)].decode("utf-8", "replace").rstrip()


class ProgressScanner:
    """The last progress count in a chunk: ``pattern`` has a group named ``count``."""

    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(pattern.encode("utf-8"), re.MULTILINE)
        if "count" not in self.regex.groupindex:
            raise ValueError("progress_regex needs a named group 'count': %s" % pattern)
        self._tail = b""

    def feed(self, chunk: bytes) -> Optional[float]:
        end = chunk.rfind(b"\n")
        if end < 0:
            self._tail = (self._tail + chunk)[-65536:]
            return None
        data = self._tail + chunk[: end + 1]
        self._tail = chunk[end + 1 :]
        last = None
        for match in self.regex.finditer(data):
            last = match
        if last is None:
            return None
        try:
            return float(last.group("count"))
        except ValueError:
            return None
