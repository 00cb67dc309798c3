# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU activity in the reports: a run's NVML samples (``gpu_activity``) as report data and SVG.

Pure: no Ansible, no I/O. :func:`activity_row` turns a hetero_run result's ``gpu_activity``
(docs/hetero_result_contract.md) into the report row's ``gpu_activity``;
:func:`render_activity_lanes` draws it as lanes under the host's timeline, on the timeline's
time axis; :func:`activity_facts` is the sentence stating how busy each GPU or GPU instance was
during the main benchmark's timed window (the statistics come from the host's record, computed
by ``module_utils.nvml._gpu_activity.main_window_summary`` when the run ended).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_activity import (
    STATE_FAILED,
    STATE_OFF,
    main_window_summary,
    target_label,
)

ACTIVITY_H = 40  # px of one activity lane
ACTIVITY_GAP = 8


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(value: Any) -> str:
    return "-" if value is None else "%.0f%%" % float(value)


def activity_row(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The report's view of ``result['gpu_activity']``; None for a result without one."""
    activity = result.get("gpu_activity")
    if not isinstance(activity, Mapping):
        return None
    during = activity.get("during_main")
    if not isinstance(during, list):
        during = main_window_summary(activity, activity.get("main_window"))
    by_key = {d.get("key"): d for d in during if isinstance(d, Mapping)}
    series = []
    for raw in activity.get("series") or []:
        if not isinstance(raw, Mapping):
            continue
        stats = by_key.get(raw.get("key")) or {}
        series.append(
            {
                "key": raw.get("key"),
                "label": target_label(raw),
                "scope": raw.get("scope"),
                "benchmarks": [str(b) for b in raw.get("benchmarks") or []],
                "util_supported": bool(raw.get("util_supported")),
                "util_why": raw.get("util_why"),
                "util_metric": raw.get("util_metric"),
                "memory_total_mib": raw.get("memory_total_mib"),
                "t": list(raw.get("t") or []),
                "util_pct": list(raw.get("util_pct") or []),
                "mem_used_mib": list(raw.get("mem_used_mib") or []),
                "errors": dict(raw.get("errors") or {}),
                "during_main": {
                    "util_pct": stats.get("util_pct"),
                    "mem_used_mib": stats.get("mem_used_mib"),
                },
            }
        )
    return {
        "state": activity.get("state"),
        "error": activity.get("error"),
        "backend": activity.get("backend"),
        "interval_s": activity.get("interval_s"),
        "main_window": activity.get("main_window"),
        "series": series,
    }


def series_sentence(series: Mapping[str, Any]) -> str:
    """'GPU 0, whole GPU (main, bg-1): median 97% busy during the main's timed window (p10 95%,
    max 100%; 240 samples)', or why there is no figure."""
    who = "%s (%s)" % (series["label"], ", ".join(series["benchmarks"]) or "-")
    if not series["util_supported"]:
        return "%s: utilisation not offered by NVML: %s" % (who, series.get("util_why") or "?")
    stats = (series.get("during_main") or {}).get("util_pct")
    if not stats:
        return "%s: no utilisation sample within the main's timed window" % who
    return "%s: median %s busy during the main's timed window (p10 %s, max %s; %d samples)" % (
        who,
        _pct(stats.get("median")),
        _pct(stats.get("p10")),
        _pct(stats.get("max")),
        int(stats.get("samples") or 0),
    )


def activity_facts(activity: Mapping[str, Any] | None) -> list[str]:
    """One sentence per series, or one saying why nothing was sampled (HTML-escaped)."""
    if not activity:
        return []
    if activity.get("state") == STATE_OFF:
        return ["GPU activity: sampling was off for this run"]
    out = []
    if activity.get("state") == STATE_FAILED or activity.get("error"):
        out.append("GPU activity: %s" % _e(activity.get("error") or "not sampled"))
    out.extend(_e(series_sentence(s)) for s in activity.get("series") or [])
    return out


def _step_path(
    points: Sequence[tuple[float, float]], x: Callable[[float], float], y0: float, h: float
) -> str:
    """An SVG path filling 0..100 % as a step chart of (t, percent) points."""
    if not points:
        return ""
    parts = ["M%.2f %.2f" % (x(points[0][0]), y0 + h)]
    for t, value in points:
        parts.append("L%.2f %.2f" % (x(t), y0 + h - h * max(0.0, min(100.0, value)) / 100.0))
    parts.append("L%.2f %.2f Z" % (x(points[-1][0]), y0 + h))
    return " ".join(parts)


def render_activity_lanes(
    activity: Mapping[str, Any] | None,
    x: Callable[[float], float],
    t0: float,
    t1: float,
    top: int,
    label_w: int,
    plot_w: int,
) -> tuple[list[str], int]:
    """SVG elements of one lane per series from ``top``, and the height they take.

    Utilisation is a filled step chart (0 at the lane's foot, 100 % at its head), memory used a
    line scaled to the device's memory; points outside [t0, t1] are left out.
    """
    if not activity:
        return [], 0
    out: list[str] = []
    series_list = activity.get("series") or []
    if not series_list:
        y = top
        out.append(
            '<g class="activity-lane activity-none" data-state="%s">'
            '<text class="lane-slice" x="6" y="%d">GPU activity: %s</text></g>'
            % (_e(activity.get("state")), y + 14, _e(activity.get("error") or "no samples"))
        )
        return out, ACTIVITY_H // 2 + ACTIVITY_GAP
    for i, series in enumerate(series_list):
        y = top + i * (ACTIVITY_H + ACTIVITY_GAP)
        stats = (series.get("during_main") or {}).get("util_pct") or {}
        out.append(
            '<g class="activity-lane" data-series="%s" data-scope="%s" data-benchmarks="%s" '
            'data-util-supported="%s" data-util-median-main="%s" data-util-samples-main="%s">'
            % (
                _e(series["key"]),
                _e(series.get("scope")),
                _e(",".join(series["benchmarks"])),
                "true" if series["util_supported"] else "false",
                "" if stats.get("median") is None else "%.3f" % stats["median"],
                stats.get("samples") or 0,
            )
        )
        out.append(
            '<rect class="activity-bg" x="%d" y="%d" width="%d" height="%d"/>'
            % (label_w, y, plot_w, ACTIVITY_H)
        )
        out.append(
            '<text class="lane-label" x="6" y="%d">%s</text>'
            % (y + 13, _e(("GPU activity \u00b7 " + series["label"])[:120]))
        )
        sub = (
            "median %s in main window" % _pct(stats.get("median"))
            if series["util_supported"]
            else "utilisation not offered by NVML"
        )
        total = series.get("memory_total_mib")
        mem_stats = (series.get("during_main") or {}).get("mem_used_mib") or {}
        if mem_stats.get("max") is not None:
            sub += " \u00b7 %d/%s MiB" % (int(mem_stats["max"]), int(total) if total else "?")
        out.append('<text class="lane-slice" x="6" y="%d">%s</text>' % (y + 28, _e(sub)))
        t = series.get("t") or []
        inside = [i for i, ts in enumerate(t) if isinstance(ts, (int, float)) and t0 <= ts <= t1]
        util_points = [
            (float(t[i]), float(series["util_pct"][i]))
            for i in inside
            if i < len(series["util_pct"]) and series["util_pct"][i] is not None
        ]
        path = _step_path(util_points, x, y, ACTIVITY_H)
        if path:
            out.append(
                '<path class="activity-util" data-points="%d" d="%s"><title>%s</title></path>'
                % (len(util_points), path, _e(series_sentence(series)))
            )
        elif not series["util_supported"]:
            out.append(
                '<text class="activity-why" x="%d" y="%d">%s</text>'
                % (label_w + 6, y + ACTIVITY_H // 2 + 4, _e(str(series.get("util_why"))[:160]))
            )
        if total:
            mem_points = [
                "%.2f,%.2f"
                % (x(float(t[i])), y + ACTIVITY_H - ACTIVITY_H * min(1.0, mem / float(total)))
                for i in inside
                if i < len(series["mem_used_mib"])
                for mem in [series["mem_used_mib"][i]]
                if mem is not None
            ]
            if mem_points:
                out.append(
                    '<polyline class="activity-mem" data-points="%d" points="%s">'
                    "<title>memory used (MiB) of %d</title></polyline>"
                    % (len(mem_points), " ".join(mem_points), int(total))
                )
        out.append("</g>")
    return out, len(series_list) * (ACTIVITY_H + ACTIVITY_GAP)
