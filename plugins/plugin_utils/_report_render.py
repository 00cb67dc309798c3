# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure text renderers of a report summary (see _report_aggregate.build_summary).

- :func:`render_table`: the compact end-of-play table (host, GPU, main benchmark, scenario,
  metric, verdict, reasons).
- :func:`progress_line`: one live line per host outcome of a hetero_run task.
- :func:`render_csv`, :func:`render_junit`, :func:`render_markdown`: the report files.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_aggregate import (
    ERRORS,
    FAILING,
    VERDICTS,
    compact_reasons,
)

TABLE_HEADER = ("host", "gpu", "main benchmark", "scenario", "metric", "verdict", "reasons")


def _main(row: Mapping[str, Any]) -> Mapping[str, Any]:
    return row.get("main") or {}


def table_cells(row: Mapping[str, Any], reasons_width: int = 70) -> list[str]:
    main = _main(row)
    metric = main.get("metric_text") or "-"
    interference = row.get("interference")
    if interference and interference.get("interference_pct") is not None:
        metric += " (%+.1f%% vs isolated)" % -interference["interference_pct"]
    return [
        str(row.get("host")),
        str(row.get("gpu_label") or "-"),
        str(main.get("benchmark") or "-"),
        str(main.get("scenario") or "-"),
        metric,
        str(row.get("verdict")),
        compact_reasons(row.get("reasons") or [], reasons_width),
    ]


def align(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    """Rows as aligned text lines: header, rule, rows."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()

    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def render_table(summary: Mapping[str, Any], reasons_width: int = 70) -> list[str]:
    """The compact end-of-play table, then one line of verdict counts."""
    rows = [table_cells(r, reasons_width) for r in summary.get("rows") or []]
    lines = align(rows, TABLE_HEADER) if rows else ["(no hetero_run results)"]
    lines.append(counts_line(summary))
    return lines


def counts_line(summary: Mapping[str, Any]) -> str:
    counts = summary.get("counts") or {}
    parts = ["%s=%d" % (v, counts[v]) for v in VERDICTS if counts.get(v)]
    text = "%d run(s): %s" % (summary.get("total", 0), " ".join(parts) or "none")
    if summary.get("interrupted"):
        text += " (INTERRUPTED: results so far)"
    return text


def progress_line(row: Mapping[str, Any], done: int, started: int) -> str:
    """One live line per host outcome, e.g. ``[3/5] h1 VALID, backgrounds 2/2 covered``.

    The hetero_run action prints its own per-phase lines and its verdict with the metric and the
    reasons; this line adds what only the controller knows: how many hosts are done, the
    background coverage, and the outcomes the action cannot report (unreachable, failed
    without a result, skipped), with their reason.
    """
    text = "[%d/%d] %s %s" % (done, max(done, started), row.get("host"), row.get("verdict"))
    if row.get("backgrounds"):
        text += ", backgrounds %s covered" % row.get("coverage")
    if not row.get("main") and row.get("reasons"):
        text += ": " + compact_reasons(row["reasons"], 100)
    return text


# ---------------------------------------------------------------------------- CSV

CSV_COLUMNS = (
    "run_id",
    "host",
    "task",
    "status",
    "verdict",
    "gpu_name",
    "gpu_model",
    "gpu_index",
    "main_profile",
    "main_benchmark",
    "scenario",
    "action",
    "metric_name",
    "metric_value",
    "metric_unit",
    "result_validity",
    "backgrounds",
    "coverage",
    "isolated",
    "isolated_value",
    "interference_pct",
    "reasons",
    "results_dir",
)


def csv_record(row: Mapping[str, Any]) -> dict[str, Any]:
    main = _main(row)
    metric = main.get("metric") or {}
    gpu = row.get("gpu") or {}
    interference = row.get("interference") or {}
    pct = interference.get("interference_pct")
    return {
        "run_id": row.get("run_id") or "",
        "host": row.get("host"),
        "task": row.get("task") or "",
        "status": row.get("status"),
        "verdict": row.get("verdict"),
        "gpu_name": gpu.get("name") or "",
        "gpu_model": gpu.get("model") or "",
        "gpu_index": "" if gpu.get("index") is None else gpu.get("index"),
        "main_profile": main.get("profile") or "",
        "main_benchmark": main.get("benchmark") or "",
        "scenario": main.get("scenario") or "",
        "action": main.get("action") or "",
        "metric_name": metric.get("name") or "",
        "metric_value": "" if metric.get("value") is None else metric.get("value"),
        "metric_unit": metric.get("unit") or "",
        "result_validity": main.get("result_validity") or "",
        "backgrounds": " ".join(
            str(b.get("benchmark") or b.get("name")) for b in row.get("backgrounds") or []
        ),
        "coverage": row.get("coverage") or "",
        "isolated": "" if row.get("isolated") is None else str(bool(row.get("isolated"))).lower(),
        "isolated_value": "" if not interference else interference.get("isolated_value"),
        "interference_pct": "" if pct is None else "%.3f" % pct,
        "reasons": "; ".join(row.get("reasons") or []),
        "results_dir": row.get("results_dir") or "",
    }


def render_csv(summary: Mapping[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in summary.get("rows") or []:
        writer.writerow(csv_record(row))
    return out.getvalue()


# ---------------------------------------------------------------------------- JUnit


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def testcase_name(row: Mapping[str, Any]) -> str:
    main = _main(row)
    if main:
        return "%s %s/%s" % (row.get("host"), main.get("benchmark"), main.get("scenario"))
    return "%s %s" % (row.get("host"), row.get("task") or "hetero_run")


def render_junit(summary: Mapping[str, Any], suite_name: str = "heteromig.hetero_run") -> str:
    """One testsuite, one testcase per host and run; reasons in failures (INVALID/FAILED),
    errors (UNREACHABLE/NO_RESULT) and skips (DRY_RUN/SKIPPED)."""
    rows = summary.get("rows") or []
    suites = ET.Element("testsuites", name=suite_name)
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="%s %s" % (suite_name, ",".join(summary.get("run_ids") or []) or "(no run id)"),
        tests=str(len(rows)),
        failures=str(sum(1 for r in rows if r["verdict"] in FAILING)),
        errors=str(sum(1 for r in rows if r["verdict"] in ERRORS)),
        skipped=str(sum(1 for r in rows if r["verdict"] in ("DRY_RUN", "SKIPPED"))),
        timestamp=_iso(summary.get("generated_at")),
    )
    for row in rows:
        main = _main(row)
        timeline = row.get("timeline") or {}
        duration = 0.0
        if timeline.get("t0") is not None and timeline.get("t1") is not None:
            duration = float(timeline["t1"]) - float(timeline["t0"])
        case = ET.SubElement(
            suite,
            "testcase",
            classname="hetero_run.%s" % row.get("host"),
            name=testcase_name(row),
            time="%.3f" % duration,
        )
        props = ET.SubElement(case, "properties")
        for key, value in (
            ("verdict", row.get("verdict")),
            ("run_id", row.get("run_id")),
            ("gpu", row.get("gpu_label")),
            ("metric", main.get("metric_text")),
            ("coverage", row.get("coverage")),
        ):
            if value:
                ET.SubElement(props, "property", name=key, value=str(value))
        reasons = row.get("reasons") or []
        message = "%s: %s" % (row["verdict"], "; ".join(reasons) or "no reason given")
        body = "\n".join("- %s" % r for r in reasons)
        if row["verdict"] in FAILING:
            ET.SubElement(case, "failure", message=message, type=row["verdict"]).text = body
        elif row["verdict"] in ERRORS:
            ET.SubElement(case, "error", message=message, type=row["verdict"]).text = body
        elif row["verdict"] in ("DRY_RUN", "SKIPPED"):
            ET.SubElement(case, "skipped", message=message)
        ET.SubElement(case, "system-out").text = " | ".join(table_cells(row, 200))
    ET.indent(suites)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
    )


# ---------------------------------------------------------------------------- Markdown


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(summary: Mapping[str, Any]) -> str:
    rows = summary.get("rows") or []
    out = ["# Heterogeneous MIG run report", ""]
    out.append("- run id(s): %s" % (", ".join(summary.get("run_ids") or []) or "-"))
    out.append("- generated: %s UTC" % (_iso(summary.get("generated_at")) or "-"))
    out.append("- %s" % counts_line(summary))
    if summary.get("interrupted"):
        out.append(
            "- **The playbook was interrupted: this report holds the results that finished.**"
        )
    out += ["", "## Runs", ""]
    out.append("| " + " | ".join((*TABLE_HEADER[:-1], "backgrounds covered")) + " |")
    out.append("|" + "---|" * len(TABLE_HEADER))
    for row in rows:
        cells = [*table_cells(row)[:-1], row.get("coverage") or "n/a"]
        out.append("| " + " | ".join(_md(c) for c in cells) + " |")
    failing = [r for r in rows if r.get("reasons")]
    if failing:
        out += ["", "## Reasons", ""]
        for row in failing:
            out.append("### %s (%s)" % (_md(testcase_name(row)), row["verdict"]))
            out.append("")
            out += ["- %s" % _md(r) for r in row["reasons"]]
            out.append("")
    covered = [r for r in rows if r.get("backgrounds")]
    if covered:
        out += ["", "## Background coverage of the main benchmark's timed phase", ""]
        out.append("| host | background | benchmark | slice | covered | detail |")
        out.append("|---|---|---|---|---|---|")
        for row in covered:
            for bg in row["backgrounds"]:
                mark = {True: "yes", False: "**NO**", None: "unknown"}[bg.get("covered")]
                out.append(
                    "| %s | %s | %s | %s | %s | %s |"
                    % tuple(
                        _md(x)
                        for x in (
                            row["host"],
                            bg.get("name"),
                            bg.get("benchmark"),
                            bg.get("profile"),
                            mark,
                            bg.get("why"),
                        )
                    )
                )
    pairs = summary.get("comparisons") or []
    if pairs:
        out += ["", "## Isolated vs heterogeneous", ""]
        out.append("| host | benchmark | scenario | slice | isolated | hetero | interference |")
        out.append("|---|---|---|---|---|---|---|")
        for p in pairs:
            pct = p.get("interference_pct")
            out.append(
                "| %s | %s | %s | %s | %s | %s | %s |"
                % (
                    _md(p["host"]),
                    _md(p["benchmark"]),
                    _md(p["scenario"]),
                    _md(p.get("profile")),
                    _md(
                        p["isolated_text"]
                        + ("" if p["isolated_host"] == p["host"] else " (%s)" % p["isolated_host"])
                    ),
                    _md(p["hetero_text"]),
                    "-"
                    if pct is None
                    else "%.1f%% %s" % (abs(pct), "slower" if pct >= 0 else "faster"),
                )
            )
    out.append("")
    return "\n".join(out)


def render_json(summary: Mapping[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
