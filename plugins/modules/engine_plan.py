#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_plan
short_description: The engines a host's hetero run needs, from a dry run of the run
version_added: 0.1.0
description:
  - Plans the host's M(heteromig.fleet.hetero_run) without starting anything (its check-mode dry
    run, with every option from the host's C(heteromig_hetero_<option>) variables and its
    C(heteromig_mig_devices) fact), and returns one M(heteromig.fleet.engine_build) combination
    per benchmark and scenario the run will start. The main benchmark in its scenario, at
    C(accuracy_target) V(99.9) when C(heteromig_hetero_main_accuracy_target) is V(high); every
    background in Offline.
  - So the engine list follows from the run and nobody keeps it by hand; C(playbooks/hetero_run.yml)
    uses it when C(heteromig_engine_combinations) is not set.
  - Runs on the controller; the dry run reads no host.
options:
  allow_shared_gpu:
    description: As hetero_run's O(heteromig.fleet.hetero_run#module:allow_shared_gpu).
    type: bool
    default: false
attributes:
  action:
    support: full
    description: An action plugin over hetero_run's planning.
  check_mode:
    support: full
    description: It only plans; the same result in check mode.
  diff_mode:
    support: none
    description: Nothing changes.
  platform:
    support: full
    platforms: posix
    description: Runs on the controller.
author:
  - heteromig developers (@heteromig)
seealso:
  - module: heteromig.fleet.hetero_run
  - module: heteromig.fleet.engine_build
"""

EXAMPLES = r"""
- name: Plan the engines of the run the inventory describes
  heteromig.fleet.engine_plan:
  register: planned

- name: Build them per MIG profile
  heteromig.fleet.engine_build:
    mig_devices: "{{ ansible_facts['heteromig_mig_devices'] }}"
    combinations: "{{ planned.combinations }}"
"""

RETURN = r"""
combinations:
  description: engine_build combinations (benchmark, scenario, and accuracy_target for a high-accuracy main), sorted, without duplicates.
  returned: success
  type: list
  elements: dict
  sample: [{benchmark: synth-conv-1d, scenario: Offline}, {benchmark: synth-mlp-small, scenario: Server}]
benchmarks:
  description: The planned benchmarks (role main or background, benchmark, scenario), one per slice.
  returned: success
  type: list
  elements: dict
harness:
  description: The harness profile of the run.
  returned: success
  type: str
"""
