# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side rendering of the fleet's GPU and MIG inventory as a plain-text table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any


def _slices(gpu: Mapping[str, Any]) -> str:
    counts = Counter(device["profile"] for device in gpu.get("mig_devices", []))
    if not counts:
        return "-"
    return " ".join("%dx%s" % (count, profile) for profile, count in sorted(counts.items()))


def _mig(gpu: Mapping[str, Any]) -> str:
    if not gpu.get("mig_capable"):
        return "n/a"
    mode = gpu["mig_mode"]
    text = mode["current"]
    if mode["current"] != mode["pending"]:
        text += " (pending %s)" % mode["pending"]
    return text


def fleet_rows(hosts: Sequence[str], hostvars: Mapping[str, Any]) -> list[list[str]]:
    """One row per GPU of each host; a host without facts gets one row that says so."""
    rows: list[list[str]] = []
    for host in hosts:
        facts: dict[str, Any] = dict(hostvars.get(host, {}))
        gpus = facts.get("heteromig_gpus")
        if gpus is None:
            rows.append([host, "-", "no GPU facts (unreachable or failed)", "-", "-", "-", "-"])
            continue
        backend = facts.get("heteromig_nvml", {}).get("backend", "?")
        if not gpus:
            rows.append([host, "-", "no NVIDIA GPU", "-", "-", "-", backend])
            continue
        for gpu in gpus:
            rows.append(
                [
                    host,
                    str(gpu["index"]),
                    gpu["name"],
                    _mig(gpu),
                    _slices(gpu),
                    str(len(gpu.get("processes", []))),
                    backend,
                ]
            )
    return rows


HEADER = ("host", "gpu", "name", "mig", "slices", "procs", "backend")


def render_table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> list[str]:
    """Rows as aligned text lines, header first."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) for cell, width in zip(cells, widths, strict=False)
        ).rstrip()

    return [line(header), line(["-" * w for w in widths])] + [line(row) for row in rows]
