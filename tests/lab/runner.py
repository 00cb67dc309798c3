"""Run a playbook through ansible-runner and read per-host task results from its events."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ansible_runner

REPO_ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_CFG = REPO_ROOT / "ansible.cfg"

Outcome = Literal["ok", "failed", "unreachable", "skipped"]
_OUTCOMES: dict[str, Outcome] = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


@dataclass(frozen=True)
class TaskResult:
    """One host's result of one task (a runner_on_* event)."""

    host: str
    task: str
    outcome: Outcome
    res: dict[str, Any]
    event_data: dict[str, Any]


@dataclass
class LabRun:
    """The outcome of one ansible-runner run."""

    rc: int
    status: str  # ansible-runner: successful, failed, timeout, canceled
    stdout: str
    events: list[dict[str, Any]]
    private_data_dir: Path

    @property
    def task_results(self) -> list[TaskResult]:
        results = []
        for event in self.events:
            outcome = _OUTCOMES.get(event.get("event", ""))
            if outcome is None:
                continue
            data = event.get("event_data", {})
            results.append(
                TaskResult(
                    data.get("host", ""), data.get("task", ""), outcome, data.get("res") or {}, data
                )
            )
        return results

    def results(self, task: str, host: str | None = None) -> list[TaskResult]:
        """All results of the task named ``task`` (exact name, without role prefix)."""
        return [r for r in self.task_results if r.task == task and host in (None, r.host)]

    def result(self, task: str, host: str) -> TaskResult:
        """The (last) result of ``task`` on ``host``; LookupError with context if there is none."""
        found = self.results(task, host)
        if not found:
            seen = [f"{r.task} -> {r.outcome}" for r in self.task_results if r.host == host]
            raise LookupError(
                f"no result of task {task!r} on {host!r} (status {self.status}, rc {self.rc}); "
                f"{host} had: {seen}\n--- stdout tail ---\n{self.stdout[-3000:]}"
            )
        return found[-1]

    def outcome(self, task: str, host: str) -> Outcome:
        return self.result(task, host).outcome

    def hosts(self, task: str, outcome: Outcome) -> set[str]:
        """The hosts whose (last) result of ``task`` was ``outcome``."""
        last = {r.host: r.outcome for r in self.results(task)}
        return {h for h, o in last.items() if o == outcome}

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """playbook_on_stats counters: {"ok": {host: n}, "failures": ..., "dark": ..., ...}."""
        for event in reversed(self.events):
            if event.get("event") == "playbook_on_stats":
                data = event.get("event_data", {})
                return {k: v for k, v in data.items() if isinstance(v, dict)}
        return {}


def run_playbook(
    playbook: Path,
    *,
    inventory: Path,
    private_data_dir: Path,
    extravars: Mapping[str, Any] | None = None,
    limit: str | None = None,
    envvars: Mapping[str, str] | None = None,
    timeout: int = 240,
) -> LabRun:
    """``ansible_runner.run`` with the repo's ansible.cfg, cwd at the repo root and PATH fixed.

    ansible-runner starts ``ansible-playbook`` from PATH: the bin directory of the running
    interpreter (the venv) goes first. It gets a cancel_callback so that it does not replace the
    process's SIGINT/SIGTERM handlers (Ctrl-C still interrupts pytest).
    """
    bindir = Path(sys.executable).parent  # not resolved: a venv's python is a symlink
    env = {
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
        "ANSIBLE_NOCOLOR": "1",
        # reports of the hetero_report callback stay with the run, not in the repository
        "HETEROMIG_REPORT_DIR": str(private_data_dir / "reports"),
        **(envvars or {}),
    }
    private_data_dir.mkdir(parents=True, exist_ok=True)
    runner = ansible_runner.run(
        private_data_dir=str(private_data_dir),
        project_dir=str(REPO_ROOT),
        playbook=str(playbook),
        inventory=str(inventory),
        extravars=dict(extravars or {}),
        limit=limit,
        envvars=env,
        timeout=timeout,
        quiet=True,
        cancel_callback=lambda: False,
    )
    with runner.stdout as out:
        stdout = out.read()
    return LabRun(
        rc=int(runner.rc) if runner.rc is not None else -1,
        status=str(runner.status),
        stdout=stdout,
        events=list(runner.events),
        private_data_dir=private_data_dir,
    )
