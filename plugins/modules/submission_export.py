#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: submission_export
short_description: Export hetero_run results in the MLPerf Inference submission layout
version_added: 0.1.0
description:
  - Files the LoadGen logs of heteromig.fleet.hetero_run results into the MLPerf Inference
    submission layout (v5.0 and v5.1) under O(dest)C(/<division>/<submitter>/), and checks the
    tree the way the MLPerf submission checker does.
  - The system description is filled from the results and from the hosts' facts
    (M(heteromig.fleet.host_facts), M(heteromig.fleet.gpu_facts)); what they cannot tell is
    left empty and named in RV(system_fields), never invented.
  - Every heterogeneous run becomes a one-slice system named
    C(<platform>_<accelerator>-MIG_1x<profile>_<software>_HeteroMultiUse), for example
    C(DGX-A100_A100-SXM-80GB-MIG_1x1g.10gb_TRT_HeteroMultiUse), with C(systems/<system>.json).
  - The main benchmark's action and LoadGen test mode pick the place. C(run_harness) in
    PerformanceOnly goes to C(results/<system>/<benchmark>/<Scenario>/performance/run_1/) and
    in AccuracyOnly to C(.../accuracy/). C(run_audit_test01) and C(run_audit_test04) go to
    C(compliance/<system>/<benchmark>/<Scenario>/TEST01/) and C(TEST04/). The action also
    writes C(measurements/<system>/<benchmark>/<Scenario>/) (README.md, the implementation
    JSON; C(user.conf) when the harness left one).
  - Only files that exist next to the LoadGen logs on the controller (the results'
    C(fetched_dir)) are copied; missing ones, such as C(verify_performance.txt) from the MLPerf
    compliance scripts, are reported in RV(problems), never invented.
  - Runs on the controller only; use it in a play on C(localhost).
options:
  results:
    description: hetero_run results (registered task results), in priority order.
    type: list
    elements: dict
    default: []
  results_jsonl:
    description:
      - C(results.jsonl) files written by the heteromig.fleet.hetero_report callback; their
        hetero_run results are added after O(results).
    type: list
    elements: path
    default: []
  dest:
    description: Directory that receives C(<division>/<submitter>/).
    type: path
    required: true
  division:
    description: Submission division.
    type: str
    default: closed
    choices: [closed, open]
  submitter:
    description: Submitting organisation (directory name and system description field).
    type: str
    required: true
  platform:
    description: System platform, the first part of the system name (for example C(DGX-H100)).
    type: str
    required: true
  software:
    description:
      - Software part of the system name. Default from the results' C(harness)
        (C(nvidia_mlperf) is C(TRT), C(heteromig_synthetic) is C(Synthetic)).
    type: str
  system_desc:
    description:
      - Fields of C(systems/<system>.json) the facts cannot tell, or values of your own; they
        win over the gathered ones (but not over division, submitter and system_name). Fields
        no fact tells are C(status) (V(available), V(preview) or V(rdi)), C(system_type)
        (V(datacenter), V(edge) or V(datacenter,edge)), C(host_memory_configuration),
        C(host_networking_topology), C(accelerator_interconnect) and C(cooling), and
        C(accelerator_host_interconnect) where the host does not show the GPU's PCIe link; RV(system_fields) names the ones still
        empty.
      - The description has every field of the MLPerf Inference submission checker (v5.x),
        filled from the results (the accelerator and its MIG slice), from O(host_facts) (CPU,
        memory, storage, network, operating system, driver, CUDA, framework and software
        versions) or left empty; RV(problems) says what the checker would reject.
    type: dict
    default: {}
  host_facts:
    description:
      - The facts of the results' hosts, as a dict
        C(host -> {heteromig_host, heteromig_nvml, heteromig_gpus}) where C(heteromig_host)
        comes from M(heteromig.fleet.host_facts) and the others from
        M(heteromig.fleet.gpu_facts) (driver, CUDA, and the GPU's PCI bus for its PCIe link).
      - By default they are taken from the facts this playbook run gathered on those hosts
        (run both modules on them first, as C(playbooks/export_submission.yml) does). A system
        takes its host fields from the first of its hosts with facts; hosts of one system that
        disagree are listed in RV(system_fields).
    type: dict
  implementation:
    description: Implementation id in C(<system>_<implementation>_<Scenario>.json). Default the harness name.
    type: str
  implementation_desc:
    description:
      - Fields of C(<system>_<implementation>_<Scenario>.json) (input_data_types, retraining,
        starting_weights_filename, weight_data_types, weight_transformations).
    type: dict
    default: {}
  only_valid:
    description: Export only results whose verdict is VALID (others are listed in RV(left_out)).
    type: bool
    default: true
  replace:
    description: Remove an existing C(<division>/<submitter>/) tree under O(dest) first.
    type: bool
    default: false
  layout_version:
    description: Submission round whose layout is written (compliance/ and measurements/ beside results/).
    type: str
    default: v5.1
    choices: [v5.0, v5.1]
  required_tests:
    description: Compliance tests the check expects for every exported benchmark and scenario.
    type: list
    elements: str
    default: [TEST01, TEST04]
  fail_on_problems:
    description: Fail when the check finds errors (the tree is written anyway).
    type: bool
    default: false
attributes:
  check_mode:
    support: none
    description: In check mode nothing is written and the task is skipped.
  diff_mode:
    support: none
    description: The written tree is listed in RV(exported); no diff is shown.
  platform:
    support: full
    platforms: posix
    description: Runs on the controller.
author:
  - heteromig developers (@heteromig)
"""

EXAMPLES = r"""
# in a play on the GPU hosts: the facts the system description is filled from
- name: Read the host facts
  heteromig.fleet.host_facts:

- name: Read the GPU facts (driver, CUDA)
  heteromig.fleet.gpu_facts:

# then, in a play on localhost
- name: Export the VALID heterogeneous runs of one playbook run
  heteromig.fleet.submission_export:
    results_jsonl: [results/20261122T051500Z-ab12cd/results.jsonl]
    dest: submission
    submitter: ACME
    platform: DGX-H100
    system_desc:
      status: available
      system_type: datacenter
      cooling: air
      host_memory_configuration: 32x 64 GB DDR5
  register: export

- name: Show what the submission checker would still complain about
  ansible.builtin.debug:
    var: export.problems
"""

RETURN = r"""
root:
  description: The exported C(<dest>/<division>/<submitter>) directory.
  returned: success
  type: str
exported:
  description: One entry per exported result (host, run_id, benchmark, system, scenario, slot, path, missing files).
  returned: success
  type: list
  elements: dict
left_out:
  description: Results not exported, each with its reason.
  returned: always
  type: list
  elements: dict
systems:
  description: System names written to C(systems/).
  returned: success
  type: list
  elements: str
files:
  description: Number of files written.
  returned: success
  type: int
system_fields:
  description:
    - Per system, C(host) (the host whose facts filled it, or null), C(sources) (field -> where
      its value came from), C(unknown) (the fields the checker needs a value for that nobody
      could fill; set them in O(system_desc)) and C(conflicts) (fields on which the hosts of
      the system disagree).
  returned: success
  type: dict
  sample:
    DGX-H100_H100-SXM5-80GB-MIG_1x1g.10gb_TRT_HeteroMultiUse:
      host: dgx-h100-01
      sources: {host_processor_model_name: host_facts (/proc/cpuinfo)}
      unknown: [status, system_type, cooling]
      conflicts: []
problems:
  description: What the submission check found (severity error or warning, path, message).
  returned: success
  type: list
  elements: dict
"""
