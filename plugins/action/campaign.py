# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin heteromig.fleet.campaign: a submission campaign's plan, cells and report.

Documentation: plugins/modules/campaign.py. The spec and the ledger are pure modules
(plugin_utils/_campaign_spec, _campaign_ledger); each cell runs through the real
``heteromig.fleet.hetero_run`` action, so a cell is exactly a hetero run.
"""

from __future__ import annotations

import dataclasses
import json
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

from ansible_collections.heteromig.fleet.plugins.plugin_utils._agent_transport import (
    AgentCalls,
    host_python,
    host_var,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_cell import CellRun
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    LEDGER,
    LedgerError,
    ensure,
    locked,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_order import (
    harness_defaults,
    in_claim_order,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_plan import (
    fmt_duration,
    plan_systems,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_report import (
    write_campaign_report,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_slices import (
    SliceError,
    check_start,
    merge,
    parse_slice,
    partition,
    read_ledgers,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_slices import (
    header as slice_header,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    SpecError,
    load_spec,
    parse_spec,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_tuned_cell import (
    plan_tuning,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._system_desc import (
    facts_from_hostvars,
)

display = Display()

HETERO_RUN = "heteromig.fleet.hetero_run"

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "operation": {"type": "str", "required": True, "choices": ["plan", "cell", "report"]},
    "spec": {"type": "dict"},
    "spec_file": {"type": "path"},
    "campaign_dir": {"type": "path"},
    "session": {"type": "str"},
    "submitter": {"type": "str", "default": "heteromig"},
    "slice": {"type": "str"},
}


# The campaign last parsed in this process, by its spec's key: a host's cells are the loop items
# of one task, run one after another by one worker process, and each would parse the same spec.
_PARSED: dict[str, Campaign] = {}


def _campaign_of(spec: Mapping[str, Any] | None, spec_file: str | None) -> Campaign:
    """The parsed spec (SpecError when bad), parsed once per process for the same spec: the
    same value, or the same file unchanged (path, size and modification time)."""
    if spec is not None:
        try:
            key = "spec:" + json.dumps(spec, sort_keys=True, default=str)
        except (TypeError, ValueError):  # keys of mixed types: parse it (and say what is wrong)
            return parse_spec(spec, "heteromig_sweep")
    else:
        try:
            found = os.stat(str(spec_file))
        except OSError:
            return load_spec(str(spec_file))  # its error names the problem
        key = "file:%s:%d:%d" % (spec_file, found.st_size, found.st_mtime_ns)
    if key not in _PARSED:
        parsed = (
            parse_spec(spec, "heteromig_sweep") if spec is not None else load_spec(str(spec_file))
        )
        _PARSED.clear()
        _PARSED[key] = parsed
    return _PARSED[key]


def campaign_dir_for(campaign: Campaign, given: str | None) -> str:
    """The campaign's directory on the controller: given, else results/campaigns/<name>."""
    return os.path.abspath(
        os.path.expanduser(given or os.path.join("results", "campaigns", campaign.name))
    )


class ActionModule(AgentCalls, ActionBase):
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
            campaign = _campaign_of(args["spec"], args["spec_file"])
        except SpecError as exc:
            raise AnsibleActionFail("sweep spec: %s" % exc) from None
        directory = campaign_dir_for(campaign, args["campaign_dir"])
        operation = args["operation"]
        if operation == "plan":
            result.update(self._plan(campaign, directory, args["slice"], task_vars))
        elif operation == "cell":
            if not args["session"]:
                raise AnsibleActionFail("campaign: operation=cell needs session (from the plan)")
            result.update(self._cell(campaign, directory, args["session"], task_vars))
        else:
            result.update(self._report(campaign, directory, args["submitter"], task_vars))
        return result

    # ------------------------------------------------------------------------------ plan
    def _plan(
        self, campaign: Campaign, directory: str, slice_arg: Any, task_vars: Mapping[str, Any]
    ) -> dict:
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
        plan_tuning(campaign, directory)
        try:
            piece = parse_slice(slice_arg)
            split = partition(campaign, hosts_of, piece.count if piece else 1)
            mine = split.cells(piece.index if piece else 1)
            ledgers, warnings = read_ledgers(directory)
            check_start(piece, mine, ledgers)
        except (LedgerError, SliceError) as exc:
            raise AnsibleActionFail("campaign: %s" % exc) from None
        for warning in warnings:
            display.warning("campaign ledger: %s" % warning)
        ledger = os.path.join(directory, piece.ledger if piece else LEDGER)
        if piece is not None:
            taken = set(split.hosts(piece.index))
            hosts_of = {name: [h for h in found if h in taken] for name, found in hosts_of.items()}
            system_of = {h: name for h, name in system_of.items() if h in taken}
        view = dataclasses.replace(campaign, cells=[c for c in campaign.cells if c.id in mine])
        systems, lines, total_estimate = plan_systems(
            view,
            hosts_of,
            ledgers.get(os.path.basename(ledger), []),
            piece.label if piece else None,
            harness_defaults(campaign.harness),
        )
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
            "slice": piece.label if piece else None,
            "slice_cells": mine,
            "partition": split.cell_slice,
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
        ledger = str(plan.get("ledger") or os.path.join(directory, LEDGER))
        os.makedirs(directory, exist_ok=True)
        view, header = _slice_view(campaign, plan)
        # the system's hosts take its cells longest first, in the order the plan printed
        view = in_claim_order(
            view, {system_name: (plan.get("systems") or {}).get(system_name, {}).get("claim_order")}
        )
        run = CellRun(self, view, directory, ledger, session, host, system_name, plan, task_vars)
        if campaign.system(system_name).gpus_at_once > 1:
            return run.lanes(header)
        claim = run.claim_waiting(header)
        if claim is None:
            return {
                "changed": False,
                "skipped": True,
                "msg": "no cell left for system %s" % system_name,
            }
        failure, run_result, tuning = run.execute(claim)
        return run.record(claim, failure, run_result, tuning)

    def _unreachable(self) -> str | None:
        """Why the host cannot be reached now (one round trip over the connection), or None."""
        try:
            res = self._low_level_execute_command("true", sudoable=False)
        except AnsibleConnectionFailure as exc:
            return " ".join(str(exc).split())[:300]
        if res.get("rc") == 255:  # ssh's own failure
            return " ".join(str(res.get("stderr") or "ssh exited 255").split())[:300]
        return None

    def runner(
        self, args: dict[str, Any], task_vars: dict[str, Any], pythonpath: str
    ) -> dict[str, Any]:
        """One agent command on the host (a lane's status): its answer, failed or not;
        AnsibleConnectionFailure when the host cannot be reached."""
        return self._agent_call(args, task_vars, host_python(self._templar, task_vars), pythonpath)

    def var(self, name: str, task_vars: Mapping[str, Any]) -> Any:
        """A host variable, templated (facts looked up in ansible_facts first)."""
        return host_var(self._templar, task_vars, name)

    def hetero_run(self, hetero_args: dict[str, Any], task_vars: dict[str, Any]) -> dict:
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
    def _report(
        self, campaign: Campaign, directory: str, submitter: str, task_vars: Mapping[str, Any]
    ) -> dict:
        plan = (task_vars.get("hostvars") or {}).get("localhost", {}).get(
            "heteromig_campaign_plan"
        ) or {}
        _view, header = _slice_view(campaign, plan)
        try:
            if header is not None:  # a run with no cell to run still says which spec it had
                ensure(str(plan["ledger"]), header)
            with locked(os.path.join(directory, "report")):  # slices may end at the same time
                ledgers, warnings = read_ledgers(directory)
                merged = merge(campaign, ledgers, plan.get("partition"))
                for warning in warnings + merged.warnings:
                    display.warning("campaign: %s" % warning)
                hostvars = task_vars.get("hostvars") or {}
                report = write_campaign_report(
                    campaign,
                    merged.records,
                    directory,
                    submitter,
                    slices=merged.slices,
                    host_facts=facts_from_hostvars(hostvars, set(hostvars)),
                )
        except (LedgerError, SliceError) as exc:
            raise AnsibleActionFail("campaign: %s" % exc) from None
        for line in report["lines"]:
            display.display(line)
        return {"changed": True, **report}


def _slice_view(campaign: Campaign, plan: Mapping[str, Any]) -> tuple[Campaign, dict | None]:
    """The cells this playbook run owns (one slice's, docs/campaign.md) and the slice's
    ``slice`` ledger record; the whole campaign and None when it runs unsliced."""
    piece = parse_slice(plan.get("slice")) if plan.get("slice") else None
    if piece is None:
        return campaign, None
    mine = set(plan.get("slice_cells") or [])
    view = dataclasses.replace(campaign, cells=[c for c in campaign.cells if c.id in mine])
    return view, slice_header(campaign, piece, [c.id for c in view.cells], plan.get("hosts") or [])
