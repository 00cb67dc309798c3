# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin heteromig.fleet.runtime_sync: adds the controller's manifest of the host-side
runtime to the module's arguments and, when the host lacks files, calls the module a second
time with their contents. A warm host costs one module call. Documentation:
plugins/modules/runtime_sync.py."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.heteromig.fleet.plugins.plugin_utils._runtime_sources import (
    runtime_manifest,
    runtime_sources,
)

MODULE = "heteromig.fleet.runtime_sync"
INTERNAL_OPTIONS = ("manifest", "files")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        given = [name for name in INTERNAL_OPTIONS if name in self._task.args]
        if given:
            raise AnsibleActionFail(
                "%s: %s %s set by the action itself from the collection's files; leave %s out"
                % (
                    MODULE,
                    ", ".join(given),
                    "is" if len(given) == 1 else "are",
                    "it" if len(given) == 1 else "them",
                )
            )
        args = dict(self._task.args, manifest=runtime_manifest())
        first = self._execute_module(MODULE, module_args=args, task_vars=task_vars)
        needed = first.get("files_needed") or []
        if first.get("failed") or not needed:
            result.update(first)
            return result
        sources = runtime_sources()
        args["files"] = {name: sources[name] for name in needed}
        second = self._execute_module(MODULE, module_args=args, task_vars=task_vars)
        if second.get("files_needed"):
            raise AnsibleActionFail(
                "%s: the host still lacks %s after they were sent"
                % (MODULE, ", ".join(second["files_needed"]))
            )
        second["changed"] = bool(second.get("changed") or first.get("changed"))
        second["dirs_created"] = first.get("dirs_created", []) + second.get("dirs_created", [])
        result.update(second)
        return result
