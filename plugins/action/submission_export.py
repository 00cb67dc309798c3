# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action of heteromig.fleet.submission_export: runs on the controller only (documentation in
plugins/modules/submission_export.py). Thin over plugin_utils/_submission_layout.py."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_records import (
    is_contract_result,
    read_jsonl,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._submission_layout import (
    LAYOUT_VERSIONS,
    apply_plan,
    check_layout,
    inspect_log_dir,
    plan_export,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._system_desc import (
    facts_from_hostvars,
)

ARGUMENT_SPEC: dict[str, Any] = {
    "results": {"type": "list", "elements": "dict", "default": []},
    "results_jsonl": {"type": "list", "elements": "path", "default": []},
    "dest": {"type": "path", "required": True},
    "division": {"type": "str", "default": "closed", "choices": ["closed", "open"]},
    "submitter": {"type": "str", "required": True},
    "platform": {"type": "str", "required": True},
    "software": {"type": "str"},
    "system_desc": {"type": "dict", "default": {}},
    "implementation": {"type": "str"},
    "implementation_desc": {"type": "dict", "default": {}},
    "host_facts": {"type": "dict"},
    "only_valid": {"type": "bool", "default": True},
    "replace": {"type": "bool", "default": False},
    "layout_version": {"type": "str", "default": "v5.1", "choices": list(LAYOUT_VERSIONS)},
    "required_tests": {"type": "list", "elements": "str", "default": ["TEST01", "TEST04"]},
    "fail_on_problems": {"type": "bool", "default": False},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail("; ".join(validation.error_messages))
        args = validation.validated_parameters
        if self._task.check_mode:
            result.update(changed=False, skipped=True, msg="check mode: nothing exported")
            return result

        results = [r for r in args["results"] if is_contract_result(r)]
        for path in args["results_jsonl"]:
            records = read_jsonl(path)
            if not records and not os.path.exists(path):
                raise AnsibleActionFail("results_jsonl %s does not exist" % path)
            results += [
                r["result"]
                for r in records
                if r.get("hetero") and is_contract_result(r.get("result"))
            ]
        if not results:
            raise AnsibleActionFail("no hetero_run results given (results / results_jsonl)")

        host_facts = args["host_facts"]
        if host_facts is None:
            host_facts = facts_from_hostvars(
                (task_vars or {}).get("hostvars") or {}, {str(r.get("host")) for r in results}
            )
        else:
            bad = sorted(str(h) for h, f in host_facts.items() if not isinstance(f, Mapping))
            if bad:
                raise AnsibleActionFail(
                    "host_facts: the facts of %s are not a dict (expected host -> "
                    "{heteromig_host, heteromig_nvml, heteromig_gpus})" % ", ".join(bad)
                )
        try:
            plan = plan_export(
                results,
                submitter=args["submitter"],
                platform=args["platform"],
                inspect=inspect_log_dir,
                division=args["division"],
                software=args["software"],
                system_desc=args["system_desc"],
                implementation=args["implementation"],
                implementation_desc=args["implementation_desc"],
                only_valid=args["only_valid"],
                host_facts=host_facts,
            )
        except ValueError as exc:
            raise AnsibleActionFail(str(exc)) from exc
        dest = args["dest"]
        written = apply_plan(plan, dest, replace=args["replace"])
        problems = check_layout(dest, args["division"], args["submitter"], args["required_tests"])
        errors = [p for p in problems if p["severity"] == "error"]
        result.update(
            changed=bool(written),
            root=os.path.join(dest, plan.root),
            layout_version=args["layout_version"],
            exported=plan.exported,
            left_out=plan.skipped,
            systems=sorted(plan.systems),
            system_fields=plan.system_info,
            files=len(written),
            problems=problems,
        )
        if not plan.exported:
            result.update(
                failed=True, msg="nothing exported: %d result(s) skipped" % len(plan.skipped)
            )
        elif errors and args["fail_on_problems"]:
            result.update(
                failed=True,
                msg="exported, but the submission check found %d error(s)" % len(errors),
            )
        else:
            result["msg"] = (
                "exported %d result(s) into %s; %d problem(s) for the submission checker"
                % (
                    len(plan.exported),
                    result["root"],
                    len(errors),
                )
            )
        return result
