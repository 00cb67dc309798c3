"""One playbook run through ``ansible_runner.run``: events, Ctrl-C, and what came out.

Like ``tests/lab/runner.py``: ansible-playbook comes from the bin directory of the running
interpreter (the venv), one private data directory per run (a temporary directory, removed at
the end), and a ``cancel_callback`` so that ansible-runner does not install its own SIGINT and
SIGTERM handlers (which kill the playbook's process group with SIGKILL at once).

Ctrl-C: ansible-runner starts ansible-playbook in its own session (a pseudo-terminal), so the
terminal's SIGINT reaches only this process. It is passed on to ansible-playbook's process group,
as a terminal would deliver it to ``ansible-playbook`` run by hand: the plays stop the way they
stop there (a campaign's ledger keeps the cell in flight, the same command resumes it). A second
Ctrl-C, or ansible-playbook still running GRACE_S later, kills the process group.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from heteromig_cli.progress import HOST_DONE, Progress, failure_message

GRACE_S = 90.0
HETERO_RUN = "heteromig.fleet.hetero_run"
CAMPAIGN = "heteromig.fleet.campaign"


@dataclass
class Failure:
    host: str
    task: str
    action: str
    outcome: str  # failed | unreachable
    message: str


@dataclass
class PlaybookRun:
    """What one playbook run left, read from its events."""

    rc: int = -1
    status: str = "unstarted"
    signal: int | None = None  # SIGINT/SIGTERM received while it ran
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    hetero_started: set[str] = field(default_factory=set)  # hosts where hetero_run began
    hetero_results: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> contract
    campaign_results: list[dict[str, Any]] = field(default_factory=list)  # the campaign tasks' res
    report_lines: list[str] = field(default_factory=list)

    @property
    def campaign_plan(self) -> dict[str, Any] | None:
        for res in self.campaign_results:
            if "plan" in res and "systems" in res and "campaign_dir" in res:
                return res
        return None


class _Interrupts:
    """SIGINT/SIGTERM while the playbook runs: passed on to its process group (see above)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.count = 0
        self.first_at = 0.0
        self.pid: int | None = None  # ansible-playbook's (its own process group's leader)
        self.on_signal: Callable[[str], None] = lambda _text: None

    def handler(self, signum: int, _frame: object) -> None:
        self.count += 1
        if self.signal is None:
            self.signal = signum
            self.first_at = time.monotonic()
        pid = self.pid or _child_pid()
        if self.count == 1 and pid is not None:
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(pid), signal.SIGINT)
            self.on_signal(
                "heteromig: interrupted: stopping ansible-playbook as Ctrl-C does (Ctrl-C again "
                "to kill it at once)"
            )

    def cancel(self) -> bool:
        """ansible-runner's cancel_callback: True kills the playbook's process group."""
        if not self.count:
            return False
        if self.count > 1 or (self.pid or _child_pid()) is None:
            return True
        return time.monotonic() - self.first_at > GRACE_S

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for signum in previous:
            signal.signal(signum, self.handler)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _child_pid() -> int | None:
    """A child of this process (ansible-runner's ansible-playbook) from /proc, if any."""
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(me):
            return int(entry)
    return None


class _Collector:
    def __init__(self, run: PlaybookRun, progress: Progress, interrupts: _Interrupts) -> None:
        self.run = run
        self.progress = progress
        self.interrupts = interrupts

    def __call__(self, event: dict[str, Any]) -> bool:
        if self.interrupts.pid is None and isinstance(event.get("pid"), int):
            self.interrupts.pid = event["pid"]
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        action = str(data.get("resolved_action") or data.get("task_action") or "")
        host = str(data.get("host") or "")
        raw = data.get("res")
        res: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if kind == "runner_on_start" and action == HETERO_RUN:
            self.run.hetero_started.add(host)
        if kind in HOST_DONE and action == HETERO_RUN and res.get("verdict"):
            self.run.hetero_results[host] = res
        if kind in ("runner_on_ok", "runner_on_failed") and action == CAMPAIGN:
            self.run.campaign_results.append(res)
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            self.run.failures.append(
                Failure(
                    host,
                    str(data.get("task") or ""),
                    action,
                    "failed" if kind == "runner_on_failed" else "unreachable",
                    failure_message(data),
                )
            )
        if kind == "playbook_on_stats":
            self.run.stats = {k: v for k, v in data.items() if isinstance(v, dict)}
        for text in str(event.get("stdout") or "").splitlines():
            if text.startswith("hetero_report: reports in "):
                self.run.report_lines.append(text.strip())
        self.progress.event(event)
        return False  # nothing is written to the (temporary) artifacts


def run_playbook(
    playbook: Path,
    *,
    workdir: Path,
    env: Mapping[str, str],
    progress: Progress,
    inventory: Path | None = None,
    cmdline: Sequence[str] = (),
    forks: int | None = None,
    limit: str | None = None,
) -> PlaybookRun:
    """``ansible_runner.run`` of ``playbook`` with the progress display fed by its events."""
    run = PlaybookRun()
    interrupts = _Interrupts()
    interrupts.on_signal = progress.line
    bindir = Path(sys.executable).parent  # not resolved: a venv's python is a symlink
    envvars = {
        "PATH": "%s%s%s" % (bindir, os.pathsep, os.environ.get("PATH", "")),
        "ANSIBLE_NOCOLOR": "1",
        **env,
    }

    def cancel() -> bool:
        progress.tick()
        return interrupts.cancel()

    private = Path(tempfile.mkdtemp(prefix="heteromig-runner-"))
    try:
        kwargs: dict[str, Any] = {
            "private_data_dir": str(private),
            "project_dir": str(workdir),
            "playbook": str(playbook),
            "envvars": envvars,
            "quiet": True,
            "event_handler": _Collector(run, progress, interrupts),
            "cancel_callback": cancel,
            # how often, at most, the cancel callback (and the clock on a terminal) is checked
            "settings": {"pexpect_timeout": 1},
        }
        if inventory is not None:
            kwargs["inventory"] = str(inventory)
        if cmdline:
            kwargs["cmdline"] = shlex.join(cmdline)
        if forks is not None:
            kwargs["forks"] = forks
        if limit:
            kwargs["limit"] = limit
        with interrupts.installed():
            runner = ansible_runner.run(**kwargs)
        run.rc = int(runner.rc) if runner.rc is not None else -1
        run.status = str(runner.status)
        if run.rc != 0 and not run.stats and interrupts.signal is None:
            # ansible-playbook stopped before its first play (bad inventory, syntax, options)
            with contextlib.suppress(OSError), runner.stdout as out:
                tail = [line.rstrip() for line in out.read().splitlines() if line.strip()]
                for line in tail[-15:]:
                    progress.line(line)
    finally:
        progress.close()
        run.signal = interrupts.signal
        shutil.rmtree(private, ignore_errors=True)
    return run
