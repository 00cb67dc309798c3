# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin heteromig.fleet.campaign: a submission campaign's plan, cells and report.

Documentation: plugins/modules/campaign.py. The spec and the ledger are pure modules
(plugin_utils/_campaign_spec, _campaign_ledger); each cell runs through the real
``heteromig.fleet.hetero_run`` action, so a cell is exactly a hetero run.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure, AnsibleError
from ansible.inventory.manager import InventoryManager
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    LedgerError,
    cell_states,
    claim_next,
    finish,
    read,
    summary_counts,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_report import (
    write_campaign_report,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    SpecError,
    engine_combinations,
    layout_options,
    load_spec,
    parse_spec,
)

display = Display()

HETERO_RUN = "heteromig.fleet.hetero_run"
LEDGER = "ledger.jsonl"
RUNS = "runs"

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "operation": {"type": "str", "required": True, "choices": ["plan", "cell", "report"]},
    "spec": {"type": "dict"},
    "spec_file": {"type": "path"},
    "campaign_dir": {"type": "path"},
    "session": {"type": "str"},
    "submitter": {"type": "str", "default": "heteromig"},
}


def campaign_dir_for(campaign: Campaign, given: str | None) -> str:
    """The campaign's directory on the controller: given, else results/campaigns/<name>."""
    return os.path.abspath(
        os.path.expanduser(given or os.path.join("results", "campaigns", campaign.name))
    )


def fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return (
        ("%dh%02dm%02ds" % (hours, rest // 60, rest % 60))
        if hours
        else ("%dm%02ds" % (rest // 60, rest % 60))
    )


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True  # operation=cell runs a hetero run on the host

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        del tmp
        task_vars = task_vars or {}
        result = super().run(task_vars=task_vars)
        validation = ArgumentSpecValidator(
            ARGUMENT_SPEC,
            mutually_exclusive=[("spec", "spec_file")],
            required_one_of=[("spec", "spec_file")],
        ).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail(
                "campaign: %s (give the sweep spec as heteromig_sweep, e.g. "
                "-e @playbooks/sweeps/local.yml, or its path as heteromig_sweep_file)"
                % "; ".join(validation.error_messages)
            )
        args = validation.validated_parameters
        try:
            if args["spec"] is not None:
                campaign = parse_spec(args["spec"], "heteromig_sweep")
            else:
                campaign = load_spec(args["spec_file"])
        except SpecError as exc:
            raise AnsibleActionFail("sweep spec: %s" % exc) from None
        directory = campaign_dir_for(campaign, args["campaign_dir"])
        operation = args["operation"]
        if operation == "plan":
            result.update(self._plan(campaign, directory, task_vars))
        elif operation == "cell":
            if not args["session"]:
                raise AnsibleActionFail("campaign: operation=cell needs session (from the plan)")
            result.update(self._cell(campaign, directory, args["session"], task_vars))
        else:
            result.update(self._report(campaign, directory, args["submitter"]))
        return result

    # ------------------------------------------------------------------------------ plan
    def _plan(self, campaign: Campaign, directory: str, task_vars: Mapping[str, Any]) -> dict:
        groups = task_vars.get("groups") or {}
        manager = InventoryManager(self._loader, parse=False)
        for group, members in groups.items():
            manager.add_group(group)
            for member in members:
                manager.add_host(member, group=group)
        hosts_of: dict[str, list[str]] = {}
        system_of: dict[str, str] = {}
        for system in campaign.systems:
            try:
                found = [h.name for h in manager.get_hosts(pattern=system.hosts)]
            except AnsibleError:
                found = []
            if not found:
                raise AnsibleActionFail(
                    "sweep spec: system %s: hosts %r matches no host of the inventory"
                    % (system.name, system.hosts)
                )
            for host in found:
                if host in system_of:
                    raise AnsibleActionFail(
                        "sweep spec: host %s is in two systems, %s and %s: a host belongs to one "
                        "system (its MIG layout)" % (host, system_of[host], system.name)
                    )
                system_of[host] = system.name
            hosts_of[system.name] = found
        for cell in campaign.cells:
            if cell.tune:
                raise AnsibleActionFail(
                    "sweep spec: cell %s asks for main_target_qps: auto; tuning under hetero "
                    "load is not built yet: give a number" % cell.id
                )
        ledger = os.path.join(directory, LEDGER)
        try:
            records, warnings = read(ledger)
        except LedgerError as exc:
            raise AnsibleActionFail("campaign ledger: %s" % exc) from None
        for warning in warnings:
            display.warning("campaign ledger: %s" % warning)
        states = cell_states(records)
        systems: dict[str, dict[str, Any]] = {}
        lines = []
        total_estimate = 0.0
        for system in campaign.systems:
            cells = [c for c in campaign.cells if c.system == system.name]
            hosts = hosts_of[system.name]
            todo = []
            skip = []
            for cell in cells:
                state = states.get(cell.id)
                finished = state is not None and (
                    state.state == "done"
                    or (state.state == "failed" and state.attempts >= 1 + cell.retries)
                )
                if finished:
                    skip.append(cell.id)
                else:
                    todo.append(cell)
            estimate = sum(c.expected_s for c in todo) / max(1, len(hosts))
            total_estimate = max(total_estimate, estimate)
            systems[system.name] = {
                "name": system.name,
                "hosts": hosts,
                "layout": layout_options(system),
                "engines": engine_combinations(campaign, system.name),
                "cells": len(cells),
                "to_run": [c.id for c in todo],
                "skipped": skip,
                # each host may take every cell of its system, each up to 1 + retries times
                "max_claims": sum(1 + c.retries for c in cells),
                "estimated_s": estimate,
            }
            lines.append(
                "campaign %s | system %s: %d host(s) %s | %d cell(s): %d to run, %d skipped "
                "(done or out of retries) | about %s"
                % (
                    campaign.name,
                    system.name,
                    len(hosts),
                    ",".join(hosts),
                    len(cells),
                    len(todo),
                    len(skip),
                    fmt_duration(estimate),
                )
            )
            for cell in todo:
                state = states.get(cell.id)
                lines.append(
                    "  run  %s%s (about %s)"
                    % (
                        cell.id,
                        " (attempt %d)" % (state.attempts + 1) if state and state.attempts else "",
                        fmt_duration(cell.expected_s),
                    )
                )
            for cell_id in skip:
                state = states[cell_id]
                lines.append("  skip %s (%s, %s)" % (cell_id, state.state, state.verdict or "-"))
        forks = task_vars.get("ansible_forks")
        all_hosts = sorted(system_of)
        if isinstance(forks, int) and forks < len(all_hosts):
            display.warning(
                "campaign %s: %d hosts but forks is %d: only %d hosts run cells at once, the "
                "others wait for a free worker. Run with -f %d (or forks = %d in ansible.cfg)."
                % (campaign.name, len(all_hosts), forks, forks, len(all_hosts), len(all_hosts))
            )
        for line in lines:
            display.display(line)
        return {
            "changed": False,
            "campaign": campaign.name,
            "campaign_dir": directory,
            "ledger": ledger,
            "session": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3),
            "harness": campaign.harness,
            "harness_profile_dirs": list(campaign.harness_profile_dirs),
            "systems": systems,
            "host_system": system_of,
            "hosts": all_hosts,
            "estimated_s": total_estimate,
            "plan": lines,
            "msg": "%d cell(s) to run, %d skipped; about %s"
            % (
                sum(len(s["to_run"]) for s in systems.values()),
                sum(len(s["skipped"]) for s in systems.values()),
                fmt_duration(total_estimate),
            ),
        }

    # ------------------------------------------------------------------------------ cell
    def _cell(
        self, campaign: Campaign, directory: str, session: str, task_vars: dict[str, Any]
    ) -> dict:
        host = str(task_vars.get("inventory_hostname"))
        plan = (task_vars.get("hostvars") or {}).get("localhost", {}).get(
            "heteromig_campaign_plan"
        ) or {}
        system_name = (plan.get("host_system") or {}).get(host)
        if not system_name:
            raise AnsibleActionFail(
                "campaign: %s belongs to no system of the plan (run operation=plan on localhost "
                "first, registered as heteromig_campaign_plan, as playbooks/sweep.yml does)" % host
            )
        # A host that cannot be reached claims nothing: each claim it made would fail at once
        # and use up an attempt of a cell the system's other hosts could still run.
        lost = self._unreachable()
        if lost is not None:
            return {
                "changed": False,
                "failed": True,
                "msg": "campaign: %s cannot be reached (%s): it takes no cell of system %s; its "
                "other hosts take the cells, and the same command run again resumes or retries "
                "what this one left" % (host, lost, system_name),
            }
        ledger = os.path.join(directory, LEDGER)
        os.makedirs(directory, exist_ok=True)
        try:
            claim = claim_next(
                ledger,
                campaign,
                system_name,
                host,
                session,
                warn=lambda message: display.warning("campaign ledger: %s" % message),
            )
        except LedgerError as exc:
            raise AnsibleActionFail("campaign ledger: %s" % exc) from None
        if claim is None:
            return {
                "changed": False,
                "skipped": True,
                "msg": "no cell left for system %s" % system_name,
            }
        cell = claim.cell
        display.display(
            "campaign [%s] %s cell %s (attempt %d, run %s)"
            % (host, "resumes" if claim.resume else "starts", cell.id, claim.attempt, claim.run_id)
        )
        hetero_args = dict(cell.options)
        hetero_args.update(
            run_id=claim.run_id,
            resume=claim.resume,
            results_dir=os.path.join(directory, RUNS),
        )
        failure = None
        run_result: dict[str, Any] = {}
        try:
            run_result = self._hetero_run(hetero_args, task_vars)
        except AnsibleError as exc:
            failure = str(exc)
        if run_result.get("failed") and failure is None:
            failure = str(run_result.get("msg") or "hetero_run failed")
        verdict = run_result.get("verdict") or "INVALID"
        reasons = list(run_result.get("reasons") or ([failure] if failure else []))
        metric = ((run_result.get("main") or {}).get("loadgen") or {}).get("metric")
        finish(
            ledger,
            claim,
            host,
            session,
            verdict=verdict,
            failed=failure is not None,
            reasons=reasons,
            metric=metric,
            results_dir=run_result.get("results_dir"),
            system=system_name,
        )
        records, _warnings = read(ledger)
        counts = summary_counts(
            campaign,
            cell_states(records),
            {name: len(hosts) for name, hosts in self._hosts_per_system(plan).items()},
        )
        display.display(
            "campaign [%s] %s %s%s | campaign %d/%d done, %d VALID, %d INVALID, %d failed, "
            "%d in flight | ETA %s"
            % (
                host,
                cell.id,
                verdict,
                (" (%s %s %s)" % (metric.get("name"), metric.get("value"), metric.get("unit")))
                if metric
                else "",
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
            "name": campaign.name,
            "cell": cell.id,
            "system": system_name,
            "attempt": claim.attempt,
            "resumed": claim.resume,
        }
        if failure is not None:
            out["failed"] = True
            out["msg"] = "cell %s: %s" % (cell.id, failure)
        return out

    def _unreachable(self) -> str | None:
        """Why the host cannot be reached now (one round trip over the connection), or None."""
        try:
            res = self._low_level_execute_command("true", sudoable=False)
        except AnsibleConnectionFailure as exc:
            return " ".join(str(exc).split())[:300]
        if res.get("rc") == 255:  # ssh's own failure
            return " ".join(str(res.get("stderr") or "ssh exited 255").split())[:300]
        return None

    @staticmethod
    def _hosts_per_system(plan: Mapping[str, Any]) -> dict[str, list[str]]:
        return {
            name: list(system.get("hosts") or [])
            for name, system in (plan.get("systems") or {}).items()
        }

    def _hetero_run(self, hetero_args: dict[str, Any], task_vars: dict[str, Any]) -> dict:
        """One hetero run through the real heteromig.fleet.hetero_run action."""
        task = self._task.copy()
        task.args = hetero_args
        action = self._shared_loader_obj.action_loader.get(
            HETERO_RUN,
            task=task,
            connection=self._connection,
            play_context=self._play_context,
            loader=self._loader,
            templar=self._templar,
            shared_loader_obj=self._shared_loader_obj,
        )
        return dict(action.run(task_vars=task_vars))

    # ---------------------------------------------------------------------------- report
    def _report(self, campaign: Campaign, directory: str, submitter: str) -> dict:
        try:
            records, warnings = read(os.path.join(directory, LEDGER))
        except LedgerError as exc:
            raise AnsibleActionFail("campaign ledger: %s" % exc) from None
        for warning in warnings:
            display.warning("campaign ledger: %s" % warning)
        report = write_campaign_report(campaign, records, directory, submitter)
        for line in report["lines"]:
            display.display(line)
        return {"changed": True, **report}
