# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One host's turn at its system's cells, for the campaign action's ``operation=cell``.

Controller only. :class:`CellRun` claims a cell from the ledger, runs it through the real
``heteromig.fleet.hetero_run`` action (which the campaign action gives it), records the outcome
and prints the campaign's progress; with ``gpus_at_once`` > 1 it drives the host's lanes
(:mod:`_campaign_lanes`), several cells at once, one per GPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.utils.display import Display

from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import runtime_paths
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_lanes import (
    Lane,
    LaneError,
    lane_of,
    lane_options,
    lanes_for,
    schedule,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    RUNS,
    Claim,
    LedgerError,
    cell_states,
    claim_next,
    decide,
    finish,
    progress,
    read,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_order import awaited
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_plan import fmt_duration
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import Campaign
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_tuned_cell import (
    tuned_cell,
)

display = Display()
DEFAULT_HOST_ROOT = "/var/lib/heteromig"


class _Action(Protocol):
    def hetero_run(self, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]: ...

    def runner(
        self, args: dict[str, Any], task_vars: dict[str, Any], pythonpath: str
    ) -> dict[str, Any]: ...

    def var(self, name: str, task_vars: Mapping[str, Any]) -> Any: ...


class CellRun:
    """Claim, run and record this host's cells of one system (one loop item of sweep.yml)."""

    def __init__(
        self,
        action: _Action,
        campaign: Campaign,
        directory: str,
        ledger: str,
        session: str,
        host: str,
        system: str,
        plan: Mapping[str, Any],
        task_vars: dict[str, Any],
    ) -> None:
        self.action = action
        self.campaign = campaign  # the cells this playbook run owns (one slice's, or all)
        self.directory = directory
        self.ledger = ledger
        self.session = session
        self.host = host
        self.system = system
        self.plan = plan
        self.task_vars = task_vars

    # ------------------------------------------------------------------------ one cell
    def claim(self, header: Mapping[str, Any] | None, extra: Any = None) -> Claim | None:
        try:
            claim = claim_next(
                self.ledger,
                self.campaign,
                self.system,
                self.host,
                self.session,
                warn=lambda message: display.warning("campaign ledger: %s" % message),
                header=header,
                extra=extra,
            )
        except LedgerError as exc:
            raise AnsibleActionFail("campaign ledger: %s" % exc) from None
        if claim is not None:
            display.display(
                "campaign [%s] %s cell %s (attempt %d, run %s)"
                % (
                    self.host,
                    "resumes" if claim.resume else "starts",
                    claim.cell.id,
                    claim.attempt,
                    claim.run_id,
                )
            )
        return claim

    def claim_waiting(
        self,
        header: Mapping[str, Any] | None,
        pause: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
    ) -> Claim | None:
        """The next cell, or None once none is left and none may come back (:meth:`wait`).
        So a free host takes a retry at once (a lost host's cell too), and the host's loop can
        end at its first item that finds nothing (sweep.yml's break_when)."""
        while True:
            claim = self.claim(header)
            if claim is not None:
                return claim
            if not self.wait(pause, sleep, now):
                return None

    def wait(
        self,
        pause: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
    ) -> bool:
        """With nothing to claim: wait while a cell of the system in flight in this session may
        come back as a retry (:func:`_campaign_order.awaited`), reading the ledger every
        ``pause`` s. True as soon as a cell can be claimed; False when none can and none may
        come back."""
        announced = False
        while True:
            try:
                records, _warnings = read(self.ledger)
            except LedgerError as exc:
                raise AnsibleActionFail("campaign ledger: %s" % exc) from None
            states = cell_states(records)
            if decide(self.campaign, self.system, self.host, self.session, states) is not None:
                return True
            waiting = awaited(self.campaign, self.system, self.session, states, now())
            if not waiting:
                return False
            if not announced:
                display.display(
                    "campaign [%s] no cell to take; waiting for %s, in flight, which may come "
                    "back as a retry" % (self.host, ", ".join(waiting))
                )
                announced = True
            sleep(pause)

    def _run(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.action.hetero_run(args, self.task_vars)

    def execute(self, claim: Claim) -> tuple[str | None, dict[str, Any], dict[str, Any] | None]:
        """Run a claimed cell to its end: (failure, hetero_run's result, tuning or None)."""
        cell = claim.cell
        if cell.tune or cell.tuning.get("use_tuned"):
            return tuned_cell(
                self.campaign,
                self.directory,
                self.ledger,
                claim,
                self.host,
                self.session,
                self._run,
            )
        args = dict(cell.options)
        args.update(
            run_id=claim.run_id,
            resume=claim.resume,
            results_dir=os.path.join(self.directory, RUNS),
        )
        try:
            return None, self._run(args), None
        except AnsibleError as exc:
            if not (claim.resume and "no hetero run" in str(exc)):
                return str(exc), {}, None
        # the controller died between the claim and the start: nothing ran on the host, so
        # the claimed attempt starts now under its own run id
        display.display(
            "campaign [%s] %s never started on the host; starting it now"
            % (self.host, claim.run_id)
        )
        args["resume"] = False
        try:
            return None, self._run(args), None
        except AnsibleError as again:
            return str(again), {}, None

    def record(
        self,
        claim: Claim,
        failure: str | None,
        run_result: Mapping[str, Any],
        tuning: Mapping[str, Any] | None,
        marks: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append the cell's ``finished`` record, print its line and the campaign's progress;
        returns the task result of the cell. ``marks`` (a lane's gpu and gpus_at_once) go into
        the record and the result."""
        cell = claim.cell
        if run_result.get("failed") and failure is None:
            failure = str(run_result.get("msg") or "hetero_run failed")
        verdict = run_result.get("verdict") or "INVALID"
        reasons = list(run_result.get("reasons") or ([failure] if failure else []))
        metric = ((run_result.get("main") or {}).get("loadgen") or {}).get("metric")
        finish(
            self.ledger,
            claim,
            self.host,
            self.session,
            verdict=verdict,
            failed=failure is not None,
            reasons=reasons,
            metric=metric,
            results_dir=run_result.get("results_dir"),
            system=self.system,
            **({"tuning": dict(tuning)} if tuning is not None else {}),
            **dict(marks or {}),
        )
        records, _warnings = read(self.ledger)
        hosts = {
            name: len(system.get("hosts") or [])
            for name, system in (self.plan.get("systems") or {}).items()
        }
        counts = progress(self.campaign, records, hosts)
        display.display(
            "campaign [%s] %s %s%s%s | %scampaign %d/%d done, %d VALID, %d INVALID, %d failed, "
            "%d in flight | ETA %s"
            % (
                self.host,
                cell.id,
                verdict,
                (" (%s %s %s)" % (metric.get("name"), metric.get("value"), metric.get("unit")))
                if metric
                else "",
                " (GPU %s, %s at once)" % (marks.get("gpu"), marks.get("gpus_at_once"))
                if marks
                else "",
                "slice %s: " % self.plan["slice"] if self.plan.get("slice") else "",
                counts["done"],
                counts["total"],
                counts["valid"],
                counts["invalid"],
                counts["failed"],
                counts["in_flight"],
                "?" if counts.get("eta_s") is None else fmt_duration(counts["eta_s"]),
            )
        )
        out = dict(run_result)
        out["changed"] = True
        out["campaign"] = {
            "name": self.campaign.name,
            "cell": cell.id,
            "system": self.system,
            "attempt": claim.attempt,
            "resumed": claim.resume,
            **dict(marks or {}),
        }
        if tuning is not None:
            out["tuning"] = dict(tuning)
            out["campaign"]["tuned_main_target_qps"] = tuning.get("value")
        if failure is not None:
            out["failed"] = True
            out["msg"] = "cell %s: %s" % (cell.id, failure)
        return out

    # ---------------------------------------------------------------- gpus_at_once lanes
    def lanes(self, header: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every cell this host gets, up to gpus_at_once of them at once (one per GPU)."""
        asked = self.campaign.system(self.system).gpus_at_once
        root = str(self.action.var("heteromig_host_root", self.task_vars) or DEFAULT_HOST_ROOT)
        paths = runtime_paths(root)
        pythonpath = str(self.action.var("heteromig_host_pythonpath", self.task_vars) or paths.lib)
        try:
            lanes = lanes_for(self.action.var("heteromig_mig_devices", self.task_vars), asked, root)
        except LaneError as exc:
            raise AnsibleActionFail("campaign: %s: %s" % (self.host, exc)) from None
        if len(lanes) < asked:
            display.warning(
                "campaign [%s] gpus_at_once is %d but the host has %d GPU(s) with MIG devices: "
                "%d cells run at once, and the results say so"
                % (self.host, asked, len(lanes), len(lanes))
            )
        marks = {"gpus_at_once": len(lanes)}
        outs: list[dict[str, Any]] = []
        runs_dir = os.path.join(self.directory, RUNS)

        def options(claim: Claim, lane: Lane) -> dict[str, Any]:
            args = lane_options(claim.cell.options, lane, pythonpath, paths.engines)
            args.update(run_id=claim.run_id, results_dir=runs_dir)
            return args

        def take(lane: Lane) -> Claim | None:
            def gpu(claim: Claim) -> dict[str, Any]:
                # a resumed claim stays on its own GPU (lane_of), a new one takes this lane
                chosen = lane_of(claim, lanes, lanes) if claim.resume else None
                return {"gpu": (chosen or lane).gpu, **marks}

            return self.claim(header, extra=gpu)

        def start(claim: Claim, lane: Lane) -> str | None:
            if claim.resume:  # the run is on the lane already, unless it never started
                status = self.action.runner(
                    {"command": "status", "host_root": lane.host_root, "run_id": claim.run_id},
                    self.task_vars,
                    pythonpath,
                )
                if not (status.get("failed") and "no hetero run" in str(status.get("msg"))):
                    return None
            try:
                res = self._run(dict(options(claim, lane), resume=False, wait=False))
            except AnsibleError as exc:
                return str(exc)
            return str(res.get("msg") or "hetero_run failed") if res.get("failed") else None

        def done(claim: Claim, lane: Lane) -> bool:
            try:
                res = self.action.runner(
                    {"command": "status", "host_root": lane.host_root, "run_id": claim.run_id},
                    self.task_vars,
                    pythonpath,
                )
            except AnsibleError:
                return True  # the watch (resume) finds out what happened, with its patience
            if res.get("failed") or res.get("unreachable"):
                return True
            return bool((res.get("status") or {}).get("done"))

        def end(claim: Claim, lane: Lane, failure: str | None) -> None:
            result: dict[str, Any] = {}
            if failure is None:
                try:
                    result = self._run(dict(options(claim, lane), resume=True))
                except AnsibleError as exc:
                    failure = str(exc)
            outs.append(self.record(claim, failure, result, None, {"gpu": lane.gpu, **marks}))

        schedule(lanes, take, start, done, end)
        while self.wait():  # a cell of another host came back as a retry: take it too
            schedule(lanes, take, start, done, end)
        if not outs:
            return {
                "changed": False,
                "skipped": True,
                "msg": "no cell left for system %s" % self.system,
            }
        failed = [o for o in outs if o.get("failed")]
        return {
            "changed": True,
            "failed": bool(failed),
            "msg": "%d cell(s) on %d GPU(s) at once: %s"
            % (
                len(outs),
                len(lanes),
                ", ".join(
                    "%s %s"
                    % (o["campaign"]["cell"], "FAILED" if o.get("failed") else o.get("verdict"))
                    for o in outs
                ),
            ),
            "cells": outs,
            "campaign": {"name": self.campaign.name, "system": self.system, **marks},
        }
