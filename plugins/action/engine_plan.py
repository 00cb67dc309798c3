# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action of heteromig.fleet.engine_plan (documentation in plugins/modules/engine_plan.py).

A dry run of hetero_run (its own check-mode path, so the plan is the one the run will use),
turned into engine_build combinations by plugin_utils/_run_engines.py. A task of its own action
name, so the hetero_report callback does not take the dry run for a run.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.heteromig.fleet.plugins.action.hetero_run import (
    ActionModule as HeteroRunAction,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._run_engines import (
    EngineError,
    run_engines,
)

ARGUMENT_SPEC: dict[str, Any] = {
    "allow_shared_gpu": {"type": "bool", "default": False},
}
PLAN_RUN_ID = "engine-plan"


class ActionModule(HeteroRunAction):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail("engine_plan: %s" % "; ".join(validation.error_messages))
        own = validation.validated_parameters
        task = self._task
        saved = (task.args, task.check_mode)
        # hetero_run's own dry run: options from the heteromig_hetero_* variables, nothing starts
        task.args = {"run_id": PLAN_RUN_ID, "allow_shared_gpu": own["allow_shared_gpu"]}
        task.check_mode = True
        try:
            dry = super().run(tmp, task_vars)
        finally:
            task.args, task.check_mode = saved
        if dry.get("failed"):
            return dry
        plan = dry.get("plan") or {}
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
