# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action of heteromig.fleet.engine_plan (documentation in plugins/modules/engine_plan.py).

The plan of a hetero_run dry run (the functions hetero_run's own check-mode path builds it with,
plugin_utils/_hetero_options.py, so the plan is the one the run will use), turned into
engine_build combinations by plugin_utils/_run_engines.py. A task of its own action name, so the
hetero_report callback does not take the dry run for a run.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_options import (
    host_settings,
    shared_gpu_warning,
    task_options,
    task_plan,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._run_engines import (
    EngineError,
    run_engines,
)

ARGUMENT_SPEC: dict[str, Any] = {
    "allow_shared_gpu": {"type": "bool", "default": False},
}
PLAN_RUN_ID = "engine-plan"

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail("engine_plan: %s" % "; ".join(validation.error_messages))
        own = validation.validated_parameters
        del tmp
        task_vars = task_vars or {}
        super().run(task_vars=task_vars)
        # hetero_run's dry run: options from the heteromig_hetero_* variables, nothing starts
        args = task_options(
            {"run_id": PLAN_RUN_ID, "allow_shared_gpu": own["allow_shared_gpu"]},
            task_vars,
            self._templar.template,
        )
        if args["resume"]:
            raise AnsibleActionFail(
                "engine_plan: heteromig_hetero_resume is set; a plan is of a new run, not of one "
                "to re-attach to"
            )
        host = task_vars.get("inventory_hostname") or self._task.get_name()
        settings = host_settings(args, self._templar, task_vars)
        plan = task_plan(args, host, PLAN_RUN_ID, settings, self._templar, task_vars)
        warning = shared_gpu_warning(host, plan)
        if warning:
            display.warning(warning)
        accuracy = self._templar.template(
            (task_vars or {}).get("heteromig_hetero_main_accuracy_target", "default")
        )
        try:
            combinations = run_engines(plan, str(accuracy or "default"))
        except EngineError as exc:
            raise AnsibleActionFail("engine_plan: %s" % exc) from None
        return {
            "changed": False,
            "harness": plan.get("harness"),
            "combinations": combinations,
            "benchmarks": [
                {
                    "role": b.get("role"),
                    "benchmark": b.get("benchmark"),
                    "scenario": b.get("scenario"),
                }
                for b in plan.get("benchmarks") or []
            ],
            "msg": "%d engine(s) for %s: %s"
            % (
                len(combinations),
                plan.get("host"),
                ", ".join(
                    "/".join(
                        [c["benchmark"], c["scenario"]]
                        + ([c["accuracy_target"]] if "accuracy_target" in c else [])
                    )
                    for c in combinations
                ),
            ),
        }
