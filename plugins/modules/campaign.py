#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# This file only documents the action plugin plugins/action/campaign.py (ansible-doc reads
# modules); the work is done by that action plugin, and each cell by heteromig.fleet.hetero_run.

from __future__ import annotations

DOCUMENTATION = r"""
module: campaign
short_description: A submission campaign across a fleet - plan it, run its cells, report it
version_added: 0.2.0
description:
  - A campaign is a sweep spec (docs/campaign.md) expanded into cells, one per system x
    benchmark x scenario x mode (V(performance), V(accuracy), and the compliance audits
    V(TEST01), V(TEST04), V(TEST05)). Each cell is one heterogeneous MIG run, done by the real
    M(heteromig.fleet.hetero_run) action with the cell's options and its own run id.
  - A ledger on the controller, C(<campaign_dir>/ledger.jsonl), records every claim and every
    finished cell (one JSON line each, appended and flushed to disk per record). Running the
    campaign again skips the cells that are done and VALID, retries failed and INVALID cells up
    to their C(retries), and resumes a cell whose controller died mid-run (the host's runner
    still has it; M(heteromig.fleet.hetero_run) re-attaches with O(heteromig.fleet.hetero_run#module:resume)).
    A truncated last ledger line is skipped with a warning; a ledger written by a newer version
    is refused.
  - O(operation=plan) (on the controller) validates the spec before anything runs, resolves
    each system's hosts in the inventory, reads the ledger, and prints per system the cells to
    run and to skip with an estimated duration. It registers what the other operations need,
    among it each system's claim order, longest cell first (estimated from the spec, or from the
    ledger for cells that ran before).
  - O(operation=cell) (on a host of a system) claims the system's next cell under a lock
    shared by every worker, runs it, and records its outcome. Hosts of one system share its
    cells as a work queue, taken in the plan's claim order. It prints a line per cell and the
    campaign's progress (done/total, failures, and an ETA that learns each system's per-cell
    overhead from its finished cells). With no cell to take while a cell of the system is in
    flight on another host with an attempt left, it waits for that cell (it may come back as a
    retry). It is skipped when no cell is left and none may come back.
  - On a system with C(gpus_at_once) greater than 1, O(operation=cell) runs every cell the host
    gets, up to that many at once, one per GPU with MIG devices (each on that GPU's slices, in
    a host root of its own, C(<host_root>/lanes/gpu<N>)). It starts each run with
    O(heteromig.fleet.hetero_run#module:wait=false), polls them, and re-attaches to each run that
    ended. The ledger and every report mark such cells with their GPU and C(gpus_at_once).
  - With O(slice) (job slicing, as AWX slices a job), O(operation=plan) takes slice K of N (its
    share of every system's hosts and cells), split the same way by every slice, with its own
    ledger C(ledger.slice-<K>of<N>.jsonl). O(operation=report) merges every slice's ledger and
    refuses slices of another campaign, spec, spec version, ledger version or split.
  - O(operation=report) (on the controller) writes C(campaign.json), C(campaign.csv),
    C(campaign.md), C(junit.xml) (one testcase per cell) and a self-contained C(campaign.html)
    whose cells link to each run's timeline, and files every VALID cell into the MLPerf
    submission tree C(<campaign_dir>/submission/) (performance, accuracy, C(TEST0x)).
  - C(playbooks/sweep.yml) drives the three operations; use it rather than this action alone.
author:
  - heteromig developers (@heteromig)
options:
  operation:
    description: What to do.
    type: str
    required: true
    choices: [plan, cell, report]
  spec:
    description:
      - The sweep spec as data (the variable C(heteromig_sweep), for example from
        C(-e @playbooks/sweeps/local.yml)). Exactly one of O(spec) and O(spec_file).
    type: dict
  spec_file:
    description: A sweep spec file on the controller (YAML whose top level is the spec).
    type: path
  campaign_dir:
    description:
      - The campaign's directory on the controller. Without it, C(results/campaigns/<campaign>)
        under the current directory.
    type: path
  session:
    description: The id of this playbook run, from the plan (operation=cell only).
    type: str
  submitter:
    description: The submitter name of the submission tree (operation=report).
    type: str
    default: heteromig
  slice:
    description:
      - V(K/N) (operation=plan), to plan and run slice K of N of the campaign (1 <= K <= N);
        C(playbooks/sweep.yml) passes C(heteromig_campaign_slice). V(1/1), like leaving it out,
        runs the whole campaign.
      - Hosts are dealt round-robin to the slices (systems in spec order, hosts by name), and a
        system's cells round-robin to its hosts, each going to its host's slice
        (docs/campaign.md, "Slicing").
    type: str
attributes:
  action:
    support: full
    description: An action plugin; each cell runs M(heteromig.fleet.hetero_run).
  check_mode:
    support: partial
    description: O(operation=plan) plans in check mode too and changes nothing (it never
      writes the ledger); C(playbooks/sweep.yml) ends after the plan in check mode.
  diff_mode:
    support: none
    description: Nothing to diff; the plan is printed.
notes:
  - How many hosts run cells at once is bounded by C(forks); the plan warns when there are
    more hosts than forks.
  - Tuned cells (C(main_target_qps) V(auto) or V(tuned)) are refused on a system with
    C(gpus_at_once) greater than 1.
seealso:
  - module: heteromig.fleet.hetero_run
  - module: heteromig.fleet.submission_export
"""

EXAMPLES = r"""
- name: Plan the campaign
  heteromig.fleet.campaign:
    operation: plan
    spec: "{{ heteromig_sweep }}"
  register: heteromig_campaign_plan

- name: Run the next cell of this host's system (one loop item per possible cell)
  heteromig.fleet.campaign:
    operation: cell
    spec: "{{ heteromig_sweep }}"
    campaign_dir: "{{ hostvars['localhost'].heteromig_campaign_plan.campaign_dir }}"
    session: "{{ hostvars['localhost'].heteromig_campaign_plan.session }}"
  register: heteromig_campaign_cell
  loop: "{{ range(24) | list }}"
  loop_control:
    break_when: heteromig_campaign_cell is skipped  # no cell comes back once none is left
"""

RETURN = r"""
campaign_dir:
  description: The campaign's directory.
  returned: operation=plan
  type: str
session:
  description: The id of this playbook run (for the ledger).
  returned: operation=plan
  type: str
systems:
  description: Per system, its hosts, MIG layout options, the engines its cells need, the cells
    to run and skipped (in claim order), C(claim_order) (every cell id of the system, longest
    first), and an estimated duration.
  returned: operation=plan
  type: dict
host_system:
  description: Which system each host belongs to (the hosts of this slice).
  returned: operation=plan
  type: dict
ledger:
  description: The ledger this run writes (C(ledger.jsonl), or the slice's).
  returned: operation=plan
  type: str
slice:
  description: This run's slice (V(K/N)), or null when the campaign runs whole.
  returned: operation=plan
  type: str
slice_cells:
  description: The cell ids this run owns (all of them when the campaign runs whole).
  returned: operation=plan
  type: list
  elements: str
partition:
  description: Every cell's slice number (1 for all when the campaign runs whole).
  returned: operation=plan
  type: dict
slices:
  description: The slice ledgers the report merged (C(slice), C(ledger), C(cells),
    C(spec_hash)); empty for a campaign run whole.
  returned: operation=report
  type: list
  elements: dict
plan:
  description: The printed plan, one line per system and per cell.
  returned: operation=plan
  type: list
  elements: str
verdict:
  description: The cell's hetero run verdict (with the rest of M(heteromig.fleet.hetero_run)'s
    result).
  returned: operation=cell, when a cell ran
  type: str
cells:
  description:
    - With O(operation=report), every cell with its verdict (V(VALID), V(INVALID), V(FAILED),
      V(NOT_RUN)), attempts, host, run id, metric, reasons, C(gpus_at_once) and C(gpu).
    - With O(operation=cell) on a system with C(gpus_at_once) greater than 1, the result of each
      cell the host ran (M(heteromig.fleet.hetero_run)'s, with C(campaign.gpu) and
      C(campaign.gpus_at_once)).
  returned: operation=report; operation=cell with gpus_at_once > 1
  type: list
  elements: dict
submission:
  description: Where the submission tree is, what was exported, and the submission checker's
    problems.
  returned: operation=report
  type: dict
"""
