# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: run_engines
short_description: The engines a planned hetero run needs, as engine_build combinations
version_added: 0.1.0
description:
  - Takes the C(plan) of a M(heteromig.fleet.hetero_run) dry run (check mode) and returns one
    M(heteromig.fleet.engine_build) combination per benchmark and scenario the run will start
    (the main benchmark in its scenario, every background in Offline), without duplicates.
  - The main benchmark's engine gets C(accuracy_target) V(99.9) when O(main_accuracy_target)
    is V(high); the others keep engine_build's default.
  - So the engine list follows from the run, and nobody keeps it by hand
    (C(playbooks/hetero_run.yml) does this when C(heteromig_engine_combinations) is not set).
options:
  _input:
    description: The C(plan) returned by a hetero_run dry run.
    type: dict
    required: true
  main_accuracy_target:
    description: The run's C(main_accuracy_target).
    type: str
    default: default
    choices: [default, high]
"""

EXAMPLES = r"""
- name: Plan the run without starting it
  heteromig.fleet.hetero_run:
    run_id: engines
  check_mode: true
  register: planned

- name: Build exactly the engines the run needs
  heteromig.fleet.engine_build:
    mig_devices: "{{ ansible_facts['heteromig_mig_devices'] }}"
    combinations: "{{ planned.plan | heteromig.fleet.run_engines }}"
"""

RETURN = r"""
_value:
  description: engine_build combinations (benchmark, scenario and, for a high-accuracy main, accuracy_target), sorted.
  type: list
  elements: dict
"""

from collections.abc import Callable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.heteromig.fleet.plugins.plugin_utils._run_engines import (
    EngineError,
    run_engines,
)


def run_engines_filter(
    plan: Mapping[str, Any], main_accuracy_target: str = "default"
) -> list[dict[str, str]]:
    try:
        return run_engines(plan, main_accuracy_target)
    except EngineError as exc:
        raise AnsibleFilterError("run_engines: %s" % exc) from None


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"run_engines": run_engines_filter}
