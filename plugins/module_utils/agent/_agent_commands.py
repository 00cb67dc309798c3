# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host agent's commands (start, status, stop, collect), one answer per call (targets; private).

Two doors lead here, with the same arguments and the same answer:

- the ``heteromig.fleet.hetero_runner`` module (Ansible's own module call);
- ``python -m ansible_collections.heteromig.fleet.plugins.module_utils.agent._agent_commands``
  run from the installed host runtime, with ``{"args": {...}, "check_mode": bool}`` as JSON on
  its stdin and the answer as one JSON object on its stdout. The controller uses this door where
  the connection can feed stdin (``plugin_utils/_agent_transport``): it skips the module's
  payload, which Python recompiles on every call (about half a second on a busy host, per
  call).

A failure is an answer too: ``{"failed": true, "msg": ...}``, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any, Dict, Mapping, Optional

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_control import (
    archive,
    archive_inline,
    find_run,
    poll_status,
    read_status,
    request_stop,
    start,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_files import (
    RunnerError,
)

COMMANDS = ("start", "status", "stop", "collect")
# the defaults of the optional arguments; the module's argument_spec takes them from here
DEFAULTS: Dict[str, Any] = {
    "run_id": None,
    "plan": None,
    "python": None,
    "pythonpath": None,
    "check_layout": True,
    "lease": 0.0,
    "wait": 0.0,
    "since": None,
    "since_change": None,
    "collect": False,
    "inline_limit": 8 * 1024 * 1024,
    "reason": "stopped by request (hetero_runner command=stop)",
}


class CommandFailed(Exception):
    """A command that cannot be done; ``extra`` goes into the failed answer beside ``msg``."""

    def __init__(self, msg: str, **extra: Any) -> None:
        super().__init__(msg)
        self.extra = extra


def booted_at() -> Optional[float]:
    """When this host (its time namespace) booted, epoch seconds (from /proc/uptime)."""
    try:
        with open("/proc/uptime") as handle:
            return time.time() - float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def with_defaults(args: Mapping[str, Any]) -> Dict[str, Any]:
    """``args`` over :data:`DEFAULTS`; an unknown argument, a missing or unknown command, no
    host_root, or a negative lease or wait is refused by name."""
    unknown = sorted(set(args) - set(DEFAULTS) - {"command", "host_root"})
    if unknown:
        raise CommandFailed("unknown argument(s): %s" % ", ".join(unknown))
    params = dict(DEFAULTS)
    params.update({k: v for k, v in args.items() if v is not None})
    if params.get("command") not in COMMANDS:
        raise CommandFailed(
            "command must be one of %s, got %r" % (", ".join(COMMANDS), params.get("command"))
        )
    if not isinstance(params.get("host_root"), str) or not params["host_root"]:
        raise CommandFailed("host_root is required")
    if params["command"] == "start" and not isinstance(params["plan"], dict):
        raise CommandFailed("command is start but plan is missing")
    for key in ("lease", "wait"):
        if float(params[key]) < 0:
            raise CommandFailed("%s must not be negative, got %s" % (key, params[key]))
    return params


def answer(args: Mapping[str, Any], check_mode: bool = False) -> Dict[str, Any]:
    """Do one command; the module's (or the CLI's) result. Raises :class:`CommandFailed`."""
    p = with_defaults(args)
    host_root = p["host_root"]
    try:
        if p["command"] == "start":
            plan = p["plan"]
            if check_mode:
                return {
                    "changed": True,
                    "run_id": plan.get("run_id"),
                    "run_dir": plan.get("run_dir"),
                }
            status = start(
                plan,
                host_root,
                p["python"] or sys.executable,
                p["pythonpath"] or os.path.join(host_root, "lib"),
                check_layout_first=p["check_layout"],
                wait_for_runner=False,
                initial_lease_s=float(p["lease"]) or None,
            )
            return {
                "changed": True,
                "run_id": plan["run_id"],
                "run_dir": plan["run_dir"],
                "status": status,
            }
        found = find_run(host_root, p["run_id"])
        if not found:
            raise CommandFailed(
                "no hetero run %s on this host (looked in %s)"
                % (repr(p["run_id"]) if p["run_id"] else "at all", os.path.join(host_root, "runs")),
                run_id=p["run_id"],
            )
        run_dir = str(found)
        run_id = os.path.basename(run_dir)
        done = {"run_id": run_id, "run_dir": run_dir}
        if p["command"] == "status":
            lease = 0.0 if check_mode else float(p["lease"])
            status = poll_status(run_dir, p["since"], float(p["wait"]), lease, p["since_change"])
            if status.get("phase") == "lost":
                status["host_booted_at"] = booted_at()
            extra: Dict[str, Any] = {}
            if p["collect"] and status.get("done") and not check_mode:
                try:
                    extra = archive_inline(run_dir, int(p["inline_limit"]))
                except OSError as exc:
                    # the verdict is in the status: packing the logs failing must not hide it
                    extra = {"collect_error": "cannot pack the logs of run %s: %s" % (run_id, exc)}
            return dict(done, changed=False, status=status, **extra)
        if p["command"] == "stop":
            status = read_status(run_dir)
            if status.get("done"):
                return dict(done, changed=False, status=status)
            if check_mode:
                return dict(done, changed=True, status=status)
            request_stop(run_dir, p["reason"])
            status = poll_status(run_dir, None, 0, 0)
            wait, waited = float(p["wait"]), 0.0
            while wait > waited and not status.get("done") and status.get("runner_alive"):
                status = poll_status(run_dir, status.get("seq", 0), min(1.0, wait - waited), 0)
                waited += 1.0
            return dict(done, changed=True, status=status)
        # collect
        if check_mode:
            files = []
            for directory, _dirs, names in os.walk(run_dir):
                for name in names:
                    path = os.path.join(directory, name)
                    files.append(
                        {"path": os.path.relpath(path, run_dir), "size": os.path.getsize(path)}
                    )
            return dict(done, changed=False, files=files)
        return dict(done, changed=True, **archive(run_dir))
    except RunnerError as exc:
        raise CommandFailed(str(exc)) from None
    except OSError as exc:
        raise CommandFailed("hetero run %s failed on this host: %s" % (p["command"], exc)) from None


def answer_text(request: str) -> Dict[str, Any]:
    """The CLI's answer to one request (JSON text); every failure is a failed answer."""
    try:
        data = json.loads(request)
        if not isinstance(data, dict) or not isinstance(data.get("args"), dict):
            raise CommandFailed('the request must be {"args": {...}, "check_mode": bool}')
        return answer(data["args"], bool(data.get("check_mode")))
    except CommandFailed as exc:
        return dict(exc.extra, failed=True, msg=str(exc))
    except ValueError as exc:
        return {"failed": True, "msg": "the request is not JSON: %s" % exc}
    except Exception as exc:  # pylint: disable=broad-except
        # the controller shows msg; the traceback is there for a bug report
        return {
            "failed": True,
            "msg": "heteromig agent error: %s: %s" % (type(exc).__name__, exc),
            "exception": traceback.format_exc(),
        }


def main() -> int:
    sys.stdout.write(json.dumps(answer_text(sys.stdin.read())) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    # the agent's own process, not a module
    raise SystemExit(main())
