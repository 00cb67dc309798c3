# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin heteromig.fleet.campaign: a submission campaign's plan, cells and report.

Documentation: plugins/modules/campaign.py. The spec and the ledger are pure modules
(plugin_utils/_campaign_spec, _campaign_ledger); each cell runs through the real
``heteromig.fleet.hetero_run`` action, so a cell is exactly a hetero run.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

import yaml
from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure, AnsibleError
from ansible.inventory.manager import InventoryManager
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    Claim,
    LedgerError,
    append,
    cell_states,
    claim_next,
    finish,
    locked,
    read,
    summary_counts,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_report import (
    write_campaign_report,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    Cell,
    SpecError,
    engine_combinations,
    layout_options,
    load_spec,
    parse_spec,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_tuning import (
    CONFIRM,
    DEFAULT_MAX_TRIALS,
    DEFAULT_TOLERANCE,
    TRIAL,
    Outcome,
    TuningError,
    check_settings,
    tune,
)

display = Display()

HETERO_RUN = "heteromig.fleet.hetero_run"
LEDGER = "ledger.jsonl"
RUNS = "runs"
TUNED_FILE = "tuned.yml"
TUNED_HEADER = (
    "# Target QPS tuned under hetero load by heteromig.fleet.campaign (docs/campaign.md,\n"
    "# 'Tuning'): tuned.<system>.<benchmark>.<scenario>.main_target_qps. A later spec reuses\n"
    "# them with main_target_qps: tuned (and tuned_file: <this file> where it lives elsewhere).\n"
)

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
        self._plan_tuning(campaign, directory)
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
        failure = None
        run_result: dict[str, Any] = {}
        tuning: dict[str, Any] | None = None
        if cell.tune or cell.tuning.get("use_tuned"):
            failure, run_result, tuning = self._tuned_cell(
                campaign, directory, claim, host, session, task_vars
            )
        else:
            hetero_args = dict(cell.options)
            hetero_args.update(
                run_id=claim.run_id,
                resume=claim.resume,
                results_dir=os.path.join(directory, RUNS),
            )
            try:
                run_result = self._hetero_run(hetero_args, task_vars)
            except AnsibleError as exc:
                failure = str(exc)
                if claim.resume and "no hetero run" in failure:
                    # the controller died between the claim and the start: nothing ran on the
                    # host, so the claimed attempt starts now under its own run id
                    display.display(
                        "campaign [%s] %s never started on the host; starting it now"
                        % (host, claim.run_id)
                    )
                    hetero_args["resume"] = False
                    failure = None
                    try:
                        run_result = self._hetero_run(hetero_args, task_vars)
                    except AnsibleError as again:
                        failure = str(again)
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
            **({"tuning": tuning} if tuning is not None else {}),
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
        if tuning is not None:
            out["tuning"] = tuning
            out["campaign"]["tuned_main_target_qps"] = tuning.get("value")
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

    # ---------------------------------------------------------------------------- tuning
    # main_target_qps: auto / tuned (docs/campaign.md, "Tuning"); the search itself is the pure
    # plugin_utils/_campaign_tuning.py, each of its runs a real hetero run through _hetero_run.
    def _plan_tuning(self, campaign: Campaign, directory: str) -> None:
        """Refuse, before any host is touched, what tuning cannot do."""
        for cell in campaign.cells:
            if not (cell.tune or cell.tuning.get("use_tuned")):
                continue
            word = "auto" if cell.tune else "tuned"
            if cell.scenario != "Server":
                raise AnsibleActionFail(
                    "sweep spec: cell %s: main_target_qps: %s is supported for Server cells "
                    "only: LoadGen's %s verdict does not depend on a target (its expected "
                    "latency only sizes the number of queries), so there is nothing to tune; "
                    "leave main_target_qps unset for this cell" % (cell.id, word, cell.scenario)
                )
            if cell.tune:
                try:
                    check_settings(
                        float(cell.tuning.get("tune_start") or 1.0),
                        tolerance=_tolerance(cell),
                        max_trials=_max_trials(cell),
                    )
                except TuningError as exc:
                    raise AnsibleActionFail("sweep spec: cell %s: %s" % (cell.id, exc)) from None
                continue
            path = tuned_file_for(cell, directory)
            key = (cell.system, cell.benchmark, cell.scenario)
            if read_tuned(path).get(key) is not None:
                continue
            if any(
                other.tune and (other.system, other.benchmark, other.scenario) == key
                for other in campaign.cells
            ):
                continue  # this campaign tunes it first
            raise AnsibleActionFail(
                "sweep spec: cell %s asks for main_target_qps: tuned, but %s has no tuned value "
                "for system %s, benchmark %s, scenario %s, and no cell of this campaign tunes it "
                "(main_target_qps: auto)" % (cell.id, path, *key)
            )

    def _tuned_cell(
        self,
        campaign: Campaign,
        directory: str,
        claim: Claim,
        host: str,
        session: str,
        task_vars: dict[str, Any],
    ) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
        """Run a cell with main_target_qps: auto (search, confirm, write the tuned file) or
        tuned (the tuned file's value). Returns (failure, the cell's run result, tuning)."""
        cell = claim.cell
        ledger = os.path.join(directory, LEDGER)
        path = tuned_file_for(cell, directory)
        key = (cell.system, cell.benchmark, cell.scenario)
        if not cell.tune:  # main_target_qps: tuned
            entry = read_tuned(path).get(key)
            if entry is None:
                message = (
                    "no tuned main_target_qps for system %s, benchmark %s, scenario %s in %s "
                    "(the cell that tunes it has not finished VALID yet)" % (*key, path)
                )
                return message, {}, {"from_file": path, "value": None}
            args = dict(cell.options, main_target_qps=float(entry["main_target_qps"]))
            args.update(
                run_id=claim.run_id, resume=claim.resume, results_dir=os.path.join(directory, RUNS)
            )
            try:
                return (
                    None,
                    self._hetero_run(args, task_vars),
                    {
                        "from_file": path,
                        "value": float(entry["main_target_qps"]),
                    },
                )
            except AnsibleError as exc:
                return str(exc), {}, {"from_file": path, "value": float(entry["main_target_qps"])}

        # replay: a resumed claim keeps the runs its earlier session recorded
        recorded: dict[tuple[str, int], dict[str, Any]] = {}
        if claim.resume:
            records, _warnings = read(ledger)
            for record in records:
                if (
                    record.get("event") == "trial"
                    and record.get("cell") == cell.id
                    and record.get("run_id") == claim.run_id
                    and not record.get("failed")
                ):
                    recorded[(str(record.get("kind")), int(record.get("index") or 0))] = record
        suffix = ("-r" + secrets.token_hex(2)) if claim.resume else ""
        trial_ms = _trial_duration(cell)
        last: dict[str, Any] = {}
        trial_list: list[dict[str, Any]] = []

        class _RunFailed(Exception):
            pass

        def one_run(kind: str, index: int, target: float | None) -> tuple[Outcome, dict]:
            done = recorded.get((kind, index)) if kind != CONFIRM else None
            if done is not None and (target is None or done.get("target") == target):
                trial_list.append(_trial_entry(done))
                return Outcome(done.get("verdict") == "VALID", done.get("metric")), {}
            letter = {"probe": "p", TRIAL: "t", CONFIRM: "c"}[kind]
            args = dict(cell.options)
            if kind == "probe":
                args.pop("main_target_qps", None)
                args.update(main_scenario="Offline")
            if kind != CONFIRM:
                args.update(
                    main_benchmark_duration=trial_ms,
                    main_mode="PerformanceOnly",
                    main_action="run_harness",
                )
            if target is not None:
                args["main_target_qps"] = target
            run_id = "%s-%s%d%s" % (claim.run_id, letter, index, suffix)
            args.update(run_id=run_id, resume=False, results_dir=os.path.join(directory, RUNS))
            failure = None
            result: dict[str, Any] = {}
            try:
                result = self._hetero_run(args, task_vars)
            except AnsibleError as exc:
                failure = str(exc)
            if result.get("failed") and failure is None:
                failure = str(result.get("msg") or "hetero_run failed")
            verdict = result.get("verdict") or "INVALID"
            metric = ((result.get("main") or {}).get("loadgen") or {}).get("metric")
            record = append(
                ledger,
                {
                    "event": "trial",
                    "cell": cell.id,
                    "host": host,
                    "session": session,
                    "run_id": claim.run_id,
                    "attempt": claim.attempt,
                    "kind": kind,
                    "index": index,
                    "trial_run_id": run_id,
                    "target": target,
                    "duration_ms": args.get("main_benchmark_duration"),
                    "verdict": verdict,
                    "metric": metric,
                    "reasons": list(result.get("reasons") or ([failure] if failure else []))[:5],
                    "results_dir": result.get("results_dir"),
                    "failed": failure is not None,
                },
            )
            trial_list.append(_trial_entry(record))
            display.display(
                "campaign [%s] %s %s %d%s: %s%s"
                % (
                    host,
                    cell.id,
                    kind,
                    index,
                    " at %g QPS" % target if target is not None else " (Offline)",
                    "FAILED" if failure else verdict,
                    " (%s)" % _metric_value(metric) if metric else "",
                )
            )
            if failure is not None:
                raise _RunFailed("%s %d (run %s): %s" % (kind, index, run_id, failure))
            last.clear()
            last.update(result)
            return Outcome(verdict == "VALID", metric), result

        tuning: dict[str, Any] = {
            "option": "main_target_qps",
            "tolerance": _tolerance(cell),
            "max_trials": _max_trials(cell),
            "trial_duration_ms": trial_ms,
            "trials": trial_list,
        }
        try:
            start = cell.tuning.get("tune_start")
            if start is not None:
                tuning.update(start=float(start), start_from="tune_start")
            else:
                probe, _probe_failure = one_run("probe", 1, None)
                value = _metric_value(probe.metric)
                if value is None or value <= 0:
                    message = (
                        "the Offline probe gave no samples/s (%s) to start the search from: give "
                        "tune_start (e.g. the target found in isolation)" % probe.metric
                    )
                    return message, {}, tuning
                tuning.update(start=value, start_from="offline probe")
            confirmed: dict[str, Any] = {}

            def run(kind: str, index: int, target: float) -> Outcome:
                outcome, result = one_run(kind, index, target)
                if kind == CONFIRM:
                    confirmed.clear()
                    confirmed.update(result)
                return outcome

            found = tune(
                run,
                float(tuning["start"]),
                tolerance=_tolerance(cell),
                max_trials=_max_trials(cell),
            )
        except _RunFailed as exc:
            return "tuning stopped: %s" % exc, {}, tuning
        except TuningError as exc:
            return "tuning: %s" % exc, {}, tuning
        tuning.update(
            value=found.value,
            found=found.found,
            converged=found.converged,
            bracket=[found.lo, found.hi],
            short_trials=found.short_trials,
            confirmations=found.confirmations,
            reason=found.reason,
        )
        display.display("campaign [%s] %s: %s" % (host, cell.id, found.reason))
        if found.value is not None:
            tuning["tuned_file"] = path
            write_tuned(
                path,
                key,
                {
                    "main_target_qps": found.value,
                    "campaign": campaign.name,
                    "cell": cell.id,
                    "run_id": claim.run_id,
                    "host": host,
                    "tuned_at_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                    "start": tuning["start"],
                    "start_from": tuning["start_from"],
                    "short_trials": found.short_trials,
                    "tolerance": _tolerance(cell),
                },
            )
        if not confirmed:  # nothing VALID to confirm: the cell is INVALID
            return (
                None,
                {"verdict": "INVALID", "reasons": ["tuning: %s" % found.reason]},
                tuning,
            )
        result = dict(confirmed)
        if found.value is None:
            result["reasons"] = [*list(result.get("reasons") or []), "tuning: " + found.reason]
        return None, result, tuning

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


# -------------------------------------------------------------------------- tuning helpers
def _tolerance(cell: Cell) -> float:
    return float(cell.tuning.get("tune_tolerance") or DEFAULT_TOLERANCE)


def _max_trials(cell: Cell) -> int:
    return int(cell.tuning.get("tune_max_trials") or DEFAULT_MAX_TRIALS)


def _trial_duration(cell: Cell) -> int:
    """tune_trial_duration, else a tenth of the cell's duration (at least 1 s)."""
    given = cell.tuning.get("tune_trial_duration")
    if given:
        return int(given)
    full = cell.options.get("main_benchmark_duration") or 600000
    return max(1000, int(full) // 10)


def _metric_value(metric: Any) -> float | None:
    value = metric.get("value") if isinstance(metric, Mapping) else metric
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _trial_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: record.get(k)
        for k in ("kind", "index", "target", "verdict", "metric", "trial_run_id", "failed")
    }


def tuned_file_for(cell: Cell, directory: str) -> str:
    """The tuned file of a cell: its tuned_file setting, else <campaign_dir>/tuned.yml."""
    given = cell.tuning.get("tuned_file")
    return os.path.abspath(os.path.expanduser(given or os.path.join(directory, TUNED_FILE)))


def read_tuned(path: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(system, benchmark, scenario) -> entry of a tuned file; {} when it is missing."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise AnsibleActionFail("tuned file %s cannot be read: %s" % (path, exc)) from None
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    tuned = (data or {}).get("tuned") if isinstance(data, dict) else None
    for system, benchmarks in (tuned or {}).items():
        for benchmark, scenarios in (benchmarks or {}).items():
            for scenario, entry in (scenarios or {}).items():
                if isinstance(entry, dict) and _metric_value(entry.get("main_target_qps")):
                    out[(str(system), str(benchmark), str(scenario))] = entry
    return out


def write_tuned(path: str, key: tuple[str, str, str], entry: Mapping[str, Any]) -> None:
    """Set one entry of the tuned file (under a lock; written through a rename)."""
    with locked(path):
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            data = {}
        except (OSError, yaml.YAMLError) as exc:
            raise AnsibleActionFail("tuned file %s cannot be read: %s" % (path, exc)) from None
        if not isinstance(data, dict):
            data = {}
        data["version"] = 1
        tuned = data.setdefault("tuned", {})
        system, benchmark, scenario = key
        tuned.setdefault(system, {}).setdefault(benchmark, {})[scenario] = dict(entry)
        # plain types only (names from the spec are Ansible's tagged strings, which the YAML
        # dumper does not know)
        data = json.loads(json.dumps(data))
        tmp = "%s.tmp.%d" % (path, os.getpid())
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(TUNED_HEADER)
            yaml.safe_dump(data, handle, sort_keys=False, default_flow_style=False)
        os.replace(tmp, path)
