# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of a ``heteromig.fleet.hetero_run`` task (controller only), and what they resolve
to on one host: the task's arguments checked against ``ARGUMENT_SPEC`` (``_hetero_arg_spec``),
the ``heteromig_hetero_<option>`` variables, the host's paths and GPU backend, and the run's
plan. Problems raise ``AnsibleActionFail`` with the task's message.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import runtime_paths
from ansible_collections.heteromig.fleet.plugins.module_utils._safe_names import name_problem
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_activity import (
    PLAN_KEY,
    interval_from_plan,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._agent_transport import (
    host_python,
    host_var,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_profiles import (
    PlanError,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_arg_spec import (
    ARGUMENT_SPEC,
    OPTION_VAR_PREFIX,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._hetero_plan import (
    build_plan,
)


def options_from_vars(
    task_args: Mapping[str, Any],
    task_vars: Mapping[str, Any],
    template: Callable[[Any], Any] = lambda value: value,
) -> tuple[dict[str, Any], list[str]]:
    """The task's options, each missing one taken from its ``heteromig_hetero_<option>`` variable.

    Returns the merged options (variables passed through ``template``; task arguments arrive
    templated already) and the ``heteromig_hetero_*`` variables that name no option, each with a
    suggestion where one is close.
    """
    merged = dict(task_args)
    unknown = []
    for name in sorted(task_vars):
        if not isinstance(name, str) or not name.startswith(OPTION_VAR_PREFIX):
            continue
        option = name[len(OPTION_VAR_PREFIX) :]
        if option in ARGUMENT_SPEC:
            if option not in merged:
                merged[option] = template(task_vars[name])
            continue
        close = difflib.get_close_matches(option, list(ARGUMENT_SPEC), n=1)
        unknown.append(
            name + (" (did you mean %s%s?)" % (OPTION_VAR_PREFIX, close[0]) if close else "")
        )
    return merged, unknown


def _number(value: Any) -> Any:
    """A number given as text (``-e name=0.25``) as a float; anything else as it is."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def task_options(
    task_args: Mapping[str, Any],
    task_vars: Mapping[str, Any],
    template: Callable[[Any], Any] = lambda value: value,
) -> dict[str, Any]:
    """The task's validated options: its arguments over its ``heteromig_hetero_*`` variables."""
    merged, unknown = options_from_vars(task_args, task_vars, template)
    if unknown:
        raise AnsibleActionFail(
            "unknown hetero_run option variable(s): %s. Every option of "
            "heteromig.fleet.hetero_run can be set as heteromig_hetero_<option>; see "
            "ansible-doc heteromig.fleet.hetero_run" % ", ".join(unknown)
        )
    validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(merged)
    if validation.error_messages:
        raise AnsibleActionFail("hetero_run: %s" % "; ".join(validation.error_messages))
    args = validation.validated_parameters
    if args["run_id"] is not None:
        problem = name_problem(args["run_id"], "run_id")
        if problem:
            raise AnsibleActionFail("hetero_run: %s" % problem)
    return args


@dataclass(frozen=True)
class HostSettings:
    """Where a run lives on its host and on the controller, and which GPU backend it uses."""

    host_root: str  # absolute, on the host
    pythonpath: str  # the host runtime's tree
    results_root: str  # absolute, on the controller
    backend: dict[str, Any]  # name (nvml or sim) and sim_state


def host_settings(
    args: Mapping[str, Any], templar: Any, task_vars: Mapping[str, Any]
) -> HostSettings:
    """The host's settings: each option, else its host variable, else the default."""
    host_root = args["host_root"] or host_var(templar, task_vars, "heteromig_host_root")
    host_root = str(host_root or "/var/lib/heteromig")
    if not os.path.isabs(host_root):
        raise AnsibleActionFail(
            "host_root must be an absolute path on the host, got %r" % host_root
        )
    pythonpath = (
        args["host_pythonpath"]
        or host_var(templar, task_vars, "heteromig_host_pythonpath")
        or runtime_paths(host_root).lib
    )
    results_root = args["results_dir"] or host_var(templar, task_vars, "heteromig_results_dir")
    results_root = os.path.abspath(os.path.expanduser(str(results_root or "results")))
    backend = {
        "name": args["backend"] or host_var(templar, task_vars, "heteromig_gpu_backend") or "nvml",
        "sim_state": args["sim_state"] or host_var(templar, task_vars, "heteromig_sim_state"),
    }
    if backend["name"] not in ("nvml", "sim"):
        raise AnsibleActionFail("backend must be nvml or sim, got %r" % backend["name"])
    return HostSettings(host_root, str(pythonpath), results_root, backend)


def task_plan(
    args: Mapping[str, Any],
    host: str,
    run_id: str,
    settings: HostSettings,
    templar: Any,
    task_vars: Mapping[str, Any],
) -> dict[str, Any]:
    """The plan of the run on ``host``: its slices from the options or gpu_facts' variables."""
    slices = args["slices"]
    if slices is None:
        slices = host_var(templar, task_vars, "heteromig_mig_devices")
    gpus = (
        args["gpus"] if args["gpus"] is not None else host_var(templar, task_vars, "heteromig_gpus")
    )
    if slices is None and not gpus:
        raise AnsibleActionFail(
            "no MIG slices known for %s: run heteromig.fleet.gpu_facts first (it sets "
            "heteromig_mig_devices), or pass slices" % host
        )
    try:
        plan = build_plan(
            args,
            host=host,
            devices=slices,
            gpus=gpus,
            python=host_python(templar, task_vars),
            host_root=settings.host_root,
            host_pythonpath=settings.pythonpath,
            backend=settings.backend,
            run_id=run_id,
        )
        # the runner's GPU activity sampling (module_utils.nvml._gpu_activity checks the range)
        interval, problem = interval_from_plan({PLAN_KEY: _number(args[PLAN_KEY])})
        if problem:
            raise PlanError(problem)
        plan[PLAN_KEY] = interval
    except PlanError as exc:
        raise AnsibleActionFail(str(exc)) from None
    return plan


def shared_gpu_warning(host: str, plan: Mapping[str, Any]) -> str | None:
    """The warning of a plan without MIG isolation (None for a MIG plan)."""
    if not plan["shared_gpu"]:
        return None
    return (
        "hetero_run on %s: SHARED GPU mode: every benchmark runs on the whole GPU %s "
        "without MIG isolation; the results are not MIG results" % (host, plan["gpu"]["uuid"])
    )
