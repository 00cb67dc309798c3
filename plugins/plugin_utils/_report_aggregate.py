# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure aggregation of hetero_run records into report rows, timelines and comparisons.

Input: records (see _report_records) whose ``result`` follows docs/hetero_result_contract.md.
Output: :func:`build_summary`'s JSON-able dict, which every renderer (text, CSV, JUnit, Markdown,
HTML) reads. Nothing here touches files, Ansible or the clock.

Row verdicts: the contract's ``VALID``/``INVALID``/``DRY_RUN`` when a hetero_run result exists
(also on a failed task), else ``FAILED`` (the task failed without a result), ``UNREACHABLE``,
``SKIPPED`` or ``NO_RESULT`` (the task started on the host but nothing came back, e.g. after
Ctrl-C).

Coverage (the report's own check, independent of the verdict): a background covers the main
benchmark when it was ready no later than the main's timed window began and had not ended
before that window ended. Interference: where an *isolated* result (a hetero_run result without
backgrounds) and a *hetero* result (with backgrounds) exist for the same GPU model, slice
profile, benchmark, scenario and metric, the report shows both values and the slowdown in
percent (positive: slower under background load).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ansible_collections.heteromig.fleet.plugins.plugin_utils._report_activity import (
    activity_row,
)

VERDICTS = ("VALID", "INVALID", "DRY_RUN", "FAILED", "UNREACHABLE", "SKIPPED", "NO_RESULT")
FAILING = frozenset(("INVALID", "FAILED"))
ERRORS = frozenset(("UNREACHABLE", "NO_RESULT"))
PHASES = ("launch", "ready", "timed", "end")
SUMMARY_SCHEMA = 1


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


# ---------------------------------------------------------------------------- metrics


def higher_is_better(metric: Mapping[str, Any]) -> bool:
    """Throughput metrics (``*per_second*``, ``.../s``) are higher-better; latencies are not."""
    name = str(metric.get("name") or "").lower()
    unit = str(metric.get("unit") or "").lower()
    return not ("latency" in name or unit in ("ns", "us", "ms", "s"))


def format_number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.1f}"
    if magnitude >= 1:
        return "%.2f" % value
    return "%.4g" % value


def format_metric(metric: Mapping[str, Any] | None) -> str:
    """``1,234.5 samples/s``; latencies in ns are shown in ms; ``-`` when absent."""
    if not metric:
        return "-"
    value = _num(metric.get("value"))
    if value is None:
        return "-"
    unit = str(metric.get("unit") or "")
    if unit == "ns":
        value, unit = value / 1e6, "ms"
    return ("%s %s" % (format_number(value), unit)).strip()


def interference_pct(isolated: float, hetero: float, higher_better: bool) -> float | None:
    """Slowdown of ``hetero`` relative to ``isolated`` in percent (positive: slower)."""
    if isolated <= 0:
        return None
    if higher_better:
        return (isolated - hetero) / isolated * 100.0
    return (hetero - isolated) / isolated * 100.0


# ---------------------------------------------------------------------------- timelines


def _window(bench: Mapping[str, Any]) -> tuple[float, float] | None:
    window = _dict(bench.get("timed_window"))
    begin, end = _num(window.get("begin")), _num(window.get("end"))
    if begin is None or end is None or end < begin:
        return None
    return begin, end


def _events_for(result: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    events = []
    for event in result.get("timeline") or []:
        if isinstance(event, Mapping) and event.get("benchmark") == name:
            t = _num(event.get("t"))
            if t is not None:
                events.append(
                    {"t": t, "event": str(event.get("event")), "detail": event.get("detail")}
                )
    return sorted(events, key=lambda e: e["t"])


def _first_event(events: Sequence[Mapping[str, Any]], kind: str) -> float | None:
    for event in events:
        if event["event"] == kind:
            return float(event["t"])
    return None


def bench_times(result: Mapping[str, Any], bench: Mapping[str, Any]) -> dict[str, float | None]:
    """launch/ready/timed_begin/timed_end/end of one benchmark: its fields, else its events."""
    name = str(bench.get("name") or "")
    events = _events_for(result, name)
    window = _window(bench)
    ended = _num(bench.get("ended_at"))
    if ended is None:
        ended = _first_event(events, "exit") or _first_event(events, "kill")
    return {
        "launch": _num(bench.get("launched_at")) or _first_event(events, "launch"),
        "ready": _num(bench.get("ready_at")) or _first_event(events, "ready"),
        "timed_begin": window[0] if window else _first_event(events, "timed_begin"),
        "timed_end": window[1] if window else _first_event(events, "timed_end"),
        "end": ended,
    }


def phase_segments(times: Mapping[str, float | None]) -> list[dict[str, Any]]:
    """Consecutive phases of a benchmark's lane: launch (warm-up until ready), ready (until the
    timed phase), timed, end (after the timed phase until exit/kill). Unknown bounds are skipped:
    a benchmark that never became ready shows one ``launch`` segment up to its end."""
    points = [
        ("launch", times.get("launch")),
        ("ready", times.get("ready")),
        ("timed", times.get("timed_begin")),
        ("end", times.get("timed_end")),
    ]
    stop = times.get("end")
    known = [(phase, t) for phase, t in points if t is not None]
    # Marker time stamps (read by the runner) and LoadGen's clock can disagree by a few ms:
    # a later phase never starts before an earlier one ends; the later (LoadGen) time wins.
    for i in range(len(known) - 2, -1, -1):
        if known[i][1] > known[i + 1][1]:
            known[i] = (known[i][0], known[i + 1][1])
    segments = []
    for i, (phase, begin) in enumerate(known):
        end = known[i + 1][1] if i + 1 < len(known) else stop
        if end is None or end < begin:
            continue
        segments.append({"phase": phase, "begin": begin, "end": end})
    return segments


def _slice_label(bench: Mapping[str, Any]) -> str:
    sl = _dict(bench.get("slice"))
    parts = [str(sl.get("profile") or "?")]
    if sl.get("gpu_instance_id") is not None:
        parts.append("GI %s" % sl.get("gpu_instance_id"))
    uuid = str(sl.get("uuid") or "")
    if uuid:
        parts.append(uuid if len(uuid) <= 16 else uuid[:12] + "\u2026")
    return " ".join(parts)


def coverage_of(
    main_times: Mapping[str, float | None], bg_times: Mapping[str, float | None]
) -> tuple[bool | None, str]:
    """(covered, why) of one background against the main benchmark's timed window."""
    begin, end = main_times.get("timed_begin"), main_times.get("timed_end")
    if begin is None or end is None:
        return None, "main benchmark has no timed window"
    ready, stopped = bg_times.get("ready"), bg_times.get("end")
    if ready is None:
        return False, "never became ready"
    if ready > begin:
        return False, "ready %.3f s after the main timed phase began" % (ready - begin)
    if stopped is not None and stopped < end:
        return False, "ended %.3f s before the main timed phase ended" % (end - stopped)
    return True, "covered"


def timeline_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """Lanes (one per slice/benchmark, main first), phase segments, markers and the main window."""
    benches = [_dict(result.get("main"))] + [_dict(b) for b in result.get("backgrounds") or []]
    lanes: list[dict[str, Any]] = []
    lo: float | None = None
    hi: float | None = None
    for bench in benches:
        if not bench:
            continue
        times = bench_times(result, bench)
        name = str(bench.get("name") or "")
        markers = [
            e for e in _events_for(result, name) if e["event"] in ("exit", "kill", "warning")
        ]
        segments = phase_segments(times)
        lanes.append(
            {
                "name": name,
                "role": str(bench.get("role") or ("main" if name == "main" else "background")),
                "benchmark": bench.get("benchmark"),
                "scenario": bench.get("scenario"),
                "slice": _slice_label(bench),
                "times": times,
                "segments": segments,
                "markers": markers,
            }
        )
        for t in [*(v for v in times.values() if v is not None), *(m["t"] for m in markers)]:
            lo = t if lo is None else min(lo, t)
            hi = t if hi is None else max(hi, t)
    # events without a benchmark (phases of the run itself, warnings)
    run_events = []
    for event in result.get("timeline") or []:
        if isinstance(event, Mapping) and not event.get("benchmark"):
            t = _num(event.get("t"))
            if t is not None:
                run_events.append(
                    {"t": t, "event": str(event.get("event")), "detail": event.get("detail")}
                )
    main_window = None
    first: dict[str, float | None] = lanes[0]["times"] if lanes else {}
    if first.get("timed_begin") is not None and first.get("timed_end") is not None:
        main_window = {"begin": first["timed_begin"], "end": first["timed_end"]}
    return {"t0": lo, "t1": hi, "main_window": main_window, "lanes": lanes, "events": run_events}


# ---------------------------------------------------------------------------- rows


def _gpu_label(gpu: Mapping[str, Any], profile: str | None) -> str:
    model = gpu.get("model") or gpu.get("name") or "?"
    label = str(model)
    if gpu.get("index") is not None:
        label += " #%s" % gpu.get("index")
    if profile:
        label += " " + profile
    return label


def _main_info(bench: Mapping[str, Any]) -> dict[str, Any]:
    loadgen = _dict(bench.get("loadgen"))
    metric = _dict(loadgen.get("metric")) or None
    sl = _dict(bench.get("slice"))
    return {
        "name": bench.get("name"),
        "benchmark": bench.get("benchmark"),
        "scenario": bench.get("scenario"),
        "action": bench.get("action"),
        "profile": sl.get("profile"),
        "slice_uuid": sl.get("uuid"),
        "exit_code": bench.get("exit_code"),
        "signal": bench.get("signal"),
        "result_validity": loadgen.get("result_validity"),
        "metric": metric,
        "metric_text": format_metric(metric),
        "latency_ns": _dict(loadgen.get("latency_ns")),
        "fetched_dir": bench.get("fetched_dir"),
        "log_files": list(loadgen.get("log_files") or []),
    }


def row_from_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The report row of one record."""
    status = str(record.get("status") or "ok")
    result = _dict(record.get("result"))
    row: dict[str, Any] = {
        "seq": record.get("seq"),
        "host": str(record.get("host") or "?"),
        "task": record.get("task"),
        "status": status,
        "run_id": result.get("run_id"),
        "verdict": None,
        "reasons": [],
        "gpu": _dict(result.get("gpu")),
        "gpu_label": "-",
        "main": None,
        "backgrounds": [],
        "coverage": "n/a",
        "covered_all": None,
        "isolated": None,
        "shared_gpu": result.get("shared_gpu"),
        "harness": result.get("harness"),
        "results_dir": result.get("results_dir"),
        "expected_duration_s": result.get("expected_duration_s"),
        "timeline": None,
        "interference": None,
        "gpu_activity": None,
    }
    msg = record.get("msg")
    if not result:
        if status == "unreachable":
            row["verdict"] = "UNREACHABLE"
            why = "unreachable at task %r" % record.get("task")
        elif status == "skipped":
            row["verdict"] = "SKIPPED"
            why = "skipped at task %r" % record.get("task")
        elif status == "missing":
            row["verdict"] = "NO_RESULT"
            why = (
                "no result from task %r (the run was interrupted or the host never answered)"
                % record.get("task")
            )
        else:
            row["verdict"] = "FAILED"
            why = "task %r failed" % record.get("task")
        row["reasons"] = [why + (": %s" % msg if msg else "")]
        return row

    verdict = str(result.get("verdict") or ("FAILED" if status == "failed" else "INVALID"))
    row["verdict"] = verdict if verdict in VERDICTS else "INVALID"
    row["reasons"] = [str(r) for r in result.get("reasons") or []]
    if status == "failed" and row["verdict"] == "VALID":
        row["verdict"] = "FAILED"
    if status == "failed" and not row["reasons"]:
        row["reasons"] = ["task %r failed%s" % (record.get("task"), ": %s" % msg if msg else "")]
    main = _dict(result.get("main"))
    row["main"] = _main_info(main) if main else None
    row["gpu_label"] = _gpu_label(row["gpu"], row["main"]["profile"] if row["main"] else None)
    if row["shared_gpu"]:
        # Say it wherever the GPU is named: these are not MIG results.
        row["gpu_label"] += " SHARED GPU, NO MIG ISOLATION"
    timeline = timeline_of(result)
    row["timeline"] = timeline
    row["gpu_activity"] = activity_row(result)
    main_times = timeline["lanes"][0]["times"] if timeline["lanes"] and main else {}
    backgrounds = []
    for bench in result.get("backgrounds") or []:
        bench = _dict(bench)
        covered, why = coverage_of(main_times, bench_times(result, bench))
        sl = _dict(bench.get("slice"))
        backgrounds.append(
            {
                "name": bench.get("name"),
                "benchmark": bench.get("benchmark"),
                "scenario": bench.get("scenario"),
                "profile": sl.get("profile"),
                "exit_code": bench.get("exit_code"),
                "signal": bench.get("signal"),
                "covered": covered,
                "why": why,
            }
        )
    row["backgrounds"] = backgrounds
    row["isolated"] = not backgrounds and not result.get("shared_gpu")
    if backgrounds:
        good = sum(1 for b in backgrounds if b["covered"])
        row["coverage"] = "%d/%d" % (good, len(backgrounds))
        if all(b["covered"] is not None for b in backgrounds):
            row["covered_all"] = good == len(backgrounds)
    return row


def missing_row(host: str, task: str, seq: int) -> dict[str, Any]:
    return row_from_record({"host": host, "task": task, "status": "missing", "seq": seq})


# ---------------------------------------------------------------------------- comparisons


def _compare_key(row: Mapping[str, Any]) -> tuple[Any, ...] | None:
    main = row.get("main")
    if not main or not main.get("metric") or _num(main["metric"].get("value")) is None:
        return None
    gpu = row.get("gpu") or {}
    return (
        gpu.get("model") or gpu.get("name"),
        main.get("profile"),
        main.get("benchmark"),
        main.get("scenario"),
        main.get("action"),
        main["metric"].get("name"),
    )


def comparisons(
    rows: Sequence[dict[str, Any]], baseline_rows: Sequence[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Isolated vs hetero pairs; also sets ``row["interference"]`` on the hetero rows.

    References come from ``rows`` and ``baseline_rows`` (isolated results of earlier runs);
    only VALID isolated results are references. Preference: same host, then the latest.
    """
    refs: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for source, candidates in (("this run", rows), ("baseline", baseline_rows)):
        for row in candidates:
            key = _compare_key(row)
            if key is not None and row.get("isolated") and row.get("verdict") == "VALID":
                refs.setdefault(key, []).append({**row, "_source": source})
    out = []
    for row in rows:
        key = _compare_key(row)
        if key is None or row.get("isolated") or not row.get("backgrounds") or key not in refs:
            continue
        if row["main"].get("result_validity") != "VALID":
            continue  # an INVALID run's figure is no measurement of interference
        candidates = refs[key]
        same_host = [r for r in candidates if r["host"] == row["host"]]
        pool = same_host or candidates
        ref = max(pool, key=lambda r: (r["_source"] == "this run", r.get("seq") or 0))
        metric = row["main"]["metric"]
        iso_value = float(ref["main"]["metric"]["value"])
        het_value = float(metric["value"])
        better = higher_is_better(metric)
        pct = interference_pct(iso_value, het_value, better)
        entry = {
            "host": row["host"],
            "run_id": row.get("run_id"),
            "gpu_model": key[0],
            "profile": key[1],
            "benchmark": key[2],
            "scenario": key[3],
            "metric": key[5],
            "unit": metric.get("unit"),
            "higher_is_better": better,
            "isolated_value": iso_value,
            "isolated_text": format_metric(ref["main"]["metric"]),
            "isolated_host": ref["host"],
            "isolated_run_id": ref.get("run_id"),
            "isolated_source": ref["_source"],
            "hetero_value": het_value,
            "hetero_text": format_metric(metric),
            "interference_pct": pct,
            "backgrounds": len(row["backgrounds"]),
        }
        row["interference"] = entry
        out.append(entry)
    return out


# ---------------------------------------------------------------------------- summary


def build_summary(
    records: Iterable[Mapping[str, Any]],
    *,
    started: Iterable[tuple[str, str, str]] = (),
    baseline_records: Iterable[Mapping[str, Any]] = (),
    interrupted: bool = False,
    generated_at: float | None = None,
    report_dir: str | None = None,
) -> dict[str, Any]:
    """Everything the renderers need, JSON-able.

    ``records``: this playbook run's records, in arrival order. Hetero_run records give one row
    each. Failures and unreachables of *other* tasks give a row only for a host that has no
    hetero_run record (it left the play before hetero_run ran). ``started``: (host, task_uuid,
    task name) of every hetero_run task that began on a host: one without a record becomes a
    ``NO_RESULT`` row.
    """
    records = list(records)
    hetero = [r for r in records if r.get("hetero")]
    seen = {(r.get("host"), r.get("task_uuid")) for r in hetero}
    hosts_with_result = {r.get("host") for r in hetero}
    rows = [row_from_record(r) for r in hetero]
    next_seq = max([int(r.get("seq") or 0) for r in records] + [0]) + 1
    for host, task_uuid, task in started:
        if (host, task_uuid) not in seen:
            rows.append(missing_row(host, task, next_seq))
            seen.add((host, task_uuid))
            hosts_with_result.add(host)
            next_seq += 1
    # the last failure of every host that never produced a hetero_run record
    last_failure: dict[str, Mapping[str, Any]] = {}
    for record in records:
        if not record.get("hetero") and record.get("status") in ("failed", "unreachable"):
            last_failure[str(record.get("host"))] = record
    for host, record in last_failure.items():
        if host not in hosts_with_result:
            rows.append(row_from_record(record))
    rows.sort(key=lambda r: (r["host"], r.get("seq") or 0))
    baseline_rows = [row_from_record(r) for r in baseline_records if r.get("result")]
    pairs = comparisons(rows, baseline_rows)
    counts = Counter(r["verdict"] for r in rows)
    run_ids = sorted({r["run_id"] for r in rows if r.get("run_id")})
    return {
        "schema": SUMMARY_SCHEMA,
        "generated_at": generated_at,
        "interrupted": interrupted,
        "report_dir": report_dir,
        "run_ids": run_ids,
        "hosts": sorted({r["host"] for r in rows}),
        "counts": {v: counts.get(v, 0) for v in VERDICTS if counts.get(v)},
        "total": len(rows),
        "ok": bool(rows) and all(r["verdict"] in ("VALID", "DRY_RUN") for r in rows),
        "rows": rows,
        "comparisons": pairs,
    }


def compact_reasons(reasons: Sequence[str], width: int = 70) -> str:
    """First reason (shortened to ``width``) plus how many more: for one-line tables."""
    if not reasons:
        return "-"
    first = " ".join(str(reasons[0]).split())
    if len(first) > width:
        first = first[: width - 1] + "\u2026"
    if len(reasons) > 1:
        first += " (+%d more)" % (len(reasons) - 1)
    return first
