# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A campaign's tuned cells: main_target_qps auto / tuned (docs/campaign.md, "Tuning").

Controller only. The search itself is the pure :mod:`_campaign_tuning`; here each of its runs
is a real hetero run through the ``hetero_run`` callable the campaign action gives (the real
``heteromig.fleet.hetero_run`` action), each recorded in the ledger as it ends, and the tuned
file is read and written.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import yaml
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.utils.display import Display

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._loadgen_logs import (
    DETAIL_LOG,
    SUMMARY_LOG,
    find_loadgen_dirs,
    parse_detail,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    RUNS,
    Claim,
    append,
    locked,
    read,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    Cell,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_trial_cause import (
    Cause,
    classify,
    early_stopping_text,
    latency_against_bound,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_tuning import (
    CONFIRM,
    DEFAULT_MAX_TRIALS,
    DEFAULT_TOLERANCE,
    TRIAL,
    Outcome,
    TuningError,
    check_settings,
    tune,
)

display = Display()

TUNED_FILE = "tuned.yml"
TUNED_HEADER = (
    "# Target QPS tuned under hetero load by heteromig.fleet.campaign (docs/campaign.md,\n"
    "# 'Tuning'): tuned.<system>.<benchmark>.<scenario>.main_target_qps. A later spec reuses\n"
    "# them with main_target_qps: tuned (and tuned_file: <this file> where it lives elsewhere).\n"
)


def plan_tuning(campaign: Campaign, directory: str) -> None:
    """Refuse, before any host is touched, what tuning cannot do."""
    for cell in campaign.cells:
        if not (cell.tune or cell.tuning.get("use_tuned")):
            continue
        word = "auto" if cell.tune else "tuned"
        if campaign.system(cell.system).gpus_at_once > 1:
            raise AnsibleActionFail(
                "sweep spec: cell %s: main_target_qps: %s is not supported on system %s, whose "
                "gpus_at_once is %d: a tuned cell runs alone on its host; tune it on a system "
                "with gpus_at_once: 1 and reuse the value with main_target_qps: <number>"
                % (cell.id, word, cell.system, campaign.system(cell.system).gpus_at_once)
            )
        if cell.scenario != "Server":
            raise AnsibleActionFail(
                "sweep spec: cell %s: main_target_qps: %s is supported for Server cells "
                "only: LoadGen's %s verdict does not depend on a target (its expected "
                "latency only sizes the number of queries), so there is nothing to tune; "
                "leave main_target_qps unset for this cell" % (cell.id, word, cell.scenario)
            )
        if cell.tune:
            try:
                check_settings(
                    float(cell.tuning.get("tune_start") or 1.0),
                    tolerance=_tolerance(cell),
                    max_trials=_max_trials(cell),
                    trial_ms=_trial_duration(cell),
                    max_trial_ms=_longest_trial(cell),
                )
            except TuningError as exc:
                raise AnsibleActionFail("sweep spec: cell %s: %s" % (cell.id, exc)) from None
            continue
        path = tuned_file_for(cell, directory)
        key = (cell.system, cell.benchmark, cell.scenario)
        if read_tuned(path).get(key) is not None:
            continue
        if any(
            other.tune and (other.system, other.benchmark, other.scenario) == key
            for other in campaign.cells
        ):
            continue  # this campaign tunes it first
        raise AnsibleActionFail(
            "sweep spec: cell %s asks for main_target_qps: tuned, but %s has no tuned value "
            "for system %s, benchmark %s, scenario %s, and no cell of this campaign tunes it "
            "(main_target_qps: auto)" % (cell.id, path, *key)
        )


def tuned_cell(
    campaign: Campaign,
    directory: str,
    ledger: str,
    claim: Claim,
    host: str,
    session: str,
    hetero_run: Callable[[dict[str, Any]], dict[str, Any]],
) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Run a cell with main_target_qps: auto (search, confirm, write the tuned file) or
    tuned (the tuned file's value). Returns (failure, the cell's run result, tuning)."""
    cell = claim.cell
    path = tuned_file_for(cell, directory)
    key = (cell.system, cell.benchmark, cell.scenario)
    if not cell.tune:  # main_target_qps: tuned
        entry = read_tuned(path).get(key)
        if entry is None:
            message = (
                "no tuned main_target_qps for system %s, benchmark %s, scenario %s in %s "
                "(the cell that tunes it has not finished VALID yet)" % (*key, path)
            )
            return message, {}, {"from_file": path, "value": None}
        args = dict(cell.options, main_target_qps=float(entry["main_target_qps"]))
        args.update(
            run_id=claim.run_id, resume=claim.resume, results_dir=os.path.join(directory, RUNS)
        )
        try:
            return (
                None,
                hetero_run(args),
                {
                    "from_file": path,
                    "value": float(entry["main_target_qps"]),
                },
            )
        except AnsibleError as exc:
            return str(exc), {}, {"from_file": path, "value": float(entry["main_target_qps"])}

    # replay: a resumed claim keeps the runs its earlier session recorded
    recorded: dict[tuple[str, int], dict[str, Any]] = {}
    if claim.resume:
        records, _warnings = read(ledger)
        for record in records:
            if (
                record.get("event") == "trial"
                and record.get("cell") == cell.id
                and record.get("run_id") == claim.run_id
                and not record.get("failed")
            ):
                recorded[(str(record.get("kind")), int(record.get("index") or 0))] = record
    suffix = ("-r" + secrets.token_hex(2)) if claim.resume else ""
    trial_ms = _trial_duration(cell)
    last: dict[str, Any] = {}
    trial_list: list[dict[str, Any]] = []

    class _RunFailed(Exception):
        pass

    def one_run(
        kind: str, index: int, target: float | None, duration_ms: int | None = None
    ) -> tuple[Outcome, dict]:
        done = recorded.get((kind, index)) if kind != CONFIRM else None
        if (
            done is not None
            and (target is None or done.get("target") == target)
            and (duration_ms is None or done.get("duration_ms") == duration_ms)
        ):
            trial_list.append(_trial_entry(done))
            return _recorded_outcome(done), {}
        letter = {"probe": "p", TRIAL: "t", CONFIRM: "c"}[kind]
        args = dict(cell.options)
        if kind == "probe":
            args.pop("main_target_qps", None)
            args.update(main_scenario="Offline")
        if kind != CONFIRM:
            args.update(
                main_benchmark_duration=duration_ms or trial_ms,
                main_mode="PerformanceOnly",
                main_action="run_harness",
            )
        if target is not None:
            args["main_target_qps"] = target
        run_id = "%s-%s%d%s" % (claim.run_id, letter, index, suffix)
        args.update(run_id=run_id, resume=False, results_dir=os.path.join(directory, RUNS))
        failure = None
        result: dict[str, Any] = {}
        try:
            result = hetero_run(args)
        except AnsibleError as exc:
            failure = str(exc)
        if result.get("failed") and failure is None:
            failure = str(result.get("msg") or "hetero_run failed")
        verdict = result.get("verdict") or "INVALID"
        main_loadgen = (result.get("main") or {}).get("loadgen") or {}
        metric = main_loadgen.get("metric")
        cause = classify(verdict, main_loadgen, *_early_stopping(result))
        record = append(
            ledger,
            {
                "event": "trial",
                "cell": cell.id,
                "host": host,
                "session": session,
                "run_id": claim.run_id,
                "attempt": claim.attempt,
                "kind": kind,
                "index": index,
                "trial_run_id": run_id,
                "target": target,
                "duration_ms": args.get("main_benchmark_duration"),
                "verdict": verdict,
                "cause": cause.cause,
                "why": None if verdict == "VALID" else cause.why,
                "queries_needed": cause.queries_needed,
                "overlatency": cause.overlatency,
                "metric": metric,
                "reasons": list(result.get("reasons") or ([failure] if failure else []))[:5],
                "results_dir": result.get("results_dir"),
                "failed": failure is not None,
            },
        )
        trial_list.append(_trial_entry(record))
        display.display(
            "campaign [%s] %s %s %d%s: %s%s%s"
            % (
                host,
                cell.id,
                kind,
                index,
                " at %g QPS" % target if target is not None else " (Offline)",
                "FAILED" if failure else verdict,
                " (%s)" % _metric_value(metric) if metric else "",
                " [%s: %s]" % (cause.cause, cause.why)
                if verdict != "VALID" and not failure
                else "",
            )
        )
        if failure is not None:
            raise _RunFailed("%s %d (run %s): %s" % (kind, index, run_id, failure))
        last.clear()
        last.update(result)
        return Outcome(verdict == "VALID", metric, cause=cause), result

    tuning: dict[str, Any] = {
        "option": "main_target_qps",
        "tolerance": _tolerance(cell),
        "max_trials": _max_trials(cell),
        "trial_duration_ms": trial_ms,
        "longest_trial_ms": _longest_trial(cell),
        "trials": trial_list,
    }
    try:
        start = cell.tuning.get("tune_start")
        if start is not None:
            tuning.update(start=float(start), start_from="tune_start")
        else:
            probe, _probe_failure = one_run("probe", 1, None)
            value = _metric_value(probe.metric)
            if value is None or value <= 0:
                message = (
                    "the Offline probe gave no samples/s (%s) to start the search from: give "
                    "tune_start (e.g. the target found in isolation)" % probe.metric
                )
                return message, {}, tuning
            tuning.update(start=value, start_from="offline probe")
        confirmed: dict[str, Any] = {}

        def run(kind: str, index: int, target: float, duration_ms: int | None) -> Outcome:
            outcome, result = one_run(kind, index, target, duration_ms)
            if kind == CONFIRM:
                confirmed.clear()
                confirmed.update(result)
            return outcome

        found = tune(
            run,
            float(tuning["start"]),
            tolerance=_tolerance(cell),
            max_trials=_max_trials(cell),
            trial_ms=trial_ms,
            max_trial_ms=_longest_trial(cell),
        )
    except _RunFailed as exc:
        return "tuning stopped: %s" % exc, {}, tuning
    except TuningError as exc:
        return "tuning: %s" % exc, {}, tuning
    # how the search read each run: a too-short trial with queries over the bound that cannot
    # fit in the cell's length is read as too high (the ledger's cause is LoadGen's)
    searched = [entry for entry in trial_list if entry.get("kind") != "probe"]
    for entry, trial in zip(searched, found.trials, strict=False):
        entry["read_as"] = trial.cause
    tuning.update(
        value=found.value,
        found=found.found,
        converged=found.converged,
        bracket=[found.lo, found.hi],
        short_trials=found.short_trials,
        lengthened=found.lengthened,
        confirmations=found.confirmations,
        reason=found.reason,
    )
    display.display("campaign [%s] %s: %s" % (host, cell.id, found.reason))
    if found.value is not None:
        tuning["tuned_file"] = path
        write_tuned(
            path,
            key,
            {
                "main_target_qps": found.value,
                "campaign": campaign.name,
                "cell": cell.id,
                "run_id": claim.run_id,
                "host": host,
                "tuned_at_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "start": tuning["start"],
                "start_from": tuning["start_from"],
                "short_trials": found.short_trials,
                "tolerance": _tolerance(cell),
            },
        )
    if not confirmed:  # nothing VALID to confirm: the cell is INVALID
        return (
            None,
            {"verdict": "INVALID", "reasons": ["tuning: %s" % found.reason]},
            tuning,
        )
    result = dict(confirmed)
    if found.value is None:
        result["reasons"] = [*list(result.get("reasons") or []), "tuning: " + found.reason]
    return None, result, tuning


# ------------------------------------------------------------------------------ helpers
def _tolerance(cell: Cell) -> float:
    return float(cell.tuning.get("tune_tolerance") or DEFAULT_TOLERANCE)


def _max_trials(cell: Cell) -> int:
    return int(cell.tuning.get("tune_max_trials") or DEFAULT_MAX_TRIALS)


def _trial_duration(cell: Cell) -> int:
    """tune_trial_duration, else a tenth of the cell's duration (at least 1 s); never shorter
    than the cell's latency bound over the tolerance (:func:`trial_floor_ms`), up to the cell's
    own duration."""
    given = cell.tuning.get("tune_trial_duration")
    full = int(cell.options.get("main_benchmark_duration") or 600000)
    chosen = int(given) if given else max(1000, full // 10)
    return max(chosen, min(trial_floor_ms(cell), full))


def trial_floor_ms(cell: Cell) -> int:
    """The shortest trial that can tell the limit within the tolerance, where the cell gives its
    latency bound (``main_target_latency_ns``); 0 where it does not.

    Above the capacity ``c`` a Server run's queue grows by ``q - c`` queries a second, so in a
    run of ``T`` its last queries wait about ``(q / c - 1) T``: the run breaks a bound ``B`` only
    when ``q > c (1 + B / T)``. A short trial can thus be VALID up to ``B / T`` above the
    capacity, and its bracket is within the tolerance only when ``T >= B / tolerance``
    (docs/benchmarks.md, "Tuning on the embedded harness").
    """
    bound_ns = cell.options.get("main_target_latency_ns")
    if not bound_ns:
        return 0
    return math.ceil(round(float(bound_ns) / 1e6 / _tolerance(cell), 6))


def _longest_trial(cell: Cell) -> int:
    """The longest a lengthened short trial may run: the cell's own duration (the
    confirmation's), never less than the trial duration."""
    full = int(cell.options.get("main_benchmark_duration") or 600000)
    return max(full, _trial_duration(cell))


def _early_stopping(result: Mapping[str, Any]) -> tuple[str | None, int | None, str | None]:
    """LoadGen's early-stopping result of a run's main benchmark, its count of queries over
    the latency bound and its latency against the bound, from its fetched logs (the detail
    log's ``early_stopping_result``, ``result_overlatency_query_count`` and latency settings and
    results, else the summary's lines); None where not found."""
    fetched = (result.get("main") or {}).get("fetched_dir")
    if not isinstance(fetched, str) or not os.path.isdir(fetched):
        return None, None, None
    for directory in find_loadgen_dirs(fetched)[:1]:
        text, over, latency = None, None, None
        detail = _read_text(os.path.join(directory, DETAIL_LOG))
        if detail is not None:
            values = parse_detail(detail)
            latency = latency_against_bound(values)
            value = values.get("early_stopping_result")
            if isinstance(value, str) and value.strip():
                text = value
            count = values.get("result_overlatency_query_count")
            if isinstance(count, int) and not isinstance(count, bool):
                over = count
        if text is None:
            summary = _read_text(os.path.join(directory, SUMMARY_LOG))
            text = early_stopping_text(summary) if summary is not None else None
        return text, over, latency
    return None, None, None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(64 * 1024 * 1024)
    except OSError:
        return None


def _recorded_outcome(record: Mapping[str, Any]) -> Outcome:
    """A trial replayed from the ledger, read as its session read it."""
    valid = record.get("verdict") == "VALID"
    cause = record.get("cause")
    return Outcome(
        valid,
        record.get("metric"),
        cause=None
        if valid or not isinstance(cause, str)
        else Cause(
            cause,
            str(record.get("why") or ""),
            None,
            record.get("queries_needed"),
            record.get("overlatency"),
        ),
    )


def _metric_value(metric: Any) -> float | None:
    value = metric.get("value") if isinstance(metric, Mapping) else metric
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _trial_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: record.get(k)
        for k in (
            "kind",
            "index",
            "target",
            "duration_ms",
            "verdict",
            "cause",
            "why",
            "metric",
            "trial_run_id",
            "failed",
        )
    }


def tuned_file_for(cell: Cell, directory: str) -> str:
    """The tuned file of a cell: its tuned_file setting, else <campaign_dir>/tuned.yml."""
    given = cell.tuning.get("tuned_file")
    return os.path.abspath(os.path.expanduser(given or os.path.join(directory, TUNED_FILE)))


def read_tuned(path: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(system, benchmark, scenario) -> entry of a tuned file; {} when it is missing."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise AnsibleActionFail("tuned file %s cannot be read: %s" % (path, exc)) from None
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    tuned = (data or {}).get("tuned") if isinstance(data, dict) else None
    for system, benchmarks in (tuned or {}).items():
        for benchmark, scenarios in (benchmarks or {}).items():
            for scenario, entry in (scenarios or {}).items():
                if isinstance(entry, dict) and _metric_value(entry.get("main_target_qps")):
                    out[(str(system), str(benchmark), str(scenario))] = entry
    return out


def write_tuned(path: str, key: tuple[str, str, str], entry: Mapping[str, Any]) -> None:
    """Set one entry of the tuned file (under a lock; written through a rename)."""
    with locked(path):
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            data = {}
        except (OSError, yaml.YAMLError) as exc:
            raise AnsibleActionFail("tuned file %s cannot be read: %s" % (path, exc)) from None
        if not isinstance(data, dict):
            data = {}
        data["version"] = 1
        tuned = data.setdefault("tuned", {})
        system, benchmark, scenario = key
        tuned.setdefault(system, {}).setdefault(benchmark, {})[scenario] = dict(entry)
        # plain types only (names from the spec are Ansible's tagged strings, which the YAML
        # dumper does not know)
        data = json.loads(json.dumps(data))
        tmp = "%s.tmp.%d" % (path, os.getpid())
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(TUNED_HEADER)
            yaml.safe_dump(data, handle, sort_keys=False, default_flow_style=False)
        os.replace(tmp, path)
