# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Job slicing of a campaign: one playbook run per slice, one ledger per slice (controller only).

A campaign too big for one controller is split the way AWX/Automation Controller job slicing
splits a job (docs/campaign.md, "Slicing"): ``-e heteromig_campaign_slice=K/N`` makes the
playbook run take slice K of N. The split is a pure function of the spec and the inventory, so
every slice computes the same one without talking to the others:

- **hosts**: the hosts of every system, in spec order of the systems and name order within a
  system, are dealt round-robin to slices 1..N (as AWX deals an inventory's hosts);
- **cells**: the cells of a system, in spec order, are dealt to the system's hosts in name order
  (cell j to host j mod hosts), and go to that host's slice. So a slice gets a system's cells in
  proportion to the hosts of the system it has, and a cell belongs to exactly one slice.

Each slice keeps its own ledger, ``ledger.slice-<K>of<N>.jsonl``, whose ``slice`` records name
the campaign, the spec's hash and the cells of the slice. Cells are partitioned rather than
claimed from a shared file: slices may run on different controllers, whose ledgers are
gathered into one campaign directory afterwards, and nothing they share needs a lock that works
across machines. :func:`merge` joins the ledgers for the report and refuses slices that do not
belong together.

Pure functions, except :func:`read_ledgers` (reads the campaign directory).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_ledger import (
    CLAIMED,
    FINISHED,
    LEDGER,
    LEDGER_VERSION,
    read,
)
from ansible_collections.heteromig.fleet.plugins.plugin_utils._campaign_spec import Campaign

HEADER = "slice"  # the ledger event that describes a slice
_SLICE_RE = re.compile(r"^\s*([0-9]+)\s*/\s*([0-9]+)\s*$")
_LEDGER_RE = re.compile(r"^ledger\.slice-([0-9]+)of([0-9]+)\.jsonl$")


class SliceError(Exception):
    """A bad slice setting, or slices that do not make one campaign; the message says why."""


@dataclass(frozen=True)
class Slice:
    index: int  # 1..count
    count: int

    @property
    def label(self) -> str:
        return "%d/%d" % (self.index, self.count)

    @property
    def ledger(self) -> str:
        """The slice's ledger file name in the campaign directory."""
        return "ledger.slice-%dof%d.jsonl" % (self.index, self.count)


def parse_slice(value: Any) -> Slice | None:
    """``"K/N"`` -> Slice(K, N); None, ``""`` and ``"1/1"`` -> None (the campaign unsliced)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    found = _SLICE_RE.match(value) if isinstance(value, str) else None
    index, count = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    if not found or count < 1 or not 1 <= index <= count:
        raise SliceError(
            "heteromig_campaign_slice must be K/N, this run's slice K of N slices with "
            "1 <= K <= N (e.g. 2/4), got %r" % (value,)
        )
    return None if count == 1 else Slice(index, count)


def ledger_slice(name: str) -> Slice | None:
    """The slice a ledger file name belongs to (None for the unsliced ``ledger.jsonl``)."""
    found = _LEDGER_RE.match(name)
    if not found:
        return None
    return Slice(int(found.group(1)), int(found.group(2)))


def spec_hash(campaign: Campaign) -> str:
    """A hash of the parsed spec (every system, cell and option; not the file it came from)."""
    data = dataclasses.asdict(campaign)
    data.pop("source", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Partition:
    count: int
    host_slice: dict[str, int]  # host -> slice index
    cell_slice: dict[str, int]  # cell id -> slice index

    def hosts(self, index: int) -> list[str]:
        return [h for h, i in self.host_slice.items() if i == index]

    def cells(self, index: int) -> list[str]:
        return [c for c, i in self.cell_slice.items() if i == index]


def partition(campaign: Campaign, hosts_of: Mapping[str, Sequence[str]], count: int) -> Partition:
    """Deal hosts and cells to ``count`` slices (see the module's docstring)."""
    if count < 1:
        raise SliceError("a campaign is split into 1 slice or more, got %d" % count)
    host_slice: dict[str, int] = {}
    position = 0
    for system in campaign.systems:
        for host in sorted(hosts_of.get(system.name) or []):
            host_slice[host] = position % count + 1
            position += 1
    cell_slice: dict[str, int] = {}
    for system in campaign.systems:
        seats = [host_slice[h] for h in sorted(hosts_of.get(system.name) or [])]
        cells = [c for c in campaign.cells if c.system == system.name]
        for j, cell in enumerate(cells):
            if seats:
                cell_slice[cell.id] = seats[j % len(seats)]
    return Partition(count, host_slice, cell_slice)


def header(campaign: Campaign, piece: Slice, cells: Sequence[str], hosts: Sequence[str]) -> dict:
    """The ``slice`` record a slice's ledger starts (and each change of spec or cells adds)."""
    return {
        "event": HEADER,
        "slice": piece.label,
        "campaign": campaign.name,
        "spec_version": campaign.version,
        "spec_hash": spec_hash(campaign),
        "cells": list(cells),
        "hosts": sorted(hosts),
    }


def latest_header(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    found = None
    for record in records:
        if record.get("event") == HEADER:
            found = record
    return found


def _ran_cells(records: Sequence[Mapping[str, Any]]) -> set[str]:
    return {
        str(r.get("cell"))
        for r in records
        if r.get("event") in (CLAIMED, FINISHED) and isinstance(r.get("cell"), str)
    }


def check_start(
    piece: Slice | None,
    cells: Sequence[str],
    ledgers: Mapping[str, Sequence[Mapping[str, Any]]],
) -> None:
    """Refuse to run slice ``piece`` (None: the whole campaign) with ``cells`` when the campaign
    directory's ledgers (file name -> records) were split otherwise: a cell could run twice."""
    sliced = {name: ledger_slice(name) for name in ledgers if ledger_slice(name) is not None}
    plain = list(ledgers.get(LEDGER) or [])
    if piece is None:
        if sliced:
            raise SliceError(
                "the campaign directory holds slice ledgers (%s): this campaign runs in slices; "
                "give -e heteromig_campaign_slice=K/N (the same N), or use a new campaign "
                "directory to run it whole" % ", ".join(sorted(sliced))
            )
        return
    if plain:
        raise SliceError(
            "the campaign directory's %s holds %d record(s) of an unsliced run: slice %s would "
            "run its cells again; run without heteromig_campaign_slice, or use a new campaign "
            "directory" % (LEDGER, len(plain), piece.label)
        )
    mine = set(cells)
    for name, other in sorted(sliced.items()):
        if other is None:
            continue
        if other.count != piece.count:
            raise SliceError(
                "the campaign directory holds %s, a slice of a %d-way split; this run asks for "
                "slice %s: every slice of a campaign has the same N"
                % (name, other.count, piece.label)
            )
        last = latest_header(ledgers[name])
        if other.index == piece.index:
            had = list(last.get("cells") or []) if last is not None else None
            if had is not None and had != list(cells):
                raise SliceError(
                    "slice %s: its ledger %s was started with cells %s, and the inventory now "
                    "gives it %s: the hosts changed since, which splits the cells otherwise "
                    "(a cell could run twice or never). Run it with the inventory it started "
                    "with, or use a new campaign directory" % (piece.label, name, had, list(cells))
                )
            continue
        theirs = set(last.get("cells") or []) if last is not None else set()
        theirs |= _ran_cells(ledgers[name])
        shared = sorted(mine & theirs)
        if shared:
            raise SliceError(
                "slice %s would run cells that slice %s already has in %s: %s. The slices were "
                "split from different inventories; run every slice with the same inventory"
                % (piece.label, other.label, name, ", ".join(shared))
            )


@dataclass
class Merged:
    records: list[dict[str, Any]]
    slices: list[dict[str, Any]]  # per slice present: label, ledger, cells, spec_hash
    missing: list[str]  # labels of slices with no ledger
    warnings: list[str]


def merge(
    campaign: Campaign,
    ledgers: Mapping[str, Sequence[Mapping[str, Any]]],
    expected: Mapping[str, int] | None = None,
) -> Merged:
    """One campaign's records from its ledgers (file name -> records).

    An unsliced campaign is its ``ledger.jsonl``. Slice ledgers must all be of one N, each with
    a ``slice`` header of this campaign, of this spec version and of this spec (its hash), with
    no cell in two slices; every mismatch is a SliceError naming the slice. ``expected`` (cell
    -> slice, from the plan) names the slices that have cells but no ledger yet. The merged
    records are the slices' in slice order: a cell's records all come from one ledger.
    """
    sliced = {name: ledger_slice(name) for name in ledgers}
    pieces = {name: s for name, s in sliced.items() if s is not None}
    plain = [dict(r) for r in ledgers.get(LEDGER) or []]
    if not pieces:
        return Merged(plain, [], [], [])
    if plain:
        raise SliceError(
            "the campaign directory holds both %s (%d record(s) of an unsliced run) and slice "
            "ledgers (%s): a cell may have run in both; report them from separate campaign "
            "directories" % (LEDGER, len(plain), ", ".join(sorted(pieces)))
        )
    counts = sorted({s.count for s in pieces.values()})
    if len(counts) > 1:
        raise SliceError(
            "the campaign directory holds slices of different splits (%s): every slice of a "
            "campaign has the same N" % ", ".join(sorted(pieces))
        )
    count = counts[0]
    want = spec_hash(campaign)
    owner: dict[str, tuple[str, str]] = {}  # cell -> (slice, ledger)
    records: list[dict[str, Any]] = []
    slices: list[dict[str, Any]] = []
    warnings: list[str] = []
    for name, piece in sorted(pieces.items(), key=lambda kv: kv[1].index):
        got = list(ledgers[name])
        last = latest_header(got)
        if last is None:
            if not got:
                continue
            raise SliceError(
                "%s has no slice record: it was not written by a sliced run of this campaign" % name
            )
        problems = []
        if last.get("slice") != piece.label:
            problems.append("it says it is slice %r" % last.get("slice"))
        if last.get("campaign") != campaign.name:
            problems.append("campaign %r, not %r" % (last.get("campaign"), campaign.name))
        if last.get("spec_version") != campaign.version:
            problems.append(
                "spec version %r, not %r" % (last.get("spec_version"), campaign.version)
            )
        if last.get("v", LEDGER_VERSION) != LEDGER_VERSION:
            problems.append("ledger version %r, not %d" % (last.get("v"), LEDGER_VERSION))
        if last.get("spec_hash") != want:
            problems.append(
                "it last ran a different spec (%s, this one is %s): run slice %s again with "
                "this spec (its done cells are skipped) before the report"
                % (last.get("spec_hash"), want, piece.label)
            )
        if problems:
            raise SliceError("slice %s (%s): %s" % (piece.label, name, "; ".join(problems)))
        cells = [str(c) for c in last.get("cells") or []]
        stray = sorted(_ran_cells(got) - set(cells))
        if stray:
            raise SliceError(
                "slice %s (%s) ran cells that are not in its slice record: %s"
                % (piece.label, name, ", ".join(stray))
            )
        for cell in cells:
            if cell in owner:
                raise SliceError(
                    "cell %s is in slice %s (%s) and in slice %s (%s): the slices were split "
                    "from different inventories" % (cell, *owner[cell], piece.label, name)
                )
            owner[cell] = (piece.label, name)
        records += [dict(r) for r in got]
        slices.append(
            {"slice": piece.label, "ledger": name, "cells": cells, "spec_hash": last["spec_hash"]}
        )
    present = {s["slice"] for s in slices}
    labels = ["%d/%d" % (i, count) for i in range(1, count + 1)]
    if expected is not None:  # a slice the plan gives no cell has nothing to run
        labels = [label for label in labels if int(label.split("/")[0]) in expected.values()]
    missing = [label for label in labels if label not in present]
    for label in missing:
        waiting = [c for c, i in (expected or {}).items() if "%d/%d" % (i, count) == label]
        warnings.append(
            "slice %s has not run yet (no %s)%s"
            % (
                label,
                Slice(int(label.split("/")[0]), count).ledger,
                ": its %d cell(s) are NOT_RUN" % len(waiting) if waiting else "",
            )
        )
    known = set(owner) | set(expected or {})
    orphans = [c.id for c in campaign.cells if c.id not in known]
    if orphans and (expected is not None or not missing):
        warnings.append(
            "%d cell(s) are in no slice (%s): the slices were split from inventories that "
            "differ; they are NOT_RUN" % (len(orphans), ", ".join(orphans))
        )
    return Merged(records, slices, missing, warnings)


def read_ledgers(directory: str) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every ledger of a campaign directory (file name -> records) and the readers' warnings."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return {}, []
    out: dict[str, list[dict[str, Any]]] = {}
    warnings: list[str] = []
    for name in names:
        if name == LEDGER or ledger_slice(name) is not None:
            records, warned = read(os.path.join(directory, name))
            out[name] = records
            warnings += warned
    return out, warnings
