# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hetero run's contract between the controller and the host runner, typed (private).

Imported by both sides: the controller's ``build_plan`` builds a :class:`RunPlan` of
:class:`BenchmarkPlan` entries and sends :meth:`RunPlan.to_wire`; the host's runner reads it back
with :meth:`RunPlan.from_wire`, which is the one check of the plan's shape (a version the host
does not read is refused by name). The runner's per-benchmark result is a
:class:`BenchmarkOutcome`; the controller copies :data:`OUTCOME_KEYS` of it into the result it
returns (``plugin_utils/_hetero_contract``), so neither side spells the keys out by hand.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils._safe_names import name_problem
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import MAIN

PLAN_FORMAT = "heteromig.hetero-plan"
PLAN_VERSION = 2  # 2: benchmarks carry mode (and accuracy_check); choreography main_mode


class ContractError(ValueError):
    """A plan that does not hold to the contract; ``problems`` lists each in words."""

    def __init__(self, problems: List[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class BenchmarkPlan:
    """One benchmark process of a run: what to start, where, and how it is judged."""

    name: str
    argv: Tuple[str, ...]
    log_dir: str
    role: str = "background"
    benchmark: Optional[str] = None
    scenario: Optional[str] = None
    action: Optional[str] = None
    mode: Optional[str] = None
    slice: Optional[Dict[str, Any]] = None
    env: Dict[str, str] = field(default_factory=dict)
    cwd: Optional[str] = None
    files: Dict[str, Any] = field(default_factory=dict)
    duration_ms: Optional[int] = None
    accuracy_check: Optional[Dict[str, Any]] = None

    def to_wire(self) -> Dict[str, Any]:
        wire = dataclasses.asdict(self)
        wire["argv"] = list(self.argv)
        if self.accuracy_check is None:
            del wire["accuracy_check"]
        return wire


@dataclass(frozen=True)
class RunPlan:
    """One host's run: its benchmarks (the main first), the choreography and the run's limits."""

    run_id: str
    run_dir: str
    benchmarks: Tuple[BenchmarkPlan, ...]
    choreography: Dict[str, Any] = field(default_factory=dict)
    host: Optional[str] = None
    harness: Optional[str] = None
    shared_gpu: bool = False
    gpu: Optional[Dict[str, Any]] = None
    readiness_regexes: Optional[List[str]] = None
    progress_regex: Optional[str] = None
    lease_s: Optional[float] = None
    max_output_bytes: Optional[int] = None
    expected_duration_s: Optional[float] = None
    backend: Dict[str, Any] = field(default_factory=dict)
    env: Dict[str, str] = field(default_factory=dict)
    gpu_sample_interval_s: Optional[float] = None

    def to_wire(self) -> Dict[str, Any]:
        """The plan as JSON-ready data, with its format and version."""
        wire: Dict[str, Any] = {"format": PLAN_FORMAT, "version": PLAN_VERSION}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "benchmarks":
                value = [bench.to_wire() for bench in value]
            elif value is None and item.default is None and item.name not in _ALWAYS_SENT:
                continue
            wire[item.name] = value
        return wire

    @classmethod
    def from_wire(cls, data: Any) -> RunPlan:
        """The plan a controller sent; ContractError naming every problem when it is not one."""
        problems = plan_problems(data)
        if problems:
            raise ContractError(problems)
        known_run = {f.name for f in dataclasses.fields(cls)}
        known_bench = {f.name for f in dataclasses.fields(BenchmarkPlan)}
        benchmarks = tuple(
            BenchmarkPlan(
                **{
                    k: (tuple(v) if k == "argv" else v)
                    for k, v in bench.items()
                    if k in known_bench
                }
            )
            for bench in data["benchmarks"]
        )
        values = {k: v for k, v in data.items() if k in known_run and k != "benchmarks"}
        return cls(benchmarks=benchmarks, **values)


# sent even when empty, for the readers that expect the key (reports, resume)
_ALWAYS_SENT = frozenset({"host", "harness", "gpu", "expected_duration_s"})


def _env_problem(name: Any, env: Any) -> Optional[str]:
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        return "%s: env must map strings to strings" % name
    if any(
        not k or k[0].isdigit() or not all(c.isalnum() or c == "_" for c in k) or "\0" in v
        for k, v in env.items()
    ):
        return "%s: env holds an invalid variable name or a NUL in a value" % name
    return None


def plan_problems(plan: Any) -> List[str]:
    """Problems with the shape of a plan, in words (empty when it holds to the contract)."""
    if not isinstance(plan, dict):
        return ["the plan must be a mapping"]
    if plan.get("format") != PLAN_FORMAT or plan.get("version") != PLAN_VERSION:
        return [
            "not a %s version %d plan (format %r, version %r): controller and host runtime "
            "versions differ? Run the collection's runtime_sync (role heteromig.fleet."
            "host_runtime) so the host runs the controller's version"
            % (PLAN_FORMAT, PLAN_VERSION, plan.get("format"), plan.get("version"))
        ]
    problems = []
    for key in ("run_id", "run_dir"):
        if not isinstance(plan.get(key), str) or not plan[key]:
            problems.append("plan.%s must be a non-empty string" % key)
    run_id_problem = name_problem(plan.get("run_id"), "plan.run_id")
    if run_id_problem and isinstance(plan.get("run_id"), str) and plan["run_id"]:
        problems.append(run_id_problem)
    elif isinstance(plan.get("run_dir"), str) and os.path.basename(
        os.path.normpath(plan["run_dir"])
    ) != plan.get("run_id"):
        problems.append("plan.run_dir must end in the run id %r" % plan.get("run_id"))
    benchmarks = plan.get("benchmarks")
    if not isinstance(benchmarks, list) or not benchmarks:
        problems.append("plan.benchmarks must be a non-empty list")
        return problems
    names = [b.get("name") for b in benchmarks if isinstance(b, dict)]
    if MAIN not in names:
        problems.append("plan.benchmarks has no benchmark named %r" % MAIN)
    for bench in benchmarks:
        if not isinstance(bench, dict):
            problems.append("every plan.benchmarks entry must be a mapping")
            continue
        argv = bench.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            problems.append("%s: argv must be a non-empty list of strings" % bench.get("name"))
        name_issue = name_problem(bench.get("name"), "benchmark name")
        if name_issue:
            problems.append(name_issue)
        env_issue = _env_problem(bench.get("name"), bench.get("env", {}))
        if env_issue:
            problems.append(env_issue)
        if not isinstance(bench.get("log_dir"), str):
            problems.append("%s: log_dir must be a string" % bench.get("name"))
    if not isinstance(plan.get("choreography", {}), dict):
        problems.append("plan.choreography must be a mapping")
    return problems


# ------------------------------------------------------------------------------- the result
def plan_entry(bench: Mapping[str, Any]) -> Dict[str, Any]:
    """What a result says of a benchmark from its plan entry (the runner's result.json and the
    controller's contract both start each benchmark's entry with it)."""
    return {
        "name": bench["name"],
        "role": bench.get("role"),
        "benchmark": bench.get("benchmark"),
        "scenario": bench.get("scenario"),
        "action": bench.get("action"),
        "mode": bench.get("mode"),
        "slice": bench.get("slice"),
        "command": list(bench["argv"]),
        "env": {"CUDA_VISIBLE_DEVICES": (bench.get("env") or {}).get("CUDA_VISIBLE_DEVICES")},
        "log_dir": bench["log_dir"],
    }


@dataclass(frozen=True)
class BenchmarkOutcome:
    """How one benchmark of the run went, as the runner records it in result.json."""

    exit_code: Optional[int]
    signal: Optional[str]
    failed: bool
    launched_at: Optional[float]
    ready_at: Optional[float]
    ended_at: Optional[float]
    timed_window: Optional[Dict[str, Any]]
    loadgen: Optional[Dict[str, Any]]
    accuracy: Optional[Dict[str, Any]]
    stopped_by_runner: bool = False


# What the controller's result takes over from the runner's, per benchmark, as it is.
OUTCOME_KEYS: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(BenchmarkOutcome))


def outcome_of(entry: Mapping[str, Any]) -> Dict[str, Any]:
    """The outcome keys of a runner's result entry (missing ones as None / False)."""
    return {
        item.name: entry.get(
            item.name, item.default if item.default is not dataclasses.MISSING else None
        )
        for item in dataclasses.fields(BenchmarkOutcome)
    }
