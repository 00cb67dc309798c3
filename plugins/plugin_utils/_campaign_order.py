# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The order in which a system's hosts take its cells: longest first (controller only, pure).

A system's hosts share its cells as a work queue; the campaign ends when the last host ends its
last cell. Handing the cells out in spec order can leave the longest cells for last, and the
hosts then end unevenly. Handing them out **longest first** (LPT, "longest processing time
first") lets the short cells fill the ends (docs/campaign.md, "The claim order").

How long a cell runs is estimated by :func:`run_estimate`, from what the spec says, or by
:func:`claim_order` from the ledger when the cell ran before:

- **From the spec**, the length of its main run (the other parts of a run, the start, the
  backgrounds' readiness and the stop, cost about the same in every cell of a system):
  the start buffer plus, in performance mode (and in TEST01/TEST04, which are performance runs)
  the main duration (LoadGen's ``min_duration``), or longer when a Server run needs its
  ``min_query_count`` queries at its target QPS (``max(duration, queries / qps)``). An accuracy
  run goes over the whole data set once: ``samples / qps`` for a Server cell, whatever its main
  duration; where the data set or the rate is not known, the main duration stands in for it.
  A cell tuned by the campaign (``main_target_qps: auto``) adds its trials.
  The harness's own defaults (its min_query_count and target QPS when the spec sets none, each
  benchmark's data set) come from :func:`harness_defaults`, known for the embedded harness.
- **From the ledger**: a cell that ran to its end before (an earlier session of the campaign,
  or an INVALID attempt being retried) is estimated by its measured wall time, the median of its
  attempts (``finished`` minus ``claimed``); the other cells of its system get their spec
  estimate plus the system's median overhead measured the same way (wall time minus the spec
  estimate), so that measured and estimated cells compare on one scale. Left out, as they do not
  measure one run: failed attempts, resumed ones and tuned cells' (as in ``learned_overheads``).

The order is stable: cells of equal estimates keep their spec order.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    Cell,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec_check import (
    hetero_run_options,
)

EMBEDDED_HARNESS = "heteromig_synthetic"
# A tuning's trials last this long by default (the tuning's own defaults: _campaign_tuning).
_TUNE_TRIALS = 8
_TUNE_TRIAL_MS = 1000


@dataclass(frozen=True)
class HarnessDefaults:
    """What a harness runs when the spec does not say: per scenario, LoadGen's min_query_count
    and (Server) target QPS; per benchmark, its data set's size (an accuracy run's samples)."""

    min_query_count: Mapping[str, int] = field(default_factory=dict)
    target_qps: Mapping[str, float] = field(default_factory=dict)
    dataset: Mapping[str, int] = field(default_factory=dict)


def harness_defaults(harness: str) -> HarnessDefaults:
    """The embedded harness's defaults (read from its own modules, the one place they are
    defined); an empty HarnessDefaults for any other harness (its spec's values only)."""
    if harness != EMBEDDED_HARNESS:
        return HarnessDefaults()
    # imported here: the cell workers never need them, only the plan
    from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _harness_settings
    from ansible_collections.heteromig.fleet.plugins.module_utils.agent._synthetic_models import (
        ALL_MODELS,
    )

    return HarnessDefaults(
        min_query_count=dict(_harness_settings.DEFAULT_MIN_QUERY_COUNT),
        target_qps={"Server": float(_harness_settings.DEFAULT_SERVER_TARGET_QPS)},
        dataset={name: int(model.qsl_total) for name, model in ALL_MODELS.items()},
    )


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return float(value)


def _ms_option(cell: Cell, name: str, table: Mapping[str, Mapping[str, Any]]) -> float:
    value = _positive(cell.options.get(name))
    if value is None:
        value = _positive((table.get(name) or {}).get("default"))
    return (value or 0.0) / 1000.0


def run_estimate(
    cell: Cell,
    defaults: HarnessDefaults | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> float:
    """Seconds of ``cell``'s run that differ between cells, from its spec (module docstring).

    ``options``: hetero_run's option table (its defaults where the cell sets none; read from the
    plugin when None).
    """
    known = defaults or HarnessDefaults()
    table = options if options is not None else hetero_run_options()
    duration = _ms_option(cell, "main_benchmark_duration", table)
    buffer = _ms_option(cell, "start_time_buffer", table)
    qps = _positive(cell.options.get("main_target_qps"))
    if qps is None and cell.scenario == "Server":
        qps = _positive(known.target_qps.get(cell.scenario))
    if cell.main_mode == "AccuracyOnly":
        samples = _positive(known.dataset.get(cell.benchmark))
        # Offline issues the whole data set in one query at the device's pace, unknown here
        main = samples / qps if samples and qps and cell.scenario == "Server" else duration
    else:
        queries = _positive(cell.options.get("main_min_query_count"))
        if queries is None:
            queries = _positive(known.min_query_count.get(cell.scenario))
        main = duration
        if cell.scenario == "Server" and queries and qps:
            main = max(duration, queries / qps)
    if cell.tune:
        trials = _positive(cell.tuning.get("tune_max_trials")) or _TUNE_TRIALS
        trial_ms = _positive(cell.tuning.get("tune_trial_duration")) or _TUNE_TRIAL_MS
        main += trials * trial_ms / 1000.0
    return buffer + main


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def measured_walls(campaign: Campaign, records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per cell, the median wall time (``finished`` minus ``claimed``) of its attempts that ran
    to their end: not failed, not resumed, not a tuned cell's."""
    cells = {cell.id: cell for cell in campaign.cells}
    claimed: dict[str, float] = {}
    resumed: set[str] = set()
    walls: dict[str, list[float]] = {}
    for record in records:
        run_id = record.get("run_id")
        stamp = _number(record.get("t"))
        if not isinstance(run_id, str) or stamp is None:
            continue
        if record.get("event") == "claimed":
            if record.get("resume"):
                resumed.add(run_id)
            else:
                claimed.setdefault(run_id, stamp)
            continue
        cell = cells.get(str(record.get("cell")))
        if (
            record.get("event") != "finished"
            or record.get("failed")
            or cell is None
            or cell.tune
            or cell.tuning.get("use_tuned")
            or run_id in resumed
            or run_id not in claimed
            or stamp < claimed[run_id]
        ):
            continue
        walls.setdefault(cell.id, []).append(stamp - claimed[run_id])
    return {cell: statistics.median(values) for cell, values in walls.items()}


def claim_order(
    campaign: Campaign,
    records: Sequence[Mapping[str, Any]] = (),
    defaults: HarnessDefaults | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, list[tuple[str, float, str]]]:
    """Per system, its cells longest first: ``(cell id, estimated seconds, "spec" or
    "ledger")`` each. Estimates are the spec's (:func:`run_estimate`) where no cell of the
    system ran before; else on the ledger's scale (module docstring)."""
    table = options if options is not None else hetero_run_options()
    walls = measured_walls(campaign, records)
    out: dict[str, list[tuple[str, float, str]]] = {}
    for system in campaign.systems:
        cells = [c for c in campaign.cells if c.system == system.name]
        spec = {c.id: run_estimate(c, defaults, table) for c in cells}
        overheads = [walls[c.id] - spec[c.id] for c in cells if c.id in walls]
        overhead = statistics.median(overheads) if overheads else 0.0
        estimates = [
            (c.id, walls[c.id], "ledger")
            if c.id in walls
            else (c.id, spec[c.id] + overhead, "spec")
            for c in cells
        ]
        # sorted() is stable: equal estimates keep the spec order
        out[system.name] = sorted(estimates, key=lambda item: -item[1])
    return out


def in_claim_order(campaign: Campaign, order: Mapping[str, Sequence[str]]) -> Campaign:
    """``campaign`` with its cells in the claim order the plan gave (system -> cell ids); cells
    the order does not name keep their spec order, after those it names."""
    rank: dict[str, int] = {}
    for ids in order.values():
        for position, cell in enumerate(ids or []):
            rank.setdefault(str(cell), position)
    unranked = len(rank) + 1
    cells = sorted(campaign.cells, key=lambda c: rank.get(c.id, unranked))
    return dataclasses.replace(campaign, cells=cells)


def awaited(
    campaign: Campaign,
    system: str,
    session: str,
    states: Mapping[str, Any],
    now: float,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """The cells of ``system`` a host with nothing to claim waits for: in flight in this
    ``session`` (on another host, or another lane) with an attempt left, so that they may come
    back as a retry; each only until twice its ``expected_s`` plus the lease and reconnect
    timeouts (hetero_run's time to find its host lost) have passed since its claim. A cell
    still running past that is left to its own host (which takes its retry) or to the next
    run of the campaign. ``states``: the ledger's cell states (cell id -> CellState)."""
    table = options if options is not None else hetero_run_options()
    waiting: list[str] = []
    for cell in campaign.cells:
        state = states.get(cell.id)
        if (
            cell.system != system
            or state is None
            or state.state != "in_flight"
            or state.session != session
            or state.attempts >= 1 + cell.retries
        ):
            continue
        claimed = _number((state.last or {}).get("t"))
        patience = (
            2 * cell.expected_s
            + _ms_option(cell, "lease_timeout", table)
            + _ms_option(cell, "reconnect_timeout", table)
        )
        if claimed is not None and now - claimed <= patience:
            waiting.append(cell.id)
    return waiting
