"""``heteromig status`` and ``heteromig report``: what a campaign or a run left on disk.

A campaign directory holds ``ledger.jsonl`` (every claim and outcome; docs/campaign.md), or one
``ledger.slice-<K>of<N>.jsonl`` per slice when the campaign runs in slices (docs/campaign.md,
"Slicing"), and, once its report ran, ``campaign.json``/``campaign.md``/``campaign.html``.
``status`` merges the slice ledgers as the report does (every slice's cells, each from its own
ledger) and warns where the report would refuse them. A run's results
directory (``results/<run_id>/``) holds ``results.jsonl`` and the summaries the hetero_report
callback writes (docs/reports.md). Both are read with the collection's own readers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from heteromig_cli.collection import Collection

LEDGER = "ledger.jsonl"
RESULTS = "results.jsonl"
# a slice's ledger (plugins/plugin_utils/_campaign_slices.py reads it; this only finds one)
SLICE_LEDGER = re.compile(r"^ledger\.slice-[0-9]+of[0-9]+\.jsonl$")


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
    if given.is_file() and (given.name in (LEDGER, RESULTS) or SLICE_LEDGER.match(given.name)):
        given = given.parent
    if given.is_dir():
        path = given.resolve()
        if (path / LEDGER).is_file() or (path / "campaign.json").is_file() or _has_slices(path):
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


def _has_slices(path: Path) -> bool:
    try:
        return any(SLICE_LEDGER.match(p.name) for p in path.iterdir())
    except OSError:
        return False


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
    slice: str = ""  # K/N when the campaign runs in slices


@dataclass
class Ledgers:
    """A campaign directory's records, its slice ledgers merged (slice order)."""

    records: list[dict[str, Any]]
    warnings: list[str]
    cell_slice: dict[str, str] = field(default_factory=dict)  # cell -> "K/N"
    cells: list[str] = field(default_factory=list)  # the slices' cells, in slice order
    slices: list[str] = field(default_factory=list)  # the labels of the slice ledgers found
    missing: list[str] = field(default_factory=list)  # labels of slices with no ledger


def read_campaign(directory: Path, collection: Collection) -> Ledgers:
    """Every ledger of a campaign directory, read by the collection's own readers and merged
    as ``_campaign_slices.merge`` merges them for the report: each slice's records from its
    own ledger, in slice order, each slice's cells from its latest ``slice`` record. Without
    the spec the checks that need it are left to the report; what the report would refuse is
    a warning here (status shows what is on disk)."""
    collection.import_plugin_utils()
    from ansible_collections.heteromig.fleet.plugins.plugin_utils import (
        _campaign_ledger as ledger,
    )
    from ansible_collections.heteromig.fleet.plugins.plugin_utils import (
        _campaign_slices as slicing,
    )

    try:
        ledgers, warnings = slicing.read_ledgers(str(directory))
    except ledger.LedgerError as exc:
        raise NotFound(str(exc)) from None
    pieces = {n: slicing.ledger_slice(n) for n in ledgers}
    pieces = {n: p for n, p in pieces.items() if p is not None}
    plain = list(ledgers.get(LEDGER) or [])
    if not pieces:
        return Ledgers(plain, warnings)
    out = Ledgers([], warnings)
    if plain:
        out.warnings.append(
            "%s holds %s (%d record(s) of an unsliced run) and slice ledgers (%s): the report "
            "refuses such a directory; shown: the slices only"
            % (directory, LEDGER, len(plain), ", ".join(sorted(pieces)))
        )
    counts = sorted({p.count for p in pieces.values()})
    if len(counts) > 1:
        out.warnings.append(
            "the slice ledgers are of different splits (%s): the report refuses them"
            % ", ".join(sorted(pieces))
        )
    headers: dict[str, Mapping[str, Any]] = {}
    for name, piece in sorted(pieces.items(), key=lambda kv: (kv[1].count, kv[1].index)):
        records = list(ledgers[name])
        out.records += records
        out.slices.append(piece.label)
        top = slicing.latest_header(records)
        if top is None:
            if records:
                out.warnings.append(
                    "%s has no slice record: it was not written by a sliced run" % name
                )
            cells: list[str] = []
        else:
            headers[piece.label] = top
            cells = [str(c) for c in top.get("cells") or []]
        cells += [
            str(r["cell"])
            for r in records
            if r.get("event") == "claimed" and isinstance(r.get("cell"), str)
        ]
        for cell in dict.fromkeys(cells):
            other = out.cell_slice.get(cell)
            if other is not None and other != piece.label:
                out.warnings.append(
                    "cell %s is in slice %s and in slice %s: the report refuses them"
                    % (cell, other, piece.label)
                )
                continue
            if other is None:
                out.cell_slice[cell] = piece.label
                out.cells.append(cell)
    for key, words in (("campaign", "campaigns"), ("spec_hash", "specs")):
        seen = sorted({str(h.get(key)) for h in headers.values()})
        if len(seen) > 1:
            out.warnings.append(
                "the slices last ran different %s (%s): the report refuses them until every "
                "slice ran the same spec" % (words, ", ".join(seen))
            )
    if len(counts) == 1:
        out.missing = [
            "%d/%d" % (k, counts[0])
            for k in range(1, counts[0] + 1)
            if "%d/%d" % (k, counts[0]) not in out.slices
        ]
        for label in out.missing:
            k, n = label.split("/")
            out.warnings.append(
                "slice %s has no ledger (ledger.slice-%sof%s.jsonl): it has not run yet, or has "
                "no host; its cells are not known here" % (label, k, n)
            )
    return out


def _metric(metric: Any) -> str:
    if isinstance(metric, Mapping) and metric:
        return "%s %s %s" % (metric.get("name"), metric.get("value"), metric.get("unit") or "")
    return ""


def campaign_cells(
    directory: Path, collection: Collection, cells: Sequence[str] = ()
) -> tuple[list[CellLine], list[str]]:
    """Every cell's state from the ledger (and warnings); ``cells`` or campaign.json add cells
    no record names yet (pending) and give the order."""
    read = read_campaign(directory, collection)
    from ansible_collections.heteromig.fleet.plugins.plugin_utils import (
        _campaign_ledger as ledger,
    )

    states = ledger.cell_states(read.records)
    warnings = read.warnings
    order = list(cells)
    if not order:
        try:
            summary = json.loads((directory / "campaign.json").read_text(encoding="utf-8"))
            order = [str(c["id"]) for c in summary.get("cells") or [] if c.get("id")]
        except (OSError, ValueError, TypeError, KeyError):
            order = []
    order += [c for c in read.cells if c not in order]
    order += [c for c in states if c not in order]
    lines = []
    for cell in order:
        state = states.get(cell)
        piece = read.cell_slice.get(cell, "")
        if state is None:
            lines.append(CellLine(cell, "pending", "-", 0, "-", "-", "", piece))
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
                piece,
            )
        )
    return lines, warnings


def slices_missing(directory: Path, collection: Collection) -> list[str]:
    """The labels of the slices that have no ledger in the campaign directory."""
    return read_campaign(directory, collection).missing


def print_cells(lines: Sequence[CellLine], out: TextIO, title: str) -> None:
    sliced = any(c.slice for c in lines)
    rows = [
        [c.cell, c.state, c.verdict, str(c.attempts), c.host, c.metric or "-", c.run_id]
        + ([c.slice or "-"] if sliced else [])
        for c in lines
    ]
    header = ["cell", "state", "verdict", "attempts", "host", "metric", "run id"]
    header += ["slice"] if sliced else []
    for text in _align(rows, header) if rows else ["(no cell in the ledger yet)"]:
        out.write(text + "\n")
    counts: dict[str, int] = {}
    for c in lines:
        counts[c.state] = counts.get(c.state, 0) + 1
    parts = [
        "%s=%d" % (s, counts[s]) for s in ("done", "failed", "in_flight", "pending") if s in counts
    ]
    slices = sorted(
        {c.slice for c in lines if c.slice}, key=lambda x: [int(n) for n in x.split("/")]
    )
    out.write(
        "%s: %d cell(s): %s%s\n"
        % (
            title,
            len(lines),
            " ".join(parts) or "none",
            " (slices %s)" % ", ".join(slices) if slices else "",
        )
    )


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
