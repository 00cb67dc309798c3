"""``heteromig status`` and ``heteromig report``: what a campaign or a run left on disk.

A campaign directory holds ``ledger.jsonl`` (every claim and outcome; docs/campaign.md) and,
once its report ran, ``campaign.json``/``campaign.md``/``campaign.html``. A run's results
directory (``results/<run_id>/``) holds ``results.jsonl`` and the summaries the hetero_report
callback writes (docs/reports.md). Both are read with the collection's own readers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from heteromig_cli.collection import Collection

LEDGER = "ledger.jsonl"
RESULTS = "results.jsonl"


class NotFound(Exception):
    """The campaign or run to show cannot be found or read."""


@dataclass(frozen=True)
class Target:
    kind: str  # campaign | run
    path: Path


def locate(name: str | None, campaign_dir: str | None, collection: Collection) -> Target:
    """A campaign directory, a run's results directory, a campaign name or a run id."""
    if campaign_dir is not None:
        path = Path(campaign_dir).expanduser().resolve()
        if not path.is_dir():
            raise NotFound("campaign directory %s does not exist" % path)
        return Target("campaign", path)
    if not name:
        raise NotFound("give a campaign (directory or name) or a run's results directory")
    given = Path(name).expanduser()
    if given.is_file() and given.name in (LEDGER, RESULTS):
        given = given.parent
    if given.is_dir():
        path = given.resolve()
        if (path / LEDGER).is_file() or (path / "campaign.json").is_file():
            return Target("campaign", path)
        if (path / RESULTS).is_file():
            return Target("run", path)
        raise NotFound(
            "%s holds neither a campaign ledger (%s) nor a run's %s" % (path, LEDGER, RESULTS)
        )
    if "/" not in name:
        results = collection.default_results
        for kind, path in (("campaign", results / "campaigns" / name), ("run", results / name)):
            if path.is_dir():
                return Target(kind, path)
        raise NotFound(
            "no campaign or run named %s (looked for %s and %s)"
            % (name, results / "campaigns" / name, results / name)
        )
    raise NotFound("%s does not exist" % given)


def _align(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()

    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


# ------------------------------------------------------------------------------ campaigns
@dataclass(frozen=True)
class CellLine:
    cell: str
    state: str  # pending | in_flight | done | failed
    verdict: str
    attempts: int
    host: str
    run_id: str
    metric: str


def _metric(metric: Any) -> str:
    if isinstance(metric, Mapping) and metric:
        return "%s %s %s" % (metric.get("name"), metric.get("value"), metric.get("unit") or "")
    return ""


def campaign_cells(
    directory: Path, collection: Collection, cells: Sequence[str] = ()
) -> tuple[list[CellLine], list[str]]:
    """Every cell's state from the ledger (and warnings); ``cells`` or campaign.json add cells
    no record names yet (pending) and give the order."""
    collection.import_plugin_utils()
    from ansible_collections.heteromig.fleet.plugins.plugin_utils import (
        _campaign_ledger as ledger,
    )

    try:
        records, warnings = ledger.read(str(directory / LEDGER))
    except ledger.LedgerError as exc:
        raise NotFound(str(exc)) from None
    states = ledger.cell_states(records)
    order = list(cells)
    if not order:
        try:
            summary = json.loads((directory / "campaign.json").read_text(encoding="utf-8"))
            order = [str(c["id"]) for c in summary.get("cells") or [] if c.get("id")]
        except (OSError, ValueError, TypeError, KeyError):
            order = []
    order += [c for c in states if c not in order]
    lines = []
    for cell in order:
        state = states.get(cell)
        if state is None:
            lines.append(CellLine(cell, "pending", "-", 0, "-", "-", ""))
            continue
        last = state.last or {}
        if state.state == "in_flight":
            verdict = "-"
        elif state.state == "failed" and last.get("failed"):
            verdict = "FAILED"
        else:
            verdict = state.verdict or "-"
        lines.append(
            CellLine(
                cell,
                state.state,
                verdict,
                state.attempts,
                state.host or "-",
                state.run_id or "-",
                _metric(last.get("metric")) if last.get("event") == "finished" else "",
            )
        )
    return lines, warnings


def print_cells(lines: Sequence[CellLine], out: TextIO, title: str) -> None:
    rows = [
        [c.cell, c.state, c.verdict, str(c.attempts), c.host, c.metric or "-", c.run_id]
        for c in lines
    ]
    header = ["cell", "state", "verdict", "attempts", "host", "metric", "run id"]
    for text in _align(rows, header) if rows else ["(no cell in the ledger yet)"]:
        out.write(text + "\n")
    counts: dict[str, int] = {}
    for c in lines:
        counts[c.state] = counts.get(c.state, 0) + 1
    parts = [
        "%s=%d" % (s, counts[s]) for s in ("done", "failed", "in_flight", "pending") if s in counts
    ]
    out.write("%s: %d cell(s): %s\n" % (title, len(lines), " ".join(parts) or "none"))


def all_valid(lines: Sequence[CellLine]) -> bool:
    return bool(lines) and all(c.state == "done" for c in lines)


# ------------------------------------------------------------------------------ runs
def run_summary(directory: Path, collection: Collection) -> dict[str, Any]:
    """The run's summary: summary.json when the callback wrote it, else built from the JSONL."""
    collection.import_plugin_utils()
    from ansible_collections.heteromig.fleet.plugins.plugin_utils import (
        _report_aggregate,
        _report_records,
    )

    summary_file = directory / "summary.json"
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
            if isinstance(summary, dict) and isinstance(summary.get("rows"), list):
                return summary
        except (OSError, ValueError):
            pass
    records = _report_records.read_jsonl(str(directory / RESULTS))
    return _report_aggregate.build_summary(records, report_dir=str(directory))


def print_rows(summary: Mapping[str, Any], out: TextIO) -> None:
    rows = []
    for row in summary.get("rows") or []:
        main = row.get("main") or {}
        rows.append(
            [
                str(row.get("host")),
                str(row.get("run_id") or "-"),
                str(main.get("benchmark") or "-"),
                str(main.get("scenario") or "-"),
                str(row.get("verdict")),
                str(main.get("metric_text") or "-"),
            ]
        )
    header = ["host", "run id", "main benchmark", "scenario", "verdict", "metric"]
    for text in _align(rows, header) if rows else ["(no result recorded)"]:
        out.write(text + "\n")


def run_ok(summary: Mapping[str, Any]) -> bool:
    rows = summary.get("rows") or []
    return bool(rows) and all(r.get("verdict") == "VALID" for r in rows)


def print_run_table(summary: Mapping[str, Any], out: TextIO, collection: Collection) -> None:
    collection.import_plugin_utils()
    from ansible_collections.heteromig.fleet.plugins.plugin_utils import (
        _report_render,
    )

    for text in _report_render.render_table(summary):
        out.write(text + "\n")
