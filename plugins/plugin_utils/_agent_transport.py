# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the controller's actions reach the host agent's commands (controller only).

The commands themselves live in ``module_utils/agent/_agent_commands.py``. There are two ways
to them, chosen per host by ``heteromig_agent_transport``:

- ``direct``: one command over the connection, ``python -m <agent commands>`` from the host
  runtime that ``host_runtime`` installed (the same files the runner runs from), with the
  request on stdin. Python loads the runtime's cached bytecode; nothing is copied.
- ``module``: the ``heteromig.fleet.hetero_runner`` module, as Ansible runs any module. Its
  payload is rebuilt and recompiled by Python on every call: on a loaded 2-core host about
  0.6 s a call against 0.2 s for ``direct`` (docs/benchmarks.md).
- ``auto`` (the default): ``direct`` where the connection can feed a command's stdin under the
  play's become (what Ansible's pipelining needs too), else ``module``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure

AGENT_COMMANDS = "ansible_collections.heteromig.fleet.plugins.module_utils.agent._agent_commands"
RUNNER_MODULE = "heteromig.fleet.hetero_runner"
TRANSPORT_VAR = "heteromig_agent_transport"
TRANSPORTS = ("auto", "direct", "module")


def host_var(templar: Any, task_vars: Mapping[str, Any], name: str) -> Any:
    """A host variable, templated; facts are looked up in ansible_facts first."""
    facts = task_vars.get("ansible_facts") or {}
    value = facts.get(name) if isinstance(facts, Mapping) else None
    if value is None:
        value = task_vars.get(name)
    if value is None:
        return None
    return templar.template(value)


def host_python(templar: Any, task_vars: Mapping[str, Any]) -> str:
    """The interpreter for the runner and the agent's commands on the host:
    ``heteromig_host_python``, else a set ``ansible_python_interpreter``, else the one Ansible
    discovered, else ``python3``."""
    for name in ("heteromig_host_python", "ansible_python_interpreter"):
        value = host_var(templar, task_vars, name)
        if isinstance(value, str) and value and not value.startswith("auto"):
            return value
    facts = task_vars.get("ansible_facts") or {}
    found = facts.get("discovered_interpreter_python") if isinstance(facts, Mapping) else None
    return str(found or "python3")


def agent_command(env_prefix: str, python: str, pythonpath: str) -> str:
    """The shell command that answers one request on stdin; the task's environment first, the
    runtime's tree ahead of any PYTHONPATH the host has."""
    return "%s PYTHONPATH=%s${PYTHONPATH:+:$PYTHONPATH} %s -m %s" % (
        env_prefix,
        shlex.quote(pythonpath),
        shlex.quote(python),
        AGENT_COMMANDS,
    )


def parse_answer(rc: int, stdout: str, stderr: str, pythonpath: str) -> dict[str, Any]:
    """The agent's answer from one direct command's output.

    Raises AnsibleConnectionFailure when no whole answer arrived and nothing on the host said
    why (ssh's 255, a session killed by a signal, output cut short or missing): the connection
    died under the command, and the caller retries, the way a module's garbled answer is
    taken. A command that ended with its own error (a missing interpreter or runtime, Python
    failing to start) is a failed answer that says so.
    """
    lines = [line for line in (stdout or "").splitlines() if line.strip()]
    if lines:
        try:
            found = json.loads(lines[-1])
        except ValueError:
            found = None
        if isinstance(found, dict):
            return found
    err = " ".join((stderr or "").split())[-400:]
    if rc == 255 or rc < 0 or lines or not err:
        raise AnsibleConnectionFailure(
            "the heteromig agent's answer did not arrive whole (exit %s): %s"
            % (rc, err or (lines[-1][:200] if lines else "no output"))
        )
    if "No module named" in err and "ansible_collections" in err:
        return {
            "failed": True,
            "msg": "the heteromig host runtime is not installed on this host (no %s under "
            "PYTHONPATH %s). Install it with the role heteromig.fleet.host_runtime, or set "
            "heteromig_host_pythonpath" % (AGENT_COMMANDS, pythonpath),
        }
    return {
        "failed": True,
        "msg": "the heteromig agent did not answer (exit %s): %s" % (rc, err or "no output"),
    }


class AgentCalls:
    """For an action plugin (an ActionBase): one call of the agent's commands on its host."""

    _connection: Any
    _templar: Any
    _task: Any

    def _agent_transport(self, task_vars: Mapping[str, Any]) -> str:
        asked = host_var(self._templar, task_vars, TRANSPORT_VAR) or "auto"
        if asked not in TRANSPORTS:
            raise AnsibleActionFail(
                "%s must be one of %s, got %r" % (TRANSPORT_VAR, ", ".join(TRANSPORTS), asked)
            )
        if asked != "auto":
            return str(asked)
        connection = self._connection
        become = getattr(connection, "become", None)
        if not getattr(connection, "has_pipelining", False):
            return "module"
        if become is not None and not connection.is_pipelining_enabled():
            # stdin under become (sudo's requiretty, su) is what pipelining is set up for
            return "module"
        return "direct"

    def _agent_call(
        self,
        args: dict[str, Any],
        task_vars: dict[str, Any],
        python: str,
        pythonpath: str,
    ) -> dict[str, Any]:
        """The answer of one agent command. AnsibleConnectionFailure when the host cannot be
        reached or its answer was cut; a failed answer is returned, not raised."""
        if self._agent_transport(task_vars) == "module":
            res = self._execute_module(  # type: ignore[attr-defined]
                module_name=RUNNER_MODULE, module_args=args, task_vars=task_vars
            )
            if res.get("unreachable"):
                raise AnsibleConnectionFailure(str(res.get("msg") or "host unreachable"))
            if res.get("failed") and _garbled(res):
                # the connection died under the module: its output never arrived whole
                raise AnsibleConnectionFailure(str(res.get("msg") or "no module output"))
            return dict(res)
        request = json.dumps({"args": args, "check_mode": bool(self._task.check_mode)})
        res = self._low_level_execute_command(  # type: ignore[attr-defined]
            agent_command(self._compute_environment_string(), python, pythonpath),  # type: ignore[attr-defined]
            in_data=request.encode("utf-8"),
        )
        return parse_answer(
            int(res.get("rc", 1)),
            str(res.get("stdout") or ""),
            str(res.get("stderr") or ""),
            pythonpath,
        )


def _garbled(res: Mapping[str, Any]) -> bool:
    """A module answer that is not the module's JSON (cut off by a dropped connection)."""
    msg = str(res.get("msg") or "")
    return (
        "module_stdout" in res
        or msg.startswith("Module result deserialization failed")
        or msg.startswith("MODULE FAILURE")
    )
