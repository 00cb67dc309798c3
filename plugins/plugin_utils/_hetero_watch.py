# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the hetero_run action decides and says while it starts, watches and ends a run, apart
from Ansible and I/O (controller only): the first lease of a run nobody watches yet, the key of a
shared run id, the progress line, the reason of a lost run, the verdict line and the task's
failure message.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._choreo_types import (
    EXITED,
    PENDING,
    RUNNING,
    exit_text,
)

PROGRESS_EVERY = 30.0  # seconds between progress lines when nothing changes

# A run started with wait=false must outlive the wait for a free worker: its first lease covers
# the whole run (readiness, buffer, main, stop) plus this margin, within the run's own limit.
DETACHED_LEASE_MARGIN_S = 120.0


def detached_lease_s(plan: Mapping[str, Any]) -> float:
    """The first lease of a run that nobody watches yet (wait=false)."""
    choreo = plan.get("choreography") or {}
    whole = (
        float(plan.get("expected_duration_s") or 0)
        + float(choreo.get("background_start_timeout") or 0)
        + float(choreo.get("stop_grace") or 0)
        + DETACHED_LEASE_MARGIN_S
    )
    limit = float(choreo.get("run_timeout") or whole)
    return max(float(plan.get("lease_s") or 0), min(whole, limit))


_CALLS: dict[str, int] = {}  # run_id_key: calls of this worker process so far, by key


def run_id_key(task_uuid: str, task_vars: Mapping[str, Any]) -> str:
    """What names a shared run id: the task, its loop item, and the how-manieth call this is.

    Each host runs a task (all its loop items, every until/retries attempt) in one worker
    process. A loop item is told by its value (the same on every host for a plain loop, so the
    hosts share its id) and by how often this worker has seen that value (a list may repeat
    one); a retry is a new call, so it gets a new run. Without a loop the key is the task uuid.
    """
    key = task_uuid
    loop_var = task_vars.get("ansible_loop_var")
    if isinstance(loop_var, str) and loop_var in task_vars:
        item = json.dumps(task_vars[loop_var], sort_keys=True, default=str)
        key += "-" + hashlib.sha256(item.encode("utf-8")).hexdigest()[:12]
    seen = _CALLS.get(key, 0)
    _CALLS[key] = seen + 1
    return key if seen == 0 else "%s-%d" % (key, seen)


def utc_stamp() -> str:
    """Now, as a run id's time stamp (``20261122T051500Z``)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class ConnectionLost(Exception):
    """The host stayed unreachable for longer than lease + reconnect_timeout (the message)."""


def first_line(text: str, limit: int = 300) -> str:
    """The first non-blank line of ``text`` (an error's message), cut to ``limit`` characters."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else "no details"
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def _utc_text(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def lost_reason(
    host: str, run_id: str, run_path: str, status: Mapping[str, Any], stopped: list[str]
) -> str:
    """The one reason of a run whose runner is gone without a result.

    ``status`` is the runner's last status as the host reads it (``phase: lost``, with
    ``host_booted_at`` from hetero_runner): the host booted after the run started means a
    reboot ended it; otherwise the runner process died (killed). ``stopped`` names benchmarks
    the dead runner had left running, which the host then ended.
    """
    booted = status.get("host_booted_at")
    started = status.get("started_at")
    if isinstance(booted, (int, float)) and isinstance(started, (int, float)) and booted > started:
        why = (
            "%s rebooted during run %s (up since %s; the run started %s): every benchmark "
            "ended with it and the runner wrote no result"
            % (host, run_id, _utc_text(booted), _utc_text(started))
        )
    else:
        why = "the runner of run %s on %s%s died before the run finished and wrote no result" % (
            run_id,
            host,
            " (pid %s)" % status["pid"] if status.get("pid") else "",
        )
    if stopped:
        why += "; it left %s running, now stopped" % ", ".join(stopped)
    return why + " (its logs: %s/runner.log on the host)" % run_path


def ended_benchmarks(status: Mapping[str, Any]) -> list[str]:
    """The benchmarks a dead runner left running, which hetero_runner then ended (by name)."""
    return sorted(
        {
            str(p.get("benchmark"))
            for p in status.get("ended_processes") or []
            if isinstance(p, Mapping) and p.get("benchmark") not in (None, "", "?")
        }
    )


def progress_line(host: str, status: Mapping[str, Any]) -> str:
    """One progress line of a run from its status: phase, the run's time, backgrounds ready,
    and the main: its state, and its own time against the expected duration (which counts from
    the main's launch, not from the run's start)."""
    benches = status.get("benchmarks") or {}
    bgs = sorted(n for n in benches if n != "main")
    ready = [n for n in bgs if benches[n].get("ready")]
    failed = [n for n in bgs if benches[n].get("failed")]
    parts = [
        "hetero_run [%s] %s" % (host, status.get("phase")),
        "%.1f s" % float(status.get("elapsed_s") or 0.0),
    ]
    if bgs:
        parts.append(
            "backgrounds ready %d/%d%s"
            % (len(ready), len(bgs), (" (failed: %s)" % ", ".join(failed)) if failed else "")
        )
    parts.append("main: %s" % _main_progress(benches.get("main") or {}, status))
    return " | ".join(parts)


def _main_progress(main: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    state = main.get("state") or PENDING
    launched = main.get("launched_at")
    if state == RUNNING and launched is not None:
        expected = status.get("expected_duration_s")
        now = status.get("updated_at") or launched
        return "%s, %.1f/%s s" % (
            "timed phase" if main.get("ready") else "running",
            max(0.0, float(now) - float(launched)),
            "%.1f" % float(expected) if expected else "?",
        )
    if state == EXITED:
        how = exit_text(main.get("exit_code"), main.get("signal"))
        if launched is not None and main.get("ended_at") is not None:
            how += " after %.1f s" % (float(main["ended_at"]) - float(launched))
        return how
    return state.replace("_", " ")


def verdict_line(host: str, contract: Mapping[str, Any]) -> str:
    """The line that ends a run's watch: verdict, the main benchmark's metric, the reasons."""
    main = contract["main"]
    metric = (main.get("loadgen") or {}).get("metric") or {}
    return "hetero_run [%s] %s%s%s" % (
        host,
        contract["verdict"],
        " | main %s: %s %s" % (metric.get("name"), metric.get("value"), metric.get("unit"))
        if metric
        else "",
        (" | " + "; ".join(contract["reasons"])) if contract["reasons"] else "",
    )


def task_failure(
    host: str, contract: Mapping[str, Any], failure: str | None, fail_on_invalid: bool
) -> str | None:
    """The task's failure message: ``failure`` when set, else an INVALID run's when
    ``fail_on_invalid``; None when the task succeeds."""
    if failure:
        return failure
    if contract["verdict"] != "VALID" and fail_on_invalid:
        return "hetero run %s on %s is INVALID: %s" % (
            contract["run_id"],
            host,
            "; ".join(contract["reasons"]),
        )
    return None
