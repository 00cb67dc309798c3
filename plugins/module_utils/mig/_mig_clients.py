# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU clients the admin names: stopped before a MIG change and restored after it.

A client is a systemd unit (``unit``) or a pair of commands (``stop``/``start``, with an
optional ``status`` whose exit status 0 means "running"). Each has an ``order`` (lower stops
first; restored in the reverse order), a ``timeout`` in seconds for each of its commands, what
to do when it is ``missing`` (``fail``, ``skip`` or ``warn``), and which changes need it
stopped (``needed_for``: ``change`` - any change of the host's GPUs -, ``mode_change`` - a MIG
mode change -, or ``reset`` - a mode change that resets a GPU, such as on Ampere).

Only clients that are running are stopped, and only those are started again, also when the
change fails. A unit is missing when systemd does not know it (``LoadState=not-found``); a
command client when its ``stop`` command does not exist. Validation of the list is pure
(``parse_clients``); everything that runs a command takes a ``run`` callable, so the logic is
tested without a host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

MISSING_ACTIONS = ("fail", "skip", "warn")
NEEDED_FOR = ("change", "mode_change", "reset")
DEFAULT_TIMEOUT = 120.0
_ACTIVE_STATES = ("active", "activating", "reloading", "deactivating")
_OUTPUT_LIMIT = 2000


class ClientError(Exception):
    """A client list that is not valid, a missing client, or a stop that failed."""


class GpuClient(NamedTuple):
    name: str
    unit: Optional[str]
    stop: Tuple[str, ...]
    start: Tuple[str, ...]
    status: Tuple[str, ...]
    order: int
    timeout: float
    missing: str
    needed_for: str
    position: int  # in the list as given (ties of order keep it)


Run = Callable[[List[str], float], Tuple[int, str, str]]


def _argv(value: Any, where: str) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        import shlex

        argv = shlex.split(value)
    elif isinstance(value, (list, tuple)):
        argv = [str(part) for part in value]
    else:
        raise ClientError("%s must be a command line or a list of arguments" % where)
    if not argv:
        raise ClientError("%s is empty" % where)
    return tuple(argv)


def _number(value: Any, where: str, integer: bool) -> Any:
    if isinstance(value, bool):
        raise ClientError("%s must be a number, not %r" % (where, value))
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise ClientError(
            "%s must be %s, not %r"
            % (where, "an integer" if integer else "a number of seconds", value)
        ) from None
    if integer and isinstance(value, float) and value != number:
        raise ClientError("%s must be an integer, not %r" % (where, value))
    if integer and isinstance(value, str) and value.strip() != str(number):
        raise ClientError("%s must be an integer, not %r" % (where, value))
    return number


def parse_clients(items: Optional[Sequence[Any]]) -> List[GpuClient]:
    """Validate the list (module option ``gpu_clients``); ClientError names the entry."""
    clients: List[GpuClient] = []
    seen: Dict[str, int] = {}
    for position, item in enumerate(items or []):
        where = "gpu_clients[%d]" % position
        if isinstance(item, str):
            item = {"unit": item}
        if not isinstance(item, Mapping):
            raise ClientError("%s must be a unit name or a mapping" % where)
        unit = item.get("unit")
        stop = _argv(item.get("stop"), where + ".stop")
        start = _argv(item.get("start"), where + ".start")
        status = _argv(item.get("status"), where + ".status")
        if unit is not None and (not isinstance(unit, str) or not unit.strip()):
            raise ClientError("%s: unit must be a systemd unit name" % where)
        if unit and (stop or start or status):
            raise ClientError("%s: give either unit or stop/start commands, not both" % where)
        if not unit and not (stop and start):
            raise ClientError("%s: needs a unit, or both a stop and a start command" % where)
        name = item.get("name") or unit or os.path.basename(stop[0])
        where = "%s (%s)" % (where, name)
        order = _number(
            item.get("order", 50) if item.get("order") is not None else 50,
            where + ": order",
            integer=True,
        )
        if order < 0:
            raise ClientError("%s: order must be 0 or more, not %d" % (where, order))
        timeout = _number(
            item.get("timeout") if item.get("timeout") is not None else DEFAULT_TIMEOUT,
            where + ": timeout",
            integer=False,
        )
        if timeout <= 0:
            raise ClientError(
                "%s: timeout must be more than 0 seconds, not %r" % (where, item.get("timeout"))
            )
        missing = item.get("missing") or "fail"
        if missing not in MISSING_ACTIONS:
            raise ClientError(
                "%s: missing must be one of %s, not %r"
                % (where, ", ".join(MISSING_ACTIONS), missing)
            )
        needed_for = item.get("needed_for") or "change"
        if needed_for not in NEEDED_FOR:
            raise ClientError(
                "%s: needed_for must be one of %s, not %r"
                % (where, ", ".join(NEEDED_FOR), needed_for)
            )
        if name in seen:
            raise ClientError(
                "%s: the name %s is already gpu_clients[%d]" % (where, name, seen[name])
            )
        seen[name] = position
        if unit and "." not in unit:
            unit += ".service"
        clients.append(
            GpuClient(
                str(name), unit, stop, start, status, order, timeout, missing, needed_for, position
            )
        )
    return sorted(clients, key=lambda c: (c.order, c.position))


def needed(
    clients: Sequence[GpuClient], change: bool, mode_change: bool, reset: bool
) -> List[GpuClient]:
    """The clients this change needs stopped, in stop order."""
    wanted = {"change": change, "mode_change": mode_change, "reset": reset}
    return [c for c in clients if wanted[c.needed_for]]


def subprocess_run(argv: List[str], timeout: float) -> Tuple[int, str, str]:
    """Run a command; (rc, stdout, stderr); rc 124 with a message when it timed out."""
    try:
        done = subprocess.run(  # pylint: disable=ansible-bad-function
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return 124, "", "did not finish within %gs (killed)" % timeout
    except OSError as exc:
        return 127, "", str(exc.strerror or exc)
    return done.returncode, done.stdout, done.stderr


class ClientState(NamedTuple):
    client: GpuClient
    present: bool
    running: bool
    why_missing: str = ""


class ClientManager:
    """Finds, stops and restores the clients of one change on this host."""

    def __init__(
        self,
        clients: Sequence[GpuClient],
        run: Run = subprocess_run,
        path: Optional[str] = None,
        systemctl: Optional[str] = None,
    ) -> None:
        self.clients = list(clients)
        self._run = run
        self._path = path if path is not None else os.environ.get("PATH", "")
        self._systemctl = systemctl
        self.warnings: List[str] = []
        self.report: Dict[str, Dict[str, Any]] = {}
        self.stopped: List[GpuClient] = []

    def systemctl(self) -> Optional[str]:
        """systemctl on PATH, or None (units are then missing: no systemd to ask)."""
        if self._systemctl is None:
            self._systemctl = shutil.which("systemctl", path=self._path) or ""
        return self._systemctl or None

    def _entry(self, client: GpuClient) -> Dict[str, Any]:
        return self.report.setdefault(
            client.name,
            {
                "name": client.name,
                "unit": client.unit,
                "order": client.order,
                "present": None,
                "was_running": None,
                "stopped": False,
                "restored": False,
            },
        )

    def survey(self) -> List[ClientState]:
        """Each client's presence and state (read-only); ClientError for a missing 'fail' one."""
        units = self._units()
        states = []
        missing = []
        for client in self.clients:
            state = units[client.name] if client.unit else self._command_state(client)
            entry = self._entry(client)
            entry.update(present=state.present, was_running=state.running)
            if not state.present:
                text = "GPU client %s is missing (%s)" % (client.name, state.why_missing)
                if client.missing == "fail":
                    missing.append(text)
                elif client.missing == "warn":
                    self.warnings.append(text + "; left out")
            states.append(state)
        if missing:
            raise ClientError(
                "; ".join(missing) + ". Nothing was changed (set missing: skip or "
                "warn on clients that only some hosts have)"
            )
        return states

    def _units(self) -> Dict[str, ClientState]:
        """The state of every unit client, from one ``systemctl show`` of them all."""
        clients = [c for c in self.clients if c.unit]
        if not clients:
            return {}
        systemctl = self.systemctl()
        if systemctl is None:
            why = "no systemctl on PATH %s" % self._path
            return {c.name: ClientState(c, False, False, why) for c in clients}
        argv = [systemctl, "show", "--property=LoadState,ActiveState"] + [
            str(c.unit) for c in clients
        ]
        rc, out, err = self._run(argv, max(c.timeout for c in clients))
        # one block of properties per unit, in the order asked, separated by empty lines
        blocks = [
            dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            for block in out.strip().split("\n\n")
        ]
        if rc != 0 or len(blocks) != len(clients):
            # no systemd running (a container, a chroot): no unit can be there
            why = "systemctl show failed (exit status %d): %s" % (rc, _last_line(err or out))
            return {c.name: ClientState(c, False, False, why) for c in clients}
        states = {}
        for client, props in zip(clients, blocks):
            if props.get("LoadState", "not-found") in ("not-found", ""):
                states[client.name] = ClientState(
                    client, False, False, "systemd has no unit %s" % client.unit
                )
            else:
                states[client.name] = ClientState(
                    client, True, props.get("ActiveState") in _ACTIVE_STATES
                )
        return states

    def _command_state(self, client: GpuClient) -> ClientState:
        for command in (client.stop[0], client.start[0]):
            if _resolve(command, self._path) is None:
                return ClientState(
                    client,
                    False,
                    False,
                    "command %s does not exist%s"
                    % (command, "" if os.sep in command else " on PATH %s" % self._path),
                )
        if not client.status:
            return ClientState(client, True, True)
        rc, _out, _err = self._run(list(client.status), client.timeout)
        return ClientState(client, True, rc == 0)

    def stop(self, states: Sequence[ClientState]) -> None:
        """Stop the running ones in order; on a failure, restore those stopped, then raise."""
        for state in states:
            if not state.running:
                continue
            client = state.client
            argv = (
                [str(self.systemctl()), "stop", client.unit] if client.unit else list(client.stop)
            )
            rc, out, err = self._run(argv, client.timeout)
            if rc != 0:
                problems = self.restore()
                raise ClientError(
                    "stopping GPU client %s failed (exit status %d): %s%s. "
                    "Nothing was changed"
                    % (
                        client.name,
                        rc,
                        _last_line(err or out),
                        "; " + "; ".join(problems) if problems else "",
                    )
                )
            self.stopped.append(client)
            self._entry(client)["stopped"] = True

    def restore(self) -> List[str]:
        """Start what ``stop`` stopped, in reverse order; the failures, as text (all are tried)."""
        problems = []
        while self.stopped:
            client = self.stopped.pop()
            argv = (
                [str(self.systemctl()), "start", client.unit] if client.unit else list(client.start)
            )
            rc, out, err = self._run(argv, client.timeout)
            if rc != 0:
                problems.append(
                    "starting GPU client %s again failed (exit status %d): %s"
                    % (client.name, rc, _last_line(err or out))
                )
            else:
                self._entry(client)["restored"] = True
        return problems

    def result(self) -> List[Dict[str, Any]]:
        return [self.report[c.name] for c in self.clients if c.name in self.report]


def _resolve(command: str, path: str) -> Optional[str]:
    if os.sep in command:
        return command if os.path.isfile(command) and os.access(command, os.X_OK) else None
    return shutil.which(command, path=path)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:_OUTPUT_LIMIT] if lines else "no output"
