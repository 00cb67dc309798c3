# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HeteroMIG choreography's vocabulary: names, phases, verdicts, main modes, benchmark
states, the events the machine takes and the actions it answers with, its ``Config`` and what it
knows about one benchmark (``Bench``).

Pure data, no I/O: shared by the state machine (``_hetero_choreo``), its checks
(``_choreo_checks``) and its driver (``_hetero_runner`` and the modules it is split into).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

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

# Benchmark states.
PENDING = "pending"
RUNNING = "running"
EXITED = "exited"
NOT_LAUNCHED = "not_launched"


def exit_text(code: Optional[int], signal: Optional[str]) -> str:
    """How a benchmark's process ended, in words (the timeline's, the reasons', the progress's)."""
    if signal:
        return "was killed by %s" % signal
    return "exited with code %s" % code


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
