# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What happens around a MIG change on a host whose GPUs change: hooks and GPU clients.

``ChangeGuard.prepare`` is called by ``_mig_apply.run_host`` once the host is planned and
something changes, before the busy check and the first change; ``finish`` is called by the
caller afterwards, whatever happened. The order on such a host:

1. check every hook command and GPU client (missing ones fail here, nothing run or stopped);
2. ``apply-start`` hooks, then ``pre-apply-mode`` (a MIG mode changes), then
   ``pre-apply-config`` (instances change); a failing one stops the run: nothing changed;
3. stop the running GPU clients this change needs, by ``order``;
4. (the change: busy check, drain, per-GPU changes, each rolled back on failure);
5. start the stopped clients again, in reverse order (also after a failure);
6. ``apply-exit`` hooks (always once ``apply-start`` succeeded, as in mig-parted), with
   ``HETEROMIG_MIG_EXIT_STATUS`` 0 or 1.

In check mode steps 1 and 3's survey run (both only read), and the result says which hooks
would run and which clients would be stopped; no hook runs and nothing is stopped.
Hosts whose GPUs do not change never get here.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_clients import (
    ClientError,
    ClientManager,
    GpuClient,
    needed,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_hooks import (
    APPLY_EXIT,
    APPLY_START,
    DEFAULT_TIMEOUT,
    HookError,
    HookRunner,
    HookSpec,
    check_runnable,
    mig_parted_variables,
    points_for,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_host import MigApplyError
from ansible_collections.heteromig.fleet.plugins.module_utils.mig._mig_persist import (
    BootPaths,
    selected_label,
)


class GuardError(MigApplyError):
    """A hook or a GPU client stopped the change before it began: nothing changed."""


def _what_changes(run: Any) -> Dict[str, bool]:
    plans = [plan for plan in run.plans.values() if plan.changed]
    return {
        "change": bool(plans),
        "mode_change": any(plan.set_mode is not None for plan in plans),
        "config_change": any(plan.destroy or plan.create for plan in plans),
        "reset": any(
            plan.mode_change and plan.geometry.mode_change_needs_reset is not False
            for plan in plans
        ),
    }


class ChangeGuard:
    """Hooks and GPU clients of one module run."""

    def __init__(
        self,
        hooks: HookSpec,
        runner: HookRunner,
        clients: Sequence[GpuClient],
        manager: Optional[ClientManager] = None,
    ) -> None:
        self.hooks = hooks
        self.runner = runner
        self.manager = manager or ClientManager(clients)
        self.clients = list(clients)
        self.points: List[str] = []
        self.check_mode = False
        self.started = False  # apply-start ran (so apply-exit must)
        self.prepared = False

    def prepare(self, run: Any, check_mode: bool) -> None:
        """Steps 1-3 (see the module docstring); GuardError leaves the GPUs untouched."""
        self.prepared = True
        self.check_mode = check_mode
        changes = _what_changes(run)
        if not changes["change"]:
            return
        if not self.hooks.empty:
            self.points = [
                p
                for p in points_for(changes["mode_change"], changes["config_change"])
                if self.hooks.at(p)
            ]
        clients = needed(self.clients, True, changes["mode_change"], changes["reset"])
        self.manager.clients = clients
        try:
            check_runnable(self.hooks, self.runner.path)
            states = self.manager.survey()
        except (HookError, ClientError) as exc:
            raise GuardError(str(exc)) from exc
        if check_mode:
            for state in states:
                self.manager.report[state.client.name]["would_stop"] = state.running
            return
        try:
            self.runner.run_point(APPLY_START)
            # as in mig-parted, apply-exit runs once apply-start has succeeded
            self.started = True
            for point in self.points:
                if point not in (APPLY_START, APPLY_EXIT):
                    self.runner.run_point(point)
        except HookError as exc:
            raise GuardError("%s; nothing was changed" % exc) from exc
        try:
            self.manager.stop(states)
        except ClientError as exc:
            raise GuardError(str(exc)) from exc

    def finish(self, ok: bool) -> List[str]:
        """Steps 5-6: restore clients, run apply-exit; the problems, as text."""
        if self.check_mode or not self.prepared:
            return []
        problems = self.manager.restore()
        if self.started and self.hooks.at(APPLY_EXIT):
            try:
                self.runner.run_point(APPLY_EXIT, {"HETEROMIG_MIG_EXIT_STATUS": "0" if ok else "1"})
            except HookError as exc:
                problems.append(str(exc))
        return problems

    def result(self) -> Dict[str, Any]:
        """Return values: the hook points (run, or in check mode not run), hooks, clients."""
        out: Dict[str, Any] = {}
        if not self.hooks.empty:
            out["hook_points"] = list(self.points)
            out["hooks_run"] = list(self.runner.runs)
        if self.clients:
            out["gpu_clients"] = self.manager.result()
        return out

    def diff_text(self) -> str:
        """What the diff adds: which hooks (would) run, which clients are (would be) stopped."""
        lines = []
        if self.points:
            if self.check_mode:
                lines.append(
                    "hooks (check mode: not run): %s"
                    % ", ".join("%s (%d)" % (p, len(self.hooks.at(p))) for p in self.points)
                )
            else:
                lines.append("hooks run: %s" % ", ".join(self.points))
        report = self.manager.result()
        if self.check_mode:
            stopping = [c["name"] for c in report if c.get("would_stop")]
            if stopping:
                lines.append(
                    "GPU clients that would be stopped and started again: %s" % ", ".join(stopping)
                )
        else:
            stopped = [c["name"] for c in report if c.get("stopped")]
            if stopped:
                lines.append("GPU clients stopped and started again: %s" % ", ".join(stopped))
        left = [c["name"] for c in report if c.get("present") is False]
        if left:
            lines.append("GPU clients not on this host (left out): %s" % ", ".join(left))
        return "".join(line + "\n" for line in lines)


def guard_for(
    params: Mapping[str, Any], spec: HookSpec, clients: Sequence[GpuClient], path: str
) -> ChangeGuard:
    """The guard of a ``mig_layout`` run, with mig-parted's hook variables for its request."""
    config_file = params.get("mig_parted_config_file") or ""
    if not config_file and params.get("boot_persistence") == "present":
        config_file = BootPaths(
            params["boot_config_dir"], params["boot_runtime_dir"], params["boot_unit_dir"]
        ).config
    variables = mig_parted_variables(
        config_file, selected_label(params), params.get("hooks_file") or ""
    )
    runner = HookRunner(
        spec, variables, path=path, timeout=float(params.get("hooks_timeout") or DEFAULT_TIMEOUT)
    )
    return ChangeGuard(spec, runner, clients, ClientManager(clients, path=path))
