# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A campaign's plan: per system, its hosts, the cells to run and to skip, and an estimate.

Controller only, pure (the engines of a system are read from its harness profile). The campaign
action (``operation=plan``) resolves the inventory and reads the ledger; this module turns them
into what the plan prints and registers (docs/campaign.md, "Running a campaign").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    cell_estimate,
    cell_states,
    learned_overheads,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_order import (
    HarnessDefaults,
    claim_order,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    Cell,
    engine_combinations,
    layout_options,
)


def fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return (
        ("%dh%02dm%02ds" % (hours, rest // 60, rest % 60))
        if hours
        else ("%dm%02ds" % (rest // 60, rest % 60))
    )


def plan_systems(
    campaign: Campaign,
    hosts_of: Mapping[str, Sequence[str]],
    records: list[dict[str, Any]],
    slice_label: str | None = None,
    defaults: HarnessDefaults | None = None,
) -> tuple[dict[str, dict[str, Any]], list[str], float]:
    """(systems, printed lines, estimated seconds) for ``campaign`` (the cells this run owns:
    all of them, or one slice's) on ``hosts_of`` (system -> its hosts in this run) against the
    ledger's ``records``.

    A cell is skipped when it is done, or failed with no attempt left. A system's estimate is
    its cells to run (each :func:`cell_estimate`, with the overhead learned from the ledger's
    finished cells where there are some) over its hosts x ``gpus_at_once``; the campaign's is
    the largest (systems run side by side).

    A system's ``claim_order`` is the order its hosts take its cells, longest first
    (:func:`_campaign_order.claim_order`, with the harness's ``defaults``); its cells to run are
    printed in that order, each with the estimate of its run that ordered it.
    """
    states = cell_states(records)
    overheads = learned_overheads(campaign, records)
    orders = claim_order(campaign, records, defaults)
    where = " | slice %s" % slice_label if slice_label else ""
    systems: dict[str, dict[str, Any]] = {}
    lines: list[str] = []
    total = 0.0
    for system in campaign.systems:
        cells = [c for c in campaign.cells if c.system == system.name]
        hosts = list(hosts_of.get(system.name) or [])
        order = orders.get(system.name) or []
        runs = {cell_id: (seconds, source) for cell_id, seconds, source in order}
        rank = {cell_id: position for position, (cell_id, _s, _src) in enumerate(order)}
        todo: list[Cell] = []
        skip: list[Cell] = []
        for cell in sorted(cells, key=lambda c: rank.get(c.id, len(rank))):
            state = states.get(cell.id)
            finished = state is not None and (
                state.state == "done"
                or (state.state == "failed" and state.attempts >= 1 + cell.retries)
            )
            (skip if finished else todo).append(cell)
        lanes = max(1, len(hosts)) * system.gpus_at_once
        estimate = sum(cell_estimate(c, overheads.get(system.name)) for c in todo) / lanes
        total = max(total, estimate)
        systems[system.name] = {
            "name": system.name,
            "hosts": hosts,
            "layout": layout_options(system),
            "engines": engine_combinations(campaign, system.name) if cells else [],
            "gpus_at_once": system.gpus_at_once,
            "cells": len(cells),
            "to_run": [c.id for c in todo],
            "skipped": [c.id for c in skip],
            # each host may take every cell of its system, each up to 1 + retries times
            "max_claims": sum(1 + c.retries for c in cells),
            "estimated_s": estimate,
            "overhead_s": overheads.get(system.name),
            "claim_order": [cell_id for cell_id, _s, _src in order],
        }
        if not hosts:
            lines.append(
                "campaign %s%s | system %s: no host in this slice (its cells run in the others)"
                % (campaign.name, where, system.name)
            )
            continue
        lines.append(
            "campaign %s%s | system %s: %d host(s) %s | %d cell(s): %d to run, %d skipped "
            "(done or out of retries) | about %s%s"
            % (
                campaign.name,
                where,
                system.name,
                len(hosts),
                ",".join(hosts),
                len(cells),
                len(todo),
                len(skip),
                fmt_duration(estimate),
                " (%d GPUs at once per host)" % system.gpus_at_once
                if system.gpus_at_once > 1
                else "",
            )
        )
        for cell in todo:
            state = states.get(cell.id)
            seconds, source = runs.get(cell.id, (None, ""))
            lines.append(
                "  run  %s%s (about %s%s)"
                % (
                    cell.id,
                    " (attempt %d)" % (state.attempts + 1) if state and state.attempts else "",
                    fmt_duration(cell_estimate(cell, overheads.get(system.name))),
                    "; order %.1f s, %s" % (seconds, "measured" if source == "ledger" else "spec")
                    if seconds is not None
                    else "",
                )
            )
        for cell in skip:
            state = states[cell.id]
            lines.append("  skip %s (%s, %s)" % (cell.id, state.state, state.verdict or "-"))
    return systems, lines, total
