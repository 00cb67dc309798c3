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

The events, actions, ``Config`` and ``Bench`` are in ``_choreo_types``; the readiness markers,
the output scanners, the steady check and the verdict inputs in ``_choreo_checks``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_checks import (
    accuracy_problems,
    background_window,
    main_window,
    overlap_problem,
    performance_problems,
    steady,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import (
    ACCURACY_ONLY,
    EXITED,
    INVALID,
    MAIN,
    NOT_LAUNCHED,
    PENDING,
    PHASE_ABORTING,
    PHASE_BUFFER,
    PHASE_COLLECTING,
    PHASE_DONE,
    PHASE_INIT,
    PHASE_MAIN,
    PHASE_STARTING,
    PHASE_STOPPING,
    PHASE_WAITING,
    RUNNING,
    VALID,
    AbortRequested,
    Action,
    ArmTimer,
    Begin,
    Bench,
    CancelTimer,
    Collect,
    Config,
    Event,
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
    exit_text,
)


def _fmt(seconds: float) -> str:
    return "%.1f s" % seconds


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
        self._log(t, "exit", bench.name, exit_text(event.code, event.signal))
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
        how = exit_text(bench.exit_code, bench.signal)
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
                    % exit_text(main.exit_code, main.signal)
                )
            else:
                reasons.append("the main benchmark %s" % exit_text(main.exit_code, main.signal))
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
