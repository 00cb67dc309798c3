"""The progress display fed by ansible-runner's events.

On a terminal: the lines the plays print (``hetero_run [h1] VALID ...``, ``campaign [h1] ... |
campaign 3/5 done ...``, failures) scroll by above one status line that is rewritten in place:
elapsed time, play N/M, tasks done, the current task and how many of its hosts are done.
Elsewhere (a pipe, a log file, CI): plain lines only, one per task as it starts, plus the same
lines the plays print. ``verbose`` passes ansible-playbook's own output through instead.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Mapping
from typing import Any, TextIO

HOST_DONE = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}
# lines the plays print through Display (ansible-runner's "verbose" events) that are shown
_NOISE = re.compile(r"^(\s*$|ansible-playbook \[core|No config file found|Using .* as config file)")


def _one_line(text: Any, width: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return "%d:%02d:%02d" % (hours, minutes, secs) if hours else "%d:%02d" % (minutes, secs)


def failure_message(event_data: Mapping[str, Any]) -> str:
    res = event_data.get("res") or {}
    message = res.get("msg") if isinstance(res, Mapping) else None
    if not message and isinstance(res, Mapping):
        message = res.get("stderr") or res.get("reason")
    return _one_line(message or "(no message)")


class Progress:
    """Consumes events (``event``), redraws on ``tick``; ``close`` ends the status line."""

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool,
        verbose: bool = False,
        total_plays: int | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = tty
        self.verbose = verbose
        self.total_plays = total_plays
        self.clock = clock
        self.started = clock()
        self.plays = 0
        self.play = ""
        self.tasks_started = 0
        self.tasks_done = 0
        self.task = ""
        self.task_uuid: str | None = None
        self.task_hosts: dict[str, str] = {}  # host -> "running" or its outcome
        self.play_hosts: set[str] = set()
        self._status_shown = ""
        self._last_draw = 0.0

    # ---------------------------------------------------------------- output
    def _clear(self) -> None:
        if self.tty and self._status_shown:
            self.stream.write("\r\x1b[2K")
            self._status_shown = ""

    def line(self, text: str) -> None:
        """Print a line (above the status line on a terminal)."""
        self._clear()
        self.stream.write(text.rstrip("\n") + "\n")
        self._draw()
        self.stream.flush()

    def status(self) -> str:
        plays = "%d/%d" % (self.plays, self.total_plays) if self.total_plays else str(self.plays)
        text = "[%s] play %s | %d task(s) done" % (
            _elapsed(self.clock() - self.started),
            plays,
            self.tasks_done,
        )
        if self.task:
            done = sum(1 for s in self.task_hosts.values() if s != "running")
            total = max(len(self.task_hosts), len(self.play_hosts))
            text += " | %s" % self.task
            if total:
                text += " | hosts %d/%d" % (done, total)
        return text

    def _draw(self) -> None:
        if not self.tty or self.verbose:
            return
        width = max(20, shutil.get_terminal_size((100, 24)).columns - 1)
        text = self.status()
        if len(text) > width:
            text = text[: width - 1] + "…"
        self.stream.write("\r\x1b[2K" + text)
        self._status_shown = text
        self._last_draw = self.clock()

    def tick(self) -> None:
        """Called now and then while nothing happens: the clock moves on a terminal."""
        if self.tty and not self.verbose and self.clock() - self._last_draw >= 1.0:
            self._draw()
            self.stream.flush()

    def close(self) -> None:
        self._clear()
        self.stream.flush()

    # ---------------------------------------------------------------- events
    def _task_over(self) -> None:
        if self.task_uuid is not None:
            self.tasks_done += 1
            self.task_uuid = None

    def event(self, event: Mapping[str, Any]) -> None:
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        if self.verbose:
            text = event.get("stdout")
            if text:
                self._clear()
                self.stream.write(str(text).replace("\r\n", "\n").strip("\n") + "\n")
                self.stream.flush()
        if kind == "playbook_on_play_start":
            self._task_over()
            self.plays += 1
            self.play = str(data.get("name") or data.get("play") or "")
            self.play_hosts = set()
            self.task = ""
            self.task_hosts = {}
        elif kind == "playbook_on_task_start":
            self._task_over()
            self.tasks_started += 1
            self.task = str(data.get("task") or data.get("name") or "")
            self.task_uuid = str(data.get("task_uuid") or data.get("uuid") or "")
            self.task_hosts = {}
            if not self.tty and not self.verbose:
                plays = "%d/%d" % (self.plays, self.total_plays) if self.total_plays else self.plays
                self.line(
                    "[%s] play %s, task %d: %s"
                    % (_elapsed(self.clock() - self.started), plays, self.tasks_started, self.task)
                )
        elif kind == "runner_on_start":
            host = str(data.get("host") or "")
            self.task_hosts.setdefault(host, "running")
            self.play_hosts.add(host)
        elif kind in HOST_DONE:
            host = str(data.get("host") or "")
            self.task_hosts[host] = HOST_DONE[kind]
            self.play_hosts.add(host)
            shown = kind in ("runner_on_failed", "runner_on_unreachable") and not self.verbose
            if shown and not data.get("ignore_errors"):
                self.line(
                    "%s [%s] %s: %s"
                    % (
                        "FAILED" if kind == "runner_on_failed" else "UNREACHABLE",
                        host,
                        data.get("task"),
                        failure_message(data),
                    )
                )
        elif kind == "runner_item_on_failed" and not self.verbose:
            self.line(
                "FAILED [%s] %s (item): %s"
                % (data.get("host"), data.get("task"), failure_message(data))
            )
        elif kind in ("verbose", "warning", "error") and not self.verbose:
            for text in str(event.get("stdout") or "").replace("\r\n", "\n").split("\n"):
                if not _NOISE.match(text):
                    self.line(text.rstrip())
        elif kind == "playbook_on_stats":
            self._task_over()
        if kind != "verbose":
            self._draw()
            self.stream.flush()
