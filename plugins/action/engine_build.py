# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin heteromig.fleet.engine_build: renders the harness profile's build commands.

The controller loads the harness profile, checks the combinations against its benchmarks and
renders its ``build`` section (plugin_utils/_harness_build) per combination, for a MIG slice
and, with ``shared_gpu``, for a whole GPU. The module of the same name runs them on the host,
per GPU model and MIG profile, and knows nothing of any profile. Documentation:
plugins/modules/engine_build.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import runtime_paths
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_build import plan_builds
from ansible_collections.heteromig.fleet.plugins.plugin_utils._harness_profiles import PlanError

MODULE = "heteromig.fleet.engine_build"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        if "builds" in self._task.args:
            raise AnsibleActionFail(
                "%s: builds is set by the action itself from the harness profile; leave it out"
                % MODULE
            )
        args = dict(self._task.args)
        for name in ("force", "shared_gpu"):
            try:
                args[name] = boolean(args.get(name, False), strict=True)
            except TypeError as exc:
                raise AnsibleActionFail("%s: %s: %s" % (MODULE, name, exc)) from None
        host_root = args.get("host_root") or self._var(task_vars, "heteromig_host_root")
        host_root = str(host_root or "/var/lib/heteromig")
        if not os.path.isabs(host_root):
            raise AnsibleActionFail(
                "%s: host_root must be an absolute path on the host, got %r" % (MODULE, host_root)
            )
        harness_vars = args.get("harness_vars") or {}
        if not isinstance(harness_vars, Mapping):
            raise AnsibleActionFail("%s: harness_vars must be a mapping" % MODULE)
        mlperf_dir = args.pop("mlperf_dir", None)
        if mlperf_dir:  # shorthand for harness_vars.workdir
            if harness_vars.get("workdir") not in (None, mlperf_dir):
                raise AnsibleActionFail(
                    "%s: mlperf_dir (%s) and harness_vars.workdir (%s) differ: give one"
                    % (MODULE, mlperf_dir, harness_vars["workdir"])
                )
            harness_vars = dict(harness_vars, workdir=mlperf_dir)
        args["harness_vars"] = dict(harness_vars)
        engine_dir = str(
            args.get("engine_dir")
            or harness_vars.get("engine_dir")
            or runtime_paths(host_root).engines
        )
        pythonpath = (
            self._var(task_vars, "heteromig_host_pythonpath") or runtime_paths(host_root).lib
        )
        python = str(args.get("python") or self._host_python(task_vars))
        try:
            builds = plan_builds(
                args,
                python=python,
                host_root=host_root,
                host_pythonpath=str(pythonpath),
                engine_dir=engine_dir,
            )
        except PlanError as exc:
            result.update(failed=True, changed=False, msg="%s: %s" % (MODULE, exc))
            return result
        module_args = dict(
            args, builds=builds, host_root=host_root, engine_dir=engine_dir, python=python
        )
        result.update(self._execute_module(MODULE, module_args=module_args, task_vars=task_vars))
        return result

    def _var(self, task_vars: Mapping[str, Any], name: str) -> Any:
        """A host variable, templated; facts are looked up in ansible_facts as well."""
        facts = task_vars.get("ansible_facts") or {}
        value = facts.get(name) if isinstance(facts, Mapping) else None
        if value is None:
            value = task_vars.get(name)
        return None if value is None else self._templar.template(value)

    def _host_python(self, task_vars: Mapping[str, Any]) -> str:
        for name in ("heteromig_host_python", "ansible_python_interpreter"):
            value = self._var(task_vars, name)
            if isinstance(value, str) and value and not value.startswith("auto"):
                return value
        facts = task_vars.get("ansible_facts") or {}
        found = facts.get("discovered_interpreter_python") if isinstance(facts, Mapping) else None
        return str(found or "python3")
