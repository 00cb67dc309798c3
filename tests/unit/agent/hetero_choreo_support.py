"""Helpers of test_hetero_choreo_start.py and test_hetero_choreo_verdict.py (not a test module):
fake clock and fake processes that drive the choreography (Choreography) event by event.

test_hetero_choreo.py and test_hetero_choreo_edges.py have drivers of their own, over the same
CONFIG_DEFAULTS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import (
    VALID,
    Collect,
    Config,
    Finish,
    Launch,
    Launched,
    ResultsCollected,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._hetero_choreo import (
    Choreography,
)

T0 = 1_800_000_000.0
LINE = "[I] running actual test."


def power(begin: float, end: float) -> dict[str, Any]:
    return {"result_validity": VALID, "power_begin": T0 + begin, "power_end": T0 + end}


@dataclass
class Driver:
    """Fake clock and processes; pids are 1001, 1002, ... in launch order."""

    machine: Choreography
    actions: list[Any] = field(default_factory=list)
    loadgen: dict[str, dict[str, Any]] = field(default_factory=dict)
    accuracy: dict[str, dict[str, Any]] = field(default_factory=dict)
    launched: int = 0

    def send(self, event: Any) -> list[Any]:
        out = self.machine.handle(event)
        self.actions.extend(out)
        for action in list(out):
            if isinstance(action, Launch):
                self.launched += 1
                out.extend(self.send(Launched(event.t, action.name, 1000 + self.launched)))
            elif isinstance(action, Collect):
                out.extend(self.send(ResultsCollected(event.t, self.loadgen, self.accuracy)))
        return out

    def at(self, cls: type, t: float, *args: Any) -> list[Any]:
        return self.send(cls(T0 + t, *args))

    def timeline(self) -> list[tuple[float, str, str | None, str]]:
        return [
            (round(e["t"] - T0, 6), e["event"], e["benchmark"], e["detail"])
            for e in self.machine.sorted_timeline()
        ]

    def finish(self) -> Finish:
        found = [a for a in self.actions if isinstance(a, Finish)]
        assert len(found) == 1, self.actions
        return found[0]


# The timings every choreography test file starts from (each file adds its own labels).
CONFIG_DEFAULTS: dict[str, Any] = {
    "backgrounds": ("bg-1", "bg-2"),
    "background_start_timeout": 60.0,
    "start_time_buffer": 5.0,
    "end_time_buffer_min": 3.0,
    "stop_grace": 2.0,
    "kill_grace": 1.0,
    "run_timeout": 1000.0,
}


def make(**overrides: Any) -> Driver:
    values: dict[str, Any] = {
        **CONFIG_DEFAULTS,
        "labels": (("main", "m-bench"), ("bg-1", "b1")),
        **overrides,
    }
    return Driver(Choreography(Config(**values)))
