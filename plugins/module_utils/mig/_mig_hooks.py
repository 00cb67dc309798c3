# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hooks around a MIG change, in NVIDIA mig-parted's hooks file format (``version: v1``).

A hooks spec maps hook points to lists of commands::

    version: v1
    hooks:
      apply-start:
        - workdir: /etc/nvidia-mig-manager
          command: /bin/bash
          args: ["-c", "logger mig change starts: $MIG_PARTED_SELECTED_CONFIG"]
          envs: {SOME: value}

The hook points are mig-parted's: ``apply-start`` (first), ``pre-apply-mode`` (a MIG mode
changes), ``pre-apply-config`` (GPU instances change) and ``apply-exit`` (last, always, after
``apply-start`` has run, also when the change failed). Commands of one point run in file order;
the first that fails (exit status other than 0, or no start) stops the rest of that point.

What differs from mig-parted, on purpose (docs/mig_fleet.md):

- hooks run only on a host whose GPUs change (mig-parted runs ``apply-start`` and ``apply-exit``
  on every apply), so a fleet run that changes nothing runs none;
- both ``pre-*`` points run before the first change (mig-parted runs ``pre-apply-config``
  after the mode change), so a failing ``pre-*`` hook leaves every GPU as it was;
- the environment: mig-parted gives a hook only its ``envs`` and the ``MIG_PARTED_*`` variables
  (no PATH); here the hook also gets ``PATH``, plus ``HETEROMIG_MIG_HOOK`` (the point) and, for
  ``apply-exit``, ``HETEROMIG_MIG_EXIT_STATUS`` (``0`` after a successful change, ``1`` after
  a failed one; mig-parted passes no status);
- every command has a time limit (``timeout`` seconds; mig-parted has none);
- the spec is checked strictly before anything runs: an unknown hook point or key, a version
  other than ``v1``, a command that does not exist, a workdir that is not a directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

HOOKS_VERSION = "v1"
APPLY_START = "apply-start"
PRE_APPLY_MODE = "pre-apply-mode"
PRE_APPLY_CONFIG = "pre-apply-config"
APPLY_EXIT = "apply-exit"
HOOK_POINTS = (APPLY_START, PRE_APPLY_MODE, PRE_APPLY_CONFIG, APPLY_EXIT)
_HOOK_KEYS = ("command", "args", "envs", "workdir")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_TIMEOUT = 300.0
_OUTPUT_LIMIT = 4000  # characters of a hook's stdout/stderr kept in the result


class HookError(Exception):
    """A hooks spec that is not valid, or a hook that failed; the message says which."""


class Hook(NamedTuple):
    point: str
    position: int  # 0-based within its point
    command: str
    args: Tuple[str, ...]
    envs: Tuple[Tuple[str, str], ...]
    workdir: Optional[str]

    @property
    def label(self) -> str:
        return "%s hook %d (%s)" % (self.point, self.position + 1, self.command)


class HookSpec(NamedTuple):
    """Validated hooks by point; ``source`` says where they came from (for messages)."""

    hooks: Dict[str, Tuple[Hook, ...]]
    source: str

    def at(self, point: str) -> Tuple[Hook, ...]:
        return self.hooks.get(point, ())

    @property
    def empty(self) -> bool:
        return not any(self.hooks.values())


EMPTY = HookSpec({}, "no hooks")


def _scalar_text(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise HookError("%s must be a string, not %s" % (where, type(value).__name__))


def parse_hooks(data: Any, source: str) -> HookSpec:
    """Validate a hooks spec (already loaded data) and return it; HookError names the problem."""
    if data is None:
        return HookSpec({}, source)
    if not isinstance(data, Mapping):
        raise HookError(
            "%s: a hooks spec is a mapping with 'version: v1' and 'hooks', not %s"
            % (source, type(data).__name__)
        )
    unknown = sorted(set(data) - {"version", "hooks"})
    if unknown:
        raise HookError(
            "%s: unknown key(s) %s: a mig-parted v1 hooks spec has only 'version' "
            "and 'hooks'" % (source, ", ".join(map(str, unknown)))
        )
    if data.get("version") != HOOKS_VERSION:
        raise HookError(
            "%s: not a mig-parted v1 hooks spec: version is %r, expected 'v1'"
            % (source, data.get("version"))
        )
    points = data.get("hooks") or {}
    if not isinstance(points, Mapping):
        raise HookError("%s: 'hooks' must map hook points to lists of commands" % source)
    hooks: Dict[str, Tuple[Hook, ...]] = {}
    for point, entries in points.items():
        if point not in HOOK_POINTS:
            raise HookError(
                "%s: unknown hook point %r: mig-parted's hook points are %s"
                % (source, point, ", ".join(HOOK_POINTS))
            )
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise HookError("%s: hooks.%s must be a list of commands" % (source, point))
        hooks[point] = tuple(
            _parse_hook(point, index, entry, source) for index, entry in enumerate(entries)
        )
    return HookSpec(hooks, source)


def _parse_hook(point: str, index: int, entry: Any, source: str) -> Hook:
    where = "%s: hooks.%s[%d]" % (source, point, index)
    if not isinstance(entry, Mapping):
        raise HookError(
            "%s must be a mapping with 'command' (and 'args', 'envs', 'workdir')" % where
        )
    unknown = sorted(set(map(str, entry)) - set(_HOOK_KEYS))
    if unknown:
        raise HookError(
            "%s: unknown key(s) %s (a hook has %s)"
            % (where, ", ".join(unknown), ", ".join(_HOOK_KEYS))
        )
    command = entry.get("command")
    if not isinstance(command, str) or not command.strip():
        raise HookError("%s: 'command' is missing or empty" % where)
    args = entry.get("args") or []
    if not isinstance(args, list):
        raise HookError("%s: 'args' must be a list" % where)
    envs = entry.get("envs") or {}
    if not isinstance(envs, Mapping):
        raise HookError("%s: 'envs' must be a mapping of variable names to values" % where)
    workdir = entry.get("workdir")
    if workdir is not None and (not isinstance(workdir, str) or not workdir):
        raise HookError("%s: 'workdir' must be a path" % where)
    return Hook(
        point=point,
        position=index,
        command=command,
        args=tuple(_scalar_text(arg, "%s.args[%d]" % (where, i)) for i, arg in enumerate(args)),
        envs=tuple(
            sorted((str(k), _scalar_text(v, "%s.envs.%s" % (where, k))) for k, v in envs.items())
        ),
        workdir=workdir or None,
    )


def load_hooks_text(text: str, path: str) -> Any:
    """Parse a hooks file's text (YAML, or JSON without PyYAML); HookError if malformed."""
    try:
        import yaml
    except ImportError:
        try:
            return json.loads(text)
        except ValueError as exc:
            raise HookError(
                "hooks file %s: PyYAML is not installed for this Python and the "
                "file is not JSON (%s)" % (path, exc)
            ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise HookError("hooks file %s is not valid YAML: %s" % (path, exc)) from exc


def read_hooks_file(path: str) -> HookSpec:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise HookError("cannot read hooks file %s: %s" % (path, exc.strerror or exc)) from exc
    return parse_hooks(load_hooks_text(text, path), "hooks file %s" % path)


def combine(inline: HookSpec, from_file: HookSpec) -> HookSpec:
    """The file's hooks of each point, then the inline ones."""
    hooks = {}
    for point in HOOK_POINTS:
        both = from_file.at(point) + inline.at(point)
        if both:
            hooks[point] = both
    sources = [s.source for s in (from_file, inline) if not s.empty]
    return HookSpec(hooks, " and ".join(sources) or "no hooks")


def resolve_command(command: str, path: str) -> Optional[str]:
    """The executable a hook's command names (absolute, or found on ``path``), or None."""
    if os.sep in command:
        return command if os.path.isfile(command) and os.access(command, os.X_OK) else None
    return shutil.which(command, path=path)


def check_runnable(spec: HookSpec, path: str) -> None:
    """HookError naming every hook whose command or workdir does not exist here."""
    problems = []
    for point in HOOK_POINTS:
        for hook in spec.at(point):
            if resolve_command(hook.command, path) is None:
                problems.append(
                    "%s: command %s does not exist or is not executable%s"
                    % (
                        hook.label,
                        hook.command,
                        "" if os.sep in hook.command else " (not on PATH %s)" % path,
                    )
                )
            if hook.workdir is not None and not os.path.isdir(hook.workdir):
                problems.append("%s: workdir %s is not a directory" % (hook.label, hook.workdir))
    if problems:
        raise HookError("; ".join(problems))


def hook_environment(hook: Hook, variables: Mapping[str, str], path: str) -> Dict[str, str]:
    """PATH, then the hook's own envs, then ``variables`` (which win, as in mig-parted)."""
    env = {"PATH": path}
    env.update(dict(hook.envs))
    env.update(variables)
    return env


def _tail(text: str) -> str:
    return text if len(text) <= _OUTPUT_LIMIT else "..." + text[-_OUTPUT_LIMIT:]


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class HookRunner:
    """Runs the hooks of one spec and records each run (``runs``, the module's ``hooks_run``)."""

    def __init__(
        self,
        spec: HookSpec,
        variables: Mapping[str, str],
        path: str = DEFAULT_PATH,
        timeout: float = DEFAULT_TIMEOUT,
        run: Runner = subprocess.run,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.variables = dict(variables)
        self.path = path
        self.timeout = timeout
        self.runs: List[Dict[str, Any]] = []
        self._run = run
        self._clock = clock

    def run_point(self, point: str, extra: Optional[Mapping[str, str]] = None) -> None:
        """Run every hook of ``point`` in order; HookError at the first that fails."""
        variables = dict(self.variables, HETEROMIG_MIG_HOOK=point, **(extra or {}))
        for hook in self.spec.at(point):
            self._run_one(hook, variables)

    def _run_one(self, hook: Hook, variables: Mapping[str, str]) -> None:
        env = hook_environment(hook, variables, self.path)
        executable = resolve_command(hook.command, self.path) or hook.command
        record: Dict[str, Any] = {
            "point": hook.point,
            "command": hook.command,
            "args": list(hook.args),
            "rc": None,
            "stdout": "",
            "stderr": "",
        }
        self.runs.append(record)
        started = self._clock()
        try:
            done = self._run(  # pylint: disable=ansible-bad-function
                [executable, *hook.args],
                env=env,
                cwd=hook.workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            record["seconds"] = round(self._clock() - started, 3)
            record["stdout"] = _tail(_text(exc.stdout))
            record["stderr"] = _tail(_text(exc.stderr))
            raise HookError(
                "%s did not finish within %gs (killed)" % (hook.label, self.timeout)
            ) from exc
        except OSError as exc:
            record["seconds"] = round(self._clock() - started, 3)
            record["stderr"] = str(exc)
            raise HookError("%s could not start: %s" % (hook.label, exc.strerror or exc)) from exc
        record.update(
            rc=done.returncode,
            stdout=_tail(done.stdout),
            stderr=_tail(done.stderr),
            seconds=round(self._clock() - started, 3),
        )
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise HookError(
                "%s failed with exit status %d%s"
                % (hook.label, done.returncode, ": %s" % said[-1] if said else "")
            )


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


def mig_parted_variables(config_file: str, selected_config: str, hooks_file: str) -> Dict[str, str]:
    """The variables mig-parted's ``apply`` gives every hook, with this run's values."""
    return {
        "MIG_PARTED_CONFIG_FILE": config_file,
        "MIG_PARTED_SELECTED_CONFIG": selected_config,
        "MIG_PARTED_HOOKS_FILE": hooks_file,
        "MIG_PARTED_SKIP_RESET": "false",
        "MIG_PARTED_MODE_CHANGE_ONLY": "false",
    }


def points_for(mode_change: bool, config_change: bool) -> Sequence[str]:
    """The hook points a change runs, in order (apply-exit last)."""
    points = [APPLY_START]
    if mode_change:
        points.append(PRE_APPLY_MODE)
    if config_change:
        points.append(PRE_APPLY_CONFIG)
    points.append(APPLY_EXIT)
    return points


def validate_inputs(
    params: Mapping[str, Any], hooks_file_text: Optional[str]
) -> Tuple[HookSpec, List[Any]]:
    """The hooks and GPU clients of a ``mig_layout`` run, validated: pure but for the hooks
    file, whose text the caller read. HookError or ``_mig_clients.ClientError`` name the problem."""
    from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_clients import (
        parse_clients,
    )

    inline = parse_hooks(params.get("hooks"), "hooks") if params.get("hooks") is not None else EMPTY
    from_file = EMPTY
    if params.get("hooks_file"):
        from_file = parse_hooks(
            load_hooks_text(hooks_file_text or "", params["hooks_file"]),
            "hooks file %s" % params["hooks_file"],
        )
    timeout = params.get("hooks_timeout")
    if timeout is not None and timeout <= 0:
        raise HookError("hooks_timeout must be more than 0 seconds, not %r" % timeout)
    return combine(inline, from_file), parse_clients(params.get("gpu_clients"))
