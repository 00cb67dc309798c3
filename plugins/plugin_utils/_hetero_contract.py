# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's hetero_run result (docs/hetero_result_contract.md), from plan and host result.

Pure: no Ansible, no I/O. The ``heteromig.fleet.hetero_run`` action returns what
:func:`contract_result` builds, and the report and export tests build their samples through the
same function from real runner results, so a sample's shape and verdict are the product's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._run_contract import (
    outcome_of,
    plan_entry,
)

DRY_RUN = "DRY_RUN"
INVALID = "INVALID"
SHARED_GPU_WARNING = "shared GPU: no MIG isolation (allow_shared_gpu)"


def contract_result(
    plan: Mapping[str, Any],
    host_result: Mapping[str, Any] | None,
    results_dir: str | None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """The contract's result of one host's run.

    ``plan`` is the plan the run was started with; ``host_result`` the runner's ``result.json``
    (None when the runner left none); ``results_dir`` the controller directory its logs go to.
    """
    ran_by_name: dict[Any, Mapping[str, Any]] = {}
    for bench in (host_result or {}).get("benchmarks") or []:
        ran_by_name[bench.get("name")] = bench
    entries = []
    for bench in plan["benchmarks"]:
        ran = ran_by_name.get(bench["name"]) or {}
        entry: dict[str, Any] = {
            **plan_entry(bench),
            "fetched_dir": (
                None if dry_run or results_dir is None else os.path.join(results_dir, bench["name"])
            ),
        }
        entry.update(outcome_of(ran))
        entries.append(entry)
    if dry_run:
        verdict, reasons, warnings, timeline = DRY_RUN, [], [], []
    else:
        verdict = (host_result or {}).get("verdict") or INVALID
        reasons = list((host_result or {}).get("reasons") or [])
        warnings = list((host_result or {}).get("warnings") or [])
        timeline = list((host_result or {}).get("timeline") or [])
    if plan["shared_gpu"]:
        warnings.insert(0, SHARED_GPU_WARNING)
    return {
        "run_id": plan["run_id"],
        "host": plan["host"],
        "verdict": verdict,
        "reasons": reasons,
        "warnings": warnings,
        "shared_gpu": plan["shared_gpu"],
        "harness": plan["harness"],
        "gpu": plan["gpu"],
        "results_dir": None if dry_run else results_dir,
        "main": entries[0],
        "backgrounds": entries[1:],
        "timeline": timeline,
        "expected_duration_s": plan["expected_duration_s"],
        "stop_reason": (host_result or {}).get("stop_reason"),
        # NVML samples of the GPUs / GPU instances the run used (module_utils/nvml/_gpu_activity)
        "gpu_activity": None if dry_run else (host_result or {}).get("gpu_activity"),
    }
