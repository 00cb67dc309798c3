# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A campaign's report: its cells' states from the ledger, and their runs' results.

Writes into the campaign directory (controller only):

- ``campaign.json``: every cell (system, benchmark, scenario, mode, verdict, metric, attempts,
  host, run id, reasons, where its results are) and the matrix systems x benchmark/scenario x
  mode;
- ``campaign.csv`` (one row per cell), ``campaign.md`` (the matrix per system), ``junit.xml``
  (one testcase per cell) and ``campaign.html`` (self-contained; each cell links to its run's
  timeline, ``runs/<run_id>/<host>/report.html``, which is written here too);
- ``submission/``: the MLPerf submission tree of every VALID cell (performance, accuracy,
  ``TEST0x``), through the same export as ``heteromig.fleet.submission_export``.

Times are UTC and say so.
"""

from __future__ import annotations

import csv
import datetime
import html
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree import ElementTree

from ansible_collections.heteromig.fleet.plugins.module_utils._safe_names import is_safe_name
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    cell_states,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import (
    Campaign,
    Cell,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_aggregate import (
    build_summary,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_html import render_html
from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_records import (
    is_contract_result,
    make_record,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._submission_layout import (
    Plan,
    apply_plan,
    check_layout,
    inspect_log_dir,
    plan_export,
)

NOT_RUN = "NOT_RUN"
FAILED = "FAILED"
KINDS = {
    "performance": "performance run",
    "accuracy": "accuracy run",
    "TEST01": "compliance audit TEST01",
    "TEST04": "compliance audit TEST04",
    "TEST05": "compliance audit TEST05",
}


def _utc(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _write(path: str, text: str) -> None:
    """Write through a temporary file and a rename: a reader never sees half a report."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _read_result(results_dir: str | None) -> dict[str, Any] | None:
    if not results_dir:
        return None
    try:
        with open(os.path.join(results_dir, "result.json"), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if is_contract_result(data) else None


def cell_rows(campaign: Campaign, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell of the spec, in spec order, from the ledger's latest word on it."""
    states = cell_states([dict(record) for record in records])
    rows = []
    for cell in campaign.cells:
        state = states.get(cell.id)
        last = dict(state.last) if state is not None and state.last else {}
        finished = last.get("event") == "finished"
        if state is None:
            verdict = NOT_RUN
        elif finished and last.get("failed"):
            verdict = FAILED
        elif finished:
            verdict = str(last.get("verdict") or "INVALID")
        else:
            verdict = NOT_RUN  # claimed, never finished: in flight or its controller died
        rows.append(
            {
                "id": cell.id,
                "system": cell.system,
                "benchmark": cell.benchmark,
                "scenario": cell.scenario,
                "mode": cell.mode,
                "kind": KINDS.get(cell.mode, cell.mode),
                "state": state.state if state is not None else "pending",
                "verdict": verdict,
                "attempts": state.attempts if state is not None else 0,
                "host": last.get("host"),
                "run_id": last.get("run_id"),
                "finished_at": last.get("t") if finished else None,
                "metric": last.get("metric") if finished else None,
                "reasons": list(last.get("reasons") or []) if finished else [],
                "results_dir": last.get("results_dir") if finished else None,
                # gpus_at_once: how many cells ran at once on the host, one per GPU (1: alone);
                # gpu: the lane's GPU where it was more than 1 (docs/campaign.md)
                "gpus_at_once": int(last.get("gpus_at_once") or 1) if finished else None,
                "gpu": last.get("gpu") if finished else None,
                "tuning": _tuning(records, cell.id, state),
            }
        )
    return rows


def _tuning(
    records: Sequence[Mapping[str, Any]], cell_id: str, state: Any
) -> dict[str, Any] | None:
    """A tuned cell's search (docs/campaign.md, "Tuning"): the ``trial`` records of its latest
    claim, in order, and the value its ``finished`` record gives; None for other cells."""
    if state is None:
        return None
    run_id = state.run_id
    last = state.last or {}
    given = last.get("tuning") if last.get("event") == "finished" else None
    # how the search read each run (the finished record's list): it differs from LoadGen's
    # cause for a too-short trial read as too high
    read_as = {
        t.get("trial_run_id"): t.get("read_as")
        for t in (given.get("trials") or [] if isinstance(given, Mapping) else [])
        if isinstance(t, Mapping) and t.get("read_as")
    }
    trials = [
        {
            **{
                k: r.get(k)
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
            },
            "read_as": read_as.get(r.get("trial_run_id")),
            # a failed run's cause is its failure (the host lost, a run that did not start)
            "failure": (list(r.get("reasons") or []) or [None])[0] if r.get("failed") else None,
        }
        for r in records
        if r.get("event") == "trial" and r.get("cell") == cell_id and r.get("run_id") == run_id
    ]
    if not trials and not isinstance(given, Mapping):
        return None
    given = dict(given) if isinstance(given, Mapping) else {}
    return {
        "value": given.get("value"),
        "start": given.get("start"),
        "start_from": given.get("start_from"),
        "from_file": given.get("from_file"),
        "reason": given.get("reason"),
        "trials": trials,
    }


def cause_text(trial: Mapping[str, Any]) -> str:
    """Why a run of the search went the way it did, in the words its ledger record keeps from
    the cause reader (_campaign_trial_cause): "too_high: LoadGen: performance constraints not
    satisfied: 99th percentile latency 62 ms over the 50 ms bound (...)"; "" for a VALID run
    or a record written before causes were kept."""
    if trial.get("failed"):
        return "failed: %s" % (trial.get("failure") or "the run failed")
    cause = trial.get("cause")
    if trial.get("verdict") == "VALID" or not cause:
        return ""
    read_as = trial.get("read_as")
    return "%s%s: %s" % (
        cause,
        " (read as %s)" % read_as if read_as and read_as != cause else "",
        trial.get("why") or "",
    )


def _target_text(trial: Mapping[str, Any]) -> str:
    if trial.get("target") is None:
        return "Offline"
    length = trial.get("duration_ms")
    return "%g%s" % (trial["target"], " (%g s)" % (length / 1000.0) if length else "")


def _tuning_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown: one section listing every tuned cell's trials and its value."""
    tuned = [r for r in rows if r.get("tuning")]
    if not tuned:
        return []
    out = ["## Tuning", ""]
    for row in tuned:
        info = row["tuning"]
        value = info.get("value")
        out.append(
            "### %s: main_target_qps %s" % (row["id"], "%g" % value if value else "not found")
        )
        out.append("")
        if info.get("from_file"):
            out += ["From the tuned file %s." % info["from_file"], ""]
            continue
        if info.get("start") is not None:
            out += [
                "Start %g (%s). %s" % (info["start"], info["start_from"], info["reason"] or ""),
                "",
            ]
        out.append("| # | run | target | verdict | metric | why |")
        out.append("|---|---|---|---|---|---|")
        for trial in info["trials"]:
            out.append(
                "| %s | %s | %s | %s | %s | %s |"
                % (
                    trial["index"],
                    trial["kind"],
                    _target_text(trial),
                    "FAILED" if trial["failed"] else trial["verdict"],
                    _metric_text(trial["metric"]),
                    # a | in LoadGen's words would end the cell
                    cause_text(trial).replace("|", "\\|"),
                )
            )
        out.append("")
    return out


def _tuning_html(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    e = html.escape
    tuned = [r for r in rows if r.get("tuning")]
    if not tuned:
        return []
    out = ["<h2>Tuning</h2>"]
    for row in tuned:
        info = row["tuning"]
        value = info.get("value")
        out.append(
            '<h3 data-tuned="%s">%s: main_target_qps %s</h3>'
            % (e(row["id"]), e(row["id"]), e("%g" % value if value else "not found"))
        )
        if info.get("from_file"):
            out.append("<p>From the tuned file %s.</p>" % e(str(info["from_file"])))
            continue
        if info.get("start") is not None:
            out.append(
                "<p>Start %s (%s). %s</p>"
                % (e("%g" % info["start"]), e(str(info["start_from"])), e(info["reason"] or ""))
            )
        out.append(
            "<table><tr><th>#</th><th>run</th><th>target</th><th>verdict</th><th>metric</th>"
            "<th>why</th></tr>"
        )
        for trial in info["trials"]:
            verdict = "FAILED" if trial["failed"] else str(trial["verdict"])
            out.append(
                '<tr><td>%s</td><td>%s</td><td>%s</td><td class="%s">%s</td><td>%s</td>'
                '<td data-cause="%s">%s</td></tr>'
                % (
                    e(str(trial["index"])),
                    e(str(trial["kind"])),
                    e(_target_text(trial)),
                    e(verdict),
                    e(verdict),
                    e(_metric_text(trial["metric"])),
                    e(str(trial.get("cause") or "")),
                    e(cause_text(trial)),
                )
            )
        out.append("</table>")
    return out


def _at_once_text(row: Mapping[str, Any]) -> str:
    """Markdown/HTML note for a cell that ran beside others on its host: [GPU 1, 2 at once]."""
    if (row.get("gpus_at_once") or 1) <= 1:
        return ""
    return " [GPU %s, %d at once]" % (row.get("gpu"), row["gpus_at_once"])


def _metric_text(metric: Mapping[str, Any] | None) -> str:
    if not metric:
        return ""
    return "%s %s %s" % (metric.get("name"), metric.get("value"), metric.get("unit"))


def _matrix(campaign: Campaign, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    matrix: dict[str, dict[str, dict[str, str]]] = {}
    for row in rows:
        line = "%s/%s" % (row["benchmark"], row["scenario"])
        matrix.setdefault(row["system"], {}).setdefault(line, {})[row["mode"]] = row["verdict"]
    return matrix


def _modes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    order = list(KINDS)
    return sorted(
        {str(r["mode"]) for r in rows}, key=lambda m: order.index(m) if m in order else 99
    )


def render_markdown(campaign: Campaign, rows: Sequence[Mapping[str, Any]], now: float) -> str:
    out = ["# Campaign %s" % campaign.name, "", "Generated %s." % _utc(now), ""]
    modes = _modes(rows)
    for system in campaign.systems:
        mine = [r for r in rows if r["system"] == system.name]
        out += ["## System %s" % system.name, ""]
        out.append("| benchmark / scenario | " + " | ".join(modes) + " |")
        out.append("|---|" + "---|" * len(modes))
        lines: dict[str, dict[str, Mapping[str, Any]]] = {}
        for row in mine:
            lines.setdefault("%s / %s" % (row["benchmark"], row["scenario"]), {})[row["mode"]] = row
        for line, by_mode in lines.items():
            cells = []
            for mode in modes:
                found = by_mode.get(mode)
                if found is None:
                    cells.append("")
                    continue
                row = found
                metric = _metric_text(row["metric"]) if mode == "performance" else ""
                cells.append(
                    row["verdict"] + (" (%s)" % metric if metric else "") + _at_once_text(row)
                )
            out.append("| %s | %s |" % (line, " | ".join(cells)))
        out.append("")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    out.append(
        "%d cell(s): %s"
        % (len(rows), ", ".join("%s=%d" % (k, v) for k, v in sorted(counts.items())))
    )
    tuning = _tuning_lines(rows)
    if tuning:
        out += ["", *tuning[:-1]]
    return "\n".join(out) + "\n"


def render_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = [
        "id",
        "system",
        "benchmark",
        "scenario",
        "mode",
        "verdict",
        "attempts",
        "host",
        "run_id",
        "metric_name",
        "metric_value",
        "metric_unit",
        "finished_at_utc",
        "gpus_at_once",
        "gpu",
        "reasons",
    ]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        metric = row["metric"] or {}
        writer.writerow(
            {
                **{k: row[k] for k in ("id", "system", "benchmark", "scenario", "mode")},
                "verdict": row["verdict"],
                "attempts": row["attempts"],
                "host": row["host"] or "",
                "run_id": row["run_id"] or "",
                "metric_name": metric.get("name", ""),
                "metric_value": metric.get("value", ""),
                "metric_unit": metric.get("unit", ""),
                "finished_at_utc": _utc(row["finished_at"]) or "",
                "gpus_at_once": row["gpus_at_once"] or "",
                "gpu": "" if row["gpu"] is None else row["gpu"],
                "reasons": "; ".join(row["reasons"]),
            }
        )
    return buffer.getvalue()


def render_junit(campaign: Campaign, rows: Sequence[Mapping[str, Any]]) -> str:
    suite = ElementTree.Element(
        "testsuite",
        name="campaign %s" % campaign.name,
        tests=str(len(rows)),
        failures=str(sum(1 for r in rows if r["verdict"] in ("INVALID", FAILED))),
        skipped=str(sum(1 for r in rows if r["verdict"] == NOT_RUN)),
    )
    for row in rows:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname="%s.%s" % (campaign.name, row["system"]),
            name="%s/%s/%s" % (row["benchmark"], row["scenario"], row["mode"]),
        )
        if row["verdict"] == NOT_RUN:
            ElementTree.SubElement(case, "skipped", message="not run (%s)" % row["state"])
        elif row["verdict"] != "VALID":
            failure = ElementTree.SubElement(
                case, "failure", message="%s on %s" % (row["verdict"], row["host"])
            )
            failure.text = "\n".join(row["reasons"])
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def render_campaign_html(
    campaign: Campaign, rows: Sequence[Mapping[str, Any]], directory: str, now: float
) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        "<title>Campaign %s</title>" % e(campaign.name),
        "<style>body{font:14px/1.45 system-ui,sans-serif;margin:0 24px 48px}"
        "table{border-collapse:collapse;margin:8px 0 16px}"
        "th,td{border-bottom:1px solid #d0d7de;padding:4px 10px;text-align:left;vertical-align:top}"
        "th{background:#f6f8fa}.VALID{color:#1a7f37;font-weight:600}"
        ".INVALID,.FAILED{color:#cf222e;font-weight:600}.NOT_RUN{color:#6e7781}"
        ".meta{color:#656d76}</style></head>",
        '<body data-report="heteromig-campaign" data-cells="%d">' % len(rows),
        "<h1>Campaign %s</h1>" % e(campaign.name),
        '<p class="meta">Generated %s. All times are UTC.</p>' % e(_utc(now) or ""),
    ]
    modes = _modes(rows)
    for system in campaign.systems:
        mine = [r for r in rows if r["system"] == system.name]
        out.append("<h2>System %s</h2>" % e(system.name))
        out.append(
            "<table><tr><th>benchmark / scenario</th>%s</tr>"
            % "".join("<th>%s</th>" % e(KINDS.get(m, m)) for m in modes)
        )
        lines: dict[str, dict[str, Mapping[str, Any]]] = {}
        for row in mine:
            lines.setdefault("%s / %s" % (row["benchmark"], row["scenario"]), {})[row["mode"]] = row
        for line, by_mode in lines.items():
            out.append("<tr><td>%s</td>" % e(line))
            for mode in modes:
                found = by_mode.get(mode)
                if found is None:
                    out.append("<td></td>")
                    continue
                row = found
                label = e(row["verdict"])
                if row["results_dir"]:
                    target = os.path.relpath(
                        os.path.join(row["results_dir"], "report.html"), directory
                    )
                    label = '<a href="%s">%s</a>' % (e(target), label)
                detail = e(_metric_text(row["metric"])) if mode == "performance" else ""
                detail += e(_at_once_text(row))
                out.append(
                    '<td class="%s" data-cell="%s" data-gpus-at-once="%s" title="%s">%s%s</td>'
                    % (
                        e(row["verdict"]),
                        e(row["id"]),
                        e(str(row["gpus_at_once"] or "")),
                        e("; ".join(row["reasons"]) or row["kind"]),
                        label,
                        ("<br><small>%s</small>" % detail) if detail else "",
                    )
                )
            out.append("</tr>")
        out.append("</table>")
    out += _tuning_html(rows)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _run_report(result: Mapping[str, Any], results_dir: str, now: float) -> None:
    """The hetero run's own timeline page, next to its result.json."""
    record = make_record(
        seq=1,
        received_at=now,
        host=str(result.get("host")),
        task="campaign cell",
        task_uuid="campaign",
        action="heteromig.fleet.campaign",
        hetero=True,
        status="ok",
        result=result,
    )
    summary = build_summary([record], generated_at=now, report_dir=results_dir)
    _write(os.path.join(results_dir, "report.html"), render_html(summary))


def _file_as(plan: Plan, name: str | None) -> None:
    """File the plan's one submission system under the spec's ``submission_name``.

    plan_export names a system ``<platform>_<accelerator>-MIG_1x<profile>_<software>_
    HeteroMultiUse``; ``submission_name`` is the whole name (docs/campaign.md). A system whose
    cells ran on slices of several profiles makes several submission systems: they keep their
    own names.
    """
    if not name or len(plan.systems) != 1:
        return
    [old] = list(plan.systems)
    if old == name:
        return
    if old in plan.system_info:
        plan.system_info[name] = plan.system_info.pop(old)

    def fix(text: str) -> str:
        return text.replace(old, name)

    plan.copies = [(source, fix(rel)) for source, rel in plan.copies]
    plan.writes = {fix(rel): fix(text) for rel, text in plan.writes.items()}
    plan.systems = {name: {**plan.systems[old], "system_name": name}}
    for entry in plan.exported:
        entry["system"] = name
        entry["path"] = fix(str(entry["path"]))


HOST_FACTS_DIR = "host_facts"  # in the campaign directory: <host>.json per host


def kept_host_facts(
    directory: str, gathered: Mapping[str, Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    """The facts of every host that ever told them to this campaign.

    A re-run only touches the hosts of systems with cells left, so the facts gathered in this
    playbook run are kept (``host_facts/<host>.json``) and the others read back: the submission
    tree, rebuilt by every report, keeps the system descriptions of systems already done.
    """
    store = os.path.join(directory, HOST_FACTS_DIR)
    facts: dict[str, Mapping[str, Any]] = {}
    if os.path.isdir(store):
        for name in sorted(os.listdir(store)):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(store, name), encoding="utf-8") as handle:
                    kept = json.load(handle)
            except (OSError, ValueError):
                continue  # a damaged copy only leaves that host's fields to this run's facts
            if isinstance(kept, dict):
                facts[name[: -len(".json")]] = kept
    if gathered:
        os.makedirs(store, exist_ok=True)
    for host, host_facts in gathered.items():
        facts[host] = host_facts
        if not is_safe_name(host):
            continue  # used this run, but an inventory name is no file name to keep it under
        _write(os.path.join(store, host + ".json"), json.dumps(host_facts, indent=1) + "\n")
    return facts


def write_campaign_report(
    campaign: Campaign,
    records: Sequence[Mapping[str, Any]],
    directory: str,
    submitter: str,
    now: float | None = None,
    slices: Sequence[Mapping[str, Any]] = (),
    host_facts: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write every report file into ``directory``; returns what was written and summary lines.

    ``records`` are the campaign's ledger records (one ledger, or every slice's merged);
    ``slices`` (from :func:`_campaign_slices.merge`) says which slice ledgers they came from.
    ``host_facts`` (host -> host_facts/gpu_facts facts, see _system_desc.facts_from_hostvars)
    fill the submission's system descriptions; see :func:`kept_host_facts`.
    """
    now = time.time() if now is None else now
    os.makedirs(directory, exist_ok=True)
    facts = kept_host_facts(directory, host_facts or {})
    rows = cell_rows(campaign, records)
    results: list[tuple[Cell, dict[str, Any]]] = []
    by_id = {cell.id: cell for cell in campaign.cells}
    for row in rows:
        result = _read_result(row["results_dir"])
        if result is None:
            continue
        _run_report(result, str(row["results_dir"]), now)
        results.append((by_id[row["id"]], result))
    document = {
        "campaign": campaign.name,
        "generated_at": now,
        "generated_at_utc": _utc(now),
        "slices": [dict(s) for s in slices],
        "cells": rows,
        "matrix": _matrix(campaign, rows),
    }
    _write(os.path.join(directory, "campaign.json"), json.dumps(document, indent=1) + "\n")
    _write(os.path.join(directory, "campaign.csv"), render_csv(rows))
    _write(os.path.join(directory, "campaign.md"), render_markdown(campaign, rows, now))
    _write(os.path.join(directory, "junit.xml"), render_junit(campaign, rows))
    _write(
        os.path.join(directory, "campaign.html"),
        render_campaign_html(campaign, rows, directory, now),
    )
    submission = os.path.join(directory, "submission")
    exported: list[dict[str, Any]] = []
    problems: list[dict[str, str]] = []
    first = True
    for system in campaign.systems:
        valid = [r for c, r in results if c.system == system.name and r.get("verdict") == "VALID"]
        if not valid:
            continue
        plan = plan_export(
            valid,
            submitter=submitter,
            platform=system.name,
            inspect=inspect_log_dir,
            host_facts=facts,
            system_desc=system.system_desc,
            implementation_desc=system.implementation_desc,
        )
        _file_as(plan, system.submission_name)
        # the tree is rebuilt from scratch once, not per system (that removed the ones before)
        apply_plan(plan, submission, replace=first)
        first = False
        exported += plan.exported
    if exported:
        problems = check_layout(submission, "closed", submitter, ["TEST01", "TEST04"])
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    lines = [
        "campaign %s: %d cell(s): %s"
        % (campaign.name, len(rows), ", ".join("%s=%d" % kv for kv in sorted(counts.items())))
    ]
    for row in rows:
        lines.append(
            "  %-8s %s%s"
            % (
                row["verdict"],
                row["id"],
                (" | " + "; ".join(row["reasons"])) if row["reasons"] else "",
            )
        )
    lines.append(
        "campaign %s: reports in %s (campaign.html, campaign.json, campaign.csv, campaign.md, "
        "junit.xml); submission tree: %d result(s) in %s, %d problem(s) for the checker"
        % (
            campaign.name,
            directory,
            len(exported),
            submission,
            len([p for p in problems if p.get("severity") == "error"]),
        )
    )
    if slices:
        lines.insert(
            1,
            "campaign %s: merged from %d slice ledger(s): %s"
            % (campaign.name, len(slices), ", ".join(str(s["ledger"]) for s in slices)),
        )
    return {
        "slices": [dict(s) for s in slices],
        "cells": rows,
        "counts": counts,
        "files": ["campaign.html", "campaign.json", "campaign.csv", "campaign.md", "junit.xml"],
        "submission": {"dir": submission, "exported": exported, "problems": problems},
        "lines": lines,
    }
